"""Command-line flags that also read ``VOICEWIRE_*`` environment variables, shared by services.

On Kubernetes configuration arrives as environment variables; on a laptop as flags. Every flag
takes its default from its variable, and a flag on the command line wins. Values from either
go through the same parser, so a bad environment value fails with the same one-line error.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, NoReturn

from yarl import URL

from voicewire.wire.routing_token import RoutingKeys

SECRETS_ENV = "VOICEWIRE_ROUTING_SECRETS"


class ConfigError(Exception):
    """The configuration cannot work; the message says what to change."""


class Parser(argparse.ArgumentParser):
    """argparse with a one-line error: ``voicewire relay: error: …`` and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def flag(parser: argparse.ArgumentParser, name: str, *, env: str, help: str, **kwargs: Any) -> None:
    """Add ``--name`` whose default comes from ``env`` when set."""
    default = kwargs.pop("default", None)
    shown = "" if default is None else f"; default {default}"
    parser.add_argument(
        name, default=os.environ.get(env, default), help=f"{help} [env {env}{shown}]", **kwargs
    )


def log_level_flag(parser: argparse.ArgumentParser) -> None:
    """``--log-level``, the same for every service."""
    flag(
        parser,
        "--log-level",
        env="VOICEWIRE_LOG_LEVEL",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="verbosity of the JSON log lines on stderr",
    )


def secrets_file_flag(parser: argparse.ArgumentParser) -> None:
    """``--secrets-file``, read with ``routing_keys``: every service that signs or checks tokens."""
    flag(
        parser,
        "--secrets-file",
        metavar="PATH",
        env="VOICEWIRE_ROUTING_SECRETS_FILE",
        help="file of routing secrets, 'kid:hex' per line or comma-separated, the signing key "
        f"first; or set {SECRETS_ENV} to the same text",
    )


def drain_grace_flag(parser: argparse.ArgumentParser) -> None:
    """``--drain-grace``: after SIGTERM, how long a service lets its calls go on."""
    flag(
        parser,
        "--drain-grace",
        env="VOICEWIRE_DRAIN_GRACE",
        type=positive_float,
        default=30.0,
        metavar="SECONDS",
        help="after SIGTERM, how long live calls may go on before they are ended",
    )


def cluster_flags(parser: argparse.ArgumentParser) -> None:
    """``--cluster-id`` and ``--redis``: which cluster a service is in, and its registry."""
    flag(
        parser,
        "--cluster-id",
        env="VOICEWIRE_CLUSTER_ID",
        type=cluster_id,
        default=0,
        metavar="N",
        help="the cluster (0..65535) named in routing tokens and registry keys",
    )
    flag(
        parser,
        "--redis",
        env="VOICEWIRE_REDIS_URL",
        type=redis_url,
        metavar="URL",
        help="Redis shared by the cluster (transceiver registry, flow records), e.g. "
        "redis://redis:6379/0 (off when unset)",
    )


def redis_url(text: str) -> str:
    """A ``redis://``, ``rediss://`` or ``unix://`` URL, checked without importing redis-py
    (a relay must start fast: DESIGN §9)."""
    try:
        url = URL(text)
    except ValueError:
        url = URL()
    if url.scheme not in ("redis", "rediss", "unix") or not (url.host or url.path):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a Redis URL (redis://, rediss:// or unix://)"
        )
    return text


def host_port(text: str) -> tuple[str, int]:
    """Parse ``HOST:PORT`` or ``[IPv6]:PORT``."""
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise argparse.ArgumentTypeError(f"{text!r}: write IPv6 addresses as [ADDRESS]:PORT")
    try:
        number = int(port)
    except ValueError:
        number = -1
    if not 0 <= number <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r}: port must be 0..65535")
    return host, number


def is_wildcard(address: tuple[str, int]) -> bool:
    """True for a listening address on all interfaces: nobody can be told to send there."""
    return address[0] in ("0.0.0.0", "::")


def http_url(text: str) -> str:
    """An ``http://`` or ``https://`` base URL, without a trailing slash."""
    try:
        url = URL(text)
    except ValueError:
        url = URL()
    if url.scheme not in ("http", "https") or not url.host:
        raise argparse.ArgumentTypeError(f"{text!r} is not an http:// or https:// URL")
    return str(url).rstrip("/")


def cluster_id(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 0xFFFF:
        raise argparse.ArgumentTypeError(f"{text} is outside 0..65535")
    return value


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive integer")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number")
    return value


def routing_keys(secrets_file: str | None) -> RoutingKeys:
    """The routing secrets, from ``--secrets-file`` or the environment variable: exactly one."""
    inline = os.environ.get(SECRETS_ENV)
    if secrets_file and inline:
        raise ConfigError(f"give the routing secrets once: --secrets-file or {SECRETS_ENV}")
    if secrets_file:
        try:
            with open(secrets_file, encoding="ascii") as handle:
                spec = handle.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read secrets file {secrets_file}: {exc}") from None
    elif inline:
        spec = inline
    else:
        raise ConfigError(
            f"no routing secrets: give --secrets-file or set {SECRETS_ENV}=kid:hex[,kid:hex…]"
        )
    try:
        return RoutingKeys.parse(spec)
    except ValueError as exc:
        raise ConfigError(f"routing secrets: {exc}") from None


def fail(prog: str, message: str, status: int = 2) -> NoReturn:
    sys.stderr.write(f"{prog}: error: {message}\n")
    sys.exit(status)
