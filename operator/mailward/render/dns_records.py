"""The DNS records a MailDomain wants, as RRsets: pure, from the spec and what the parts found.

Every RRset is put into one canonical presentation form (dnspython's, absolute names, sorted
rdata), so that what the planner compares against, the records read back from the zone, is equal
exactly when the data is: a second reconcile of an unchanged domain then finds nothing to do.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from mailward.api.v1alpha1 import HostTarget, MailDomainSpec, SRVTarget
from mailward.tlsrpt.rua import collector_host, effective_rua

# RFC 1035 §3.3.14: one character-string holds at most 255 octets; longer TXT data is split
# into several strings, which SPF (RFC 7208 §3.3), DKIM and MTA-STS readers concatenate.
TXT_CHUNK = 255

MUA_SERVICES: tuple[tuple[str, str], ...] = (
    ("submissions", "_submissions._tcp"),
    ("submission", "_submission._tcp"),
    ("imaps", "_imaps._tcp"),
    ("pop3s", "_pop3s._tcp"),
)


@dataclass(frozen=True, order=True)
class RRset:
    """One RRset: absolute lower-case owner name, type, TTL and canonical rdata, sorted."""

    name: str
    type: str
    ttl: int
    rdata: tuple[str, ...]

    @property
    def key(self) -> tuple[str, str]:
        return (self.name, self.type)

    def describe(self) -> str:
        return f"{self.name.rstrip('.')} {self.type}"


def absolute(name: str) -> str:
    return dns.name.from_text(name.lower()).to_text()


def canonical_rdata(rdtype: str, text: str) -> str:
    """The presentation form dnspython gives the record (what a zone transfer reads back)."""
    rdata = dns.rdata.from_text(
        dns.rdataclass.IN,
        dns.rdatatype.from_text(rdtype),
        text,
        origin=dns.name.root,
        relativize=False,
    )
    return str(rdata.to_text())


def make_rrset(name: str, rdtype: str, ttl: int, rdata: Iterable[str]) -> RRset:
    canonical = sorted({canonical_rdata(rdtype, text) for text in rdata})
    if not canonical:
        raise ValueError(f"an RRset needs data: {name} {rdtype}")
    return RRset(absolute(name), rdtype.upper(), ttl, tuple(canonical))


def txt_data(text: str) -> str:
    """`text` as TXT presentation data, split into strings of at most 255 octets."""
    raw = text.encode("ascii")
    chunks = [raw[i : i + TXT_CHUNK] for i in range(0, len(raw), TXT_CHUNK)] or [b""]
    return " ".join(
        '"' + chunk.decode("ascii").replace("\\", "\\\\").replace('"', '\\"') + '"'
        for chunk in chunks
    )


def spki_sha256(certificate: x509.Certificate) -> str:
    """Data of a DANE-EE `3 1 1` record: SHA-256 of the DER SubjectPublicKeyInfo, hex."""
    spki = certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).hexdigest()


def tlsa_name(host: str) -> str:
    """RFC 7672 §2.2: TLSA records of an MX host live at `_25._tcp.<host>`."""
    return f"_25._tcp.{host}"


def tlsrpt_record(rua: Sequence[str]) -> str:
    """RFC 8460 §3; BSI TR-03108 asks for a `mailto:` URI, so it goes first (stable order)."""
    ordered = sorted(rua, key=lambda uri: not uri.startswith("mailto:"))
    return f"v=TLSRPTv1; rua={','.join(ordered)}"


def dmarc_record(policy: str, rua: Sequence[str]) -> str:
    """RFC 7489 §6.3: `v=DMARC1` then `p=` (the order is mandatory); strict alignment as
    BSI TR-03182 recommends."""
    record = f"v=DMARC1; p={policy}; adkim=s; aspf=s"
    return f"{record}; rua={','.join(rua)}" if rua else record


def _srv(service: SRVTarget | None) -> str:
    # RFC 6186 §3.4 / RFC 2782: target "." means the service is decidedly not offered.
    if service is None:
        return "0 0 0 ."
    return f"0 1 {service.port} {absolute(service.target)}"


def _address_type(address: str) -> str:
    return "AAAA" if ":" in address else "A"


def _address_rrsets(name: str, addresses: Iterable[str], ttl: int) -> list[RRset]:
    by_type: dict[str, list[str]] = {}
    for address in addresses:
        by_type.setdefault(_address_type(address), []).append(address)
    return [make_rrset(name, rdtype, ttl, values) for rdtype, values in sorted(by_type.items())]


def desired_rrsets(
    spec: MailDomainSpec,
    *,
    tlsa_spki_sha256: Mapping[str, Sequence[str]],
    sts_policy_id: str,
    tlsrpt_collector: HostTarget | None = None,
    tlsa_issuer_sha256: Mapping[str, Sequence[str]] | None = None,
) -> list[RRset]:
    """Every RRset of the domain, sorted by name and type.

    `tlsa_spki_sha256` maps each MX host to the SPKI digests to pin: the served key, and during a
    rollover the next one too (RFC 7671 §8.1), so an RRset may hold several `3 1 1` records.
    A host missing from the mapping gets no TLSA RRset (DANE off, or no certificate known).
    `tlsa_issuer_sha256` adds `2 1 1` records for the issuing CAs' keys beside them.
    `tlsrpt_collector` is where the collector was found reachable (its load balancer); the
    spec's `dns.tlsRptCollector` takes precedence over it.
    """
    domain = spec.domain
    dns_spec = spec.dns
    ttl = dns_spec.ttl.default if dns_spec else 3600
    tlsa_ttl = dns_spec.ttl.tlsa if dns_spec else 600
    rrsets = [
        make_rrset(domain, "MX", ttl, (f"{mx.priority} {absolute(mx.host)}" for mx in spec.mx)),
        make_rrset(f"_mta-sts.{domain}", "TXT", ttl, [txt_data(f"v=STSv1; id={sts_policy_id}")]),
    ]
    for mx in spec.mx:
        rrsets += _address_rrsets(mx.host, mx.addresses, ttl)
        digests = tlsa_spki_sha256.get(mx.host, ())
        if spec.dane.enabled and digests:
            issuers = (tlsa_issuer_sha256 or {}).get(mx.host, ())
            records = [f"3 1 1 {d}" for d in digests] + [f"2 1 1 {d}" for d in issuers]
            rrsets.append(make_rrset(tlsa_name(mx.host), "TLSA", tlsa_ttl, records))
    # TLSRPT is a MUST of TR-03108, so the record is always there: without `rua` it names the
    # collector's mailbox.
    rua = effective_rua(spec)
    rrsets.append(make_rrset(f"_smtp._tls.{domain}", "TXT", ttl, [txt_data(tlsrpt_record(rua))]))
    if dns_spec is not None:
        if dns_spec.spf.enabled:
            rrsets.append(make_rrset(domain, "TXT", ttl, [txt_data(dns_spec.spf.record)]))
        if dns_spec.dmarc.enabled:
            record = dmarc_record(dns_spec.dmarc.policy, dns_spec.dmarc.rua)
            rrsets.append(make_rrset(f"_dmarc.{domain}", "TXT", ttl, [txt_data(record)]))
        for key in dns_spec.dkim:
            record = f"v=DKIM1; k={key.key_type}; p={key.public_key}"
            rrsets.append(
                make_rrset(f"{key.selector}._domainkey.{domain}", "TXT", ttl, [txt_data(record)])
            )
        for field, label in MUA_SERVICES:
            service: SRVTarget | None = getattr(dns_spec.srv, field)
            rrsets.append(make_rrset(f"{label}.{domain}", "SRV", ttl, [_srv(service)]))
        # One HTTPS service answers for both names: the MTA-STS policy and the Mozilla-style
        # autoconfig document for mail clients (TR-MUA-02).
        if dns_spec.mta_sts_endpoint is not None:
            for label in ("mta-sts", "autoconfig"):
                rrsets += _host_rrsets(f"{label}.{domain}", dns_spec.mta_sts_endpoint, ttl)
        collector = dns_spec.tls_rpt_collector or tlsrpt_collector
        if collector is not None:
            host = collector_host(domain)
            rrsets += _host_rrsets(host, collector, ttl)
            # An explicit MX beside the addresses: implicit MX (RFC 5321 §5.1) works too, but
            # some senders treat a name without MX as not accepting mail. A CNAME owner can
            # hold no other record, so the alias alone routes the mail then.
            if collector.cname is None:
                rrsets.append(make_rrset(host, "MX", ttl, [f"10 {absolute(host)}"]))
    return sorted(_merge(rrsets))


def fleet_host_rrsets(
    host: str,
    addresses: Sequence[str],
    *,
    ttl: int,
    tlsa_ttl: int,
    tlsa_spki_sha256: Sequence[str],
) -> list[RRset]:
    """A MailServer's records for one of its hosts: A/AAAA and the `3 1 1` TLSA RRset that every
    domain it serves relies on (published once, at `_25._tcp.<host>`)."""
    rrsets = _address_rrsets(host, addresses, ttl)
    if tlsa_spki_sha256:
        rrsets.append(
            make_rrset(tlsa_name(host), "TLSA", tlsa_ttl, (f"3 1 1 {d}" for d in tlsa_spki_sha256))
        )
    return sorted(rrsets)


def _host_rrsets(name: str, target: HostTarget, ttl: int) -> list[RRset]:
    if target.cname is not None:
        return [make_rrset(name, "CNAME", ttl, [absolute(target.cname)])]
    return _address_rrsets(name, target.addresses or (), ttl)


def _merge(rrsets: Iterable[RRset]) -> list[RRset]:
    """One RRset per name and type (an MX host listed as the mta-sts address, say)."""
    merged: dict[tuple[str, str], RRset] = {}
    for rrset in rrsets:
        previous = merged.get(rrset.key)
        if previous is not None:
            rrset = RRset(
                rrset.name,
                rrset.type,
                min(previous.ttl, rrset.ttl),
                tuple(sorted(set(previous.rdata) | set(rrset.rdata))),
            )
        merged[rrset.key] = rrset
    return list(merged.values())
