"""What the probes saw, as typed data: the only thing that passes from gathering to judging.

The probes (`dnsprobe`, `smtpprobe`, `tlsprobe`, `helloprobe`, `httpsprobe`, `rptmailbox`)
produce these objects, `gather.py` puts them together into one `DomainObservations` per domain,
and the check families in `checks/` judge them without any I/O. `record.py` writes them to JSON
and reads them back, so a real probe run can be judged again later (the table tests in
`tests/unit/test_compliance_recorded.py`).

Nothing here is a verdict: a value says what a server or a resolver answered, or that it did not.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

# Port -> the client protocol; implicit TLS on the first three (RFC 8314), STARTTLS on the rest.
IMPLICIT_TLS_PORTS = (465, 993, 995)
CLIENT_PORTS = (465, 993, 995, 587, 143, 110)
STARTTLS_SMTP_PORTS = (25, 587)
# Addresses probed per MX host (its A records, then its AAAA records); the rest are named, not
# probed, so a host with a hundred addresses does not mean a hundred TLS enumerations.
MAX_ADDRESSES_PER_HOST = 8


# -- DNS --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """One answer of the validating resolver."""

    name: str
    rdtype: str
    rcode: str  # NOERROR, NXDOMAIN, SERVFAIL, ... or TIMEOUT
    secure: bool  # AD bit
    records: tuple[str, ...] = ()  # rdata in presentation form, of the queried type only
    ttl: int = 0
    ede: tuple[str, ...] = ()  # Extended DNS Errors, e.g. "6 DNSSEC Bogus: ..."

    @property
    def ok(self) -> bool:
        return self.rcode == "NOERROR"

    @property
    def bogus(self) -> bool:
        return self.rcode == "SERVFAIL"

    @property
    def timed_out(self) -> bool:
        return self.rcode == "TIMEOUT"

    def describe(self) -> str:
        flags = "AD" if self.secure else "no AD"
        ede = f", EDE {'; '.join(self.ede)}" if self.ede else ""
        data = f": {', '.join(self.records[:4])}" if self.records else ""
        return f"{self.name} {self.rdtype}: {self.rcode} ({flags}{ede}){data}"


# -- SMTP and TLS endpoints ---------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    host: str  # the name the certificate must carry (SNI)
    address: str
    port: int

    @property
    def starttls(self) -> bool:
        return self.port in STARTTLS_SMTP_PORTS

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def connect(self) -> str:
        """`address:port` as `openssl s_client -connect` takes it (IPv6 in brackets)."""
        address = f"[{self.address}]" if ":" in self.address else self.address
        return f"{address}:{self.port}"

    @property
    def subject(self) -> str:
        """The endpoint as findings name it: `mx.example.test:25 [2001:db8::25]`."""
        return f"{self.host}:{self.port} [{self.address}]"


@dataclass
class SMTPObservation:
    banner: str = ""
    ehlo: list[str] = field(default_factory=list)
    starttls_offered: bool = False
    vrfy: list[tuple[str, str]] = field(default_factory=list)  # (address, "code text"), known first
    relay_reply: str = ""
    relay_accepted: bool | None = None
    relay_recipient: str = ""


@dataclass
class InjectionObservation:
    """STARTTLS command injection (RFC 3207 §4.2, CVE-2011-0411); None: could not tell."""

    vulnerable: bool | None = None
    readvertised: bool | None = None
    detail: str = ""


@dataclass(frozen=True)
class Handshake:
    version: str
    cipher: str
    chain: tuple[bytes, ...]  # DER, as presented (leaf first)


@dataclass(frozen=True)
class GroupOffer:
    """One TLS 1.2 ECDHE handshake offering `offered` (OpenSSL names, in the client's order)."""

    offered: tuple[str, ...]
    chosen: str | None  # the group of the server's ephemeral key; None: no handshake


@dataclass
class TLSObservation:
    endpoint: Endpoint
    reachable: bool = True
    error: str = ""
    versions: dict[str, bool] = field(default_factory=dict)  # "TLSv1.2" -> accepted
    suites: list[str] = field(default_factory=list)  # TLS 1.2, in the order the server chose them
    server_order: bool | None = None
    group_offers: list[GroupOffer] = field(default_factory=list)
    tls13_suites: list[str] = field(default_factory=list)
    compression: int | None = None
    secure_renegotiation: bool | None = None
    hello_error: str = ""
    negotiated: Handshake | None = None  # default handshake: best version, server's choice
    pkix_error: str | None = None  # None: chain and name verified against the CA file


@dataclass(frozen=True)
class PortProbe:
    """A TCP connection attempt to a client port: does anything listen?"""

    endpoint: Endpoint
    open: bool
    srv: str = ""  # the SRV service that names it, "" for a port tried on an MX host


# -- HTTPS ------------------------------------------------------------------------------------


@dataclass
class HTTPSResult:
    url: str
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    truncated: bool = False
    pkix_error: str | None = None  # None: chain, name and validity verified
    leaf_names: list[str] = field(default_factory=list)
    error: str = ""


# -- the TLSRPT report mailboxes (TR-RPT-02) ----------------------------------------------------


@dataclass
class RouteHost:
    """A host mail for the mailbox domain is handed to: an MX host, or the domain itself."""

    name: str
    a: Answer | None = None
    aaaa: Answer | None = None
    tlsa: Answer | None = None

    @property
    def addresses(self) -> list[str]:
        return [r for ans in (self.a, self.aaaa) if ans is not None and ans.ok for r in ans.records]


@dataclass
class ReportMailbox:
    """One mailbox domain of the rua, with what DNS and HTTPS say about it."""

    domain: str
    uris: list[str] = field(default_factory=list)
    mx: Answer | None = None
    exchanges: list[str] = field(default_factory=list)  # MX hosts by preference, bounded
    null_mx: bool = False
    hosts: list[RouteHost] = field(default_factory=list)
    sts_txt: Answer | None = None
    sts_host: Answer | None = None
    sts_fetch: HTTPSResult | None = None

    @property
    def literal(self) -> bool:
        return self.domain.startswith("[")


@dataclass
class ReportMailboxes:
    mailboxes: list[ReportMailbox] = field(default_factory=list)
    invalid: list[tuple[str, str]] = field(default_factory=list)  # (uri, why)
    unchecked: list[str] = field(default_factory=list)  # beyond the bounds


# -- one domain ---------------------------------------------------------------------------------


@dataclass
class MXAddress:
    """One address of an MX host, and what its port 25 said (SMTP, the STARTTLS injection test);
    its TLS observation is the one in `DomainObservations.tls` of the same address."""

    address: str
    smtp: SMTPObservation | None = None
    smtp_error: str = ""
    injection: InjectionObservation | None = None
    injection_error: str = ""

    def subject(self, host: str) -> str:
        return Endpoint(host, self.address, 25).subject


@dataclass
class MXHost:
    name: str
    preference: int
    a: Answer | None = None
    aaaa: Answer | None = None
    tlsa: Answer | None = None  # _25._tcp.<name>
    # The addresses probed on port 25: the first MAX_ADDRESSES_PER_HOST of `published`.
    probes: list[MXAddress] = field(default_factory=list)

    @property
    def published(self) -> list[str]:
        """Every address of the host: the A records, then the AAAA records."""
        return [r for ans in (self.a, self.aaaa) if ans is not None and ans.ok for r in ans.records]

    @property
    def address(self) -> str | None:
        """The first address (an A record if there is one): where the client ports are tried."""
        published = self.published
        return published[0] if published else None

    @property
    def unprobed(self) -> list[str]:
        """Addresses beyond the bound, published but not probed."""
        probed = {p.address for p in self.probes}
        return [a for a in self.published if a not in probed]


@dataclass(frozen=True)
class ZoneAnswers:
    """The zone that holds the domain or an MX host, with its SOA and DS answers."""

    zone: str
    soa: Answer
    ds: Answer


@dataclass(frozen=True)
class Lookup:
    """An answer under the label that was asked for: a DKIM selector, an SRV service."""

    label: str
    answer: Answer


@dataclass
class MTASTSObservation:
    txt: Answer  # _mta-sts.<domain> TXT
    host: Answer | None = None  # mta-sts.<domain> A (AAAA if no A), asked for a v=STSv1 record
    fetch: HTTPSResult | None = None  # the policy, fetched when the host has an address


@dataclass
class DomainObservations:
    domain: str
    observed_at: datetime
    mx_answer: Answer
    mx: list[MXHost]
    zones: list[ZoneAnswers]
    dnskey: Answer
    tls: list[TLSObservation]  # port 25 of each address offering STARTTLS; open client ports
    srv: list[Lookup]  # _submissions._tcp, _imaps._tcp, ... SRV
    client_ports: list[PortProbe]  # every client port tried, open or not
    autoconfig: HTTPSResult | None
    mta_sts: MTASTSObservation
    tlsrpt: Answer
    rpt_mailboxes: ReportMailboxes
    spf: Answer
    dmarc: Answer
    dkim: list[Lookup]  # one per selector tried

    def tls_for(self, host: str, port: int, address: str | None = None) -> TLSObservation | None:
        """The TLS observation of `host`:`port` (at `address`, when given)."""
        for tls in self.tls:
            ep = tls.endpoint
            if ep.host == host and ep.port == port and address in (None, ep.address):
                return tls
        return None
