"""Network-namespace primitives: run ``ip``, run a process or a Python callable inside a namespace.

Two ways in, for two needs. Services (relays, the impairment hop, later transceivers and the
gateway) run as separate processes through ``ip netns exec``, exactly as an operator would start
them, so they get their own interpreter and a faithful namespace view. Test code that only needs a
socket uses :func:`in_netns` instead: a short-lived thread joins the namespace with ``setns(2)``
and creates the socket there; a socket stays in the namespace it was created in for its whole
life, so the test then uses it from any thread with no subprocess round trip.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

T = TypeVar("T")

NETNS_DIR = "/run/netns"
CLONE_NEWNET = 0x40000000

_libc = ctypes.CDLL(None, use_errno=True)


class BedError(RuntimeError):
    """A bed operation failed; the message carries the command and what it printed."""


def run(argv: Sequence[str], *, input: str | None = None, check: bool = True) -> str:
    """Run a short setup command, returning its stdout; raise with its stderr when it fails."""
    done = subprocess.run(list(argv), input=input, capture_output=True, text=True, timeout=30)
    if check and done.returncode != 0:
        said = (done.stderr or done.stdout).strip()
        raise BedError(f"{' '.join(argv)} exited with {done.returncode}: {said}")
    return done.stdout


def ip_batch(namespace: str | None, commands: Iterable[str]) -> None:
    """Run many ``ip`` commands in one process (``ip -batch``): setup is dozens of them."""
    text = "\n".join(commands) + "\n"
    argv = ["ip"] + (["-n", namespace] if namespace else []) + ["-batch", "-"]
    run(argv, input=text)


def exec_argv(namespace: str, argv: Sequence[str]) -> list[str]:
    """The argv that runs ``argv`` inside ``namespace``."""
    return ["ip", "netns", "exec", namespace, *argv]


def list_namespaces() -> list[str]:
    """Names of the named network namespaces (``ip netns list`` prints ``name (id: N)``)."""
    out = run(["ip", "netns", "list"])
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def namespace_pids(namespace: str) -> list[int]:
    """Processes whose network namespace is ``namespace``, never this process itself."""
    out = run(["ip", "netns", "pids", namespace], check=False)
    own = {os.getpid(), os.getppid()}
    return [int(pid) for pid in out.split() if pid.isdigit() and int(pid) not in own]


def kill_pids(pids: Iterable[int], grace: float = 2.0) -> None:
    """SIGTERM the given processes, then SIGKILL whatever is left after ``grace`` seconds.

    Each process is addressed by its own id: nothing here matches by name, so only what the bed
    started inside its own namespaces can be hit.
    """
    remaining = set(pids)
    for pid in list(remaining):
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            remaining.discard(pid)
    deadline = time.monotonic() + grace
    while remaining and time.monotonic() < deadline:
        remaining = {pid for pid in remaining if process_alive(pid)}
        if remaining:
            time.sleep(0.05)
    for pid in remaining:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def process_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (a zombie holds no namespace and no port)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def delete_namespace(namespace: str) -> None:
    """Kill every process in ``namespace``, then delete it (its links go with it)."""
    for _ in range(3):
        pids = namespace_pids(namespace)
        if not pids:
            break
        kill_pids(pids)
    run(["ip", "netns", "delete", namespace], check=False)


def in_netns(namespace: str, fn: Callable[..., T], *args: object, **kwargs: object) -> T:
    """Call ``fn`` on a fresh thread that has joined ``namespace``; return or raise its result.

    ``setns`` moves only the calling thread, and that thread ends with the call, so the test
    process itself never changes namespace. Sockets made inside ``fn`` belong to ``namespace``
    for good.
    """
    outcome: dict[str, object] = {}

    def target() -> None:
        try:
            fd = os.open(os.path.join(NETNS_DIR, namespace), os.O_RDONLY)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    errno = ctypes.get_errno()
                    raise OSError(errno, f"setns into {namespace}: {os.strerror(errno)}")
            finally:
                os.close(fd)
            outcome["value"] = fn(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 (re-raised in the caller's thread)
            outcome["error"] = exc

    thread = threading.Thread(target=target, name=f"netns-{namespace}")
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["value"]  # type: ignore[return-value]


def missing_prerequisites() -> list[str]:
    """Why the bed cannot run here, one reason per item; empty when it can."""
    reasons = []
    if os.geteuid() != 0:
        reasons.append("the test bed needs root (network namespaces, veth, nftables)")
    if shutil.which("ip") is None:
        reasons.append("iproute2's `ip` is not installed")
    else:
        try:
            list_namespaces()
        except (BedError, OSError) as exc:
            reasons.append(f"`ip netns` does not work here: {exc}")
    if shutil.which("nft") is None:
        reasons.append("`nft` is not installed (Debian package nftables)")
    if not os.path.exists("/dev/net/tun"):
        reasons.append("/dev/net/tun is missing (the impairment hop needs TUN)")
    return reasons
