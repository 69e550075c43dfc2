"""DKIM keys, records and the signer in the MTA's pod (dkim/keys.py, render/dkim.py)."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from mailward.api.v1alpha1 import MailDomainSpec
from mailward.dkim import keys
from mailward.dkim.machine import ManagedKey
from mailward.parts.dkim import status_of, timing_for, with_records
from mailward.render.dkim import DKIMSigning, SigningKey, render_milter_conf
from mailward.render.dns_records import desired_rrsets
from mailward.render.postfix import DomainConfig, MTAOptions, render_postfix
from tests.own_mta import OWNER, own_objects

SPEC = {
    "domain": "example.test",
    "mx": [{"host": "mx1.example.test"}],
    "tls": {"secretName": "mx-tls"},
    "dns": {"providerRef": {"name": "bind"}},
}
SIGNING = DKIMSigning(
    "example-dkim",
    (
        SigningKey("example.test", "mw20260101000000e", "ed25519"),
        SigningKey("example.test", "mw20260101000000r", "rsa"),
    ),
)


def test_rsa_key_record_and_private_form() -> None:
    pair = keys.generate("rsa")
    assert pair.private.startswith("-----BEGIN RSA PRIVATE KEY-----")  # PKCS#1, as dkimpy reads
    public = serialization.load_der_public_key(base64.b64decode(pair.public))
    assert isinstance(public, rsa.RSAPublicKey)
    assert public.key_size == 2048
    assert keys.public_of("rsa", pair.private) == pair.public
    text = keys.record_text("rsa", pair.public)
    assert text.startswith("v=DKIM1; k=rsa; p=MIIBIjAN")
    assert len(text) > 255  # so the record needs more than one character-string


def test_ed25519_key_record_and_private_form() -> None:
    pair = keys.generate("ed25519")
    raw = base64.b64decode(pair.public)
    assert len(raw) == 32  # RFC 8463 §4: the bare key, not a SubjectPublicKeyInfo
    seed = base64.b64decode(pair.private.strip())
    derived = ed25519.Ed25519PrivateKey.from_private_bytes(seed).public_key()
    assert derived.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw) == raw
    assert keys.public_of("ed25519", pair.private) == pair.public
    assert keys.record_text("ed25519", pair.public) == f"v=DKIM1; k=ed25519; p={pair.public}"


def test_selectors_are_unique_and_say_their_type() -> None:
    now = datetime(2026, 12, 2, 13, 4, 5, tzinfo=UTC)
    assert keys.new_selector("ed25519", now, ()) == "mw20261202130405e"
    assert keys.new_selector("rsa", now, ()) == "mw20261202130405r"
    assert keys.new_selector("rsa", now, {"mw20261202130405r"}) == "mw20261202130405r2"


def test_managed_keys_in_dns_are_published_beside_pasted_ones() -> None:
    pasted = {"selector": "legacy", "keyType": "rsa", "publicKey": "A" * 40}
    spec = MailDomainSpec.model_validate({**SPEC, "dns": {**SPEC["dns"], "dkim": [pasted]}})
    pair = keys.generate("rsa")
    now = datetime(2026, 1, 1, tzinfo=UTC)
    managed = (
        ManagedKey(selector="mw1r", algorithm="rsa", phase="Active", since=now),
        ManagedKey(selector="mw0r", algorithm="rsa", phase="Withdrawn", since=now),
    )
    published = with_records(spec, managed, {"mw1r": pair.public})
    records = {
        r.name: r
        for r in desired_rrsets(published, tlsa_spki_sha256={}, sts_policy_id="x")
        if "_domainkey" in r.name
    }
    assert set(records) == {"legacy._domainkey.example.test.", "mw1r._domainkey.example.test."}
    (data,) = records["mw1r._domainkey.example.test."].rdata
    # RFC 6376 §3.6.2.2: a key longer than 255 octets is split into several strings.
    strings = data.split('" "')
    assert len(strings) == 2
    assert "".join(s.strip('"') for s in strings) == keys.record_text("rsa", pair.public)
    assert spec.dns is not None
    assert len(spec.dns.dkim) == 1  # the spec itself is not changed
    assert [s.phase for s in status_of(managed).selectors] == ["Withdrawn", "Active"]


def test_retire_after_defaults_to_the_queue_lifetime_plus_the_ttl() -> None:
    spec = MailDomainSpec.model_validate({**SPEC, "dkim": {"managed": True}})
    timing = timing_for(spec)
    assert timing.retire_after == 5 * 86400 + 3600
    assert timing.rotate_after == 180 * 86400
    assert spec.dkim.key_types == ["ed25519", "rsa"]


def test_milter_conf_names_one_selector_per_type() -> None:
    conf = render_milter_conf(SIGNING, "127.0.0.1")
    lines = dict(line.split(" ", 1) for line in conf.splitlines() if not line.startswith("#"))
    assert lines["Socket"] == "inet:8891@127.0.0.1"
    assert lines["Domain"] == "example.test"
    assert lines["Mode"] == "s"
    assert lines["Selector"] == "mw20260101000000r"
    assert lines["KeyFile"] == "/etc/mailward/dkim-keys/mw20260101000000r.key"
    assert lines["SelectorEd25519"] == "mw20260101000000e"
    assert render_milter_conf(SIGNING, "2001:db8::25").count("Socket inet6:8891@2001:db8::25") == 1
    two = DKIMSigning("s", (*SIGNING.keys, SigningKey("example.test", "other", "rsa")))
    with pytest.raises(ValueError, match="at most one"):
        render_milter_conf(two, "127.0.0.1")


def test_postfix_signs_submitted_mail_only_and_tempfails_without_the_signer() -> None:
    domains = [DomainConfig("example.test", ("mx1.example.test",))]
    plain = render_postfix(domains)
    assert "smtpd_milters" not in dict(plain.main)
    config = render_postfix(domains, MTAOptions(dkim=SIGNING))
    assert config.parameter("smtpd_milters") == "inet:127.0.0.1:8891"
    assert config.parameter("non_smtpd_milters") == "$smtpd_milters"
    assert config.parameter("milter_default_action") == "tempfail"
    # Port 25 (mail from other MTAs) bypasses the signer; 587/465 inherit it.
    assert ("smtpd_milters", "") in config.service("smtp").options
    assert not any(k == "smtpd_milters" for k, _ in config.service("submission").options)


def test_the_pod_runs_the_signer_with_only_the_active_keys() -> None:
    spec = MailDomainSpec.model_validate(SPEC)
    from mailward.render.mta_objects import render_own_mta_objects

    objects = render_own_mta_objects(OWNER, spec, [], dkim=SIGNING)
    without = {o["kind"]: o for o in own_objects(spec)}
    by_kind = {o["kind"]: o for o in objects}
    pod = by_kind["StatefulSet"]["spec"]["template"]
    (signer,) = [c for c in pod["spec"]["initContainers"] if c["name"] == "dkim"]
    assert signer["restartPolicy"] == "Always"
    assert signer["securityContext"]["runAsNonRoot"] is True
    assert "livenessProbe" in signer
    (keys_volume,) = [v for v in pod["spec"]["volumes"] if v["name"] == "dkim-keys"]
    assert keys_volume["secret"]["secretName"] == "example-dkim"
    assert [i["key"] for i in keys_volume["secret"]["items"]] == [
        "mw20260101000000e.key",
        "mw20260101000000r.key",
    ]
    configmaps = [
        o for o in objects if o["kind"] == "ConfigMap" and "dkimpy-milter.conf" in o["data"]
    ]
    assert len(configmaps) == 1
    # A new Active key changes the configuration, hence the template's digest: the pods roll.
    old = without["StatefulSet"]["spec"]["template"]["metadata"]["annotations"]
    assert pod["metadata"]["annotations"] != old
    assert "dkim" not in [
        c["name"] for c in without["StatefulSet"]["spec"]["template"]["spec"]["initContainers"]
    ]


def test_the_rotation_asks_the_compliance_resolver_unless_told_otherwise() -> None:
    from mailward.settings import SettingsError, from_environment

    same = from_environment({"MAILWARD_COMPLIANCE_RESOLVER": "127.0.0.54:5353"})
    assert same.dkim_resolver == ("127.0.0.54", 5353)
    own = from_environment(
        {"MAILWARD_COMPLIANCE_RESOLVER": "127.0.0.54", "MAILWARD_DKIM_RESOLVER": "127.0.0.55"}
    )
    assert own.dkim_resolver == ("127.0.0.55", 53)
    with pytest.raises(SettingsError, match="MAILWARD_DKIM_RESOLVER"):
        from_environment({"MAILWARD_DKIM_RESOLVER": "127.0.0.55:dns"})


def test_the_secret_holds_the_keys_and_the_record_and_reads_back() -> None:
    from types import SimpleNamespace

    from mailward.adapters.dkim_keys import (
        ROTATION_ANNOTATION,
        DKIMKeyState,
        secret_body,
        state_from_secret,
    )

    now = datetime(2026, 1, 1, tzinfo=UTC)
    keys_ = (
        ManagedKey(selector="mw1e", algorithm="ed25519", phase="Active", since=now),
        ManagedKey(selector="mw0e", algorithm="ed25519", phase="Withdrawn", since=now),
    )
    pair = keys.generate("ed25519")
    owner = OWNER.reference()
    body = secret_body(
        "ns", "example-dkim", owner, DKIMKeyState(keys=keys_, private={"mw1e": pair.private})
    )
    assert body["metadata"]["ownerReferences"] == [owner]
    assert sorted(body["data"]) == ["mw1e.key"]
    assert pair.private not in str(body["metadata"])  # the record holds no key material
    secret = SimpleNamespace(
        data=body["data"],
        metadata=SimpleNamespace(annotations=body["metadata"]["annotations"], resource_version="7"),
    )
    read = state_from_secret(secret)
    assert (read.keys, read.private, read.resource_version) == (keys_, {"mw1e": pair.private}, "7")
    secret.metadata.annotations = {ROTATION_ANNOTATION: "[{"}
    damaged = state_from_secret(secret)
    assert damaged.keys == ()
    assert damaged.damaged is not None


def test_one_signer_for_several_domains_uses_tables_and_leaves_out_the_incomplete() -> None:
    from mailward.render.dkim import milter_file_items, render_milter_files, unsigned_domains

    fleet = DKIMSigning(
        "fleet-dkim",
        (
            SigningKey("a.test", "mw1e", "ed25519", item="a.test_mw1e.key"),
            SigningKey("a.test", "mw1r", "rsa", item="a.test_mw1r.key"),
            SigningKey("b.test", "mw2e", "ed25519", item="b.test_mw2e.key"),
            SigningKey("b.test", "mw2r", "rsa", item="b.test_mw2r.key"),
            SigningKey("c.test", "mw3e", "ed25519", item="c.test_mw3e.key"),
        ),
    )
    files = render_milter_files(fleet, "127.0.0.1")
    assert sorted(files) == [
        "dkimpy-milter.conf",
        "keytable-ed25519",
        "keytable-rsa",
        "signingtable",
    ]
    conf = files["dkimpy-milter.conf"]
    assert "SigningTable /etc/mailward/dkim/signingtable" in conf
    assert "KeyTableEd25519 /etc/mailward/dkim/keytable-ed25519" in conf
    assert "Domain" not in conf
    assert files["signingtable"] == "*@a.test a.test\n*@b.test b.test\n"
    assert files["keytable-rsa"].splitlines() == [
        "a.test a.test:mw1r:/etc/mailward/dkim-keys/a.test_mw1r.key",
        "b.test b.test:mw2r:/etc/mailward/dkim-keys/b.test_mw2r.key",
    ]
    assert unsigned_domains(fleet) == ["c.test"]
    assert "c.test" not in files["keytable-ed25519"]
    assert milter_file_items(fleet) == {name: name for name in files}
    assert list(render_milter_files(SIGNING, "127.0.0.1")) == ["dkimpy-milter.conf"]


def test_a_fleet_follows_its_domains_active_keys_and_copies_them() -> None:
    from mailward.api.mailserver import MailServerSpec
    from mailward.fleet_handlers import active_dkim_keys
    from mailward.render.mta_objects import fleet_dkim_secret, render_mta_objects
    from mailward.render.mta_server import fleet_server

    status = {
        "dkim": {
            "selectors": [
                {"selector": "mw1e", "algorithm": "ed25519", "phase": "Retiring", "since": "x"},
                {"selector": "mw2e", "algorithm": "ed25519", "phase": "Active", "since": "x"},
                {"selector": "mw2r", "algorithm": "rsa", "phase": "Active", "since": "x"},
                {"selector": "mw3r", "algorithm": "rsa", "phase": "Published", "since": "x"},
            ]
        }
    }
    assert active_dkim_keys(status) == (("mw2e", "ed25519"), ("mw2r", "rsa"))
    assert active_dkim_keys({}) == ()
    spec = MailServerSpec.model_validate(
        {"hosts": [{"host": "mx.fleet.test"}], "tls": {"secretName": "fleet-tls"}}
    )
    fleet = fleet_server("fleet", "mail", "uid-1", spec, "mta:test")
    signing = DKIMSigning(
        fleet_dkim_secret(fleet),
        (SigningKey("a.test", "mw2e", "ed25519", item="a.test_mw2e.key"),),
    )
    from dataclasses import replace

    signed = replace(fleet, options=replace(fleet.options, dkim=signing))
    domains = [DomainConfig("a.test", ("mx.fleet.test",))]
    objects = render_mta_objects(signed, domains, dkim_keys={"a.test_mw2e.key": "c2VlZA==\n"})
    (copy,) = [
        o for o in objects if o["kind"] == "Secret" and o["metadata"]["name"] == "fleet-dkim"
    ]
    assert list(copy["data"]) == ["a.test_mw2e.key"]
    assert copy["metadata"]["namespace"] == "mail"
    assert not [
        o for o in render_mta_objects(fleet, domains) if o["metadata"]["name"] == "fleet-dkim"
    ]
