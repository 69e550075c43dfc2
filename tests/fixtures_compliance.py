"""pytest plugin: the compliance lab, a compliant mail domain and its broken twins.

Every variant is its own zone under `test.` on a DNS stack of its own (BIND + validating
Unbound on this session's addresses .163/.164, so the shared `dns_stack` keeps its zones), with
MX, TLSA, MTA-STS, TLSRPT, SPF, DKIM, DMARC and SRV records; the TLSRPT mailbox lives on its own
host `tlsrpt.<zone>` (an MX and an address, no TLSA, no MTA-STS), as TR-RPT-02 wants. Variants
that differ only in DNS or in the policy share the compliant Postfix (one certificate naming all
their MX hosts); variants that differ in the server get a Postfix of their own.

`VARIANTS[name]` is the set of check IDs that must fail for that zone, and nothing else may;
`WARN_VARIANTS[name]` the checks that must warn in a zone that fails nothing.

`IPV6_ZONE`'s MX has two addresses: its A is the compliant Postfix, its AAAA `::1` (the only
IPv6 loopback address; no other IPv6 address is ever used) a Postfix whose certificate names
another host. [::1]:25 is shared by every session on the machine: when it is taken the zone is
left out (`ComplianceLab.unavailable` says why) and its tests skip.
"""

from __future__ import annotations

import base64
import datetime as dt
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from mailward_localstack._process import stop_all
from mailward_localstack.dns import DNSStack, ZoneSpec
from mailward_localstack.pki import IssuedCert, LocalCA
from tests.compliance_targets import (
    PolicyRoute,
    PolicyServer,
    PostfixTarget,
    port_taken,
    sts_policy,
)
from tests.net import addr

LAB_AUTH = addr(163)
LAB_RESOLVER = addr(164)
POLICY_ADDRESS = addr(174)

# zone -> check IDs that must fail (and no others)
VARIANTS: dict[str, frozenset[str]] = {
    "good.test": frozenset(),
    "unsigned.test": frozenset({"TR-DANE-01", "TR-DANE-02"}),
    "bogus.test": frozenset({"TR-DANE-01"}),
    "tlsa-mismatch.test": frozenset({"TR-DANE-02"}),
    "tlsa-usage1.test": frozenset({"TR-DANE-02"}),
    "nostarttls.test": frozenset({"TR-GEN-06", "TR-DANE-02", "TR-STS-04"}),
    "tls10.test": frozenset({"TR-TLS-01", "TR-TLS-03"}),
    "weakfirst.test": frozenset({"TR-TLS-03"}),
    "wildcard.test": frozenset({"TR-CERT-01"}),
    "expired.test": frozenset({"TR-CERT-05", "TR-STS-04"}),
    "sts-missing-mx.test": frozenset({"TR-STS-04"}),
    "sts-redirect.test": frozenset({"TR-STS-02"}),
    "rpt-https.test": frozenset({"TR-RPT-01"}),
    "rpt-noroute.test": frozenset({"TR-RPT-02"}),
    "rpt-dane.test": frozenset(),
    "rpt-sts.test": frozenset(),
    "openrelay.test": frozenset({"TR-SMTP-03"}),
    "vrfy250.test": frozenset({"TR-SMTP-04"}),
    # brainpoolP256r1 supported, secp256r1 first in the server's order: warns (see below).
    "p256first.test": frozenset(),
    "p256first-rsa.test": frozenset(),
    # No brainpoolP256r1, and the server takes the client's order: that absence is certain.
    "nobrainpool.test": frozenset({"TR-TLS-04"}),
    # An MX on port 25 only, no client SRV record: nothing for mail clients, nothing to fail.
    "receiveonly.test": frozenset(),
    # A compliant A address, and an AAAA (::1) whose certificate names another host.
    "aaaa-badcert.test": frozenset({"TR-CERT-05", "TR-DANE-02", "TR-STS-04"}),
}
IPV6_ZONE = "aaaa-badcert.test"
IPV6_MX_ADDRESS = "::1"
# zone -> check IDs that must warn (a SHOULD of a MUST check): still compliant.
WARN_VARIANTS: dict[str, frozenset[str]] = {
    "rpt-dane.test": frozenset({"TR-RPT-02"}),
    "rpt-sts.test": frozenset({"TR-RPT-02"}),
    # With its secp256r1 certificate a TLS 1.2 client must offer secp256r1 beside brainpool, and
    # the server picks secp256r1 first: brainpool's support cannot be seen, its priority is a
    # SHOULD (TR-03116-4 §2.2.2).
    "p256first.test": frozenset({"TR-TLS-04"}),
    # The same server with an RSA certificate: brainpool offered alone shows its support, and
    # the warning is about the priority only.
    "p256first-rsa.test": frozenset({"TR-TLS-04"}),
}
# zone -> check IDs that are not applicable (skip) although they apply in the compliant zone.
SKIP_VARIANTS: dict[str, frozenset[str]] = {
    "receiveonly.test": frozenset({"TR-GEN-01", "TR-GEN-02"}),
}
# A compliant zone for the operator test (its TLSA is deleted and repaired there).
OPERATED_ZONE = "operated.test"
# Only MailDomains with this label are probed by the test operator (fixtures_operator.py), so
# the compliance daemon never writes to the other tests' objects.
LAB_LABEL = "mailward.io/compliance-lab"
# Zones served by the compliant Postfix; the others have a Postfix of their own.
SHARED_MX = (
    "good.test", "unsigned.test", "bogus.test", "tlsa-mismatch.test", "tlsa-usage1.test",
    "sts-missing-mx.test", "sts-redirect.test", "rpt-https.test", "rpt-noroute.test",
    "rpt-dane.test", "rpt-sts.test", IPV6_ZONE, OPERATED_ZONE,
)  # fmt: skip
OWN_MX_ADDRESS = {
    "nostarttls.test": addr(166),
    "tls10.test": addr(167),
    "weakfirst.test": addr(168),
    "wildcard.test": addr(169),
    "expired.test": addr(170),
    "openrelay.test": addr(171),
    "vrfy250.test": addr(172),
    "p256first.test": addr(175),
    "nobrainpool.test": addr(176),
    "receiveonly.test": addr(177),
    "p256first-rsa.test": addr(178),
}
SHARED_MX_ADDRESS = addr(165)


