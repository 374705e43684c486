"""``python -m tests.cluster.testbed up|down|status|impair|lb``: the bed by hand.

``up`` leaves the bed running after this command exits (the impairment hop keeps running in
vw-impair); ``down`` removes every namespace with the prefix and every process in one, whoever
started it and whether or not the run that made it finished.
"""

from __future__ import annotations

import argparse
import sys

from tests.cluster.testbed import netns, topology
from tests.cluster.testbed.bed import Bed
from tests.cluster.testbed.impair import Impairment


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.cluster.testbed", description=__doc__)
    parser.add_argument(
        "--prefix",
        default=topology.default_prefix(),
        help=f"namespace prefix (default {topology.DEFAULT_PREFIX}, or ${topology.PREFIX_ENV})",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="build the bed (after removing any leftovers)")
    _impairment_flags(up)
    up.add_argument("--lb-mode", default="auto", choices=("auto", "conntrack", "stateless"))
    commands.add_parser("down", help="remove every namespace with the prefix and its processes")
    commands.add_parser("status", help="namespaces, processes, LB rules, impairment counters")
    impair = commands.add_parser("impair", help="change the running hop's delay, jitter, loss")
    _impairment_flags(impair)
    lb = commands.add_parser("lb", help="choose the relays new flows go to")
    lb.add_argument("--live", default=",".join(topology.RELAYS), help="e.g. relay2")
    lb.add_argument("--mode", default="auto", choices=("auto", "conntrack", "stateless"))
    lb.add_argument(
        "--no-flush", action="store_true", help="keep conntrack entries of removed relays"
    )
    args = parser.parse_args(argv)

    problems = netns.missing_prerequisites()
    if problems:
        parser.exit(2, "cannot run the test bed:\n  " + "\n  ".join(problems) + "\n")

    if args.command == "up":
        bed = Bed(prefix=args.prefix, impairment=_impairment(args), lb_mode=args.lb_mode)
        bed.up()
        print(f"up in {bed.up_seconds:.2f} s; logs in {bed.state_dir}/logs")
        print(bed.status(), end="")
    elif args.command == "down":
        bed = Bed(prefix=args.prefix)
        bed.down()
        left = bed.namespaces()
        print("down" if not left else f"still there: {left}")
        return 0 if not left else 1
    elif args.command == "status":
        print(Bed(prefix=args.prefix).status(), end="")
    elif args.command == "impair":
        Bed(prefix=args.prefix).set_impairment(_impairment(args))
        print("impairment:", _impairment(args).to_json())
    elif args.command == "lb":
        bed = Bed(prefix=args.prefix, lb_mode=args.mode)
        live = [topology.address(name.strip()) for name in args.live.split(",") if name.strip()]
        bed.lb.set_live(live, flush=not args.no_flush)
        print(bed.lb.listing(), end="")
    return 0


def _impairment_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rtt-ms", type=float, default=40.0, help="round trip added (split)")
    parser.add_argument("--jitter-ms", type=float, default=5.0, help="± per direction")
    parser.add_argument("--loss", type=float, default=0.01, help="per direction, 0..1")
    parser.add_argument("--reorder", action="store_true", help="let jitter reorder a flow")
    parser.add_argument("--seed", type=int, help="random seed for loss and jitter")


def _impairment(args: argparse.Namespace) -> Impairment:
    return Impairment.symmetric(args.rtt_ms, args.jitter_ms, args.loss, args.reorder, args.seed)


if __name__ == "__main__":
    sys.exit(main())
