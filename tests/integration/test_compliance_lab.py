"""The compliance engine against real servers: a compliant domain and its broken twins.

Each variant must fail exactly the check IDs listed in `VARIANTS` (and no other check may fail
or end in `error`); the compliant domain passes every MUST, and TR-RPT-02 (its report mailbox
`tlsrpt.good.test` has a route and no TLSA); the `WARN_VARIANTS` only warn.

Every address of an MX host is probed: `aaaa-badcert.test`'s MX has a compliant A address and
an AAAA (`::1`) that serves another host's certificate, and the checks must fail naming `::1`.

What the probes saw is kept too: judged again after a trip through JSON it must give the same
report. With MAILWARD_RECORD_COMPLIANCE=<directory> each zone's observations are written there
as `<zone>.json`, the way the recordings under tests/data/compliance/ were made.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from mailward.compliance import DomainObservations, Report, Result, check_domain, judge, record
from mailward.compliance.dnsprobe import ValidatingResolverClient
from tests.fixtures_compliance import (
    IPV6_MX_ADDRESS,
    IPV6_ZONE,
    SHARED_MX_ADDRESS,
    SKIP_VARIANTS,
    VARIANTS,
    WARN_VARIANTS,
    ComplianceLab,
)

pytestmark = pytest.mark.dnsstack

SCHEMA = Path(__file__).resolve().parents[2] / "schemas" / "compliance-report.schema.json"
RPT_WARN_VARIANTS = {z: ids for z, ids in WARN_VARIANTS.items() if z.startswith("rpt-")}


@pytest.fixture(scope="module")
def lab_observations() -> dict[str, DomainObservations]:
    return {}


@pytest.fixture(scope="module")
def lab_reports(
    compliance_lab: ComplianceLab, lab_observations: dict[str, DomainObservations]
) -> dict[str, Report]:
    # A zone whose server could not be started (another session holds [::1]:25) is left out.
    zones = [z for z in VARIANTS if z not in compliance_lab.unavailable]

    async def run() -> dict[str, Report]:
        limit = asyncio.Semaphore(8)
        reports = await asyncio.gather(
            *(
                check_domain(
                    zone,
                    resolver=compliance_lab.resolver,
                    cafile=compliance_lab.ca_file,
                    limit=limit,
                    record=lambda obs: lab_observations.__setitem__(obs.domain, obs),
                )
                for zone in zones
            )
        )
        return dict(zip(zones, reports, strict=True))

    reports = asyncio.run(run())
    target = os.environ.get("MAILWARD_RECORD_COMPLIANCE")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        for zone, obs in lab_observations.items():
            record.save(obs, Path(target) / f"{zone}.json")
    return reports


def _explain(report: Report) -> str:
    return "\n".join(
        f"{c.id} {c.result}: {c.message}" for c in report.checks if c.result is not Result.PASS
    )


def test_compliant_domain_passes_every_must(lab_reports: dict[str, Report]) -> None:
    report = lab_reports["good.test"]
    assert report.fatal is None
    assert report.ids(Result.FAIL) == [], _explain(report)
    assert report.ids(Result.ERROR) == [], _explain(report)
    must = [c for c in report.checks if c.level.value == "MUST"]
    assert must
    assert all(c.result is Result.PASS for c in must), _explain(report)
    assert report.compliant
    assert report.exit_code == 0
    mailbox = report.by_id()["TR-RPT-02"]
    assert mailbox.result is Result.PASS, _explain(report)
    assert "tlsrpt.good.test" in mailbox.message


def _report(lab: ComplianceLab, reports: dict[str, Report], zone: str) -> Report:
    if zone in lab.unavailable:
        pytest.skip(f"{zone} left out: {lab.unavailable[zone]}")
    return reports[zone]


@pytest.mark.parametrize("zone", [z for z, failing in VARIANTS.items() if failing])
def test_broken_variant_fails_exactly_the_expected_checks(
    compliance_lab: ComplianceLab, lab_reports: dict[str, Report], zone: str
) -> None:
    report = _report(compliance_lab, lab_reports, zone)
    assert report.fatal is None
    assert set(report.ids(Result.FAIL)) == set(VARIANTS[zone]), _explain(report)
    assert report.ids(Result.ERROR) == [], _explain(report)
    assert not report.compliant
    assert report.exit_code == 1


@pytest.mark.parametrize("zone", list(WARN_VARIANTS))
def test_warn_variant_only_warns(lab_reports: dict[str, Report], zone: str) -> None:
    report = lab_reports[zone]
    assert report.ids(Result.FAIL) == [], _explain(report)
    assert report.ids(Result.ERROR) == [], _explain(report)
    assert set(WARN_VARIANTS[zone]) <= set(report.ids(Result.WARN)), _explain(report)
    assert report.compliant


@pytest.mark.parametrize("zone", list(RPT_WARN_VARIANTS))
def test_enforcing_report_mailbox_only_warns(lab_reports: dict[str, Report], zone: str) -> None:
    report = lab_reports[zone]
    # The host that enforces is named: the domain's own MX with its TLSA record.
    mailbox = report.by_id()["TR-RPT-02"]
    assert f"_25._tcp.mx.{zone}" in mailbox.message
    assert "SHOULD NOT" in mailbox.message
    if zone == "rpt-sts.test":
        assert "mode: enforce" in mailbox.message


def test_report_mailbox_without_route_fails(lab_reports: dict[str, Report]) -> None:
    mailbox = lab_reports["rpt-noroute.test"].by_id()["TR-RPT-02"]
    assert mailbox.result is Result.FAIL
    assert "tlsrpt.rpt-noroute.test" in mailbox.message
    assert "no MX and no A/AAAA" in mailbox.message
    assert "defeats TR-RPT-01" in mailbox.message


def test_report_mailbox_judged_in_every_zone(lab_reports: dict[str, Report]) -> None:
    # Nothing to judge where the TLSRPT record is bogus or has no mailto: URI.
    expected = {
        "bogus.test": Result.SKIP,
        "rpt-https.test": Result.SKIP,
        "rpt-noroute.test": Result.FAIL,
        **dict.fromkeys(RPT_WARN_VARIANTS, Result.WARN),
    }
    got = {zone: report.by_id()["TR-RPT-02"] for zone, report in lab_reports.items()}
    for zone, check in got.items():
        print(f"{zone}: {check.result} {check.message}")
    assert {z: c.result for z, c in got.items()} == {
        zone: expected.get(zone, Result.PASS) for zone in lab_reports
    }


@pytest.mark.parametrize("zone", list(SKIP_VARIANTS))
def test_checks_not_applicable_are_skipped(lab_reports: dict[str, Report], zone: str) -> None:
    report = lab_reports[zone]
    assert set(SKIP_VARIANTS[zone]) <= set(report.ids(Result.SKIP)), _explain(report)
    assert report.compliant, _explain(report)


def test_receive_only_domain_is_not_judged_on_client_ports(
    lab_reports: dict[str, Report],
) -> None:
    # TR-03108-01-M: implicit TLS "where offered"; the MX serves port 25 only and no SRV
    # record names a client service.
    gen01 = lab_reports["receiveonly.test"].by_id()["TR-GEN-01"]
    assert "not applicable" in gen01.message
    assert "465" in gen01.message
    assert "mx.receiveonly.test" in gen01.message


def test_brainpool_support_and_preference_told_apart_where_possible(
    lab_reports: dict[str, Report],
) -> None:
    good = lab_reports["good.test"].by_id()["TR-TLS-04"]
    assert good.result is Result.PASS
    assert "brainpoolP256r1 supported and preferred" in good.message
    # secp256r1 first in the server's order, secp256r1 certificate: cannot be told apart.
    first = lab_reports["p256first.test"].by_id()["TR-TLS-04"]
    assert first.result is Result.WARN
    assert "cannot be told apart" in first.message
    # An RSA certificate lets brainpool be offered alone: supported, but not preferred.
    rsa = lab_reports["p256first-rsa.test"].by_id()["TR-TLS-04"]
    assert rsa.result is Result.WARN
    assert "brainpoolP256r1 supported, but another group preferred" in rsa.message
    # The server takes the client's order: brainpool offered first and not chosen is absent.
    absent = lab_reports["nobrainpool.test"].by_id()["TR-TLS-04"]
    assert absent.result is Result.FAIL
    assert "client's first group" in absent.message


def test_recorded_observations_judge_the_same(
    lab_reports: dict[str, Report], lab_observations: dict[str, DomainObservations]
) -> None:
    assert set(lab_observations) == set(lab_reports)
    for zone, obs in lab_observations.items():
        again = judge(record.loads(record.dumps(obs)), "tr-03108")
        assert [c.to_dict() for c in again] == [c.to_dict() for c in lab_reports[zone].checks]


def test_every_address_of_an_mx_is_probed_and_a_broken_aaaa_fails(
    compliance_lab: ComplianceLab,
    lab_reports: dict[str, Report],
    lab_observations: dict[str, DomainObservations],
) -> None:
    report = _report(compliance_lab, lab_reports, IPV6_ZONE)
    mx_name = f"mx.{IPV6_ZONE}"
    # The AAAA is published, signed, and answered by the validating resolver.
    resolver = ValidatingResolverClient(compliance_lab.resolver)
    aaaa = asyncio.run(resolver.query(mx_name, "AAAA"))
    assert aaaa.ok, aaaa.describe()
    assert aaaa.secure, aaaa.describe()
    assert aaaa.records == (IPV6_MX_ADDRESS,)
    # Both addresses probed: SMTP on each, TLS on port 25 of each.
    obs = lab_observations[IPV6_ZONE]
    (mx,) = obs.mx
    assert [p.address for p in mx.probes] == [SHARED_MX_ADDRESS, IPV6_MX_ADDRESS]
    assert all(p.smtp is not None and p.smtp.starttls_offered for p in mx.probes)
    assert sorted(t.endpoint.address for t in obs.tls if t.endpoint.port == 25) == sorted(
        [SHARED_MX_ADDRESS, IPV6_MX_ADDRESS]
    )
    checks = report.by_id()
    v6 = f"[{IPV6_MX_ADDRESS}]"
    v4 = f"[{SHARED_MX_ADDRESS}]"
    # The AAAA's certificate names another host: the checks fail and name ::1 ...
    for cid in ("TR-CERT-05", "TR-DANE-02", "TR-STS-04"):
        assert checks[cid].result is Result.FAIL, _explain(report)
        assert v6 in checks[cid].message, checks[cid].message
        assert v4 not in checks[cid].message
    assert f"{mx_name}:25 {v6}" in checks["TR-CERT-05"].message
    # ... while the A address, the same MX host, passes them.
    for cid in ("TR-CERT-05", "TR-DANE-02", "TR-STS-04", "TR-GEN-06", "TR-TLS-01"):
        assert any(e.startswith("[pass]") and v4 in e for e in checks[cid].evidence), cid
    assert any(e.startswith("[pass]") and v6 in e for e in checks["TR-GEN-06"].evidence)


def test_pkix_usage_is_flagged(lab_reports: dict[str, Report]) -> None:
    checks = lab_reports["tlsa-usage1.test"].by_id()
    assert checks["TR-DANE-05"].result is Result.WARN
    assert "PKIX" in checks["TR-DANE-05"].message


def test_bogus_zone_reported_as_bogus(lab_reports: dict[str, Report]) -> None:
    dane = lab_reports["bogus.test"].by_id()["TR-DANE-01"]
    assert "bogus" in dane.message
    assert "SERVFAIL" in dane.message


def test_tls10_on_port_25_would_only_warn(lab_reports: dict[str, Report]) -> None:
    # The same version rule on an opportunistic port: TLS-01 passes on :25 of tls10.test,
    # the failure is the SUBMISSIONS port.
    tls = lab_reports["tls10.test"].by_id()["TR-TLS-01"]
    assert "mx.tls10.test:465" in tls.message
    assert "TLSv1" in tls.message


def test_baseline_profile_relaxes_tr_only_rules(compliance_lab: ComplianceLab) -> None:
    report = asyncio.run(
        check_domain(
            "wildcard.test",
            resolver=compliance_lab.resolver,
            cafile=compliance_lab.ca_file,
            profile="baseline",
        )
    )
    assert report.by_id()["TR-CERT-01"].result is Result.WARN
    assert report.ids(Result.FAIL) == []
    assert report.exit_code == 0


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mailward", "check", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_cli_json_validates_against_the_schema(compliance_lab: ComplianceLab) -> None:
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    common = ["--resolver", compliance_lab.resolver, "--ca-file", compliance_lab.ca_file, "--json"]
    good = _cli("good.test", *common)
    assert good.returncode == 0, good.stderr
    document = json.loads(good.stdout)
    jsonschema.validate(document, schema)
    assert document["compliant"] is True
    broken = _cli("openrelay.test", *common)
    assert broken.returncode == 1, broken.stderr
    document = json.loads(broken.stdout)
    jsonschema.validate(document, schema)
    assert document["failingMust"] == ["TR-SMTP-03"]


def test_cli_table_and_exit_codes(compliance_lab: ComplianceLab) -> None:
    result = _cli("vrfy250.test", "--resolver", compliance_lab.resolver,
                  "--ca-file", compliance_lab.ca_file)  # fmt: skip
    print(result.stdout)
    assert result.returncode == 1
    assert "FAIL  TR-SMTP-04" in result.stdout
    assert "NOT COMPLIANT" in result.stdout
    assert "\033[" not in result.stdout  # no colour when not a terminal
    # A resolver that does not answer: the check could not run.
    dead = _cli("good.test", "--resolver", "127.255.255.1:53")
    assert dead.returncode == 2
    assert "could not run" in dead.stdout
