"""The DNS records of a MailDomain (pure rendering, golden file) and the ownership planner."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from mailward.api.crd import dns_provider_crd
from mailward.api.dnsprovider import ClusterDNSProviderSpec, DNSProviderSpec
from mailward.api.v1alpha1 import HostTarget, MailDomainSpec
from mailward.plan.records import (
    Owner,
    calculate,
    decode_registry,
    encode_registry,
    registry_name,
    release,
)
from mailward.render.dns_records import RRset, desired_rrsets, make_rrset, tlsrpt_record
from mailward.render.mta_sts import policy_for, policy_id

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "dns-records.example.test.txt"
OWNER = Owner("mail", "example", "0c5e1c1e-0000-4000-8000-000000000001")
DIGEST = "5f" * 32
NEXT_DIGEST = "a0" * 32


def _spec(**dns: Any) -> MailDomainSpec:
    return MailDomainSpec.model_validate(
        {
            "domain": "example.test",
            "mx": [
                {"host": "mx1.example.test", "priority": 10, "addresses": ["192.0.2.25"]},
                {"host": "mx2.example.test", "priority": 20, "addresses": ["2001:db8::25"]},
            ],
            "tls": {"secretName": "mx-tls"},
            "dns": {"providerRef": {"name": "local-bind"}, **dns},
            "tlsRpt": {"rua": ["https://reports.example.test/v1", "mailto:tlsrpt@example.test"]},
        }
    )


def _desired(spec: MailDomainSpec) -> list[RRset]:
    return desired_rrsets(
        spec,
        tlsa_spki_sha256={"mx1.example.test": [DIGEST, NEXT_DIGEST], "mx2.example.test": [DIGEST]},
        sts_policy_id=policy_id(policy_for(spec)),
    )


def _zone_text(rrsets: list[RRset]) -> str:
    return "".join(f"{r.name} {r.ttl} IN {r.type} {d}\n" for r in rrsets for d in r.rdata)


def test_rendered_records_match_the_golden_file() -> None:
    spec = _spec(
        dmarc={"rua": ["mailto:dmarc@example.test"]},
        dkim=[{"selector": "s2026", "keyType": "ed25519", "publicKey": "A" * 44}],
        srv={"submissions": {"target": "mail.example.test", "port": 465}},
        mtaStsEndpoint={"addresses": ["192.0.2.80"]},
    )
    text = _zone_text(_desired(spec))
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text()


def test_tlsa_is_short_lived_and_holds_current_and_next_key() -> None:
    (tlsa,) = [r for r in _desired(_spec()) if r.name == "_25._tcp.mx1.example.test."]
    assert tlsa.type == "TLSA"
    assert tlsa.ttl == 600
    assert tlsa.rdata == (f"3 1 1 {DIGEST}", f"3 1 1 {NEXT_DIGEST}")


def test_the_issuers_key_is_published_as_2_1_1_beside_the_3_1_1_records() -> None:
    issuer = "c" * 64
    rrsets = desired_rrsets(
        _spec(),
        tlsa_spki_sha256={"mx1.example.test": [DIGEST]},
        sts_policy_id="x",
        tlsa_issuer_sha256={"mx1.example.test": [issuer]},
    )
    (tlsa,) = [r for r in rrsets if r.name == "_25._tcp.mx1.example.test."]
    assert tlsa.rdata == (f"2 1 1 {issuer}", f"3 1 1 {DIGEST}")


def test_dane_disabled_publishes_no_tlsa() -> None:
    spec = _spec().model_copy(update={"dane": _spec().dane.model_copy(update={"enabled": False})})
    assert not [r for r in _desired(spec) if r.type == "TLSA"]


def test_defaults_spf_dmarc_and_srv_not_offered() -> None:
    by_key = {r.key: r for r in _desired(_spec())}
    assert by_key[("example.test.", "TXT")].rdata == ('"v=spf1 mx -all"',)
    assert by_key[("_dmarc.example.test.", "TXT")].rdata == (
        '"v=DMARC1; p=reject; adkim=s; aspf=s"',
    )
    for service in ("_submissions._tcp", "_submission._tcp", "_imaps._tcp", "_pop3s._tcp"):
        assert by_key[(f"{service}.example.test.", "SRV")].rdata == ("0 0 0 .",)


def test_tlsrpt_lists_mailto_first() -> None:
    record = tlsrpt_record(["https://r.example.test/", "mailto:a@example.test"])
    assert record == "v=TLSRPTv1; rua=mailto:a@example.test,https://r.example.test/"


def test_empty_rua_publishes_the_collector_mailbox() -> None:
    spec = _spec().model_copy(update={"tls_rpt": _spec().tls_rpt.model_copy(update={"rua": []})})
    by_key = {r.key: r for r in _desired(spec)}
    assert by_key[("_smtp._tls.example.test.", "TXT")].rdata == (
        '"v=TLSRPTv1; rua=mailto:tlsrpt@tlsrpt.example.test"',
    )
    # The mailbox's host is published only when the collector's address is known.
    assert not [key for key in by_key if key[0] == "tlsrpt.example.test."]


def test_collector_addresses_give_tlsrpt_host_an_mx_and_no_tlsa() -> None:
    spec = _spec(tlsRptCollector={"addresses": ["192.0.2.26", "2001:db8::26"]})
    by_key = {r.key: r for r in _desired(spec)}
    host = "tlsrpt.example.test."
    assert by_key[(host, "MX")].rdata == (f"10 {host}",)
    assert by_key[(host, "A")].rdata == ("192.0.2.26",)
    assert by_key[(host, "AAAA")].rdata == ("2001:db8::26",)
    # TR-03108-10-M: the report mailbox should not enforce DANE.
    assert not [r for r in by_key.values() if r.name.endswith(f"._tcp.{host}")]


def test_the_spec_names_the_collector_before_its_load_balancer() -> None:
    balancer = HostTarget(addresses=["203.0.113.9"])
    found = desired_rrsets(
        _spec(), tlsa_spki_sha256={}, sts_policy_id="x", tlsrpt_collector=balancer
    )
    by_key = {r.key: r.rdata for r in found}
    assert by_key[("tlsrpt.example.test.", "A")] == ("203.0.113.9",)
    spec = _spec(tlsRptCollector={"addresses": ["192.0.2.26"]})
    found = desired_rrsets(spec, tlsa_spki_sha256={}, sts_policy_id="x", tlsrpt_collector=balancer)
    assert {r.key: r.rdata for r in found}[("tlsrpt.example.test.", "A")] == ("192.0.2.26",)


def test_collector_cname_is_the_only_record_at_its_name() -> None:
    spec = _spec(tlsRptCollector={"cname": "collector.provider.test"})
    at_host = [r for r in _desired(spec) if r.name == "tlsrpt.example.test."]
    assert [(r.type, r.rdata) for r in at_host] == [("CNAME", ("collector.provider.test.",))]


def test_sts_id_follows_the_policy() -> None:
    first = _spec()
    changed = first.model_copy(
        update={"mta_sts": first.mta_sts.model_copy(update={"max_age": 86400})}
    )
    ids = [
        next(r for r in _desired(spec) if r.name == "_mta-sts.example.test.").rdata
        for spec in (first, changed)
    ]
    assert ids[0] != ids[1]
    assert ids[0] == (f'"v=STSv1; id={policy_id(policy_for(first))}"',)


def test_long_dkim_key_is_split_into_255_octet_strings() -> None:
    spec = _spec(dkim=[{"selector": "rsa", "publicKey": "B" * 600}])
    (dkim,) = [r for r in _desired(spec) if r.name.startswith("rsa._domainkey")]
    strings = dkim.rdata[0].split('" "')
    assert len(strings) == 3


@pytest.mark.parametrize(
    "bad",
    [
        {"spf": {"record": "v=spf1 mx +all"}},
        {"spf": {"record": "v=spf1 mx ?all"}},
        {"ttl": {"tlsa": 4}},
        {"mtaStsEndpoint": {}},
        {"mtaStsEndpoint": {"addresses": ["192.0.2.1"], "cname": "x.example.test"}},
        {"tlsRptCollector": {}},
        {"tlsRptCollector": {"addresses": ["192.0.2.1"], "cname": "x.example.test"}},
        {"tlsRptCollector": {"addresses": ["not-an-address"]}},
        {
            "dkim": [
                {"selector": "a", "publicKey": "A" * 44},
                {"selector": "a", "publicKey": "B" * 44},
            ]
        },
    ],
)
def test_invalid_dns_settings_are_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        _spec(**bad)


# -- planner ---------------------------------------------------------------------------------


def _current(*rrsets: RRset) -> dict[tuple[str, str], RRset]:
    return {r.key: r for r in rrsets}


def test_first_publication_creates_everything_and_the_registry() -> None:
    desired = _desired(_spec())
    plan = calculate(owner=OWNER, domain="example.test", current={}, desired=desired)
    assert len(plan.create) == len(desired)
    assert not plan.update
    assert not plan.delete
    assert plan.registry_current is None
    assert plan.registry_desired is not None
    assert decode_registry(plan.registry_desired, "example.test").keys == {r.key for r in desired}


def test_nothing_to_do_when_the_zone_matches() -> None:
    desired = _desired(_spec())
    registry = encode_registry(OWNER, "example.test", [r.key for r in desired])
    plan = calculate(
        owner=OWNER, domain="example.test", current=_current(*desired, registry), desired=desired
    )
    assert plan.empty
    assert not plan.conflicts


def test_foreign_rrset_is_a_conflict_and_left_alone() -> None:
    desired = _desired(_spec())
    foreign = make_rrset("_dmarc.example.test", "TXT", 300, ['"v=DMARC1; p=none"'])
    plan = calculate(owner=OWNER, domain="example.test", current=_current(foreign), desired=desired)
    assert [c.key for c in plan.conflicts] == [foreign.key]
    touched = {r.key for r in plan.create} | {n.key for _, n in plan.update}
    touched |= {r.key for r in plan.delete}
    assert foreign.key not in touched
    assert plan.registry_desired is not None
    assert foreign.key not in decode_registry(plan.registry_desired, "example.test").keys


def test_cname_does_not_share_its_name() -> None:
    spec = _spec(mtaStsEndpoint={"cname": "sts.provider.test"})
    foreign = make_rrset("mta-sts.example.test", "A", 300, ["192.0.2.9"])
    plan = calculate(
        owner=OWNER, domain="example.test", current=_current(foreign), desired=_desired(spec)
    )
    assert [c.key for c in plan.conflicts] == [("mta-sts.example.test.", "CNAME")]


def test_owned_rrsets_are_updated_and_dropped_ones_deleted() -> None:
    old_spec = _spec(dkim=[{"selector": "old", "publicKey": "A" * 44}])
    old = _desired(old_spec)
    registry = encode_registry(OWNER, "example.test", [r.key for r in old])
    new_spec = _spec(ttl={"default": 7200})
    plan = calculate(
        owner=OWNER,
        domain="example.test",
        current=_current(*old, registry),
        desired=_desired(new_spec),
    )
    assert [r.name for r in plan.delete] == ["old._domainkey.example.test."]
    assert all(new.ttl in (7200, 600) for _, new in plan.update)
    assert {n.key for _, n in plan.update} == {
        r.key for r in _desired(new_spec) if r.type != "TLSA"
    }


def test_another_owners_registry_blocks_everything() -> None:
    desired = _desired(_spec())
    theirs = encode_registry(Owner("other", "example", "uid-2"), "example.test", [desired[0].key])
    plan = calculate(owner=OWNER, domain="example.test", current=_current(theirs), desired=desired)
    assert plan.empty
    assert len(plan.conflicts) == len(desired)
    assert "MailDomain other/example" in plan.conflicts[0].reason


def test_release_removes_exactly_the_listed_rrsets() -> None:
    desired = _desired(_spec())
    registry = encode_registry(OWNER, "example.test", [r.key for r in desired])
    foreign = make_rrset("www.example.test", "A", 300, ["192.0.2.80"])
    plan = release(
        owner=OWNER, domain="example.test", current=_current(*desired, registry, foreign)
    )
    assert {r.key for r in plan.delete} == {r.key for r in desired}
    assert plan.registry_desired is None
    assert plan.registry_current == registry
    assert registry.name == registry_name("example.test")


# -- provider resources ----------------------------------------------------------------------


def test_provider_needs_exactly_one_backend() -> None:
    rfc = {
        "nameserver": {"host": "192.0.2.53"},
        "tsigKeyName": "mailward-update",
        "tsigSecretRef": {"name": "tsig", "key": "secret"},
    }
    assert DNSProviderSpec.model_validate({"rfc2136": rfc}).rfc2136 is not None
    assert DNSProviderSpec.model_validate({"externalDNS": {}}).external_dns is not None
    for bad in ({}, {"rfc2136": rfc, "externalDNS": {}}):
        with pytest.raises(ValidationError):
            DNSProviderSpec.model_validate(bad)
    with pytest.raises(ValidationError):  # a cluster provider must name the Secret's namespace
        ClusterDNSProviderSpec.model_validate({"rfc2136": rfc})
    with pytest.raises(ValidationError):
        DNSProviderSpec.model_validate({"rfc2136": {**rfc, "tsigAlgorithm": "hmac-md5"}})


@pytest.mark.parametrize("cluster", [False, True])
def test_provider_crds_are_bounded_and_described(cluster: bool) -> None:
    crd = dns_provider_crd(cluster=cluster)
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]

    def walk(node: dict[str, Any], path: str) -> None:
        assert node.get("description"), path
        if node["type"] == "string":
            assert "maxLength" in node or "enum" in node, path
        for name, sub in node.get("properties", {}).items():
            walk(sub, f"{path}.{name}")

    walk(schema, "spec")
    assert crd["spec"]["scope"] == ("Cluster" if cluster else "Namespaced")


def test_sts_id_is_kept_while_the_new_policy_is_not_served() -> None:
    old = _desired(_spec())
    registry = encode_registry(OWNER, "example.test", [r.key for r in old])
    changed = _spec().model_copy(
        update={"mta_sts": _spec().mta_sts.model_copy(update={"max_age": 86400})}
    )
    sts_key = ("_mta-sts.example.test.", "TXT")
    plan = calculate(
        owner=OWNER,
        domain="example.test",
        current=_current(*old, registry),
        desired=_desired(changed),
        keep_if_owned=frozenset({sts_key}),
    )
    assert plan.empty
    first = calculate(
        owner=OWNER,
        domain="example.test",
        current={},
        desired=_desired(changed),
        keep_if_owned=frozenset({sts_key}),
    )
    assert sts_key in {r.key for r in first.create}
