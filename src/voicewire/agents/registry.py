"""The built-in agents, by the name ``--agent`` takes."""

from __future__ import annotations

from collections.abc import Callable

from voicewire.agents.api import Agent
from voicewire.agents.echo import EchoAgent
from voicewire.agents.parrot import ParrotAgent

AGENTS: dict[str, Callable[[], Agent]] = {"echo": EchoAgent, "parrot": ParrotAgent}
