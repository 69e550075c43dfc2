"""The Postfix configuration and the MTA's Kubernetes objects, rendered purely; golden files."""

from __future__ import annotations

import asyncio
import difflib
import os
from pathlib import Path

import pytest

from mailward.adapters.workloads import StatefulSetObservation
from mailward.parts.mta import mta_verdict
from mailward.reconcile import parse_spec
from mailward.render.mta_objects import CONFIG_HASH_ANNOTATION
from mailward.render.postfix import (
    TLS12_CIPHERS,
    DomainConfig,
    MasterEntry,
    MTALayout,
    MTAOptions,
    apply_layout,
    render_master_cf,
    render_postfix,
)
from mailward.render.resolver import Forwarder, ResolverSettings
from mailward.sidecars.tlspolicy import Lookup, PolicyServer, decide, local_peer, split_host_port
from mailward_localstack.postfix import local_layout
from tests.manifests import valid_maildomain
from tests.own_mta import OWNER, own_config, own_files, own_objects

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "postfix"
SPEC = parse_spec(valid_maildomain()["spec"])


def test_rendered_files_match_the_golden_files() -> None:
    files = own_config(SPEC, ["alice", "bob"]).all_files()
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            (GOLDEN / name.replace("/", "_")).write_text(text)
    for name, text in files.items():
        assert text == (GOLDEN / name.replace("/", "_")).read_text(), name


def test_tls_profile_follows_tr_03116_4() -> None:
    config = own_config(SPEC, [])
    assert config.parameter("smtpd_tls_protocols") == ">=TLSv1.2"
    assert config.parameter("smtpd_tls_mandatory_protocols") == ">=TLSv1.2"
    assert config.parameter("smtp_tls_protocols") == ">=TLSv1.2"
    suites = config.parameter("tls_high_cipherlist").split(":")
    assert suites == list(TLS12_CIPHERS)
    assert all(s.startswith("ECDHE-") and "GCM" in s for s in suites)
    assert suites[0] == "ECDHE-ECDSA-AES128-GCM-SHA256"
    assert config.parameter("tls_preempt_cipherlist") == "yes"
    groups = config.parameter("tls_eecdh_auto_curves").split()
    assert {"prime256v1", "brainpoolP256r1"} <= set(groups)
    assert "X25519" not in groups
    assert set(config.parameter("tls_ssl_options").split()) == {
        "NO_COMPRESSION",
        "NO_RENEGOTIATION",
    }
    assert "TLS_AES_128_GCM_SHA256" in config.files["openssl.cnf"]
    assert "CHACHA20" not in config.files["openssl.cnf"]


def test_relay_vrfy_outbound_and_queue_settings() -> None:
    config = own_config(SPEC, [])
    assert config.parameter("mynetworks") == ""
    assert config.parameter("smtpd_relay_restrictions") == (
        "permit_mynetworks, reject_unauth_destination"
    )
    assert config.parameter("smtpd_banner") == "$myhostname ESMTP"
    assert "VRFY postmaster" in config.files["command_filter"]
    assert config.parameter("smtp_dns_support_level") == "dnssec"
    assert config.parameter("smtp_tls_security_level") == "dane"
    assert config.parameter("smtp_tls_policy_maps").startswith("socketmap:inet:127.0.0.1:8461")
    assert config.parameter("maximal_queue_lifetime") == "5d"
    assert config.parameter("minimal_backoff_time") == "1800s"
    assert config.parameter("hopcount_limit") == "100"  # RFC 5321 §6.3
    assert config.parameter("maillog_file") == "/dev/stdout"
    submission = dict(config.service("submission").options)
    assert submission["smtpd_tls_security_level"] == "encrypt"
    assert submission["smtpd_relay_restrictions"] == "permit_sasl_authenticated,reject"
    assert dict(config.service("submissions").options)["smtpd_tls_wrappermode"] == "yes"


