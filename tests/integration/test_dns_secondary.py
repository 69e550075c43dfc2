"""A BIND secondary that follows the primary by NOTIFY and IXFR, and can be held back.

Real BIND primary and secondary and a real Unbound (tests/fixtures_secondary.py): UPDATEs go
to the primary with the stack's TSIG key, and every answer is read from the servers themselves,
without recursion and with the DO bit, as the operator will read them before a TLSA key switch.
"""

from __future__ import annotations

import secrets
import time

import dns.dnssec
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

from mailward_localstack.dns import DNSStack, query
from tests.fixtures_secondary import (
    PRIMARY_ADDRESS,
    RESOLVER_CACHE_MAX_TTL,
    ROLLOVER_ZONE,
    SECONDARY_ADDRESS,
    SINGLE_ZONE,
    secondary_of,
)

pytestmark = pytest.mark.dnsstack

ZONE = dns.name.from_text(ROLLOVER_ZONE)
TLSA_TTL = 10
FOLLOW_LIMIT = 3.0
"""Seconds within which the secondary must serve an UPDATE (NOTIFY + IXFR; about 0.1 s here)."""
HOLD_OBSERVATION = 5.0
"""Seconds over which a held secondary must keep its serial."""


def _tlsa(byte: str) -> str:
    return "3 1 1 " + byte * 32


def _fresh_tlsa_name() -> dns.name.Name:
    return dns.name.from_text(f"_25._tcp.mx-{secrets.token_hex(4)}.{ROLLOVER_ZONE}.")


def _rrsets(
    response: dns.message.Message, name: dns.name.Name
) -> tuple[dns.rrset.RRset | None, dns.rrset.RRset | None]:
    """The TLSA RRset for `name` in the answer and the RRSIG covering it."""
    data = sigs = None
    for rrset in response.answer:
        if rrset.name != name:
            continue
        if rrset.rdtype == dns.rdatatype.TLSA:
            data = rrset
        elif rrset.rdtype == dns.rdatatype.RRSIG and rrset.covers == dns.rdatatype.TLSA:
            sigs = rrset
    return data, sigs


def _validated_tlsa(stack: DNSStack, server: str, name: dns.name.Name) -> set[str]:
    """The TLSA RRset `server` serves for `name` (RD=0, DO=1, authoritative), after checking
    its RRSIG against the zone's DNSKEY RRset as that same server serves it."""
    port = stack.authoritative.port
    response = query(server, port, name, "TLSA", recursion_desired=False, tcp=True)
    assert response.rcode() == dns.rcode.NOERROR, dns.rcode.to_text(response.rcode())
    assert response.flags & dns.flags.AA
    data, sigs = _rrsets(response, name)
    assert data is not None, f"{server} serves no TLSA for {name}"
    assert sigs is not None, f"{server} serves the TLSA for {name} without RRSIG"
    keys = query(server, port, ZONE, "DNSKEY", recursion_desired=False, tcp=True)
    dnskey = next(r for r in keys.answer if r.rdtype == dns.rdatatype.DNSKEY)
    dns.dnssec.validate(data, sigs, {ZONE: dnskey})
    return {rdata.to_text() for rdata in data}


def _publish_tlsa(stack: DNSStack, name: dns.name.Name, *data: str) -> int:
    """Replace `name`'s TLSA RRset on the primary in one UPDATE; the primary's new serial."""
    update = stack.authoritative.new_update(ROLLOVER_ZONE)
    update.replace(name, TLSA_TTL, "TLSA", *data)
    stack.authoritative.send_update(update)
    serial = stack.authoritative.serial(ROLLOVER_ZONE)
    assert serial is not None
    return serial


def test_secondary_serves_the_signed_zone_as_transferred(rollover_dns: DNSStack) -> None:
    secondary = secondary_of(rollover_dns)
    assert secondary.address == SECONDARY_ADDRESS
    assert secondary.serial(ROLLOVER_ZONE) == rollover_dns.authoritative.serial(ROLLOVER_ZONE)
    copy = secondary.axfr(ROLLOVER_ZONE)
    original = rollover_dns.authoritative.axfr(ROLLOVER_ZONE)
    # The very same signed data (RRSIGs, NSEC chain, DNSKEY), not a copy signed again.
    assert copy == original
    assert secondary.signature_problems(ROLLOVER_ZONE) == []
    # The secondary is authoritative (AA) and answers with RRSIGs, like the primary.
    soa = secondary.query(ROLLOVER_ZONE, "SOA")
    assert soa.flags & dns.flags.AA
    assert {rrset.rdtype for rrset in soa.answer} == {dns.rdatatype.SOA, dns.rdatatype.RRSIG}


