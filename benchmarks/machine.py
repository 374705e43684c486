"""What the machine is doing, from /proc: shared by the benchmarks to detect other tenants' load."""

from __future__ import annotations

import contextlib
import math
import os
import sys
from pathlib import Path

from processes import stat_fields


def cpu_busy() -> dict[str, float]:
    """Busy and steal seconds per CPU so far, from /proc/stat (irq and softirq count as busy)."""
    busy = {}
    tick = os.sysconf("SC_CLK_TCK")
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("cpu") and line[3] != " ":
            name, *values = line.split()
            user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, values[:8])
            busy[name] = (user + nice + system + irq + softirq) / tick
            busy[name + "_steal"] = steal / tick
    return busy


LOCK_PATH = "/tmp/voicewire-bench.lock"
"""Benchmarks run under ``flock`` on this file so that two never share the machine's cores."""


def lock_held() -> bool:
    """Whether this process inherited a descriptor on the shared lock (i.e. runs under flock)."""
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/self/fd/{fd}") == LOCK_PATH:
                return True
    return False


def check_lock() -> bool:
    """Whether this run holds the shared lock; when it does not, say so on stderr, once, so that
    whoever reads the numbers knows another benchmark may have skewed them."""
    locked = lock_held()
    if not locked:
        print(
            f"WARNING: not run under `flock {LOCK_PATH}`: another benchmark may skew the numbers",
            file=sys.stderr,
            flush=True,
        )
    return locked


def tree_cpu(root: int) -> dict[int, float]:
    """CPU seconds of every live process descended from root, by pid."""
    parent, cpu = {}, {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        rest = stat_fields(int(entry))
        if rest is None:
            continue
        parent[int(entry)] = int(rest[1])
        cpu[int(entry)] = sum(int(x) for x in rest[11:15]) / tick  # + reaped children
    mine = {}
    for pid in cpu:
        node, hops = pid, 0
        while node > 1 and hops < 64:
            if node == root:
                mine[pid] = cpu[pid]
                break
            node, hops = parent.get(node, 0), hops + 1
    return mine


def percentile(values: list[float], q: float) -> float:
    """Nearest rank."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]