@dataclass
class ComplianceLab:
    dns: DNSStack
    ca: LocalCA
    postfixes: list[PostfixTarget]
    policy: PolicyServer
    certs: dict[str, IssuedCert] = field(default_factory=dict)
    # zone -> why it is left out (its server could not be started: [::1]:25 taken)
    unavailable: dict[str, str] = field(default_factory=dict)

    @property
    def resolver(self) -> str:
        return self.dns.resolver.address

    @property
    def ca_file(self) -> str:
        return str(self.ca.ca_file)


def _dkim_records() -> list[str]:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    rsa_pub = rsa_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    ed_pub = (
        ed25519.Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )
    return [
        f'mail._domainkey IN TXT "v=DKIM1; k=rsa; p={base64.b64encode(rsa_pub).decode()}"',
        f'ed25519._domainkey IN TXT "v=DKIM1; k=ed25519; p={base64.b64encode(ed_pub).decode()}"',
    ]


def zone_records(
    zone: str,
    mx_address: str,
    tlsa: list[str],
    *,
    tlsrpt: str | None = None,
    dkim: list[str] | None = None,
    policy_address: str = POLICY_ADDRESS,
    rpt_host: bool = True,
    client_srv: bool = True,
) -> list[str]:
    # The report mailbox's host: DNS only, the engine never connects to it, so it may share the
    # MX's address; what matters is that it has no TLSA of its own.
    rpt = [f"tlsrpt IN A {mx_address}", "tlsrpt IN MX 10 tlsrpt"] if rpt_host else []
    srv = [
        f"_submissions._tcp IN SRV 0 1 465 mx.{zone}.",
        "_imaps._tcp IN SRV 0 0 0 .",
        "_pop3s._tcp IN SRV 0 0 0 .",
    ]
    return [
        "@ IN MX 10 mx",
        f"mx IN A {mx_address}",
        *(f"_25._tcp.mx IN TLSA {t}" for t in tlsa),
        f"mta-sts IN A {policy_address}",
        '_mta-sts IN TXT "v=STSv1; id=20261127T1200"',
        f'_smtp._tls IN TXT "{tlsrpt or f"v=TLSRPTv1; rua=mailto:tlsrpt@tlsrpt.{zone}"}"',
        *rpt,
        '@ IN TXT "v=spf1 mx -all"',
        f'_dmarc IN TXT "v=DMARC1; p=reject; rua=mailto:dmarc@{zone}"',
        *(dkim or []),
        *(srv if client_srv else []),
    ]


