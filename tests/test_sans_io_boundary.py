"""The sans-IO core must not reach for sockets, clocks, randomness or an event loop itself.

Checked on the source (the imports each module writes), because a reused library may load such
modules for its own other parts: aioice's package imports its asyncio agent even when only its
STUN codec is used.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

RTC = Path(__file__).resolve().parents[1] / "src" / "voicewire" / "rtc"
FORBIDDEN = {"asyncio", "socket", "time", "random", "selectors", "threading", "uvloop"}


@pytest.mark.parametrize("path", sorted(RTC.glob("*.py")), ids=lambda p: p.name)
def test_rtc_module_imports_no_io(path):
    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            imported.add(node.module.split(".")[0])
    assert not imported & FORBIDDEN, f"{path.name} imports {sorted(imported & FORBIDDEN)}"
