"""DKIM: outbound mail signed by the MTA image's dkimpy-milter, verified through the validating
resolver, for Ed25519 and RSA, across a full key rotation.

What runs is real: mailward's rendered Postfix (the MTA image's, on loopback) with its
rendered DKIM milter configuration (render/dkim.py, started with the pod container's own
command), BIND serving the signed test zone, Unbound validating it, and a recording remote MX
that captures every message as it arrived. Each captured message is verified with dkimpy (the
project's dependency, PyNaCl for Ed25519), its keys fetched only through the validating resolver
(an answer without the AD bit counts as no key).

The rotation is the dkim part's own (parts/dkim.py: dkim/machine.py with key generation and the
resolver gate against the real Unbound). Two things stand in for the cluster: the DKIM Secret is
an in-memory store (`MemoryKeyStore`), and the DNS part's publication is an RFC 2136 UPDATE of
exactly the `_domainkey` records the part hands on (`ctx.spec.dns.dkim`). When the Active keys
change, the signer is restarted with the new configuration, as the pod's config digest rolls
the pod.

SHORTENED CLOCK (this test only): `rotateAfter: 1m` and `retireAfter: 30s` instead of 180 days
and 5 days + TTL, the part's clock is advanced in jumps instead of waited for, and the records
are published with a TTL of 5 s instead of `spec.dns.ttl.default`. The gates on the resolver
are not shortened: every step that waits for the resolver waits for the real Unbound.

One message is sent in every phase of the rotation and every one verifies: first keys Active;
new keys Published while the old sign; new keys Active, old Retiring (the earlier message still
verifies); old Withdrawn; old forgotten (the earlier message then no longer verifies: its key
is really gone).
"""

from __future__ import annotations

import asyncio
import email.utils
import smtplib
import ssl
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mailward.adapters.dkim_resolver import DKIMResolver
from mailward.api.dkim import KeyType
from mailward.api.v1alpha1 import MailDomainSpec, MailDomainStatus
from mailward.dkim.keys import generate, record_text
from mailward.parts import ReconcileContext
from mailward.parts.dkim import DKIMPart
from mailward.render.dkim import (
    DKIM_MILTER_PORT,
    DKIMSigning,
    SigningKey,
    unsigned_domains,
)
from mailward.render.dns_records import txt_data
from mailward.render.postfix import DomainConfig, MTAOptions
from mailward_localstack.dns import DNSStack
from tests.dkim_support import Clock, MemoryKeyStore, Signer, verify_all
from tests.fixtures_mta import ACCOUNT, MTAFactory, RunningMTA
from tests.integration.test_mta_rfc5321 import RemoteMTA
from tests.net import addr

pytestmark = pytest.mark.dnsstack

ZONE = "example.test"
MTA_HOST = 130
REMOTE_ADDRESS = addr(131)
RECORD_TTL = 5  # SHORTENED (see the module docstring)


# --------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="module")
def remote(dns_stack: DNSStack) -> Iterator[tuple[RemoteMTA, str]]:
    domain = f"rcpt-{uuid.uuid4().hex[:6]}.{ZONE}"
    server = RemoteMTA(REMOTE_ADDRESS, f"mx.{domain}").start()
    try:
        update = dns_stack.authoritative.new_update(ZONE)
        update.replace(f"{domain}.", 60, "MX", f"10 mx.{domain}.")
        update.replace(f"mx.{domain}.", 60, "A", REMOTE_ADDRESS)
        dns_stack.authoritative.send_update(update)
        _wait_for(lambda: dns_stack.resolver.is_secure(domain, "MX"), 30, f"{domain} MX secure")
        yield server, domain
    finally:
        server.stop()


@dataclass
class Sender:
    domain: str
    spec: MailDomainSpec
    mta: RunningMTA
    signer: Signer


@pytest.fixture(scope="module")
def sender(mta_factory: MTAFactory) -> Iterator[Sender]:
    """The signing domain's MTA: Postfix rendered with DKIM on (the milter on the MTA's own
    address instead of the pod's 127.0.0.1: several test sessions share this machine)."""
    domain = f"dkim-{uuid.uuid4().hex[:6]}.{ZONE}"
    spec = MailDomainSpec.model_validate(
        {
            "domain": domain,
            "mx": [{"host": f"mx.{domain}"}],
            "tls": {"secretName": "unused"},
            "dns": {"providerRef": {"name": "bind"}},
            # SHORTENED (see the module docstring).
            "dkim": {"managed": True, "rotateAfter": "1m", "retireAfter": "30s"},
        }
    )
    # The MTA needs to know only that it signs (which keys is the signer's business).
    placeholder = DKIMSigning("unused", ())
    mta = mta_factory(
        MTA_HOST,
        [DomainConfig(domain, (f"mx.{domain}",), (ACCOUNT[0],))],
        options=MTAOptions(dkim=placeholder),
        accounts={domain: {ACCOUNT[0]: ACCOUNT[1]}},
        overrides={"smtpd_milters": f"inet:{addr(MTA_HOST)}:{DKIM_MILTER_PORT}"},
    )
    signer = Signer(mta)
    try:
        yield Sender(domain, spec, mta, signer)
    finally:
        signer.stop()