def build_lab_plan(
    ca: LocalCA, out: Path
) -> tuple[list[ZoneSpec], list[PostfixTarget], PolicyServer, dict[str, IssuedCert]]:
    certs: dict[str, IssuedCert] = {}
    shared = ca.issue_server_cert([f"mx.{z}" for z in SHARED_MX], out_dir=out, basename="shared")
    now = dt.datetime.now(dt.UTC)
    for zone in OWN_MX_ADDRESS:
        if zone == "wildcard.test":
            cert = ca.issue_server_cert(
                ["*.wildcard.test"], out_dir=out, basename="wildcard", allow_wildcard=True
            )
        elif zone == "expired.test":
            cert = ca.issue_server_cert(
                ["mx.expired.test"],
                out_dir=out,
                not_before=now - dt.timedelta(days=100),
                not_after=now - dt.timedelta(days=10),
            )
        elif zone == "p256first-rsa.test":
            cert = ca.issue_server_cert([f"mx.{zone}"], out_dir=out, key_type="rsa")
        else:
            cert = ca.issue_server_cert([f"mx.{zone}"], out_dir=out)
        certs[zone] = cert
    for zone in SHARED_MX:
        certs[zone] = shared
    stranger = ca.issue_server_cert(["stranger.invalid"], out_dir=out)

    dkim = _dkim_records()
    zones: list[ZoneSpec] = []
    for zone in (*VARIANTS, OPERATED_ZONE):
        cert = certs[zone]
        tlsa = [f"3 1 1 {cert.spki_sha256()}", f"2 1 1 {ca.spki_sha256()}"]
        tlsrpt = None
        rpt_host = True
        extra: list[str] = []
        if zone == "tlsa-mismatch.test":
            tlsa = [f"3 1 1 {stranger.spki_sha256()}", f"2 1 1 {ca.spki_sha256()}"]
        elif zone == "tlsa-usage1.test":
            tlsa = [f"1 1 1 {cert.spki_sha256()}"]
        elif zone == "rpt-https.test":
            tlsrpt = "v=TLSRPTv1; rua=https://reports.rpt-https.test/v1"
        elif zone == "rpt-noroute.test":
            # The mailbox host exists (NOERROR) but has neither MX nor A/AAAA.
            rpt_host = False
            extra = ['tlsrpt IN TXT "no mail here"']
        elif zone == "rpt-dane.test":
            # Reports go through the domain's own MX, which has a secure TLSA.
            rpt_host = False
            extra = ["tlsrpt IN MX 10 mx"]
        elif zone == "rpt-sts.test":
            # The mailbox at the policy domain itself: its MX has TLSA, its policy enforces.
            tlsrpt = f"v=TLSRPTv1; rua=mailto:tlsrpt@{zone}"
        elif zone == IPV6_ZONE:
            extra = [f"mx IN AAAA {IPV6_MX_ADDRESS}"]
        mx_address = OWN_MX_ADDRESS.get(zone, SHARED_MX_ADDRESS)
        records = zone_records(
            zone, mx_address, tlsa, tlsrpt=tlsrpt, dkim=dkim, rpt_host=rpt_host,
            client_srv=zone != "receiveonly.test",
        ) + extra  # fmt: skip
        if zone == OPERATED_ZONE:
            # Published by the operator's DNS part (test_compliance_operator.py), not by hand.
            records = ()
        if zone == "unsigned.test":
            zones.append(ZoneSpec(zone, signed=False, records=records))
        elif zone == "bogus.test":
            zones.append(ZoneSpec(zone, ds="bogus", records=records))
        else:
            zones.append(ZoneSpec(zone, records=records))

    postfixes = [
        PostfixTarget("shared", SHARED_MX_ADDRESS, "mx.good.test", shared, list(SHARED_MX))
    ]
    for zone, address in OWN_MX_ADDRESS.items():
        target = PostfixTarget(zone.split(".")[0], address, f"mx.{zone}", certs[zone], [zone])
        if zone == "nostarttls.test":
            target.starttls = False
        elif zone == "tls10.test":
            target.submissions_protocols = ">=TLSv1"
            target.submissions_ciphers = COMPLIANT_WITH_SHA1
        elif zone == "weakfirst.test":
            target.ciphers = "ECDHE-ECDSA-AES128-SHA:" + target.ciphers
        elif zone == "openrelay.test":
            target.open_relay = True
        elif zone == "vrfy250.test":
            target.vrfy_answers_250 = True
        elif zone in ("p256first.test", "p256first-rsa.test"):
            target.groups = "prime256v1 brainpoolP256r1 secp384r1"
            if zone == "p256first-rsa.test":
                target.ciphers = target.submissions_ciphers = COMPLIANT_RSA_CIPHERS
        elif zone == "nobrainpool.test":
            target.groups = "prime256v1 secp384r1"
            target.server_order = False
        elif zone == "receiveonly.test":
            target.submissions = False
        postfixes.append(target)
    # The AAAA of IPV6_ZONE's MX: compliant but for its certificate (another host's name).
    postfixes.append(
        PostfixTarget("aaaa-badcert-v6", IPV6_MX_ADDRESS, f"mx.{IPV6_ZONE}", stranger,
                      [IPV6_ZONE], submissions=False)
    )  # fmt: skip

    routes: dict[str, PolicyRoute] = {}
    policy_certs: dict[str, IssuedCert] = {}
    for zone in (*VARIANTS, OPERATED_ZONE):
        host = f"mta-sts.{zone}"
        policy_certs[host] = ca.issue_server_cert([host], out_dir=out)
        mx = [f"mx.{zone}"]
        if zone == "sts-missing-mx.test":
            mx = ["mx2.sts-missing-mx.test"]
        routes[host] = PolicyRoute(body=sts_policy(mx))
        if zone == "sts-redirect.test":
            routes[host] = PolicyRoute(
                status=301,
                body="moved\n",
                location=f"https://www.{zone}/.well-known/mta-sts.txt",
            )
    return zones, postfixes, PolicyServer(POLICY_ADDRESS, routes, policy_certs), certs