def test_the_loopback_layout_changes_only_paths_and_addresses() -> None:
    """What the integration tests run differs from the pod only in MTALayout's fields."""
    domains = [DomainConfig("example.test", ("mx1.example.test",), ("alice",))]
    pod = render_postfix(domains, MTAOptions(), MTALayout())
    local = render_postfix(domains, MTAOptions(), local_layout(Path("/tmp/x"), "127.0.0.9"))
    differing = {k for (k, v), (k2, v2) in zip(pod.main, local.main, strict=True) if v != v2}
    assert [k for k, _ in pod.main] == [k for k, _ in local.main]
    assert differing == {
        "queue_directory",
        "data_directory",
        "inet_interfaces",
        "inet_protocols",
        "maillog_file",
        "maillog_file_prefixes",
        "smtpd_tls_chain_files",
        "virtual_mailbox_base",
        "smtp_tls_policy_maps",
    }
    assert pod.master == local.master
    pod_files, local_files = pod.rendered_files(), local.rendered_files()
    changed = {n for n in pod_files if pod_files[n] != local_files[n]}
    assert changed == {"main.cf", "sasl/smtpd.conf"}
    diff = [
        line
        for line in difflib.ndiff(
            pod_files["sasl/smtpd.conf"].splitlines(), local_files["sasl/smtpd.conf"].splitlines()
        )
        if line[:1] in "+-"
    ]
    assert all("sasldb_path" in line for line in diff)


def test_one_mta_for_several_domains() -> None:
    config = render_postfix(
        [
            DomainConfig("one.test", ("mx.one.test",), ("a",)),
            DomainConfig("two.test", ("mx.two.test",), ("b",)),
        ]
    )
    assert config.parameter("myhostname") == "mx.one.test"
    assert config.parameter("virtual_mailbox_domains") == "texthash:${config_directory}/domains"
    assert config.tables["domains"] == "one.test OK\ntwo.test OK\n"
    assert "b@two.test two.test/b/" in config.tables["mailboxes"]
    assert "postmaster@two.test two.test/postmaster/" in config.tables["mailboxes"]
    assert config.tables["sender_logins"] == "a@one.test a@one.test\nb@two.test b@two.test\n"
    with pytest.raises(ValueError, match="twice"):
        render_postfix([DomainConfig("x.test", ("mx.x.test",))] * 2)
    with pytest.raises(ValueError, match="hostname and an origin"):
        render_postfix([])
    # A fleet names itself, whatever domains it serves (none, even).
    fleet = render_postfix([], hostname="mx1.fleet.test", origin="fleet.test")
    assert fleet.parameter("myhostname") == "mx1.fleet.test"
    assert fleet.tables["domains"] == ""


def test_options_switch_parts_off() -> None:
    domains = [DomainConfig("x.test", ("mx.x.test",))]
    config = render_postfix(
        domains, MTAOptions(hide_submission_client=False, mta_sts_fallback=False)
    )
    assert "submission_header_checks" not in config.files
    assert not [e for e in config.master if e.service == "subcleanup"]
    with pytest.raises(KeyError):
        config.parameter("smtp_tls_policy_maps")


def test_master_cf_refuses_white_space_in_options() -> None:
    with pytest.raises(ValueError, match="white space"):
        render_master_cf([MasterEntry("smtp", "inet", options=(("a", "b c"),))])


def test_objects_carry_owner_references_and_the_config_hash() -> None:
    objects = own_objects(SPEC, ["alice"])
    kinds = [o["kind"] for o in objects]
    assert kinds == [
        "ConfigMap",
        "ConfigMap",
        "Service",
        "Service",
        "StatefulSet",
        "PodDisruptionBudget",
        "NetworkPolicy",
    ]
    for obj in objects:
        (ref,) = obj["metadata"]["ownerReferences"]
        assert ref["uid"] == OWNER.uid
        assert ref["controller"] is True
    tables, configmap, sts = objects[0], objects[1], objects[4]
    assert all("/" not in key for key in configmap["data"])
    items = sts["spec"]["template"]["spec"]["volumes"][0]["configMap"]["items"]
    assert {"key": "sasl_smtpd.conf", "path": "sasl/smtpd.conf"} in items
    # The hash covers every file of the ConfigMap, the sidecars' too: a new upstream for the
    # resolver rolls the pods as a Postfix change does.
    digest = sts["spec"]["template"]["metadata"]["annotations"][CONFIG_HASH_ANNOTATION]
    assert digest == own_files(SPEC, ResolverSettings()).digest()
    assert {"unbound.conf", "mta-sts-daemon.yml", "main.cf"} <= set(configmap["data"])
    # Accounts and domains are tables: reloaded by the pods, so the digest stays the same.
    assert set(tables["data"]) == {"domains", "mailboxes", "sender_logins"}
    other = own_objects(SPEC, ["alice", "bob"])
    assert other[4]["spec"]["template"]["metadata"]["annotations"][CONFIG_HASH_ANNOTATION] == digest
    assert other[0]["data"]["mailboxes"] != tables["data"]["mailboxes"]
    forwarded = ResolverSettings(forwarders=(Forwarder("192.0.2.53"),))
    third = own_objects(SPEC, ["alice"], forwarded)[4]
    assert third["spec"]["template"]["metadata"]["annotations"][CONFIG_HASH_ANNOTATION] != digest
    # No accounts Secret configured: no accounts volume.
    assert "accounts" not in [v["name"] for v in sts["spec"]["template"]["spec"]["volumes"]]