# --------------------------------------------------------------------------------------------
# Helpers


def _wait_for(predicate: object, timeout: float, what: str) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)


def _submit(sender: Sender, author: str, recipient: str, message: str) -> None:
    """Submission on 587 with STARTTLS and the account's login, as a mail client does."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    address = sender.mta.address
    with smtplib.SMTP(address, 587, local_hostname="laptop.example.test", timeout=30) as c:
        c.starttls(context=context)
        c.login(author, ACCOUNT[1])
        c.sendmail(author, [recipient], message)


def send(sender: Sender, remote: tuple[RemoteMTA, str], phase: str) -> bytes:
    server, rcpt_domain = remote
    token = uuid.uuid4().hex
    author = f"{ACCOUNT[0]}@{sender.domain}"
    message = (
        f"From: Alice <{author}>\r\n"
        f"To: <bob@{rcpt_domain}>\r\n"
        f"Subject: DKIM phase {phase}\r\n"
        f"Date: {email.utils.formatdate()}\r\n"
        f"Message-ID: <{token}@{sender.domain}>\r\n"
        "\r\n"
        f"Sent while the rotation is in phase {phase}. {token}\r\n"
    )
    _submit(sender, author, f"bob@{rcpt_domain}", message)
    deadline = time.monotonic() + 60
    while not (found := server.received(token)):
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{phase}: not relayed; log:\n{sender.mta.log()[-3000:]}\n{sender.signer.log()}"
            )
        time.sleep(0.2)
    return found[0][2].encode()


class Rotation:
    """The dkim part's passes, with the DNS part's publication of what it hands on."""

    def __init__(self, sender: Sender, dns_stack: DNSStack) -> None:
        self.sender = sender
        self.dns = dns_stack
        self.store = MemoryKeyStore()
        self.clock = Clock()
        address = dns_stack.resolver.address
        self.part = DKIMPart(self.store, lambda: DKIMResolver(address), clock=self.clock)
        self.published: set[str] = set()
        self.signing: DKIMSigning | None = None

    def run(self) -> ReconcileContext:
        ctx = ReconcileContext(
            name="dkim",
            namespace="default",
            uid="0000",
            generation=1,
            spec=self.sender.spec,
            status=MailDomainStatus(),
        )
        result = asyncio.run(self.part.reconcile(ctx))
        assert ctx.spec.dns is not None
        self._publish(
            {k.selector: record_text(k.key_type, k.public_key) for k in ctx.spec.dns.dkim}
        )
        signing = ctx.findings.dkim_signing
        if signing != self.signing and signing is not None:
            # A new Active key: the pod would roll with the new configuration.
            private = self.store.state.private
            self.sender.signer.start(
                signing, {k.secret_key: private[k.selector] for k in signing.keys}
            )
        self.signing = signing
        (verdict,) = result.verdicts
        print(f"evidence: pass at {self.clock.now:%H:%M:%S}: {self.phases()}; {verdict.message}")
        return ctx

    def phases(self) -> dict[str, str]:
        return {k.selector: k.phase for k in self.store.state.keys}

    def until(self, what: str, predicate: object, timeout: float = 90) -> None:
        """Passes (a part's retry) until `predicate` holds: the resolver decides when."""
        assert callable(predicate)
        deadline = time.monotonic() + timeout
        started = time.monotonic()
        while True:
            self.run()
            if predicate():
                print(f"evidence: {what} after {time.monotonic() - started:.1f} s of real time")
                return
            assert time.monotonic() < deadline, f"timed out: {what}: {self.phases()}"
            time.sleep(1.0)

    def _publish(self, records: dict[str, str]) -> None:
        update = self.dns.authoritative.new_update(ZONE)
        for selector in sorted(self.published - set(records)):
            update.delete(f"{selector}._domainkey.{self.sender.domain}.", "TXT")
        for selector, text in sorted(records.items()):
            if selector not in self.published:
                update.replace(
                    f"{selector}._domainkey.{self.sender.domain}.",
                    RECORD_TTL,
                    "TXT",
                    txt_data(text),
                )
        if self.published != set(records):
            self.dns.authoritative.send_update(update)
        self.published = set(records)


def _of(phases: dict[str, str], phase: str) -> list[str]:
    return sorted(s for s, p in phases.items() if p == phase)


def _checked(
    message: bytes, resolver: str, phase: str, expect: set[str]
) -> list[tuple[str, str, bool]]:
    results = verify_all(message, resolver)
    print(f"evidence: {phase}: {results}")
    assert {s for s, _, _ in results} == expect, results
    assert {a for _, a, _ in results} == {"ed25519-sha256", "rsa-sha256"}, results
    assert all(ok for _, _, ok in results), results
    return results


# --------------------------------------------------------------------------------------------


def test_outbound_mail_verifies_in_every_phase_of_a_rotation(
    sender: Sender, remote: tuple[RemoteMTA, str], dns_stack: DNSStack
) -> None:
    resolver = dns_stack.resolver.address
    rotation = Rotation(sender, dns_stack)

    # 1. First keys: generated and published, then Active once Unbound returns them validated.
    rotation.run()
    first = rotation.phases()
    assert sorted(first.values()) == ["Published", "Published"], first
    assert {s[-1] for s in first} == {"e", "r"}
    rotation.until("first keys Active", lambda: _of(rotation.phases(), "Active") == sorted(first))
    m1 = send(sender, remote, "first keys Active")
    _checked(m1, resolver, "first keys Active", set(first))

    # 2. Rotation due: new keys Published beside the Active ones, which still sign.
    rotation.clock.advance(61)
    rotation.run()
    second = {s for s, p in rotation.phases().items() if p == "Published"}
    assert len(second) == 2, rotation.phases()
    assert not second & set(first), rotation.phases()
    m2 = send(sender, remote, "new keys Published, old Active")
    _checked(m2, resolver, "new keys Published, old Active", set(first))

    # 3. The resolver returns the new keys: they sign, the old ones retire (still in DNS).
    rotation.until("new keys Active", lambda: _of(rotation.phases(), "Active") == sorted(second))
    assert _of(rotation.phases(), "Retiring") == sorted(first)
    m3 = send(sender, remote, "new keys Active, old Retiring")
    _checked(m3, resolver, "new keys Active, old Retiring", second)
    _checked(m2, resolver, "earlier message while its keys are Retiring", set(first))

    # 4. retireAfter passed: the old keys are withdrawn from DNS.
    rotation.clock.advance(31)
    rotation.run()
    assert _of(rotation.phases(), "Withdrawn") == sorted(first), rotation.phases()
    assert rotation.published == second
    m4 = send(sender, remote, "old keys Withdrawn")
    _checked(m4, resolver, "old keys Withdrawn", second)

    # 5. The resolver no longer returns them: forgotten, and their signatures no longer verify.
    rotation.until("old keys forgotten", lambda: set(rotation.phases()) == second)
    m5 = send(sender, remote, "old keys forgotten")
    _checked(m5, resolver, "old keys forgotten", second)
    gone = verify_all(m2, resolver)
    print(f"evidence: earlier message after its keys were withdrawn: {gone}")
    assert gone, "the signatures are still there"
    assert not any(ok for _, _, ok in gone), gone
    assert set(rotation.store.state.private) == second, "withdrawn private keys must leave"
    signed = sender.signer.log().count("DKIM signature added")
    print(f"evidence: signer restarts {sender.signer.starts}, signatures added {signed}")
    assert signed == 10  # five messages, two signatures each
    path = Path(sender.mta.postfix.state_dir / "config" / "main.cf")
    assert "milter_default_action = tempfail" in path.read_text()


def test_without_the_signer_submission_is_deferred_not_sent_unsigned(
    sender: Sender, remote: tuple[RemoteMTA, str]
) -> None:
    """`milter_default_action = tempfail`: the client is told to try again (4xx); nothing leaves
    unsigned."""
    sender.signer.stop()
    server, rcpt_domain = remote
    before = len(server.messages)
    author = f"{ACCOUNT[0]}@{sender.domain}"
    message = f"From: <{author}>\r\nTo: <bob@{rcpt_domain}>\r\nSubject: no signer\r\n\r\nx\r\n"
    # Postfix answers every command after the greeting with the milter's default action: the
    # client is told already at STARTTLS (454 4.3.0).
    with pytest.raises(smtplib.SMTPException) as refused:
        _submit(sender, author, f"bob@{rcpt_domain}", message)
    error = refused.value
    if isinstance(error, smtplib.SMTPRecipientsRefused):
        codes = [code for code, _ in error.recipients.values()]
    else:
        assert isinstance(error, smtplib.SMTPResponseException), error
        codes = [error.smtp_code]
    print(f"evidence: submission without the signer answered {codes}: {error}")
    assert all(400 <= code < 500 for code in codes), error
    time.sleep(2)
    assert len(server.messages) == before, "a message left while the signer was down"


FLEET_MTA_HOST = 132


def test_one_signer_for_several_domains_signs_each_with_its_own_keys(
    mta_factory: MTAFactory, remote: tuple[RemoteMTA, str], dns_stack: DNSStack
) -> None:
    """A MailServer's fleet serves several domains with one signer (render_tables: SigningTable
    and KeyTables). Two domains with both key types are signed with their own keys; a third
    with only an Ed25519 key is left out (dkimpy-milter would fail its mail looking it up in the
    RSA table), and its mail is still delivered, unsigned."""
    tag = uuid.uuid4().hex[:6]
    domains = [f"f{i}-{tag}.{ZONE}" for i in (1, 2, 3)]
    types: dict[str, tuple[KeyType, ...]] = {
        domains[0]: ("ed25519", "rsa"),
        domains[1]: ("ed25519", "rsa"),
        domains[2]: ("ed25519",),
    }
    private: dict[str, str] = {}
    signing_keys = []
    update = dns_stack.authoritative.new_update(ZONE)
    for domain, wanted in types.items():
        for algorithm in wanted:
            pair = generate(algorithm)
            selector = f"fleet{algorithm[0]}"
            item = f"{domain}_{selector}.key"
            signing_keys.append(SigningKey(domain, selector, algorithm, item=item))
            private[selector + domain] = pair.private
            update.replace(
                f"{selector}._domainkey.{domain}.",
                60,
                "TXT",
                txt_data(record_text(algorithm, pair.public)),
            )
    dns_stack.authoritative.send_update(update)
    for key in signing_keys:
        _wait_for(
            lambda key=key: dns_stack.resolver.is_secure(
                f"{key.selector}._domainkey.{key.domain}", "TXT"
            ),
            30,
            f"{key.selector}._domainkey.{key.domain} TXT secure",
        )
    signing = DKIMSigning("fleet-dkim", tuple(signing_keys))
    assert unsigned_domains(signing) == [domains[2]]
    mta = mta_factory(
        FLEET_MTA_HOST,
        [DomainConfig(d, (f"mx.fleet-{tag}.{ZONE}",), (ACCOUNT[0],)) for d in domains],
        options=MTAOptions(dkim=signing),
        accounts={d: {ACCOUNT[0]: ACCOUNT[1]} for d in domains},
        overrides={"smtpd_milters": f"inet:{addr(FLEET_MTA_HOST)}:{DKIM_MILTER_PORT}"},
    )
    signer = Signer(mta)
    try:
        signer.start(signing, {k.secret_key: private[k.selector + k.domain] for k in signing_keys})
        print("evidence: fleet signer tables:")
        for name in ("signingtable", "keytable-rsa", "keytable-ed25519"):
            print(f"  {name}: {(signer.dir / name).read_text().strip()}")
        resolver = dns_stack.resolver.address
        for domain in domains:
            sender = Sender(domain, MailDomainSpec.model_validate(_spec(domain)), mta, signer)
            message = send(sender, remote, f"fleet {domain}")
            results = verify_all(message, resolver)
            print(f"evidence: fleet, mail from {domain}: {results}")
            if domain == domains[2]:
                assert results == []
                continue
            assert {(s, a) for s, a, _ in results} == {
                ("fleete", "ed25519-sha256"),
                ("fleetr", "rsa-sha256"),
            }
            assert all(ok for _, _, ok in results), results
            assert all(f"d={domain}" in line for line in _signature_lines(message)), message
    finally:
        signer.stop()


def _spec(domain: str) -> dict[str, object]:
    return {"domain": domain, "mx": [{"host": f"mx.{domain}"}], "tls": {"secretName": "unused"}}


def _signature_lines(message: bytes) -> list[str]:
    """Each DKIM-Signature field, unfolded."""
    headers = message.split(b"\r\n\r\n", 1)[0].decode().replace("\r\n ", " ").replace("\r\n\t", " ")
    return [
        line.replace(" ", "")
        for line in headers.split("\r\n")
        if line.lower().startswith("dkim-signature:")
    ]
