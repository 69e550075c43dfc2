"""The RFC 2136 provider against the real BIND of the local stack (DNSSEC, signing every update),
without the operator: the kept copy of the zone follows every change by IXFR and stays equal to a
fresh AXFR, a change someone makes between mailward's read and its UPDATE is refused by the
server and planned again, drift is repaired, and a pass with nothing to change sends nothing."""

from __future__ import annotations

import asyncio
import secrets

import dns.name
import dns.rdatatype
import pytest

from mailward.adapters import dns_rfc2136
from mailward.adapters.dns_rfc2136 import RFC2136Config, RFC2136Provider
from mailward.api.v1alpha1 import MailDomainSpec
from mailward.plan.records import Owner, Plan, decode_registry, registry_name
from mailward.render.dns_records import RRset, desired_rrsets
from mailward_localstack.dns import DNSStack
from tests.fixtures_dnspublish import ZONE, zone_rrsets

pytestmark = pytest.mark.dnsstack


def _provider(stack: DNSStack) -> RFC2136Provider:
    tsig = stack.tsig
    config = RFC2136Config(
        stack.authoritative.address,
        stack.authoritative.port,
        tsig.name,
        tsig.algorithm,
        tsig.secret,
        "the test stack's key",
    )
    return RFC2136Provider(config, "test")


def _domain() -> str:
    return f"copy-{secrets.token_hex(4)}.{ZONE}"


def _owner(domain: str) -> Owner:
    return Owner("test", domain.split(".")[0], f"uid-{domain}")


def _desired(domain: str, priority: int = 10) -> list[RRset]:
    spec = MailDomainSpec.model_validate(
        {
            "domain": domain,
            "mx": [{"host": f"mx.{domain}", "priority": priority, "addresses": ["192.0.2.25"]}],
            "tls": {"secretName": "mx-tls"},
            "dns": {"providerRef": {"name": "test"}, "dmarc": {"rua": [f"mailto:d@{domain}"]}},
            "tlsRpt": {"rua": [f"mailto:tlsrpt@{domain}"]},
        }
    )
    return desired_rrsets(spec, tlsa_spki_sha256={f"mx.{domain}": ["ab" * 32]}, sts_policy_id="1")


def _publish(provider: RFC2136Provider, domain: str, desired: list[RRset]) -> Plan:
    return asyncio.run(provider.publish(_owner(domain), domain, desired)).plan


def _copy_view(provider: RFC2136Provider) -> tuple[int | None, dict[tuple[str, str], RRset]]:
    copy = dns_rfc2136._copies[provider._copy_key(dns.name.from_text(ZONE))]
    return copy.serial, {k: v for k, v in copy.rrsets().items() if k[1] != "SOA"}


def _served_serial(stack: DNSStack) -> int:
    soa = stack.authoritative.axfr(ZONE).get_rdataset("@", dns.rdatatype.SOA)
    assert soa is not None
    return int(soa[0].serial)


def _copy_and_served(
    provider: RFC2136Provider, stack: DNSStack
) -> tuple[int | None, dict[tuple[str, str], RRset], int, dict[tuple[str, str], RRset]]:
    """The kept copy and a fresh AXFR at one serial. BIND's own signing maintenance may move
    the serial at any moment (a CI run saw 39 kept against 40 served): then the copy is brought
    up to date the way the next publish would (IXFR) and both are read again."""
    serial, view = _copy_view(provider)
    for _ in range(5):
        before = _served_serial(stack)
        served = zone_rrsets(stack)
        if _served_serial(stack) == before:
            if _copy_view(provider)[0] != before:
                provider._read_zone(dns.name.from_text(ZONE))
            serial, view = _copy_view(provider)
            if serial == before:
                break
    return serial, view, before, served


