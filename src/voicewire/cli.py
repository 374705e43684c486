"""The ``voicewire`` command: one subcommand per service of DESIGN §8."""

from __future__ import annotations

import sys

from voicewire import __version__, serve
from voicewire.flags import Parser
from voicewire.relay import command as relay_command


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
