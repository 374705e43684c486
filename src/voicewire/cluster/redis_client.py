"""One way to reach Redis for every service, tuned to fail fast.

Redis is on no packet path, only on the paths that place a call, hang one up or heartbeat. When
it is down those should fail within a second into a clear 503 or a logged retry, not hang for
redis-py's defaults (5 s timeouts and backed-off retries), so timeouts are short and a command is
retried once, at once: enough to survive a pooled connection that a Redis restart broke.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

TIMEOUT = 0.5  # seconds, for connecting and for each command


def connect(url: str) -> Redis:
    """A client for ``redis://`` / ``rediss://`` / ``unix://`` URLs; ValueError for a bad one.

    Connects lazily: a Redis that is down at start is only a failing command later.
    """
    return Redis.from_url(
        url,
        decode_responses=True,
        socket_timeout=TIMEOUT,
        socket_connect_timeout=TIMEOUT,
        retry=Retry(NoBackoff(), 1),
    )


@contextlib.contextmanager
def unreachable_as(error: type[Exception], message: str) -> Iterator[None]:
    """Turn any failure to talk to Redis into ``error(message)``, what callers know to handle.

    The message may reach clients; Redis's own words (addresses) stay in ``__cause__`` for logs.
    """
    try:
        yield
    except (RedisError, OSError) as exc:
        raise error(message) from exc
