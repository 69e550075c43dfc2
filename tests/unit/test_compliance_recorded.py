"""Table tests: the checks run on observations recorded from real servers.

Each file under tests/data/compliance/ is what the compliance lab's probes saw for one zone
(real Postfix, BIND and Unbound; `MAILWARD_RECORD_COMPLIANCE=... pytest
tests/integration/test_compliance_lab.py` writes them, `mailward check --record` does the same
for any domain). A row names the file and the result of every check that does not pass; all
other checks must pass. Dates are judged as of the recording, so the rows hold on any day.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import pytest

from mailward.compliance import DomainObservations, judge, record
from mailward.compliance.catalog import CATALOG
from mailward.compliance.model import CheckResult, Result
from mailward.compliance.observations import Answer, PortProbe

DATA = Path(__file__).resolve().parents[1] / "data" / "compliance"
P, F, W, S = Result.PASS, Result.FAIL, Result.WARN, Result.SKIP
V6 = "::1"  # recorded data only: nothing is sent to it here
EVERYTHING_BUT_DNSSEC = [c.id for c in CATALOG if c.id != "TR-DANE-01"]

# file -> the checks that do not pass (profile tr-03108)
ROWS: dict[str, dict[str, Result]] = {
    "good.test": {},
    # TR-03116-4 §2.2.2: brainpoolP256r1 MUST be supported, SHOULD have the highest priority.
    # This server supports it but ranks secp256r1 first, and failed TR-TLS-04 ("groups not
    # accepted: brainpoolP256r1"). With its secp256r1 certificate a TLS 1.2 client must offer
    # secp256r1 too (RFC 8422 §5.1), so support and preference cannot be told apart: warn.
    "p256first.test": {"TR-TLS-04": W},
    # The same server with an RSA certificate: brainpool offered alone is accepted, so support
    # is certain and only the priority (a SHOULD) is missed: warn (it passed before, the
    # preference was not looked at).
    "p256first-rsa.test": {"TR-TLS-04": W},
    # A server that takes the client's first group and still never picks brainpool lacks it.
    "nobrainpool.test": {"TR-TLS-04": F},
    # TR-03108-01-M: implicit TLS for mail clients "where offered". The MX serves port 25 only
    # and no SRV record names a client service: not applicable. It failed TR-GEN-01 ("no
    # implicit-TLS client service found") and TR-GEN-02 before.
    "receiveonly.test": {"TR-GEN-01": S, "TR-GEN-02": S},
    "unsigned.test": {"TR-DANE-01": F, "TR-DANE-02": F, "TR-DANE-08": S, "TR-DANE-06": S},
    # Every answer under a bogus DS is SERVFAIL: nothing but DNSSEC can be judged.
    "bogus.test": {"TR-DANE-01": F, **dict.fromkeys(EVERYTHING_BUT_DNSSEC, S)},
    "tlsa-mismatch.test": {"TR-DANE-02": F},
    "tlsa-usage1.test": {
        "TR-DANE-02": F,
        "TR-DANE-03": W,
        "TR-DANE-04": W,
        "TR-DANE-05": W,
        "TR-DANE-06": S,
    },
    "nostarttls.test": {
        "TR-GEN-06": F,
        "TR-DANE-02": F,
        "TR-STS-04": F,
        "TR-SMTP-02": S,
        "TR-DANE-06": S,
    },
    "tls10.test": {"TR-TLS-01": F, "TR-TLS-03": F},
    "weakfirst.test": {"TR-TLS-03": F},
    "wildcard.test": {"TR-CERT-01": F},
    "expired.test": {"TR-CERT-05": F, "TR-STS-04": F},
    "sts-missing-mx.test": {"TR-STS-04": F},
    "sts-redirect.test": {"TR-STS-02": F, "TR-STS-03": S, "TR-STS-04": S},
    "rpt-https.test": {"TR-RPT-01": F, "TR-RPT-02": S},
    "rpt-noroute.test": {"TR-RPT-02": F},
    "rpt-dane.test": {"TR-RPT-02": W},
    "rpt-sts.test": {"TR-RPT-02": W},
    "openrelay.test": {"TR-SMTP-03": F},
    "vrfy250.test": {"TR-SMTP-04": F},
    # Format 2, every address probed: the MX's A passes, its AAAA (::1) serves a certificate
    # for another host. Only the A address was probed before, and the domain passed.
    "aaaa-badcert.test": {"TR-CERT-05": F, "TR-DANE-02": F, "TR-STS-04": F},
}


def _load(name: str) -> DomainObservations:
    return record.load(DATA / f"{name}.json")


def _results(checks: list[CheckResult]) -> dict[str, Result]:
    return {c.id: c.result for c in checks}


def _expected(row: dict[str, Result]) -> dict[str, Result]:
    return {c.id: row.get(c.id, P) for c in CATALOG}


def test_every_recording_has_a_row() -> None:
    assert sorted(p.name.removesuffix(".json") for p in DATA.glob("*.json")) == sorted(ROWS)


@pytest.mark.parametrize("name", list(ROWS))
def test_recorded(name: str) -> None:
    obs = _load(name)
    assert obs.domain == name
    checks = judge(obs, "tr-03108")
    assert _results(checks) == _expected(ROWS[name]), "\n".join(
        f"{c.id} {c.result}: {c.message}" for c in checks if c.result is not P
    )


def test_recording_survives_a_round_trip() -> None:
    obs = _load("good.test")
    assert record.loads(record.dumps(obs)) == obs


def test_a_foreign_document_is_refused() -> None:
    with pytest.raises(record.RecordingError):
        record.loads('{"mailwardObservations": 99, "observations": {}}')
    with pytest.raises(record.RecordingError):
        record.loads('{"mailwardObservations": 2, "observations": {}}')
    with pytest.raises(record.RecordingError):
        record.loads("not JSON")
    with pytest.raises(record.RecordingError):
        record.loads("[]")


def test_messages_of_the_corrected_verdicts() -> None:
    first = _results_by_id("p256first.test")["TR-TLS-04"]
    assert "cannot be told apart" in first.message
    assert "secp256r1" in first.message
    rsa = _results_by_id("p256first-rsa.test")["TR-TLS-04"]
    assert "brainpoolP256r1 supported, but another group preferred" in rsa.message
    absent = _results_by_id("nobrainpool.test")["TR-TLS-04"]
    assert "client's first group (secp384r1 chosen when offered before secp256r1)" in (
        absent.message
    )
    receive = _results_by_id("receiveonly.test")["TR-GEN-01"]
    assert receive.message.startswith("receiveonly.test: not applicable: no mail client service")


def _results_by_id(name: str) -> dict[str, CheckResult]:
    return {c.id: c for c in judge(_load(name), "tr-03108")}


def test_every_address_of_the_recorded_mx_is_judged() -> None:
    checks = _results_by_id("aaaa-badcert.test")
    for cid in ("TR-CERT-05", "TR-DANE-02", "TR-STS-04"):
        assert "[::1]" in checks[cid].message
        assert any(e.startswith("[pass]") and "[127." in e for e in checks[cid].evidence)


def test_format_1_keeps_port_25_on_the_first_a_address() -> None:
    # The recordings under tests/data/compliance are of format 1: SMTP on the MX host.
    assert '"mailwardObservations": 1' in (DATA / "good.test.json").read_text()
    obs = _load("good.test")
    (mx,) = obs.mx
    assert mx.a is not None
    assert [p.address for p in mx.probes] == [mx.a.records[0]]
    assert mx.probes[0].smtp is not None
    assert mx.probes[0].smtp.starttls_offered
    text = record.dumps(obs)
    assert '"mailwardObservations": 2' in text
    assert record.loads(text) == obs


# -- rows derived from a recording by one edit -------------------------------------------------


def _open(port: int) -> Callable[[DomainObservations], DomainObservations]:
    """The recording with `port` open on its MX host (no TLS observation for it)."""

    def edit(obs: DomainObservations) -> DomainObservations:
        ports = [dataclasses.replace(p, open=True) if p.endpoint.port == port else p
                 for p in obs.client_ports]  # fmt: skip
        return dataclasses.replace(obs, client_ports=ports)

    return edit


def _second_address(
    pkix_error: str | None = None, starttls: bool = True
) -> Callable[[DomainObservations], DomainObservations]:
    """The recording with an AAAA (::1) on its MX host, probed like the A address: its TLS
    the same but for `pkix_error`, or no STARTTLS at all."""

    def edit(obs: DomainObservations) -> DomainObservations:
        (mx,) = obs.mx
        tls25 = obs.tls_for(mx.name, 25)
        assert tls25 is not None
        smtp = mx.probes[0].smtp
        assert smtp is not None
        probe = dataclasses.replace(
            mx.probes[0], address=V6, smtp=dataclasses.replace(smtp, starttls_offered=starttls)
        )
        aaaa = Answer(mx.name, "AAAA", "NOERROR", True, (V6,), 300)
        tls = list(obs.tls)
        if starttls:
            endpoint = dataclasses.replace(tls25.endpoint, address=V6)
            tls.append(dataclasses.replace(tls25, endpoint=endpoint, pkix_error=pkix_error))
        host = dataclasses.replace(mx, aaaa=aaaa, probes=[*mx.probes, probe])
        return dataclasses.replace(obs, mx=[host], tls=tls)

    return edit


def _many_addresses(obs: DomainObservations) -> DomainObservations:
    """Ten A records, of which the recording probed the first (the rest beyond a bound)."""
    (mx,) = obs.mx
    assert mx.a is not None
    extra = tuple(f"{mx.a.records[0]}{i}" for i in range(9))
    a = dataclasses.replace(mx.a, records=(*mx.a.records, *extra))
    return dataclasses.replace(obs, mx=[dataclasses.replace(mx, a=a)])


def _close_submissions(obs: DomainObservations) -> DomainObservations:
    ports = [PortProbe(p.endpoint, False, p.srv) for p in obs.client_ports]
    tls = [t for t in obs.tls if t.endpoint.port != 465]
    return dataclasses.replace(obs, client_ports=ports, tls=tls)


@pytest.mark.parametrize(
    ("name", "edit", "profile", "row"),
    [
        # IMAP on 143 without 993: client access offered without implicit TLS.
        ("receiveonly.test", _open(143), "tr-03108", {"TR-GEN-01": F, "TR-GEN-02": F}),
        # Submission on 587 only: the same, TR-GEN-01 names the port.
        ("receiveonly.test", _open(587), "tr-03108", {"TR-GEN-01": F, "TR-GEN-02": F}),
        # _submissions._tcp names mx:465, where nothing answers any more.
        ("good.test", _close_submissions, "tr-03108", {"TR-GEN-01": F}),
        # A second address (AAAA) of the MX, as good as the first: still compliant.
        ("good.test", _second_address(), "tr-03108", {}),
        # ... whose certificate does not verify: the certificate and MTA-STS checks fail.
        (
            "good.test",
            _second_address("hostname mismatch"),
            "tr-03108",
            {"TR-CERT-05": F, "TR-STS-04": F},
        ),
        # ... without STARTTLS: STARTTLS, DANE and MTA-STS fail for that address.
        (
            "good.test",
            _second_address(starttls=False),
            "tr-03108",
            {"TR-GEN-06": F, "TR-DANE-02": F, "TR-STS-04": F},
        ),
        # Addresses beyond the bound are named (skip), not probed, not failed.
        ("good.test", _many_addresses, "tr-03108", {}),
        # The baseline profile: TR-only rules drop to SHOULD or INFO.
        ("wildcard.test", None, "baseline", {"TR-CERT-01": W}),
        ("nobrainpool.test", None, "baseline", {"TR-TLS-04": W}),
    ],
)
def test_derived(
    name: str,
    edit: Callable[[DomainObservations], DomainObservations] | None,
    profile: str,
    row: dict[str, Result],
) -> None:
    obs = _load(name)
    checks = judge(edit(obs) if edit else obs, profile)
    assert _results(checks) == _expected(row), "\n".join(
        f"{c.id} {c.result}: {c.message}" for c in checks if c.result is not P
    )


def test_a_broken_address_is_named() -> None:
    checks = {c.id: c for c in judge(_second_address("hostname mismatch")(_load("good.test")),
                                     "tr-03108")}  # fmt: skip
    cert = checks["TR-CERT-05"]
    assert cert.message.startswith(f"mx.good.test:25 [{V6}]: hostname mismatch")
    assert "(+" not in cert.message  # the A address passed: one failing finding
    assert checks["TR-STS-04"].message.startswith(f"mx.good.test:25 [{V6}]: matched, but")
    starttls = {c.id: c for c in judge(_second_address(starttls=False)(_load("good.test")),
                                       "tr-03108")}  # fmt: skip
    assert starttls["TR-GEN-06"].message.startswith(f"mx.good.test:25 [{V6}]: EHLO does not")
    assert starttls["TR-DANE-02"].message.startswith(f"_25._tcp.mx.good.test [{V6}]: no cert")
    bound = {c.id: c for c in judge(_many_addresses(_load("good.test")), "tr-03108")}
    assert any("bound of 8 addresses per host" in e for e in bound["TR-GEN-06"].evidence)
