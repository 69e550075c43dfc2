"""TR-RPT-02 on literal DNS answers: the TLSRPT mailbox's mail route and its enforcement.

The DNS here is a dictionary and the MTA-STS fetch a function returning a fixed body: these
tests cover the judgement; `tests/integration/test_compliance_lab.py` runs it against BIND,
Unbound and a real policy server.
"""

from __future__ import annotations

import asyncio

import pytest

from mailward.compliance import records, rptmailbox
from mailward.compliance.checks.findings import Findings
from mailward.compliance.checks.tlsrpt import judge_mail_route, judge_mailboxes
from mailward.compliance.model import CheckResult, Result
from mailward.compliance.observations import Answer, HTTPSResult, MTASTSObservation

TLSA = "3 1 1 " + "ab" * 32
ENFORCE = "version: STSv1\r\nmode: enforce\r\nmx: mx.r.test\r\nmax_age: 86400\r\n"
TESTING = "version: STSv1\r\nmode: testing\r\nmx: mx.r.test\r\nmax_age: 86400\r\n"


def _answer(name: str, rdtype: str, *records: str, rcode: str = "NOERROR",
            secure: bool = True) -> Answer:  # fmt: skip
    return Answer(name, rdtype, rcode, secure, tuple(records))


class FakeDNS:
    """Answers from a table; anything not in it exists with no records of the type (NODATA)."""

    def __init__(self, *answers: Answer) -> None:
        self.table = {(a.name, a.rdtype): a for a in answers}
        self.asked: list[tuple[str, str]] = []

    async def query(self, name: str, rdtype: str) -> Answer:
        self.asked.append((name, rdtype))
        return self.table.get((name, rdtype), _answer(name, rdtype))


def _check(
    dns: FakeDNS,
    rua: list[str],
    *,
    policy: str | None = None,
    profile: str = "tr-03108",
    policy_domain: str = "d.test",
) -> CheckResult:
    fetched: list[str] = []

    async def fetch_policy(host: str, address: str) -> HTTPSResult:
        fetched.append(host)
        result = HTTPSResult(f"https://{host}/.well-known/mta-sts.txt")
        if policy is None:
            result.error = "ConnectionRefusedError: refused"
        else:
            result.status, result.body = 200, policy.encode()
        return result

    observed = asyncio.run(rptmailbox.gather(dns.query, fetch_policy, rua, policy_domain))
    findings = Findings(profile)
    judge_mailboxes(findings, observed)
    (result,) = [c for c in findings.results() if c.id == "TR-RPT-02"]
    return result


# -- pure rules ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "domains", "error"),
    [
        ("mailto:tlsrpt@Tlsrpt.Example.Test.", ["tlsrpt.example.test"], None),
        ("mailto:a@x.test%2Cb@y.test", ["x.test", "y.test"], None),  # %2C separates addresses
        ("mailto:a%40b@x.test?subject=tls", ["x.test"], None),  # the last @ starts the domain
        ("mailto:r@b%C3%BCcher.test", ["xn--bcher-kva.test"], None),
        ("mailto:r@[192.0.2.1]", ["[192.0.2.1]"], None),
        ("mailto:r@x..test", [], "is not a valid domain name"),
        ("mailto:r@x_y.test", [], "is not a valid domain name"),
        ("mailto:r@%FF.test", [], "is not a valid domain name"),
        ("mailto:nobody", [], "is not local-part@domain"),
        ("https://r.test/v1", [], "not a mailto: URI"),
    ],
)
def test_mailto_domains(uri: str, domains: list[str], error: str | None) -> None:
    got, why = records.mailto_domains(uri)
    assert got == domains
    if error is None:
        assert why is None
    else:
        assert why is not None
        assert error in why


