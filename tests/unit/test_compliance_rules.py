"""Pure rules of the compliance engine, with literal inputs."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import jsonschema
import pytest

from mailward.api.v1alpha1 import MailDomainStatus
from mailward.compliance import records
from mailward.compliance.catalog import CATALOG, PROFILES
from mailward.compliance.checks import certificate, dane, email_auth, tls
from mailward.compliance.model import CheckResult, Level, Report, Result
from mailward.compliance.report import render_json, render_table
from mailward.parts.compliance import decide
from mailward.settings import ComplianceSettings, from_environment
from mailward_localstack.pki import LocalCA

SCHEMA = Path(__file__).resolve().parents[2] / "schemas" / "compliance-report.schema.json"
RESEARCH_IDS = {
    "TR-DANE-01", "TR-DANE-02", "TR-DANE-03", "TR-DANE-04", "TR-DANE-05", "TR-DANE-06",
    "TR-DANE-08", "TR-GEN-01", "TR-GEN-02", "TR-GEN-06", "TR-SMTP-02", "TR-SMTP-03",
    "TR-SMTP-04", "TR-SMTP-05", "TR-TLS-01", "TR-TLS-02", "TR-TLS-03", "TR-TLS-04", "TR-TLS-06",
    "TR-TLS-07", "TR-TLS-08", "TR-CERT-01", "TR-CERT-02", "TR-CERT-03", "TR-CERT-05", "TR-STS-01",
    "TR-STS-02", "TR-STS-03", "TR-STS-04", "TR-RPT-01", "TR-RPT-02", "TR-AUTH-01", "TR-AUTH-02",
    "TR-AUTH-03",
}  # fmt: skip


def test_catalog_ids_come_from_the_requirements_and_every_profile_has_a_level() -> None:
    ids = [c.id for c in CATALOG]
    assert len(ids) == len(set(ids))
    assert set(ids) == RESEARCH_IDS
    for check in CATALOG:
        assert set(check.levels) == set(PROFILES)
        assert check.remedy
        assert check.reference


def test_banner_is_information_only_in_every_profile() -> None:
    banner = next(c for c in CATALOG if c.id == "TR-SMTP-05")
    assert all(level is Level.INFO for level in banner.levels.values())


@pytest.mark.parametrize(
    ("suites", "order", "ok", "tolerated"),
    [
        (["ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384"], True, True, False),
        (["ECDHE-ECDSA-AES128-SHA", "ECDHE-ECDSA-AES128-GCM-SHA256"], True, False, False),
        (["ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES128-SHA"], True, False, True),
        (["ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES128-SHA"], False, False, False),
        (["ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-CHACHA20-POLY1305"], True, True, False),
        (["ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-ECDSA-AES128-GCM-SHA256"], True, False, False),
        (["AES128-GCM-SHA256"], None, False, False),
    ],
)
def test_suites_against_the_allow_list_and_order(
    suites: list[str], order: bool | None, ok: bool, tolerated: bool
) -> None:
    verdict = tls.judge_suites(suites, order, "ec")
    assert (verdict.ok, verdict.tolerated) == (ok, tolerated), verdict.message


def test_sts_txt_and_policy() -> None:
    assert records.parse_sts_txt("v=STSv1; id=20261127T1200") == ("20261127T1200", None)
    assert records.parse_sts_txt("v=STSv1; id=has-dash")[1] is not None
    assert records.parse_sts_txt("v=STSv2; id=1")[1] is not None
    policy = records.parse_sts_policy(
        "version: STSv1\r\nmode: enforce\r\nmx: mx.example.test\r\nmx: *.example.test\r\n"
        "max_age: 604800\r\n"
    )
    assert policy.errors == []
    assert policy.mx == ["mx.example.test", "*.example.test"]
    assert records.parse_sts_policy("version: STSv1\nmode: enforce\nmax_age: 86400\n").errors
    assert records.parse_sts_policy("version: STSv1\nmode: none\nmax_age: 99999999999\n").errors
    assert records.mx_matches_pattern("mx1.example.test", "*.example.test")
    assert not records.mx_matches_pattern("a.mx1.example.test", "*.example.test")
    assert not records.mx_matches_pattern("example.test", "*.example.test")


def test_tlsrpt_spf_dmarc_dkim() -> None:
    assert records.parse_tlsrpt("v=TLSRPTv1; rua=mailto:a@x.test,https://r.x.test/v1") == (
        ["mailto:a@x.test", "https://r.x.test/v1"],
        None,
    )
    assert records.parse_tlsrpt("v=TLSRPTv1;")[1] is not None
    assert email_auth.judge_spf(["v=spf1 mx -all"])[0]
    assert not email_auth.judge_spf(["v=spf1 mx ?all"])[0]
    assert not email_auth.judge_spf(["v=spf1 mx -all", "v=spf1 -all"])[0]
    assert email_auth.judge_dmarc(["v=DMARC1; p=reject; rua=mailto:d@x.test"])[0]
    assert not email_auth.judge_dmarc(["v=DMARC1; rua=mailto:d@x.test; p=reject"])[0]
    assert not email_auth.judge_dmarc(["v=DMARC1; p=none; rua=mailto:d@x.test"])[0]
    assert not email_auth.judge_dmarc(["v=DMARC1; p=reject"])[0]
    assert email_auth.dkim_key_kind("v=DKIM1; k=ed25519; p=abc") == "ed25519"
    assert email_auth.dkim_key_kind("v=DKIM1; p=") is None
    assert records.txt_strings('"v=spf1 " "mx -all"') == "v=spf1 mx -all"


def test_tlsa_matching_and_certificate_rules(tmp_path: Path) -> None:
    ca = LocalCA.create(tmp_path / "ca")
    cert = ca.issue_server_cert(["mx.example.test"], out_dir=tmp_path)
    chain = [cert.cert, ca.cert]
    assert dane.tlsa_matches(records.TLSA.parse(f"3 1 1 {cert.spki_sha256()}"), chain)
    assert dane.tlsa_matches(records.TLSA.parse(f"2 1 1 {ca.spki_sha256()}"), chain)
    assert not dane.tlsa_matches(records.TLSA.parse(f"3 1 1 {ca.spki_sha256()}"), chain)
    # PKIX usages are never "matching" for SMTP (RFC 7672 §3.1.3).
    assert not dane.tlsa_matches(records.TLSA.parse(f"1 1 1 {cert.spki_sha256()}"), chain)
    assert certificate.profile_problems(cert.cert) == []
    assert certificate.key_size_problem(cert.cert) is None
    assert certificate.signature_problem(cert.cert, dt.datetime.now(dt.UTC)) is None
    wild = ca.issue_server_cert(["*.example.test"], out_dir=tmp_path, allow_wildcard=True)
    assert certificate.wildcard_names(wild.cert) == ["*.example.test", "*.example.test"]


def _report(results: dict[str, Result], fatal: str | None = None) -> Report:
    checks = [
        CheckResult(
            c.id, c.title, c.group, c.level("tr-03108"), results.get(c.id, Result.PASS), "seen"
        )
        for c in CATALOG
    ]
    started = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)
    return Report("example.test", "tr-03108", "127.0.0.1", started, 1.0, checks, fatal)


def test_exit_codes_score_and_schema() -> None:
    schema = json.loads(SCHEMA.read_text())
    good = _report({})
    assert (good.exit_code, good.compliant, good.score) == (0, True, 100)
    # An error on a MUST is not a pass; a warn on a SHOULD does not fail the domain.
    bad = _report({"TR-DANE-02": Result.ERROR, "TR-DANE-03": Result.WARN})
    assert (bad.exit_code, bad.failing_musts) == (1, ["TR-DANE-02"])
    fatal = _report({}, fatal="the resolver does not answer")
    assert fatal.exit_code == 2
    for report in (good, bad, fatal):
        jsonschema.validate(json.loads(render_json(report)), schema)
    table = render_table(bad, colour=False)
    assert "ERROR TR-DANE-02" in table
    assert "NOT COMPLIANT" in table
    assert "\033[" in render_table(bad, colour=True)


def test_status_is_written_only_on_change_or_heartbeat() -> None:
    now = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)
    first = decide(MailDomainStatus(), _report({}), generation=1, now=now, heartbeat_seconds=3600)
    assert first.patch is not None
    assert not first.became_noncompliant
    stored = MailDomainStatus.model_validate(first.patch)
    later = now + dt.timedelta(minutes=10)
    same = _report({})
    same.started = later
    again = decide(stored, same, generation=1, now=later, heartbeat_seconds=3600)
    assert again.patch is None  # only lastChecked would move: not before the heartbeat
    beat = now + dt.timedelta(hours=2)
    same.started = beat
    assert decide(stored, same, generation=1, now=beat, heartbeat_seconds=3600).patch is not None
    broken = _report({"TR-DANE-02": Result.FAIL})
    broken.started = later
    change = decide(stored, broken, generation=1, now=later, heartbeat_seconds=3600)
    assert change.patch is not None
    assert change.became_noncompliant
    assert "TR-DANE-02" in change.verdict.message
    # Still broken next time: written if the message changed, but no second event.
    stored = MailDomainStatus.model_validate(change.patch)
    still = decide(stored, broken, generation=1, now=later, heartbeat_seconds=3600)
    assert not still.became_noncompliant
    # A failure is a verdict; a probe that could not complete asks for an early second look.
    assert not still.incomplete
    refused = _report({"TR-SMTP-02": Result.ERROR})
    assert decide(stored, refused, generation=1, now=later, heartbeat_seconds=3600).incomplete


def test_the_daemon_writes_only_its_own_condition() -> None:
    now = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)
    current = MailDomainStatus.model_validate(
        {
            "observedGeneration": 1,
            "conditions": [
                {"type": "Ready", "status": "True", "reason": "Reconciled",
                 "lastTransitionTime": "2026-11-27T11:00:00Z"},
                {"type": "DNSReady", "status": "True", "reason": "Published",
                 "lastTransitionTime": "2026-11-27T11:00:00Z"},
            ],
        }
    )  # fmt: skip
    change = decide(current, _report({}), generation=1, now=now, heartbeat_seconds=3600)
    assert change.patch is not None
    # Server-side apply of this leaves the handler's Ready and DNSReady where they are.
    assert set(change.patch) == {"conditions", "compliance"}
    assert [c["type"] for c in change.patch["conditions"]] == ["Compliant"]


def test_settings_from_environment() -> None:
    s = from_environment(
        {
            "MAILWARD_COMPLIANCE_RESOLVER": "127.0.0.54:5353",
            "MAILWARD_CA_FILE": "/ca.pem",
            "MAILWARD_COMPLIANCE_LABEL_SELECTOR": "team=mail",
        }
    ).compliance
    assert (s.resolver, s.resolver_port, s.cafile) == ("127.0.0.54", 5353, "/ca.pem")
    assert s.selects({"team": "mail"})
    assert not s.selects({})


def test_metrics_per_domain_and_check() -> None:
    from prometheus_client import REGISTRY

    from mailward.compliance import metrics

    report = _report({"TR-DANE-02": Result.FAIL})
    metrics.record("ns", "example", report)
    labels = {"namespace": "ns", "name": "example", "domain": "example.test"}
    value = REGISTRY.get_sample_value(
        "mailward_compliance_check_result",
        {**labels, "check": "TR-DANE-02", "level": "MUST", "result": "fail"},
    )
    assert value == 1.0
    assert REGISTRY.get_sample_value("mailward_compliance_compliant", labels) == 0.0
    metrics.forget("ns", "example")
    assert REGISTRY.get_sample_value("mailward_compliance_compliant", labels) is None


def test_part_asks_for_a_check_on_spec_change_or_published_records() -> None:
    import asyncio

    from mailward.api.v1alpha1 import Condition
    from mailward.parts import Findings, ReconcileContext
    from mailward.parts.compliance import CompliancePart, ComplianceRunner
    from mailward.reconcile import parse_spec

    runner = ComplianceRunner(ComplianceSettings("127.0.0.1"), writer=None, events=None)
    asked: list[tuple[int, bool]] = []
    part = CompliancePart(runner, lambda ctx, now: asked.append((ctx.generation, now)))
    spec = parse_spec({"domain": "example.test", "mx": [{"host": "mx.example.test"}],
                       "tls": {"secretName": "tls"}})  # fmt: skip
    checked = Condition.model_validate(
        {"type": "Compliant", "status": "True", "reason": "Compliant", "message": "ok",
         "observedGeneration": 3, "lastTransitionTime": "2026-01-01T00:00:00Z"}
    )  # fmt: skip
    status = MailDomainStatus(conditions=[checked])

    def ctx(generation: int, changed: bool = False) -> ReconcileContext:
        found = Findings(records_changed=changed)
        return ReconcileContext("d", "ns", "uid-1", generation, spec, status, found)

    result = asyncio.run(part.reconcile(ctx(3)))
    assert result.verdicts == []  # Compliant is written by the checks, and never feeds Ready
    asyncio.run(part.reconcile(ctx(4)))
    asyncio.run(part.reconcile(ctx(3, changed=True)))
    # Always kept on the schedule; at once only for a new generation or changed records.
    assert asked == [(3, False), (4, True), (3, True)]


@pytest.mark.parametrize(
    ("known", "random", "expected"),
    [
        ("252 2.0.0 postmaster", "252 2.0.0 postmaster", Result.PASS),
        ("250 2.0.0 <postmaster@d.test>", "550 5.1.1 unknown", Result.PASS),
        ("252 2.0.0 postmaster", "250 2.0.0 <x7q@d.test>", Result.FAIL),
        ("550 5.1.1 unknown", "550 5.1.1 unknown", Result.FAIL),
        # Postfix's disable_vrfy_command answers 502; RFC 5321 §7.3 requires 252 then.
        ("502 5.5.1 VRFY command is disabled", "502 5.5.1 VRFY command is disabled", Result.FAIL),
    ],
)
def test_vrfy_judged_by_rfc_5321_section_7_3(known: str, random: str, expected: Result) -> None:
    from mailward.compliance.checks.findings import Findings
    from mailward.compliance.checks.smtp import judge_vrfy
    from mailward.compliance.observations import SMTPObservation

    findings = Findings("tr-03108")
    smtp = SMTPObservation(vrfy=[("postmaster@d.test", known), ("x7q@d.test", random)])
    judge_vrfy(findings, smtp, "mx.d.test:25")
    (finding,) = findings.items["TR-SMTP-04"]
    assert finding.result == expected, finding.message


def test_a_domain_counts_as_reconciled_once_ready_observed_its_generation() -> None:
    from mailward.parts.compliance import reconciled

    def body(generation: int, observed: int | None) -> dict[str, object]:
        conditions = (
            []
            if observed is None
            else [
                {
                    "type": "Ready",
                    "status": "False",
                    "reason": "DNSPending",
                    "message": "",
                    "observedGeneration": observed,
                    "lastTransitionTime": "2026-12-01T00:00:00Z",
                }
            ]
        )
        return {"metadata": {"generation": generation}, "status": {"conditions": conditions}}

    assert not reconciled(body(1, None))  # just created: no pass yet
    assert not reconciled(body(2, 1))  # an edit the handler has not seen yet
    assert reconciled(body(2, 2))  # seen, Ready or not: what it published is out there
