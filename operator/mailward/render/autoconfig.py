"""Mozilla-style mail-client autoconfiguration (`config-v1.1.xml`) of a MailDomain.

BSI TR-03108 (TR-GEN-02, tested as TR-MUA-02) wants mail clients steered to implicit TLS:
SUBMISSIONS (465), IMAPS (993) and POP3S (995), each with `socketType` SSL. The services come from
the same place as the RFC 6186 SRV records (`spec.dns.srv`), so autoconfig and SRV never disagree.
STARTTLS submission (587) is left out on purpose: a client takes the first usable server, and
TR-03108 wants it to take implicit TLS; the SRV record still announces 587 for clients that ask.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal
from xml.etree import ElementTree

from mailward.api.v1alpha1 import MailDomainSpec, SRVTarget

Protocol = Literal["imap", "pop3", "smtp"]

# Each protocol's server element and its order in the file: Thunderbird offers the first
# incoming server it can reach, so IMAP (mail stays on the server) goes before POP3.
_ELEMENT: dict[Protocol, str] = {
    "imap": "incomingServer",
    "pop3": "incomingServer",
    "smtp": "outgoingServer",
}
_ORDER: dict[Protocol, int] = {"imap": 0, "pop3": 1, "smtp": 2}


@dataclass(frozen=True)
class ClientService:
    """One implicit-TLS service a mail client may use."""

    protocol: Protocol
    host: str
    port: int


def render_autoconfig(domain: str, services: Sequence[ClientService]) -> str:
    """The XML document; `%EMAILADDRESS%` is a placeholder the client fills in itself, so the
    address a client sends in the query string is never needed, nor echoed."""
    root = ElementTree.Element("clientConfig", version="1.1")
    provider = ElementTree.SubElement(root, "emailProvider", id=domain)
    ElementTree.SubElement(provider, "domain").text = domain
    ElementTree.SubElement(provider, "displayName").text = domain
    ElementTree.SubElement(provider, "displayShortName").text = domain.split(".")[0]
    for service in sorted(services, key=lambda s: (_ORDER[s.protocol], s.host, s.port)):
        server = ElementTree.SubElement(provider, _ELEMENT[service.protocol], type=service.protocol)
        ElementTree.SubElement(server, "hostname").text = service.host
        ElementTree.SubElement(server, "port").text = str(service.port)
        ElementTree.SubElement(server, "socketType").text = "SSL"
        ElementTree.SubElement(server, "authentication").text = "password-cleartext"
        ElementTree.SubElement(server, "username").text = "%EMAILADDRESS%"
    ElementTree.indent(root, space="  ")
    body = ElementTree.tostring(root, encoding="unicode")
    return f'<?xml version="1.0" encoding="UTF-8"?>\n{body}\n'


def client_services(spec: MailDomainSpec) -> list[ClientService]:
    """The implicit-TLS services of `spec.dns.srv` (SUBMISSIONS, IMAPS, POP3S)."""
    if spec.dns is None:
        return []
    srv = spec.dns.srv
    offered: list[tuple[Protocol, SRVTarget | None]] = [
        ("imap", srv.imaps),
        ("pop3", srv.pop3s),
        ("smtp", srv.submissions),
    ]
    return [
        ClientService(protocol, target.target, target.port)
        for protocol, target in offered
        if target is not None
    ]


def autoconfig_for(spec: MailDomainSpec) -> str | None:
    """The document for `spec`, or None when it offers no incoming or no outgoing service
    (a client could not finish its set-up with it; better none than half of one)."""
    services = client_services(spec)
    protocols = {s.protocol for s in services}
    if "smtp" not in protocols or not protocols & {"imap", "pop3"}:
        return None
    return render_autoconfig(spec.domain, services)
