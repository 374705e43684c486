"""The built-in agents, by the name ``--agent`` takes."""

from __future__ import annotations

import functools
from collections.abc import Callable

from voicewire.agents.api import Agent
from voicewire.agents.echo import EchoAgent
from voicewire.agents.parrot import ParrotAgent
from voicewire.agents.realtime_bridge import Backend, RealtimeBridge

BRIDGE = "realtime-bridge"

AGENTS: dict[str, Callable[..., Agent]] = {
    "echo": EchoAgent,
    "parrot": ParrotAgent,
    BRIDGE: RealtimeBridge,
}
"""Every built-in agent; ``agent_factory`` gives the per-call factory a transport takes."""


def agent_factory(name: str, backend: Backend | None = None) -> Callable[[], Agent]:
    """The factory a transport calls for each call's agent.

    The bridge is the one agent with configuration, its backend; a ValueError says what is
    missing, in the words of the command line.
    """
    if name != BRIDGE:
        return AGENTS[name]
    if backend is None:
        raise ValueError(f"--agent {BRIDGE} needs --backend URL (or VOICEWIRE_BACKEND)")
    return functools.partial(RealtimeBridge, backend)
