"""Loopback addresses of the test stack.

All test servers live in one /24 of 127.0.0.0/8, 127.88.0.0/24 unless MAILWARD_TEST_NET names
another prefix (e.g. `127.91.0`), so two test sessions, or a test session and the demo
(127.77.0.0/24), can run on one machine at the same time.
"""

from __future__ import annotations

import os

TEST_NET = os.environ.get("MAILWARD_TEST_NET", "127.88.0")


def addr(host: int) -> str:
    """The address `<TEST_NET>.<host>`."""
    if not 1 <= host <= 254:
        raise ValueError(f"host part {host} outside 1..254")
    return f"{TEST_NET}.{host}"


# The real node's stack (tests/fixtures_cluster.py) takes a /24 of its own; its upper half is
# the cluster's Service range. Derived from TEST_NET so two sessions still do not collide.
_first, _second, _third = TEST_NET.split(".")
NODE_NET = os.environ.get("MAILWARD_TEST_NODE_NET", f"127.{(int(_second) + 100) % 256}.{_third}")