def test_update_on_primary_reaches_secondary_within_seconds(rollover_dns: DNSStack) -> None:
    secondary = secondary_of(rollover_dns)
    name = _fresh_tlsa_name()
    records = {_tlsa("ab"), _tlsa("cd")}
    t0 = time.monotonic()
    serial = _publish_tlsa(rollover_dns, name, *records)
    waited = secondary.wait_serial(ROLLOVER_ZONE, serial, timeout=FOLLOW_LIMIT)
    elapsed = time.monotonic() - t0
    print(f"UPDATE on the primary to serial {serial} on the secondary: {elapsed:.3f}s")
    assert secondary.serial(ROLLOVER_ZONE) == serial
    assert waited <= elapsed
    assert _validated_tlsa(rollover_dns, SECONDARY_ADDRESS, name) == records
    assert _validated_tlsa(rollover_dns, PRIMARY_ADDRESS, name) == records


def test_held_secondary_keeps_its_serial_until_released(rollover_dns: DNSStack) -> None:
    secondary = secondary_of(rollover_dns)
    primary = rollover_dns.authoritative
    name = _fresh_tlsa_name()
    old = _publish_tlsa(rollover_dns, name, _tlsa("01"))
    secondary.wait_serial(ROLLOVER_ZONE, old, timeout=FOLLOW_LIMIT)

    with secondary.held(ROLLOVER_ZONE) as held_serial:
        assert held_serial == old
        assert secondary.is_held(ROLLOVER_ZONE)
        new = _publish_tlsa(rollover_dns, name, _tlsa("01"), _tlsa("02"))
        assert new != old
        # A refresh, as the SOA refresh timer would start one, finds nothing newer either.
        secondary.rndc("refresh", ROLLOVER_ZONE)
        deadline = time.monotonic() + HOLD_OBSERVATION
        while time.monotonic() < deadline:
            assert primary.serial(ROLLOVER_ZONE) == new
            assert secondary.serial(ROLLOVER_ZONE) == old
            time.sleep(0.25)
        # What a propagation check sees: the primary has both records, the secondary the old.
        assert _validated_tlsa(rollover_dns, PRIMARY_ADDRESS, name) == {_tlsa("01"), _tlsa("02")}
        assert _validated_tlsa(rollover_dns, SECONDARY_ADDRESS, name) == {_tlsa("01")}
        log = secondary.process.log_file.read_text(errors="replace")
        assert f"refused notify from non-primary: {PRIMARY_ADDRESS}#" in log
        t0 = time.monotonic()
    caught_up = secondary.wait_serial(ROLLOVER_ZONE, new, timeout=FOLLOW_LIMIT)
    print(f"release to serial {new} on the secondary: {time.monotonic() - t0:.3f}s")
    assert caught_up <= FOLLOW_LIMIT
    assert not secondary.is_held(ROLLOVER_ZONE)
    assert secondary.serial(ROLLOVER_ZONE) == new
    assert _validated_tlsa(rollover_dns, SECONDARY_ADDRESS, name) == {_tlsa("01"), _tlsa("02")}
    # Following again: the next UPDATE arrives by NOTIFY, with no help.
    newer = _publish_tlsa(rollover_dns, name, _tlsa("02"))
    secondary.wait_serial(ROLLOVER_ZONE, newer, timeout=FOLLOW_LIMIT)
    assert _validated_tlsa(rollover_dns, SECONDARY_ADDRESS, name) == {_tlsa("02")}


def test_ns_rrset_names_both_servers_and_is_secure(rollover_dns: DNSStack) -> None:
    ns1 = dns.name.from_text(f"ns1.{ROLLOVER_ZONE}.")
    ns2 = dns.name.from_text(f"ns2.{ROLLOVER_ZONE}.")
    response = rollover_dns.resolver.query(ROLLOVER_ZONE, "NS")
    assert response.rcode() == dns.rcode.NOERROR
    assert response.flags & dns.flags.AD
    ns = next(r for r in response.answer if r.rdtype == dns.rdatatype.NS)
    assert {rdata.target for rdata in ns} == {ns1, ns2}
    # Each name server's address, as a client looking for "all authoritative servers" finds it.
    for name, address in ((ns1, PRIMARY_ADDRESS), (ns2, SECONDARY_ADDRESS)):
        a = rollover_dns.resolver.query(name, "A")
        assert a.flags & dns.flags.AD
        assert [
            r.to_text() for rrset in a.answer if rrset.rdtype == dns.rdatatype.A for r in rrset
        ] == [address]
    # The parent delegates to both, with glue.
    parent = rollover_dns.authoritative.axfr("test")
    delegation = parent.get_rdataset(ZONE, "NS")
    assert delegation is not None
    assert {rdata.target for rdata in delegation} == {ns1, ns2}
    glue = parent.get_rdataset(ns2, "A")
    assert glue is not None
    assert [r.to_text() for r in glue] == [SECONDARY_ADDRESS]
    # Both servers answer for the zone with authority, and agree on its NS RRset.
    for server in (rollover_dns.authoritative, secondary_of(rollover_dns)):
        direct = server.query(ROLLOVER_ZONE, "NS")
        assert direct.flags & dns.flags.AA
        assert {
            r.target for rrset in direct.answer if rrset.rdtype == dns.rdatatype.NS for r in rrset
        } == {ns1, ns2}


