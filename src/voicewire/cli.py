"""The ``voicewire`` command: one subcommand per service of DESIGN §8.

Only the chosen service's module is imported: a relay restarting mid-call (DESIGN §9 wants its
audio back within 100 ms of the start) should not first load the agents, numpy and aiohttp's
client that ``serve`` needs. ``voicewire --help`` and mistakes load them all, to list them.
"""

from __future__ import annotations

import importlib
import sys

from voicewire import __version__
from voicewire.flags import Parser

SERVICES = {
    "relay": (
        "voicewire.relay.command",
        "the stateless UDP edge: one public port, routes on the signed ICE ufrag",
        "Forward WebRTC datagrams between clients on one public UDP port and the transceivers "
        "named by the routing tokens in their ICE ufrags (DESIGN §4).",
    ),
    "transceiver": (
        "voicewire.transceiver.service",
        "owns WebRTC sessions on one internal UDP socket; answers gateways over HTTP",
        "Serve the sessions whose routing tokens name this transceiver's UDP socket, answer "
        "gateways' offers on its internal API, heartbeat into the Redis registry, and drain on "
        "SIGTERM (DESIGN §5, §8).",
    ),
    "gateway": (
        "voicewire.gateway.service",
        "the public HTTP signaling API, placing calls on the cluster's transceivers",
        "Serve the OpenAI Realtime calls endpoint, WHIP and client secrets, asking the "
        "least-loaded live transceiver of the cluster for each answer (DESIGN §6, §8).",
    ),
    "agent-server": (
        "voicewire.agents.agent_server",
        "a built-in agent behind the OpenAI Realtime WebSocket protocol",
        "Serve the OpenAI Realtime WebSocket protocol at /v1/realtime from a built-in agent, "
        "one call per socket, so the model side runs as its own service (DESIGN §7, §8).",
    ),
    "serve": (
        "voicewire.serve",
        "everything on one machine: gateway, relay, transceiver and an agent",
        "Run the gateway, a relay, a transceiver and an agent in one command, with the demo "
        "page at the printed URL (DESIGN §8, the embedded default).",
    ),
}
"""Service name → (module with ``add_arguments`` and ``run``, one-line help, description)."""


def build_parser(only: str | None = None) -> Parser:
    """The whole command line; with ``only``, the other services' flags are left out."""
    parser = Parser(
        prog="voicewire", description="Live voice between people and AI models over WebRTC."
    )
    parser.add_argument("--version", action="version", version=f"voicewire {__version__}")
    services = parser.add_subparsers(dest="service", required=True, metavar="SERVICE")
    for name, (module_name, help_text, description) in SERVICES.items():
        sub = services.add_parser(name, help=help_text, description=description)
        if only is None or name == only:
            module = importlib.import_module(module_name)
            module.add_arguments(sub)
            sub.set_defaults(run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    chosen = next((arg for arg in argv if not arg.startswith("-")), None)
    parser = build_parser(chosen if chosen in SERVICES else None)
    args = parser.parse_args(argv)
    return args.run(args, f"voicewire {args.service}")


if __name__ == "__main__":
    sys.exit(main())
