"""The bed's hosts, links and addresses: one table the setup code, the tests and the docs share.

Everything lives in private ranges the bed creates itself (10.77.0.0/16) inside network
namespaces, so no packet of the bed can ever reach a real network: the namespaces have no link to
the host's interfaces at all. Names carry a prefix (``vw-`` unless
``VOICEWIRE_TESTBED_PREFIX`` says otherwise) so teardown can remove everything the bed owns by
name alone, even after a run that crashed before it could remember what it made.

::

    vw-client ──▶ vw-impair ──▶ vw-lb ──┬── vw-switch (bridge) ──┬── vw-relay1, vw-relay2
     10.77.1.2     (TUN hop)    VIP      │                        ├── vw-tx1, vw-tx2
                                10.77.0.1│ 10.77.10.1             ├── vw-gw
                                         └────────────────────────┴── vw-redis
"""

from __future__ import annotations

import os
from dataclasses import dataclass

PREFIX_ENV = "VOICEWIRE_TESTBED_PREFIX"
DEFAULT_PREFIX = "vw-"


def default_prefix() -> str:
    """The namespace prefix; another one lets a test build a throwaway bed beside the main one."""
    return os.environ.get(PREFIX_ENV, DEFAULT_PREFIX)


# The public side: the client, the impairment hop, the load balancer's outside leg.
CLIENT = "10.77.1.2"
CLIENT_NET = "10.77.1.0/24"
IMPAIR_CLIENT_SIDE = "10.77.1.1"
IMPAIR_LB_SIDE = "10.77.2.1"
LB_PUBLIC = "10.77.2.2"
VIP = "10.77.0.1"
"""The one public address: relays behind it on UDP 3478, the gateway on TCP 8080."""
PUBLIC_NET = "10.77.0.0/16"

# The internal side: one bridged /24 behind the load balancer, which is its default router.
INTERNAL_NET = "10.77.10.0/24"
LB_INTERNAL = "10.77.10.1"

RELAY_PORT = 3478
RELAY_INTERNAL_PORT = 3479
OPS_PORT = 9100
"""Where services of the bed serve /healthz, /readyz and /metrics (0.0.0.0 in their namespace)."""
GATEWAY_PORT = 8080
REDIS_PORT = 6379

# Interface names inside the namespaces (at most 15 characters).
TUN_UP = "tun-up"
TUN_DOWN = "tun-down"
IMPAIR_CLIENT_DEV = "client0"
IMPAIR_LB_DEV = "lb0"
LB_PUBLIC_DEV = "public0"
LB_INTERNAL_DEV = "internal0"
BRIDGE = "br0"
HOST_DEV = "eth0"

# Policy-routing tables in vw-impair that send UDP into the TUN devices.
TABLE_UP = 100
TABLE_DOWN = 101


@dataclass(frozen=True)
class InternalHost:
    """A host on the internal bridge: its short name and its one address."""

    name: str
    address: str
    role: str


INTERNAL_HOSTS: tuple[InternalHost, ...] = (
    InternalHost("relay1", "10.77.10.11", "relay"),
    InternalHost("relay2", "10.77.10.12", "relay"),
    InternalHost("tx1", "10.77.10.21", "transceiver"),
    InternalHost("tx2", "10.77.10.22", "transceiver"),
    InternalHost("gw", "10.77.10.31", "gateway"),
    InternalHost("redis", "10.77.10.41", "redis"),
)

ROUTERS = ("impair", "lb")
"""The only hosts with ip_forward on."""

HOSTS: tuple[str, ...] = ("client", "impair", "lb", "switch") + tuple(
    host.name for host in INTERNAL_HOSTS
)

ADDRESSES: dict[str, str] = {
    "client": CLIENT,
    "impair": IMPAIR_CLIENT_SIDE,
    "lb": LB_INTERNAL,
    **{host.name: host.address for host in INTERNAL_HOSTS},
}
"""The address to reach each host at (the switch has none: it only bridges)."""

RELAYS: tuple[str, ...] = tuple(h.name for h in INTERNAL_HOSTS if h.role == "relay")
TRANSCEIVERS: tuple[str, ...] = tuple(h.name for h in INTERNAL_HOSTS if h.role == "transceiver")


def address(host: str) -> str:
    """The bed address of ``host`` (``relay1`` → ``10.77.10.11``)."""
    try:
        return ADDRESSES[host]
    except KeyError:
        raise KeyError(f"the bed has no addressed host {host!r}") from None
