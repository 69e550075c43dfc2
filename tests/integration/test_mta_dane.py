"""Outbound DANE (RFC 7672, TR-03108-06-M): two real Postfix instances and the signed test zone.

The MTA under test (`mta`, addr 25) sends through its submission port to domains whose MX is a
second Postfix (addr 26, also rendered by mailward). One destination publishes a TLSA record
that matches the destination's key, the other one that does not. Both go through the DANE-first
policy socketmap of the default configuration.
"""

from __future__ import annotations

import hashlib
import re
import smtplib
import ssl
import time
import uuid

import dns.rdatatype
import pytest

from mailward.render.postfix import DomainConfig
from mailward_localstack.dns import DNSStack
from tests.fixtures_mta import ACCOUNT, MTAFactory, RunningMTA

pytestmark = pytest.mark.dnsstack

ZONE = "example.test"


def _publish(dns_stack: DNSStack, records: list[tuple[str, str, str]]) -> None:
    update = dns_stack.authoritative.new_update(ZONE)
    for name, rdtype, data in records:
        update.replace(name, 60, rdtype, data)
    dns_stack.authoritative.send_update(update)


def _wait_secure(dns_stack: DNSStack, name: str, rdtype: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if dns_stack.resolver.is_secure(name, rdtype):
            return
        time.sleep(0.5)
    raise AssertionError(f"{name} {rdtype} never became secure")


def _submit(mta: RunningMTA, recipient: str, token: str) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    user = f"{ACCOUNT[0]}@example.test"
    with smtplib.SMTP(mta.address, 587, local_hostname="laptop.example.test", timeout=20) as c:
        c.starttls(context=context)
        c.login(user, ACCOUNT[1])
        c.sendmail(user, [recipient], f"Subject: {token}\r\n\r\nDANE test\r\n")


def _log_line(mta: RunningMTA, pattern: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in mta.log().splitlines():
            if re.search(pattern, line):
                return line
        time.sleep(0.3)
    raise AssertionError(f"no log line /{pattern}/ in:\n{mta.log()[-4000:]}")


@pytest.fixture(scope="module")
def destination(
    mta_factory: MTAFactory, dns_stack: DNSStack, mta: RunningMTA
) -> tuple[RunningMTA, str, str]:
    tag = uuid.uuid4().hex[:6]
    good, bad = f"dane-ok-{tag}.{ZONE}", f"dane-bad-{tag}.{ZONE}"
    dest = mta_factory(
        26,
        [
            DomainConfig(good, (f"mx.{good}",), ("bob",)),
            DomainConfig(bad, (f"mx.{bad}",), ("bob",)),
        ],
        accounts={good: {"bob": "unused"}, bad: {"bob": "unused"}},
    )
    matching = dest.cert.spki_sha256()
    wrong = hashlib.sha256(b"not the destination's key").hexdigest()
    relative = lambda name: name.removesuffix(f".{ZONE}")  # noqa: E731
    _publish(
        dns_stack,
        [
            (relative(good), "MX", f"10 mx.{good}."),
            (relative(f"mx.{good}"), "A", dest.address),
            (relative(f"_25._tcp.mx.{good}"), "TLSA", f"3 1 1 {matching}"),
            (relative(bad), "MX", f"10 mx.{bad}."),
            (relative(f"mx.{bad}"), "A", dest.address),
            (relative(f"_25._tcp.mx.{bad}"), "TLSA", f"3 1 1 {wrong}"),
        ],
    )
    for name in (f"_25._tcp.mx.{good}", f"_25._tcp.mx.{bad}"):
        _wait_secure(dns_stack, name, "TLSA")
    for name in (good, bad):
        _wait_secure(dns_stack, name, "MX")
    assert dns.rdatatype.TLSA  # the records above are real TLSA RRs, validated by Unbound
    return dest, good, bad


def test_matching_tlsa_delivers_over_verified_tls(
    mta: RunningMTA, destination: tuple[RunningMTA, str, str]
) -> None:
    dest, good, _ = destination
    token = uuid.uuid4().hex
    _submit(mta, f"bob@{good}", token)
    sent = _log_line(mta, rf"to=<bob@{re.escape(good)}>.*status=sent")
    assert f"relay=mx.{good}[{dest.address}]:25" in sent
    verified = _log_line(mta, rf"Verified TLS connection established to mx\.{re.escape(good)}")
    assert re.search(r"TLSv1\.[23] with cipher", verified)
    print(f"\nevidence: {sent}\nevidence: {verified}")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not any(
        token in m for m in dest.postfix.mailbox(f"bob@{good}")
    ):
        time.sleep(0.2)
    (message,) = [m for m in dest.postfix.mailbox(f"bob@{good}") if token in m]
    assert f"by mx.{good} (Postfix) with ESMTPS" in message
    # The DANE-first policy socketmap was asked and left the destination to DANE.
    policy_log = (mta.postfix.state_dir / "tlspolicy.log").read_text()
    assert f"domain={good} policy=dane" in policy_log


def test_non_matching_tlsa_defers_and_logs_why(
    mta: RunningMTA, destination: tuple[RunningMTA, str, str]
) -> None:
    dest, _, bad = destination
    token = uuid.uuid4().hex
    _submit(mta, f"bob@{bad}", token)
    deferred = _log_line(mta, rf"to=<bob@{re.escape(bad)}>.*status=deferred")
    assert "certificate" in deferred.lower() or "TLSA" in deferred, deferred
    untrusted = _log_line(mta, rf"mx\.{re.escape(bad)}.*(Server certificate not trusted|TLSA)")
    assert untrusted
    print(f"\nevidence: {deferred}\nevidence: {untrusted}")
    assert not [m for m in dest.postfix.mailbox(f"bob@{bad}") if token in m]
    # Never delivered in the clear or over unauthenticated TLS instead.
    assert not re.search(rf"to=<bob@{re.escape(bad)}>.*status=sent", mta.log())
