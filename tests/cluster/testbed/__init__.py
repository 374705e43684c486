"""A multi-host voicewire test bed in Linux network namespaces (DESIGN §8, issue 5).

See ``docs/testbed.md``: client → impairment hop → load balancer (VIP) → relays, transceivers,
gateway and Redis on an internal bridge. ``python -m tests.cluster.testbed up|down|status``.
"""