@pytest.mark.parametrize(
    ("observed", "status", "reason"),
    [
        (StatefulSetObservation(found=False), "Unknown", "MTAPending"),
        (
            StatefulSetObservation(True, generation=2, replicas=1, observed_generation=1),
            "Unknown",
            "MTAPending",
        ),
        (
            StatefulSetObservation(True, 1, 2, 1, 2, 1, "r1", "r2"),
            "False",
            "MTARollingOut",
        ),
        (StatefulSetObservation(True, 1, 2, 1, 1, 2, "r2", "r2"), "False", "MTANotReady"),
        (StatefulSetObservation(True, 1, 2, 1, 2, 2, "r2", "r2"), "True", "MTARunning"),
    ],
)
def test_mta_ready_verdicts(observed: StatefulSetObservation, status: str, reason: str) -> None:
    verdict = mta_verdict(observed, "example-mta")
    assert (verdict.type, verdict.status, verdict.reason) == ("MTAReady", status, reason)


def test_dane_wins_over_mta_sts() -> None:
    assert decide(Lookup(True, ("mx.a.test",)), [True]) == "dane"
    assert decide(Lookup(True, ("mx.a.test", "mx2.a.test")), [False, True]) == "dane"
    # TLSA under an insecure MX RRset does not count (RFC 7672 §2.2).
    assert decide(Lookup(False, ("mx.a.test",)), [True]) == "sts"
    assert decide(Lookup(True, ("mx.a.test",)), [False]) == "sts"


class _FakeResolver:
    def __init__(self, answers: dict[tuple[str, str], Lookup]) -> None:
        self.answers = answers

    async def lookup(self, name: str, rdtype: str) -> Lookup:
        return self.answers.get((name, rdtype), Lookup(True, ()))


class _FakeSts:
    async def ask(self, request: bytes) -> bytes:
        return b"OK secure match=mx.sts.test"


def test_policy_server_asks_mta_sts_only_without_dane() -> None:
    resolver = _FakeResolver(
        {
            ("dane.test", "MX"): Lookup(True, ("mx.dane.test",)),
            ("_25._tcp.mx.dane.test", "TLSA"): Lookup(True, ("3 1 1 00",)),
            ("sts.test", "MX"): Lookup(True, ("mx.sts.test",)),
        }
    )
    server = PolicyServer(resolver, _FakeSts())  # type: ignore[arg-type]
    assert asyncio.run(server.answer(b"postfix dane.test")) == b"NOTFOUND "
    # The TLSRPT attributes the resolver's answer lacked are added (test_tlspolicy_tlsrpt.py).
    assert asyncio.run(server.answer(b"postfix sts.test")) == (
        b"OK secure match=mx.sts.test policy_type=sts policy_domain=sts.test "
        b"mx_host_pattern=mx.sts.test"
    )
    assert asyncio.run(server.answer(b"postfix .parent.test")) == b"NOTFOUND "


def test_apply_layout_moves_a_pod_configuration_exactly_to_loopback() -> None:
    domains = [DomainConfig("example.test", ("mx1.example.test",), ("alice",))]
    local_layout_ = local_layout(Path("/tmp/x"), "127.0.0.9")
    pod = render_postfix(domains, MTAOptions(), MTALayout()).rendered_files()
    local = render_postfix(domains, MTAOptions(), local_layout_).rendered_files()
    assert apply_layout(pod, local_layout_) == local


def test_policy_server_answers_only_this_hosts_processes() -> None:
    # On the host network the socketmap listens on a public MX address.
    assert local_peer(("127.0.0.1", 40000), ("192.0.2.25", 8461))
    assert local_peer(("192.0.2.25", 40000), ("192.0.2.25", 8461))
    assert local_peer(("::1", 40000, 0, 0), ("::1", 8461, 0, 0))
    assert not local_peer(("198.51.100.7", 40000), ("192.0.2.25", 8461))
    assert not local_peer(None, ("192.0.2.25", 8461))
    assert split_host_port("[2001:db8::25]:8461") == ("2001:db8::25", 8461)
    assert split_host_port("127.0.0.1:8462") == ("127.0.0.1", 8462)
