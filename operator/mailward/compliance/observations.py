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
class MXHost:
    name: str
    preference: int
    a: Answer | None = None
    tlsa: Answer | None = None  # _25._tcp.<name>
    smtp: SMTPObservation | None = None
    smtp_error: str = ""
    injection: InjectionObservation | None = None
    injection_error: str = ""

    @property
    def address(self) -> str | None:
        """The address the probes connect to: the first of the A RRset."""
        return self.a.records[0] if self.a is not None and self.a.ok and self.a.records else None


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
    host: Answer | None = None  # mta-sts.<domain> A, asked when a v=STSv1 record exists
    fetch: HTTPSResult | None = None  # the policy, fetched when the host has an address


@dataclass
class DomainObservations:
    domain: str
    observed_at: datetime
    mx_answer: Answer
    mx: list[MXHost]
    zones: list[ZoneAnswers]
    dnskey: Answer
    tls: list[TLSObservation]  # port 25 where STARTTLS is offered, and every open client port
    srv: list[Lookup]  # _submissions._tcp, _imaps._tcp, ... SRV
    client_ports: list[PortProbe]  # every client port tried, open or not
    autoconfig: HTTPSResult | None
    mta_sts: MTASTSObservation
    tlsrpt: Answer
    rpt_mailboxes: ReportMailboxes
    spf: Answer
    dmarc: Answer
    dkim: list[Lookup]  # one per selector tried

    def tls_for(self, host: str, port: int) -> TLSObservation | None:
        for tls in self.tls:
            if tls.endpoint.host == host and tls.endpoint.port == port:
                return tls
        return None