def test_mail_route_rules() -> None:
    assert records.parse_mx(["0 ."]) == ([], True)
    assert records.parse_mx(["20 b.test.", "10 A.test."]) == (["a.test", "b.test"], False)
    assert records.parse_mx(["0 .", "10 a.test."]) == (["a.test"], False)
    null = judge_mail_route("d.test", [], True, {})
    assert not null.deliverable
    assert "RFC 7505" in null.message
    implicit = judge_mail_route("d.test", [], False, {"d.test": ["192.0.2.1"]})
    assert implicit.deliverable
    assert implicit.targets == ("d.test",)
    assert "implicit MX" in implicit.message
    nothing = judge_mail_route("d.test", [], False, {"d.test": []})
    assert not nothing.deliverable
    assert "no MX and no A/AAAA" in nothing.message
    half = judge_mail_route("d.test", ["a.test", "b.test"], False,
                                  {"a.test": [], "b.test": ["2001:db8::1"]})  # fmt: skip
    assert half.deliverable
    assert half.targets == ("b.test",)
    assert "without address: a.test" in half.message
    dead = judge_mail_route("d.test", ["a.test"], False, {"a.test": []})
    assert not dead.deliverable
    assert "without A/AAAA" in dead.message


def test_plan_is_bounded_and_groups_by_domain() -> None:
    rua = [f"mailto:r{i}@m{i}.test" for i in range(6)] + ["https://r.test/v1"]
    planned = rptmailbox.plan(rua)
    assert [m.domain for m in planned.mailboxes] == ["m0.test", "m1.test", "m2.test", "m3.test"]
    assert planned.unchecked == ["mailto:r4@m4.test", "mailto:r5@m5.test"]
    same = rptmailbox.plan(["mailto:a@m.test", "mailto:b@M.test"])
    assert [(m.domain, m.uris) for m in same.mailboxes] == [
        ("m.test", ["mailto:a@m.test", "mailto:b@M.test"])
    ]


def test_rua_taken_only_from_one_valid_record() -> None:
    record = '"v=TLSRPTv1; rua=mailto:r@m.test,https://r.test/v1"'
    assert records.tlsrpt_rua(_answer("_smtp._tls.d.test", "TXT", record)) == [
        "mailto:r@m.test",
        "https://r.test/v1",
    ]
    assert records.tlsrpt_rua(_answer("_smtp._tls.d.test", "TXT", record, record)) == []
    bogus = _answer("_smtp._tls.d.test", "TXT", rcode="SERVFAIL", secure=False)
    assert records.tlsrpt_rua(bogus) == []


# -- judged observations ---------------------------------------------------------------------


def test_deliverable_mailbox_without_enforcement_passes() -> None:
    dns = FakeDNS(
        _answer("tlsrpt.d.test", "MX", "10 tlsrpt.d.test."),
        _answer("tlsrpt.d.test", "A", "192.0.2.26"),
    )
    result = _check(dns, ["mailto:tlsrpt@tlsrpt.d.test"])
    assert result.result is Result.PASS, result.message
    assert "tlsrpt.d.test (192.0.2.26)" in result.message
    assert ("_25._tcp.tlsrpt.d.test", "TLSA") in dns.asked
    assert ("_mta-sts.tlsrpt.d.test", "TXT") in dns.asked


def test_implicit_mx_counts_as_a_route() -> None:
    dns = FakeDNS(_answer("m.test", "AAAA", "2001:db8::26"))
    result = _check(dns, ["mailto:r@m.test"])
    assert result.result is Result.PASS, result.message
    assert "implicit MX" in result.message


@pytest.mark.parametrize(
    ("answers", "why"),
    [
        ((), "no MX and no A/AAAA"),
        ((_answer("m.test", "MX", "0 ."),), "null MX"),
        ((_answer("m.test", "MX", rcode="NXDOMAIN"),), "NXDOMAIN"),
        ((_answer("m.test", "MX", "10 mx.m.test."),), "MX mx.m.test without A/AAAA"),
        ((_answer("m.test", "MX", rcode="SERVFAIL", secure=False),), "SERVFAIL"),
    ],
)
def test_mailbox_without_a_route_fails_the_must(answers: tuple[Answer, ...], why: str) -> None:
    result = _check(FakeDNS(*answers), ["mailto:r@m.test"])
    assert result.result is Result.FAIL, result.message
    assert why in result.message
    assert "defeats TR-RPT-01" in result.message
    assert result.remedy


