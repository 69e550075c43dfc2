"""pytest plugin: the local CA and the DNS part of the "internet in a box".

Register with `pytest_plugins = ["fixtures_dns"]` in tests/conftest.py. Both fixtures are
session-scoped; the DNS servers are stopped at the end of the session whatever happens.

Addresses: the authoritative server on 127.88.0.53, the validating resolver on 127.88.0.54,
both port 53 (root needed; the demo uses 127.77.0.x with the same classes). They can be moved
with MAILWARD_TEST_NET (see tests/net.py), e.g. to run two test sessions at once.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from mailward_localstack._process import stop_all
from mailward_localstack.dns import DNSStack, ZoneSpec
from mailward_localstack.pki import LocalCA
from tests.net import addr

AUTH_ADDRESS = addr(53)
RESOLVER_ADDRESS = addr(54)
DNS_PORT = 53

MX_ADDRESS = addr(25)

TEST_ZONES: tuple[ZoneSpec, ...] = (
    # Signed, DS in test.: secure (AD).
    ZoneSpec(
        "example.test",
        records=(
            "@ IN MX 10 mx",
            f"mx IN A {MX_ADDRESS}",
        ),
    ),
    # Not signed, no DS: insecure (resolves, no AD).
    ZoneSpec("unsigned.test", signed=False, records=(f"www IN A {addr(80)}",)),
    # Signed, but the DS in test. matches no key: bogus (SERVFAIL from the resolver).
    ZoneSpec("bogus.test", ds="bogus", records=(f"www IN A {addr(81)}",)),
    # Signed, no DS in test.: an island of security, insecure like an unsigned zone.
    ZoneSpec("island.test", ds="none", records=(f"www IN A {addr(82)}",)),
)


def _dns_prerequisites() -> str | None:
    """Why the DNS stack cannot run here, or None."""
    if os.geteuid() != 0:
        return "the DNS stack needs root (port 53 and a loopback alias for BIND)"
    path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    missing = [p for p in ("named", "unbound", "ip") if shutil.which(p, path=path) is None]
    if missing:
        return f"{', '.join(missing)} not installed (scripts/install-system-deps.sh)"
    return None


@pytest.fixture(scope="session")
def local_ca(tmp_path_factory: pytest.TempPathFactory) -> LocalCA:
    """A fresh root CA (ECDSA P-256) in a session temp directory."""
    return LocalCA.create(tmp_path_factory.mktemp("local-ca"))


@pytest.fixture(scope="session")
def dns_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DNSStack]:
    """BIND (signed `test.` + TEST_ZONES) and Unbound validating from the DS of `test.`.

    `.authoritative`, `.resolver`, `.tsig`, `.zones`. Tests that add records should use names
    of their own; the stack is shared by the whole session.
    """
    reason = _dns_prerequisites()
    if reason:
        pytest.skip(reason)
    state_dir = tmp_path_factory.mktemp("dns-stack")
    stack = DNSStack.create(
        state_dir,
        auth_address=AUTH_ADDRESS,
        resolver_address=RESOLVER_ADDRESS,
        zones=TEST_ZONES,
        auth_port=DNS_PORT,
        resolver_port=DNS_PORT,
    )
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()
        stop_all(state_dir)
