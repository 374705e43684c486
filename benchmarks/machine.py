"""What the machine is doing, from /proc: shared by the benchmarks to detect other tenants' load."""

from __future__ import annotations

import os
from pathlib import Path


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