def test_no_route_only_warns_in_the_baseline_profile() -> None:
    result = _check(FakeDNS(), ["mailto:r@m.test"], profile="baseline")
    assert result.result is Result.WARN


def test_resolver_timeout_is_an_error_not_a_verdict() -> None:
    dns = FakeDNS(_answer("m.test", "MX", rcode="TIMEOUT", secure=False))
    assert _check(dns, ["mailto:r@m.test"]).result is Result.ERROR


def test_secure_tlsa_on_the_mailbox_mx_warns_naming_the_host() -> None:
    dns = FakeDNS(
        _answer("m.test", "MX", "10 mx.r.test."),
        _answer("mx.r.test", "A", "192.0.2.25"),
        _answer("_25._tcp.mx.r.test", "TLSA", TLSA),
    )
    result = _check(dns, ["mailto:r@m.test"])
    assert result.result is Result.WARN, result.message
    assert "mx.r.test" in result.message
    assert "_25._tcp.mx.r.test" in result.message
    assert "SHOULD NOT" in result.message


def test_insecure_tlsa_is_not_enforced_and_passes() -> None:
    dns = FakeDNS(
        _answer("m.test", "MX", "10 mx.r.test."),
        _answer("mx.r.test", "A", "192.0.2.25"),
        _answer("_25._tcp.mx.r.test", "TLSA", TLSA, secure=False),
    )
    result = _check(dns, ["mailto:r@m.test"])
    assert result.result is Result.PASS, result.message
    assert "not DNSSEC-secure" in result.message


@pytest.mark.parametrize(
    ("policy", "expected", "text"),
    [
        (ENFORCE, Result.WARN, "mode: enforce"),
        (TESTING, Result.PASS, "mode: testing"),
        (None, Result.PASS, "not fetchable"),
    ],
)
def test_mta_sts_enforce_on_the_mailbox_domain_warns(
    policy: str | None, expected: Result, text: str
) -> None:
    dns = FakeDNS(
        _answer("m.test", "MX", "10 mx.m.test."),
        _answer("mx.m.test", "A", "192.0.2.25"),
        _answer("_mta-sts.m.test", "TXT", '"v=STSv1; id=1"'),
        _answer("mta-sts.m.test", "A", "192.0.2.44"),
    )
    result = _check(dns, ["mailto:r@m.test"], policy=policy)
    assert result.result is expected, result.message
    assert text in result.message


def test_policy_domain_itself_is_judged_with_its_own_policy() -> None:
    dns = FakeDNS(
        _answer("d.test", "MX", "10 mx.d.test."),
        _answer("mx.d.test", "A", "192.0.2.25"),
        _answer("_25._tcp.mx.d.test", "TLSA", TLSA),
    )

    async def never(host: str, address: str) -> HTTPSResult:
        raise AssertionError("the policy domain's own policy is fetched by the engine")

    observed = asyncio.run(rptmailbox.gather(dns.query, never, ["mailto:r@d.test"], "d.test"))
    own = HTTPSResult("https://mta-sts.d.test/.well-known/mta-sts.txt", status=200,
                      body=ENFORCE.encode())  # fmt: skip
    txt = _answer("_mta-sts.d.test", "TXT", '"v=STSv1; id=1"')
    host = _answer("mta-sts.d.test", "A", "192.0.2.44")
    rptmailbox.share_policy(observed, "d.test", MTASTSObservation(txt, host, own))
    findings = Findings("tr-03108")
    judge_mailboxes(findings, observed)
    (result,) = [c for c in findings.results() if c.id == "TR-RPT-02"]
    assert result.result is Result.WARN
    (evidence,) = result.evidence
    assert "_25._tcp.mx.d.test" in evidence
    assert "mode: enforce" in evidence


def test_nothing_to_judge_without_mailto() -> None:
    result = _check(FakeDNS(), ["https://r.test/v1"])
    assert result.result is Result.SKIP


def test_address_literal_is_skipped_and_an_invalid_domain_fails() -> None:
    assert _check(FakeDNS(), ["mailto:r@[192.0.2.1]"]).result is Result.SKIP
    assert _check(FakeDNS(), ["mailto:r@x..test"]).result is Result.FAIL
