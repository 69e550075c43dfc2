"""The DNS part of the local stack: BIND signing and accepting TSIG updates, Unbound validating."""

from __future__ import annotations

import secrets
import stat
import time
from pathlib import Path

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.tsig
import dns.update
import dns.xfr
import dns.zone
import pytest

from mailward_localstack.dns import DNSStack, TsigKey, send_update, zone_signature_problems
from tests.net import addr

pytestmark = pytest.mark.dnsstack

# A TLSA 3 1 1 record's data (any 32-byte hex digest will do for DNS purposes).
TLSA_DATA = "3 1 1 " + "ab" * 32
PROPAGATION_LIMIT = 5.0  # seconds; the resolver caches negative answers for 1 s at most


def _unique_label(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def _answer_types(response: dns.message.Message, name: dns.name.Name) -> set[str]:
    return {dns.rdatatype.to_text(r.rdtype) for r in response.answer if r.name == name}


def _wait_secure(stack: DNSStack, name: dns.name.Name, rdtype: str, limit: float) -> float:
    """Seconds until the resolver answers `name` `rdtype` with data and AD; fails after limit."""
    start = time.monotonic()
    last: dns.message.Message | None = None
    while time.monotonic() - start < limit:
        last = stack.resolver.query(name, rdtype, timeout=1.0)
        if (
            last.rcode() == dns.rcode.NOERROR
            and rdtype in _answer_types(last, name)
            and last.flags & dns.flags.AD
        ):
            return time.monotonic() - start
        time.sleep(0.1)
    pytest.fail(f"{name} {rdtype} not secure after {limit}s; last answer:\n{last}")


def test_signed_zone_validates(dns_stack: DNSStack) -> None:
    r = dns_stack.resolver.query("example.test", "SOA")
    assert r.rcode() == dns.rcode.NOERROR
    assert r.flags & dns.flags.AD
    mx = dns_stack.resolver.query("mx.example.test", "A")
    assert mx.flags & dns.flags.AD
    assert [
        rr.to_text() for rrset in mx.answer if rrset.rdtype == dns.rdatatype.A for rr in rrset
    ] == [addr(25)]


def test_chain_of_trust_is_delegated_from_test(dns_stack: DNSStack) -> None:
    auth = dns_stack.authoritative
    # The parent publishes a signed DS for the child, matching the child's key.
    ds = auth.query("example.test", "DS")
    assert _answer_types(ds, dns.name.from_text("example.test.")) == {"DS", "RRSIG"}
    assert auth.ds_for("example.test")[0] in next(
        rrset for rrset in ds.answer if rrset.rdtype == dns.rdatatype.DS
    )
    # The resolver's trust anchor is the DS of test., nothing below it.
    assert auth.trust_anchor().startswith("test. IN DS ")
    assert auth.trust_anchor().split()[4:6] == ["13", "2"]


def test_tsig_update_is_accepted_and_validates(dns_stack: DNSStack) -> None:
    auth = dns_stack.authoritative
    host = dns.name.from_text(f"{_unique_label('host')}.example.test.")
    tlsa = dns.name.from_text(f"_25._tcp.{host}")
    # Ask first, as a real sender would: the negative answer is now cached.
    before = dns_stack.resolver.query(host, "A")
    assert before.rcode() == dns.rcode.NXDOMAIN

    update = dns.update.UpdateMessage("example.test.", keyring=dns_stack.tsig.key())
    update.replace(host, 300, "A", addr(26))
    update.replace(tlsa, 600, "TLSA", TLSA_DATA)
    t0 = time.monotonic()
    response = send_update(auth.address, auth.port, update)
    assert response.rcode() == dns.rcode.NOERROR
    assert response.had_tsig  # the server signed its answer with the same key

    # The authoritative server signed the new RRsets as part of the update.
    direct = auth.query(tlsa, "TLSA")
    assert _answer_types(direct, tlsa) == {"TLSA", "RRSIG"}

    _wait_secure(dns_stack, host, "A", PROPAGATION_LIMIT)
    _wait_secure(dns_stack, tlsa, "TLSA", PROPAGATION_LIMIT)
    elapsed = time.monotonic() - t0
    print(f"UPDATE to AD answers for A and TLSA: {elapsed:.2f}s")
    answer = dns_stack.resolver.query(tlsa, "TLSA")
    assert answer.flags & dns.flags.AD
    tlsa_rrset = next(r for r in answer.answer if r.rdtype == dns.rdatatype.TLSA)
    assert tlsa_rrset[0].to_text() == TLSA_DATA
    assert auth.signature_problems("example.test") == []


def test_update_with_wrong_secret_is_notauth(dns_stack: DNSStack) -> None:
    auth = dns_stack.authoritative
    forged = TsigKey.generate(name=dns_stack.tsig.name)
    assert forged.secret != dns_stack.tsig.secret
    host = dns.name.from_text(f"{_unique_label('forged')}.example.test.")
    update = dns.update.UpdateMessage("example.test.", keyring=forged.key())
    update.replace(host, 300, "A", addr(66))
    response = send_update(auth.address, auth.port, update)
    assert response.rcode() == dns.rcode.NOTAUTH
    assert response.tsig is not None
    assert response.tsig[0].error == dns.rcode.BADSIG
    assert auth.query(host, "A").rcode() == dns.rcode.NXDOMAIN


def test_unsigned_update_is_refused(dns_stack: DNSStack) -> None:
    auth = dns_stack.authoritative
    host = dns.name.from_text(f"{_unique_label('unsigned')}.example.test.")
    update = dns.update.UpdateMessage("example.test.")
    update.replace(host, 300, "A", addr(67))
    response = send_update(auth.address, auth.port, update)
    assert response.rcode() == dns.rcode.REFUSED
    assert auth.query(host, "A").rcode() == dns.rcode.NXDOMAIN


def test_unsigned_zone_resolves_without_ad(dns_stack: DNSStack) -> None:
    r = dns_stack.resolver.query("www.unsigned.test", "A")
    assert r.rcode() == dns.rcode.NOERROR
    assert _answer_types(r, dns.name.from_text("www.unsigned.test.")) == {"A"}
    assert not r.flags & dns.flags.AD
    # Insecure because the parent proves there is no DS, not because anything failed.
    ds = dns_stack.authoritative.query("unsigned.test", "DS")
    assert ds.rcode() == dns.rcode.NOERROR
    assert not ds.answer
    assert any(rrset.rdtype == dns.rdatatype.NSEC for rrset in ds.authority)


def test_tsig_update_of_unsigned_zone_resolves_insecure(dns_stack: DNSStack) -> None:
    host = dns.name.from_text(f"{_unique_label('plain')}.unsigned.test.")
    update = dns_stack.authoritative.new_update("unsigned.test")
    update.replace(host, 300, "A", addr(68))
    assert dns_stack.authoritative.send_update(update).rcode() == dns.rcode.NOERROR
    r = dns_stack.resolver.query(host, "A")
    assert r.rcode() == dns.rcode.NOERROR
    assert _answer_types(r, host) == {"A"}
    assert not r.flags & dns.flags.AD


def test_signed_zone_without_ds_is_insecure(dns_stack: DNSStack) -> None:
    r = dns_stack.resolver.query("www.island.test", "A")
    assert r.rcode() == dns.rcode.NOERROR
    assert not r.flags & dns.flags.AD
    # ... although the zone itself is signed.
    direct = dns_stack.authoritative.query("www.island.test", "A")
    assert "RRSIG" in _answer_types(direct, dns.name.from_text("www.island.test."))


def test_bogus_zone_gives_servfail(dns_stack: DNSStack) -> None:
    r = dns_stack.resolver.query("www.bogus.test", "A")
    assert r.rcode() == dns.rcode.SERVFAIL
    assert not r.answer
    codes = {e.code for e in r.extended_errors()}
    assert codes & {
        dns.edns.EDECode.DNSSEC_BOGUS,
        dns.edns.EDECode.DNSKEY_MISSING,
        dns.edns.EDECode.RRSIGS_MISSING,
        dns.edns.EDECode.NO_ZONE_KEY_BIT_SET,
    }, codes
    # With checking disabled the data is there: the failure is validation, nothing else.
    cd = dns_stack.resolver.query("www.bogus.test", "A", checking_disabled=True)
    assert cd.rcode() == dns.rcode.NOERROR
    assert _answer_types(cd, dns.name.from_text("www.bogus.test.")) >= {"A"}


def test_axfr_without_tsig_is_refused(dns_stack: DNSStack) -> None:
    auth = dns_stack.authoritative
    zone = dns.zone.Zone(dns.name.from_text("example.test."))
    xfr_query, _ = dns.xfr.make_query(zone)
    with pytest.raises(dns.xfr.TransferError) as excinfo:
        dns.query.inbound_xfr(auth.address, zone, xfr_query, port=auth.port, timeout=5)
    assert excinfo.value.rcode == dns.rcode.REFUSED


def test_axfr_with_tsig_returns_the_signed_zone(dns_stack: DNSStack) -> None:
    zone = dns_stack.authoritative.axfr("example.test")
    origin = dns.name.from_text("example.test.")
    assert zone.get_rdataset(origin, "SOA") is not None
    assert zone.get_rdataset(origin, "DNSKEY") is not None
    assert zone.get_rdataset(dns.name.from_text("mx.example.test."), "A") is not None
    assert zone_signature_problems(zone) == []
    parent = dns_stack.authoritative.axfr("test")
    assert zone_signature_problems(parent) == []
    assert parent.get_rdataset(origin, "DS") is not None


def test_stack_can_be_reattached_from_its_state_dir(dns_stack: DNSStack) -> None:
    state_dir = Path(dns_stack.authoritative.state_dir).parent
    other = DNSStack.attach(state_dir)
    assert other.tsig == dns_stack.tsig
    assert other.authoritative.trust_anchor() == dns_stack.authoritative.trust_anchor()
    assert other.authoritative.is_running()
    assert other.resolver.is_running()
    assert (other.resolver.address, other.resolver.port) == (
        dns_stack.resolver.address,
        dns_stack.resolver.port,
    )
    assert [z.name for z in other.zones] == [z.name for z in dns_stack.zones]


def test_tsig_key_file_is_private_and_readable_back(dns_stack: DNSStack) -> None:
    key_file = dns_stack.authoritative.tsig_file
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert TsigKey.from_bind_file(key_file) == dns_stack.tsig
    assert dns_stack.tsig.algorithm == "hmac-sha256"
