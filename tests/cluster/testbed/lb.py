"""The bed's UDP load balancer: nftables in vw-lb hashing client address and port onto relays.

``jhash ip saddr . udp sport`` picks one of a fixed number of buckets (16), and a map sends each
bucket to a relay, so different ports of one client can land on different relays, as behind a
cloud UDP load balancer. The buckets matter when a relay leaves: only the buckets of the relay
that left move (to the live relays, round robin); when it comes back it gets exactly its buckets
back. A plain ``mod <live relays>`` would reshuffle every flow on every change. The hash seed is
fixed, because nftables draws a random one when none is given and every rule rewrite would then
move flows at random.

Two modes, both rewriting the whole table in one atomic ``nft -f`` transaction:

``conntrack`` (the default when the ``conntrack`` tool exists): a ``dnat`` rule in the nat
prerouting chain, which is what kube-proxy does for a Kubernetes UDP Service (DESIGN §8). NAT
rules only see the first packet of a flow; the mapping then lives in the conntrack entry, so a
rewritten map does NOT move an existing flow. Taking a relay out therefore also deletes its
conntrack entries (``conntrack -D --reply-src <relay>``, as kube-proxy does for stale UDP
endpoints); the flow's next packet is new to conntrack and is hashed onto a live relay.

``stateless``: ``notrack`` plus ``ip daddr set`` in the raw prerouting hook, and ``ip saddr set
VIP`` on the way back, evaluated on every packet, so a map change moves flows at once with no
conntrack at all (a passthrough/DSR-style load balancer). It is the fallback where the conntrack
tool is missing, and the model for a relay that sends to a client first (a relay that restarted
relearns a flow from the transceiver's downstream packet, DESIGN §4): its packets still come
from the VIP, which conntrack mode cannot give a flow it never saw.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Sequence

from tests.cluster.testbed import netns, topology

TABLE = "voicewire_lb"
BUCKETS = 16
HASH_SEED = 0x766F6963  # "voic": any fixed value; see the module docstring
MODES = ("conntrack", "stateless")


def conntrack_available() -> bool:
    return shutil.which("conntrack") is not None


class LoadBalancer:
    """The rule set in the load balancer namespace, and the live relays it spreads flows over."""

    def __init__(
        self,
        namespace: str,
        relays: Sequence[str],
        *,
        mode: str = "auto",
        vip: str = topology.VIP,
        port: int = topology.RELAY_PORT,
        tcp_forwards: dict[int, tuple[str, int]] | None = None,
        buckets: int = BUCKETS,
    ) -> None:
        if mode == "auto":
            mode = "conntrack" if conntrack_available() else "stateless"
        if mode not in MODES:
            raise ValueError(f"load balancer mode {mode!r} is not one of {MODES}")
        if not relays:
            raise ValueError("a load balancer needs at least one relay")
        self.namespace = namespace
        self.relays = tuple(relays)
        """Every relay address the bed knows, live or not, in bucket-ownership order."""
        self.live = tuple(relays)
        self.mode = mode
        self.vip = vip
        self.port = port
        self.tcp_forwards = dict(tcp_forwards or {})
        self.buckets = buckets

    def bucket_map(self) -> dict[int, str]:
        """Bucket → relay: each bucket's home relay while it is live, else a live one in turn."""
        if not self.live:
            raise ValueError("no live relay to send flows to")
        mapping = {}
        for bucket in range(self.buckets):
            home = self.relays[bucket % len(self.relays)]
            mapping[bucket] = home if home in self.live else self.live[bucket % len(self.live)]
        return mapping

    def ruleset(self) -> str:
        """The nft script that replaces the bed's table atomically (create, delete, re-create)."""
        mapping = ", ".join(f"{bucket} : {relay}" for bucket, relay in self.bucket_map().items())
        pick = (
            f"jhash ip saddr . udp sport mod {self.buckets} seed {HASH_SEED:#x} map {{ {mapping} }}"
        )
        public = f'iifname "{topology.LB_PUBLIC_DEV}" ip daddr {self.vip} udp dport {self.port}'
        nat_rules = [
            f"ip daddr {self.vip} tcp dport {port} dnat to {host}:{target}"
            for port, (host, target) in sorted(self.tcp_forwards.items())
        ]
        raw_rules: list[str] = []
        if self.mode == "conntrack":
            nat_rules.insert(0, f"{public} dnat to {pick}")
        else:
            relays = ", ".join(self.relays)
            raw_rules = [
                f"{public} notrack ip daddr set {pick}",
                f'iifname "{topology.LB_INTERNAL_DEV}" ip saddr {{ {relays} }} '
                f"udp sport {self.port} notrack ip saddr set {self.vip}",
            ]
        lines = [
            f"table ip {TABLE} {{}}",
            f"delete table ip {TABLE}",
            f"table ip {TABLE} {{",
            "  chain raw_prerouting {",
            "    type filter hook prerouting priority raw; policy accept;",
            *(f"    {rule}" for rule in raw_rules),
            "  }",
            "  chain nat_prerouting {",
            "    type nat hook prerouting priority dstnat; policy accept;",
            *(f"    {rule}" for rule in nat_rules),
            "  }",
            "}",
        ]
        return "\n".join(lines) + "\n"

    def apply(self) -> None:
        """Install the current rule set; one transaction, so no packet sees half a table."""
        netns.run(netns.exec_argv(self.namespace, ["nft", "-f", "-"]), input=self.ruleset())

    def set_mode(self, mode: str) -> None:
        """Switch modes; stale conntrack entries from the other mode are flushed with it."""
        if mode not in MODES:
            raise ValueError(f"load balancer mode {mode!r} is not one of {MODES}")
        self.mode = mode
        self.apply()
        if conntrack_available():
            netns.run(netns.exec_argv(self.namespace, ["conntrack", "-F"]), check=False)

    def set_live(self, live: Sequence[str], *, flush: bool = True) -> None:
        """Send new flows to ``live`` relays only; with ``flush``, move the others' flows now.

        In conntrack mode ``flush`` deletes the conntrack entries of every relay that left, which
        is what actually moves their existing flows; ``flush=False`` leaves them pinned to the
        relay that left (the behaviour the test bed proves, and kube-proxy's stale-entry bug).
        """
        unknown = set(live) - set(self.relays)
        if unknown:
            raise ValueError(f"unknown relays {sorted(unknown)}; the bed knows {self.relays}")
        gone = [relay for relay in self.live if relay not in live]
        self.live = tuple(relay for relay in self.relays if relay in live)
        self.apply()
        if flush and self.mode == "conntrack":
            for relay in gone:
                self.flush_conntrack(relay)

    def remove(self, relay: str, *, flush: bool = True) -> None:
        """Take ``relay`` (an address) out of the map: its flows move to the live relays."""
        self.set_live([r for r in self.live if r != relay], flush=flush)

    def restore(self) -> None:
        """Every relay back in the map (each gets its own buckets back)."""
        self.set_live(self.relays, flush=False)

    def flush_conntrack(self, relay: str) -> int:
        """Delete the UDP conntrack entries that map the VIP to ``relay``; return how many."""
        if not conntrack_available():
            raise netns.BedError(
                "the conntrack tool is missing (Debian package conntrack): use mode='stateless'"
            )
        argv = ["conntrack", "-D", "-p", "udp", "--orig-dst", self.vip, "--reply-src", relay]
        # The count comes on stderr, and the exit status is 1 when nothing matched.
        done = subprocess.run(
            netns.exec_argv(self.namespace, argv), capture_output=True, text=True, timeout=30
        )
        out = done.stdout + done.stderr
        if done.returncode != 0 and "flow entries have been deleted" not in out:
            raise netns.BedError(f"conntrack -D failed in {self.namespace}: {out.strip()}")
        return _deleted_count(out)

    def conntrack_entries(self) -> str:
        """``conntrack -L`` inside vw-lb, for debugging and the docs."""
        if not conntrack_available():
            return "(conntrack tool not installed)"
        return netns.run(netns.exec_argv(self.namespace, ["conntrack", "-L"]), check=False)

    def listing(self) -> str:
        """The table as the kernel holds it."""
        argv = ["nft", "list", "table", "ip", TABLE]
        return netns.run(netns.exec_argv(self.namespace, argv), check=False)


def _deleted_count(text: str) -> int:
    match = re.search(r"(\d+) flow entries have been deleted", text)
    return int(match.group(1)) if match else 0