def test_the_kept_copy_follows_own_and_foreign_updates_and_equals_a_fresh_axfr(
    dns_stack: DNSStack,
) -> None:
    provider = _provider(dns_stack)
    first, second = _domain(), _domain()
    _publish(provider, first, _desired(first))
    copy = dns_rfc2136._copies[provider._copy_key(dns.name.from_text(ZONE))]
    full_reads = copy.fetched_at
    # Someone else's changes: a new name, an RRset added then removed, a TTL changed, and one
    # of mailward's own records deleted (drift) ...
    other = f"other.{first}."
    update = dns_stack.authoritative.new_update(ZONE)
    update.add(other, 300, "TXT", '"someone else"')
    update.add(other, 300, "A", "192.0.2.7")
    dns_stack.authoritative.send_update(update)
    update = dns_stack.authoritative.new_update(ZONE)
    update.delete(other, "A")
    update.replace(other, 60, "TXT", '"someone else"', '"and more"')
    update.delete(f"{first}.", "MX")
    dns_stack.authoritative.send_update(update)
    # ... and mailward's own UPDATE for another domain: its read brings them all in by IXFR.
    plan = _publish(provider, second, _desired(second))
    assert plan.create
    assert copy is dns_rfc2136._copies[provider._copy_key(dns.name.from_text(ZONE))]
    assert copy.fetched_at == full_reads, "read by AXFR again, not by IXFR"
    # The next read (the drift repair) is an IXFR too, and so is the one of the pass after it,
    # which sends nothing: the copy then holds what the server serves.
    sent = dns_rfc2136.UPDATES_SENT.sent
    repaired = _publish(provider, first, _desired(first))
    assert [r.key for r in repaired.create] == [(f"{first}.", "MX")]
    assert _publish(provider, first, _desired(first)).empty
    assert dns_rfc2136.UPDATES_SENT.sent == sent + 1
    assert copy.fetched_at == full_reads
    serial, view, served_serial, served = _copy_and_served(provider, dns_stack)
    assert serial == served_serial
    assert view == served
    assert served[(other, "TXT")] == RRset(other, "TXT", 60, ('"and more"', '"someone else"'))
    assert (other, "A") not in view


def test_a_record_someone_creates_between_read_and_update_is_refused_then_left_alone(
    dns_stack: DNSStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The foreign record is written to the real server right before mailward's UPDATE leaves,
    after mailward read the zone: the server refuses the UPDATE on its prerequisite, mailward
    reads again and publishes everything else, and reports the record as someone else's."""
    provider = _provider(dns_stack)
    domain = _domain()
    foreign = (f"_dmarc.{domain}.", "TXT")
    plans: list[Plan] = []
    send = provider._send_update

    def racing(zone: dns.name.Name, plan: Plan) -> None:
        if not plans:
            update = dns_stack.authoritative.new_update(ZONE)
            update.add(foreign[0], 300, "TXT", '"v=DMARC1; p=none"')
            dns_stack.authoritative.send_update(update)
        plans.append(plan)
        send(zone, plan)

    monkeypatch.setattr(provider, "_send_update", racing)
    sent = dns_rfc2136.UPDATES_SENT.sent
    desired = _desired(domain)
    plan = _publish(provider, domain, desired)
    assert dns_rfc2136.UPDATES_SENT.sent == sent + 2
    assert foreign in {r.key for r in plans[0].create}
    assert foreign not in {r.key for r in plans[1].create}
    assert [c.key for c in plan.conflicts] == [foreign]
    zone = zone_rrsets(dns_stack)
    assert zone[foreign] == RRset(foreign[0], "TXT", 300, ('"v=DMARC1; p=none"',))
    assert all(zone[r.key] == r for r in desired if r.key != foreign)
    registry = decode_registry(zone[(registry_name(domain), "TXT")], domain)
    assert foreign not in registry.keys
    # Level-based: the next pass finds everything as it should be and sends nothing.
    again = _publish(provider, domain, desired)
    assert dns_rfc2136.UPDATES_SENT.sent == sent + 2
    assert [c.key for c in again.conflicts] == [foreign]


def test_an_owned_record_changed_between_read_and_update_is_planned_again(
    dns_stack: DNSStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    provider = _provider(dns_stack)
    domain = _domain()
    _publish(provider, domain, _desired(domain, priority=10))
    mx = f"{domain}."
    plans: list[Plan] = []
    send = provider._send_update

    def racing(zone: dns.name.Name, plan: Plan) -> None:
        if not plans:
            update = dns_stack.authoritative.new_update(ZONE)
            update.replace(mx, 300, "MX", f"30 mx.{domain}.")
            dns_stack.authoritative.send_update(update)
        plans.append(plan)
        send(zone, plan)

    monkeypatch.setattr(provider, "_send_update", racing)
    desired = _desired(domain, priority=20)
    plan = _publish(provider, domain, desired)
    assert len(plans) == 2
    # The second plan starts from what the server held after the foreign change.
    ((before, after),) = plans[1].update
    assert before.rdata == (f"30 mx.{domain}.",)
    assert after.rdata == (f"20 mx.{domain}.",)
    assert plan.update == plans[1].update
    zone = zone_rrsets(dns_stack)
    assert all(zone[r.key] == r for r in desired)
    sent = dns_rfc2136.UPDATES_SENT.sent
    assert _publish(provider, domain, desired).empty
    assert dns_rfc2136.UPDATES_SENT.sent == sent
