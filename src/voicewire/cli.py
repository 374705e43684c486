"""The ``voicewire`` command: one subcommand per service of DESIGN §8."""

from __future__ import annotations

import sys

from voicewire import __version__, serve
from voicewire.agents import agent_server
from voicewire.flags import Parser
from voicewire.gateway import service as gateway_service
from voicewire.relay import command as relay_command
from voicewire.transceiver import service as transceiver_service


def build_parser() -> Parser:
    parser = Parser(
        prog="voicewire", description="Live voice between people and AI models over WebRTC."
    )
    parser.add_argument("--version", action="version", version=f"voicewire {__version__}")
    services = parser.add_subparsers(dest="service", required=True, metavar="SERVICE")
    relay = services.add_parser(
        "relay",
        help="the stateless UDP edge: one public port, routes on the signed ICE ufrag",
        description="Forward WebRTC datagrams between clients on one public UDP port and the "
        "transceivers named by the routing tokens in their ICE ufrags (DESIGN §4).",
    )
    relay_command.add_arguments(relay)
    relay.set_defaults(run=relay_command.run)
    transceiver = services.add_parser(
        "transceiver",
        help="owns WebRTC sessions on one internal UDP socket; answers gateways over HTTP",
        description="Serve the sessions whose routing tokens name this transceiver's UDP "
        "socket, answer gateways' offers on its internal API, heartbeat into the Redis "
        "registry, and drain on SIGTERM (DESIGN §5, §8).",
    )
    transceiver_service.add_arguments(transceiver)
    transceiver.set_defaults(run=transceiver_service.run)
    gateway = services.add_parser(
        "gateway",
        help="the public HTTP signaling API, placing calls on the cluster's transceivers",
        description="Serve the OpenAI Realtime calls endpoint, WHIP and client secrets, asking "
        "the least-loaded live transceiver of the cluster for each answer (DESIGN §6, §8).",
    )
    gateway_service.add_arguments(gateway)
    gateway.set_defaults(run=gateway_service.run)
    agents = services.add_parser(
        "agent-server",
        help="a built-in agent behind the OpenAI Realtime WebSocket protocol",
        description="Serve the OpenAI Realtime WebSocket protocol at /v1/realtime from a "
        "built-in agent, one call per socket, so the model side runs as its own service "
        "(DESIGN §7, §8).",
    )
    agent_server.add_arguments(agents)
    agents.set_defaults(run=agent_server.run)
    embedded = services.add_parser(
        "serve",
        help="everything on one machine: gateway, relay, transceiver and an agent",
        description="Run the gateway, a relay, a transceiver and an agent in one command, with "
        "the demo page at the printed URL (DESIGN §8, the embedded default).",
    )
    serve.add_arguments(embedded)
    embedded.set_defaults(run=serve.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return args.run(args, f"voicewire {args.service}")


if __name__ == "__main__":
    sys.exit(main())