COMPLIANT_RSA_CIPHERS = (
    "ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-RSA-AES128-SHA256:ECDHE-RSA-AES256-SHA384"
)
COMPLIANT_WITH_SHA1 = (
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES128-SHA"
)


def lab_ca_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Known before the lab starts, so the session's operator can be told where the CA will be."""
    return tmp_path_factory.getbasetemp() / "compliance-lab-ca"


def operator_environment(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """What the test operator needs to probe lab domains (and only those)."""
    return {
        "MAILWARD_COMPLIANCE_RESOLVER": LAB_RESOLVER,
        "MAILWARD_COMPLIANCE_CA_FILE": str(lab_ca_dir(tmp_path_factory) / "ca.pem"),
        "MAILWARD_COMPLIANCE_LABEL_SELECTOR": f"{LAB_LABEL}=true",
    }


def _lab_prerequisites() -> str | None:
    if os.geteuid() != 0:
        return "the compliance lab needs root (ports 25, 53, 443 and loopback aliases)"
    path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    missing = [
        p for p in ("named", "unbound", "postfix", "openssl") if not shutil.which(p, path=path)
    ]
    if missing:
        return f"{', '.join(missing)} not installed (scripts/install-system-deps.sh)"
    return None


@pytest.fixture(scope="session")
def compliance_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ComplianceLab]:
    reason = _lab_prerequisites()
    if reason:
        pytest.skip(reason)
    base = tmp_path_factory.mktemp("compliance-lab")
    ca = LocalCA.create(lab_ca_dir(tmp_path_factory), "mailward compliance lab CA")
    zones, postfixes, policy, certs = build_lab_plan(ca, base / "certs")
    dns = DNSStack.create(
        base / "dns", auth_address=LAB_AUTH, resolver_address=LAB_RESOLVER, zones=zones
    )
    started: list[PostfixTarget] = []
    unavailable: dict[str, str] = {}
    policy_started = False
    # Postfix's unprivileged processes must reach their queue and data directories, and pytest's
    # temp tree is private to root (0700): give them a traversable directory of their own.
    postfix_base = Path(tempfile.mkdtemp(prefix="mailward-compliance-", dir="/var/tmp"))
    postfix_base.chmod(0o755)
    try:
        dns.start(timeout=120)
        for target in postfixes:
            if target.address == IPV6_MX_ADDRESS:
                # [::1]:25 is the machine's, not the session's: another session may hold it.
                why = port_taken(IPV6_MX_ADDRESS, 25)
                if why is None:
                    try:
                        target.start(postfix_base)
                    except RuntimeError as e:
                        target.stop()
                        why = f"Postfix on [{IPV6_MX_ADDRESS}]:25 did not start: {e}"
                if why is not None:
                    unavailable[IPV6_ZONE] = why
                    continue
            else:
                target.start(postfix_base)
            started.append(target)
        policy.start()
        policy_started = True
        yield ComplianceLab(dns, ca, postfixes, policy, certs, unavailable)
    finally:
        if policy_started:
            policy.stop()
        for target in started:
            target.stop()
        dns.stop()
        stop_all(base / "dns")
        shutil.rmtree(postfix_base, ignore_errors=True)
