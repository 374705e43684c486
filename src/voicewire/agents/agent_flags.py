"""``--agent`` and its backend: the flags of every process that runs agents for WebRTC calls
(``serve`` and ``transceiver``).

Apart from ``voicewire.flags`` so that a process without agents (the relay, the gateway) does
not import them and what they need (numpy, aiohttp's client, the VAD) just to parse its flags.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from yarl import URL

from voicewire.agents.api import Agent
from voicewire.agents.realtime_bridge import Backend
from voicewire.agents.registry import AGENTS, BRIDGE, agent_factory
from voicewire.flags import ConfigError, flag, positive_int


def agent_flags(parser: argparse.ArgumentParser) -> None:
    """``--agent``, its backend and ``--max-sessions``: what a transceiver's calls talk to,
    and how many."""
    flag(
        parser,
        "--agent",
        env="VOICEWIRE_AGENT",
        default="parrot",
        type=agent_name,
        metavar="|".join(AGENTS),
        help="the agent every call talks to",
    )
    backend_flags(parser)
    flag(
        parser,
        "--max-sessions",
        env="VOICEWIRE_MAX_SESSIONS",
        type=positive_int,
        default=200,
        metavar="N",
        help="calls at once before new ones get 503",
    )


def backend_flags(parser: argparse.ArgumentParser) -> None:
    """``--backend``, ``--backend-key``, ``--backend-model``: where ``realtime-bridge`` goes."""
    flag(
        parser,
        "--backend",
        env="VOICEWIRE_BACKEND",
        type=websocket_url,
        metavar="URL",
        help=f"the OpenAI-Realtime-compatible WebSocket the {BRIDGE} agent relays each call to, "
        "e.g. wss://api.openai.com/v1/realtime",
    )
    flag(
        parser,
        "--backend-key",
        env="VOICEWIRE_BACKEND_KEY",
        metavar="KEY",
        help="bearer key for --backend; prefer the environment variable, since a command line "
        "is visible to other users of the machine",
    )
    flag(
        parser,
        "--backend-model",
        env="VOICEWIRE_BACKEND_MODEL",
        default="gpt-realtime",
        metavar="MODEL",
        help="the ?model= of --backend when its URL names none",
    )


def agent_factory_from(args: argparse.Namespace) -> Callable[[], Agent]:
    """The per-call agent factory ``agent_flags`` describe; ConfigError when one is missing."""
    backend = None
    if args.backend is not None:
        backend = Backend(args.backend, args.backend_key or None, args.backend_model)
    try:
        return agent_factory(args.agent, backend)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def agent_name(text: str) -> str:
    """A built-in agent's name. A type, not ``choices``: argparse checks choices only on the
    command line, never on a default taken from the environment."""
    if text not in AGENTS:
        raise argparse.ArgumentTypeError(f"unknown agent {text!r}; one of {', '.join(AGENTS)}")
    return text


def websocket_url(text: str) -> str:
    """A ``ws://`` or ``wss://`` URL."""
    try:
        url = URL(text)
    except ValueError:
        url = URL()
    if url.scheme not in ("ws", "wss") or not url.host:
        raise argparse.ArgumentTypeError(f"{text!r} is not a ws:// or wss:// URL")
    return text
