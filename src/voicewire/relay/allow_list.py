"""Which internal addresses the relay may talk to: the transceiver networks, as CIDRs.

Downstream datagrams are accepted only from these networks, and upstream datagrams are sent only
to them, even when a valid token (or a flow record in Redis) names another address: a leaked
routing secret still cannot aim the relay outside the transceiver networks.

The transceiver checks the other way with the same class (``--allow-relays``): only the relay
networks may hand it datagrams that claim, in their relay header, to come from any client.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
LOOPBACK = "127.0.0.0/8,::1/128"  # the default on both sides: everything on one machine


class AllowList:
    """An immutable set of networks with a cache of the addresses already judged."""

    def __init__(self, networks: Iterable[IPNetwork]) -> None:
        self.networks = tuple(networks)
        self._verdicts: dict[str, bool] = {}

    @classmethod
    def parse(cls, spec: str) -> AllowList:
        """Read comma-separated CIDRs, such as ``10.0.0.0/8,fd00::/8``."""
        networks = []
        for item in spec.split(","):
            item = item.strip()
            if item:
                try:
                    networks.append(ipaddress.ip_network(item, strict=False))
                except ValueError as exc:
                    raise ValueError(f"not a network: {item!r} ({exc})") from None
        if not networks:
            raise ValueError("the allow-list is empty")
        return cls(networks)

    def permits(self, host: str) -> bool:
        """Is this IP literal inside one of the networks? IPv4-mapped IPv6 counts as IPv4."""
        verdict = self._verdicts.get(host)
        if verdict is None:
            verdict = self._judge(host)
            if len(self._verdicts) < 4096:  # peers are few; never let strangers grow it
                self._verdicts[host] = verdict
        return verdict

    def _judge(self, host: str) -> bool:
        try:
            address = ipaddress.ip_address(host.partition("%")[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self.networks)

    def __str__(self) -> str:
        return ",".join(str(network) for network in self.networks)
