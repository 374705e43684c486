"""``voicewire relay``: flags, validation with one-line errors, and the supervisor's lifetime."""

from __future__ import annotations

import argparse
import logging

from voicewire import logs
from voicewire.flags import (
    ConfigError,
    cluster_flags,
    fail,
    flag,
    host_port,
    log_level_flag,
    positive_float,
    positive_int,
    routing_keys,
    secrets_file_flag,
)
from voicewire.relay.allow_list import LOOPBACK, AllowList
from voicewire.relay.sockets import BindError
from voicewire.relay.supervisor import RelayConfig, RelaySupervisor

DEFAULT_SOCKET_BUFFER = 425_984

log = logging.getLogger("voicewire.relay")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    flag(
        parser,
        "--listen",
        metavar="HOST:PORT",
        env="VOICEWIRE_RELAY_LISTEN",
        type=host_port,
        default="0.0.0.0:3478",
        help="public UDP address clients send to ([::]:PORT serves IPv6 and IPv4)",
    )
    flag(
        parser,
        "--internal",
        metavar="HOST:PORT",
        env="VOICEWIRE_RELAY_INTERNAL",
        type=host_port,
        default="0.0.0.0:3479",
        help="internal UDP address for transceiver traffic; worker i binds PORT+i",
    )
    flag(
        parser,
        "--workers",
        metavar="N",
        env="VOICEWIRE_RELAY_WORKERS",
        type=positive_int,
        default=1,
        help="worker processes sharing the public port (SO_REUSEPORT); about one per core",
    )
    flag(
        parser,
        "--allow-transceivers",
        metavar="CIDR[,CIDR…]",
        env="VOICEWIRE_ALLOW_TRANSCEIVERS",
        default=LOOPBACK,
        help="CIDRs of the transceiver networks; the relay talks to nothing else internally",
    )
    secrets_file_flag(parser)
    flag(
        parser,
        "--flow-idle-timeout",
        metavar="SECONDS",
        env="VOICEWIRE_FLOW_IDLE_TIMEOUT",
        type=positive_float,
        default=30.0,
        help="seconds after which a silent client flow is forgotten",
    )
    cluster_flags(parser)
    flag(
        parser,
        "--metrics",
        metavar="HOST:PORT",
        env="VOICEWIRE_RELAY_METRICS",
        type=host_port,
        help="HTTP address serving /metrics, /healthz and /readyz (off when unset)",
    )
    flag(
        parser,
        "--socket-buffer",
        metavar="BYTES",
        env="VOICEWIRE_RELAY_SOCKET_BUFFER",
        type=positive_int,
        default=DEFAULT_SOCKET_BUFFER,
        help="socket buffer bytes; bigger only adds queueing delay under overload",
    )
    log_level_flag(parser)


def run(args: argparse.Namespace, prog: str) -> int:
    logs.configure(args.log_level)
    try:
        config = RelayConfig(
            listen=args.listen,
            internal=args.internal,
            workers=args.workers,
            allow=AllowList.parse(args.allow_transceivers),
            keys=routing_keys(args.secrets_file),
            idle_timeout=args.flow_idle_timeout,
            metrics=args.metrics,
            socket_buffer=args.socket_buffer,
            log_level=args.log_level,
            redis=args.redis,
            cluster_id=args.cluster_id,
        )
    except (ConfigError, ValueError) as exc:
        fail(prog, str(exc))
    try:
        supervisor = RelaySupervisor(config)
    except (BindError, OSError) as exc:
        fail(prog, str(exc), status=1)
    supervisor.run()
    return 0
