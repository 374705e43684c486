"""The container image's recipe (Dockerfile, .dockerignore) and what it relies on in the package.

CI has no Docker daemon and no registry of base images, so the image is not built here; these
checks keep the recipe to its promises: one image for every role, Debian's libopus0, the
package installed from its wheel without test extras, a non-root user the Kubernetes manifests
agree with, and ``voicewire`` as the entrypoint.
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from pathlib import PurePosixPath

from tests.deploy.rendering import ROOT

MANIFEST_UID = 10001  # runAsUser in deploy/kubernetes


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    result = []
    pending = ""
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        text = pending + stripped
        pending = ""
        keyword, _, rest = text.partition(" ")
        result.append((keyword.upper(), rest.strip()))
    assert not pending, "the Dockerfile ends inside a continued line"
    return result


def final_stage() -> list[tuple[str, str]]:
    steps = instructions()
    last_from = max(i for i, (keyword, _) in enumerate(steps) if keyword == "FROM")
    return steps[last_from:]


def build_args() -> dict[str, str]:
    args = {}
    for keyword, rest in instructions():
        if keyword == "ARG" and "=" in rest:
            name, _, value = rest.partition("=")
            args[name] = value
    return args


def test_every_stage_is_debian_python_311_slim() -> None:
    args = build_args()
    for keyword, rest in instructions():
        if keyword == "FROM":
            image = rest.split()[0]
            image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image)
            assert re.fullmatch(r"python:3\.11-slim(-bookworm)?", image), image


def test_runtime_has_libopus_and_the_makefiles_runtime_packages() -> None:
    runs = " ".join(rest for keyword, rest in final_stage() if keyword == "RUN")
    installed = set()
    for command in runs.split("&&"):
        words = shlex.split(command)
        if "apt-get" in words and "install" in words:
            installed |= {w for w in words[words.index("install") + 1 :] if not w.startswith("-")}
    assert "libopus0" in installed
    makefile = (ROOT / "Makefile").read_text()
    (runtime,) = re.findall(r"^RUNTIME_PACKAGES\s*:=\s*(.*)$", makefile, re.MULTILINE)
    assert set(runtime.split()) <= installed


def test_package_is_installed_from_its_wheel_without_test_extras() -> None:
    steps = instructions()
    pip = [rest for keyword, rest in steps if keyword == "RUN" and "pip " in rest]
    assert any("pip wheel" in command and "--no-deps" in command for command in pip)
    installs = [c for c in pip if "pip install" in c]
    assert installs
    for command in installs:
        assert " -e " not in command and "--editable" not in command, command
        assert "[test]" not in command, command
        assert ".whl" in command, command
    assert any("pip install" in rest for keyword, rest in final_stage() if keyword == "RUN")


def test_runs_as_the_non_root_user_the_manifests_expect() -> None:
    users = [rest for keyword, rest in final_stage() if keyword == "USER"]
    assert users, "the image would run as root"
    uid = users[-1].split(":")[0]
    assert uid.isdigit(), "a numeric uid lets Kubernetes' runAsNonRoot check it"
    assert int(uid) == MANIFEST_UID


def test_entrypoint_is_voicewire() -> None:
    entrypoints = [rest for keyword, rest in final_stage() if keyword == "ENTRYPOINT"]
    assert json.loads(entrypoints[-1]) == ["voicewire"]


def test_build_context_holds_what_the_build_copies() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*", "start from nothing and admit what the build needs"
    admitted = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    copied = set()
    for keyword, rest in instructions():
        if keyword == "COPY" and not rest.startswith("--from"):
            copied |= {source.rstrip("/") for source in rest.split()[:-1]}
    assert copied <= admitted, copied - admitted


def test_the_wheel_carries_every_non_python_file() -> None:
    """setuptools leaves files other than modules out of a wheel unless package-data names
    them: the image (a non-editable install) would lose the demo page."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    globs = config["tool"]["setuptools"]["package-data"]["voicewire"]
    package = ROOT / "src" / "voicewire"
    data = [
        PurePosixPath(path.relative_to(package).as_posix())
        for path in package.rglob("*")
        if path.is_file() and path.suffix not in (".py", ".pyc") and "__pycache__" not in path.parts
    ]
    assert data, "the package has data files (the gateway's demo page)"
    for path in data:
        assert any(path.match(pattern) for pattern in globs), f"{path} is left out of the wheel"
