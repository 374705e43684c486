"""One way to reach Redis for every service, tuned to fail fast.

Redis is on no packet path, only on the paths that place a call, hang one up or heartbeat, and
beside them (a relay's flow lookups run on a thread of their own). When it is down those should
fail within a second into a clear 503 or a logged retry, not hang for
redis-py's defaults (5 s timeouts and backed-off retries), so timeouts are short and a command is
retried once, at once: enough to survive a pooled connection that a Redis restart broke.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import redis
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry as BlockingRetry

TIMEOUT = 0.5  # seconds, for connecting and for each command
_OPTIONS = {"decode_responses": True, "socket_timeout": TIMEOUT, "socket_connect_timeout": TIMEOUT}


def connect(url: str) -> Redis:
    """A client for ``redis://`` / ``rediss://`` / ``unix://`` URLs; ValueError for a bad one.

    Connects lazily: a Redis that is down at start is only a failing command later.
    """
    return Redis.from_url(url, retry=Retry(NoBackoff(), 1), **_OPTIONS)


def connect_blocking(url: str) -> redis.Redis:
    """The same client, blocking, for a thread that has nothing else to do (a relay worker's
    flow lookups, ``relay/flow_recovery.py``). It returns bytes, not text: what it reads is
    judged like bytes from the network, and undecodable bytes must not fail the read."""
    options = {**_OPTIONS, "decode_responses": False}
    return redis.Redis.from_url(url, retry=BlockingRetry(NoBackoff(), 1), **options)


@contextlib.contextmanager
def unreachable_as(error: type[Exception], message: str) -> Iterator[None]:
    """Turn any failure to talk to Redis into ``error(message)``, what callers know to handle.

    The message may reach clients; Redis's own words (addresses) stay in ``__cause__`` for logs.
    """
    try:
        yield
    except (RedisError, OSError) as exc:
        raise error(message) from exc