def test_zone_without_secondary_is_served_by_the_primary_alone(rollover_dns: DNSStack) -> None:
    response = rollover_dns.resolver.query(SINGLE_ZONE, "NS")
    assert response.flags & dns.flags.AD
    ns = next(r for r in response.answer if r.rdtype == dns.rdatatype.NS)
    assert [rdata.target.to_text() for rdata in ns] == [f"ns1.{SINGLE_ZONE}."]
    # The secondary does not serve it, and the primary NOTIFYs nobody about it.
    refused = secondary_of(rollover_dns).query(SINGLE_ZONE, "SOA")
    assert refused.rcode() == dns.rcode.REFUSED
    conf = rollover_dns.authoritative.conf_file.read_text()
    stanza = conf.split(f'zone "{SINGLE_ZONE}"', 1)[1].split("};\n", 1)[0]
    assert "notify" not in stanza
    assert "notify no;" in conf


def test_resolver_caches_answers_for_their_ttl(rollover_dns: DNSStack) -> None:
    """The session resolver would drop answers after 5 s; this one keeps them for their TTL."""
    assert rollover_dns.resolver.cache_max_ttl == RESOLVER_CACHE_MAX_TTL
    secondary = secondary_of(rollover_dns)
    name = _fresh_tlsa_name()
    serial = _publish_tlsa(rollover_dns, name, _tlsa("aa"))
    secondary.wait_serial(ROLLOVER_ZONE, serial, timeout=FOLLOW_LIMIT)

    def resolved() -> tuple[set[str], int]:
        r = rollover_dns.resolver.query(name, "TLSA")
        assert r.flags & dns.flags.AD
        data, _ = _rrsets(r, name)
        assert data is not None
        return {rdata.to_text() for rdata in data}, data.ttl

    first, _ = resolved()
    cached_at = time.monotonic()
    assert first == {_tlsa("aa")}
    serial = _publish_tlsa(rollover_dns, name, _tlsa("bb"))
    secondary.wait_serial(ROLLOVER_ZONE, serial, timeout=FOLLOW_LIMIT)
    # Both servers serve the new record; the resolver keeps the old one for the TTL.
    seen_new_at = None
    while time.monotonic() - cached_at < TLSA_TTL + 5:
        data, ttl = resolved()
        if data == {_tlsa("bb")}:
            seen_new_at = time.monotonic() - cached_at
            break
        assert data == {_tlsa("aa")}
        assert ttl <= TLSA_TTL
        time.sleep(0.5)
    assert seen_new_at is not None, "the resolver never dropped the old TLSA RRset"
    print(f"old TLSA RRset answered from cache for {seen_new_at:.1f}s (TTL {TLSA_TTL})")
    assert seen_new_at >= TLSA_TTL - 1.5


def test_stack_with_secondary_can_be_reattached(rollover_dns: DNSStack) -> None:
    secondary = secondary_of(rollover_dns)
    other = DNSStack.attach(secondary.state_dir.parent)
    assert other.secondary is not None
    assert other.secondary.is_running()
    assert (other.secondary.address, other.secondary.zones) == (SECONDARY_ADDRESS, (ROLLOVER_ZONE,))
    assert other.authoritative.zone(ROLLOVER_ZONE).secondary
    assert other.authoritative.secondary_address == SECONDARY_ADDRESS
    # A hold made through one handle is seen, and undone, through the other.
    held = other.secondary.hold(ROLLOVER_ZONE)
    assert secondary.is_held(ROLLOVER_ZONE)
    name = _fresh_tlsa_name()
    new = _publish_tlsa(rollover_dns, name, _tlsa("ee"))
    time.sleep(1.0)
    assert secondary.serial(ROLLOVER_ZONE) == held != new
    secondary.release(ROLLOVER_ZONE)
    assert not other.secondary.is_held(ROLLOVER_ZONE)
    secondary.wait_serial(ROLLOVER_ZONE, new, timeout=FOLLOW_LIMIT)
