"""The MTA pod's validating resolver: Unbound's configuration, rendered purely.

Postfix believes the AD bit of whatever resolver it asks (`smtp_dns_support_level = dnssec`),
and a cluster's DNS (CoreDNS) does not validate: outbound DANE would silently turn into
opportunistic TLS. So every MTA pod runs its own Unbound, which the pod's resolv.conf names
(with `options trust-ad`), and which validates from a trust anchor the operator is given.

Operator-level settings (environment, from the chart's `mta.resolver` values):
- `MAILWARD_MTA_RESOLVER_TRUST_ANCHORS`: DS (or DNSKEY) records in zone-file text. Empty: the
  root's, from Debian's dns-root-data (`/usr/share/dns/root.ds`, DS records of the root KSKs;
  the package also ships `root.key` with the DNSKEYs). A static anchor, because Unbound's RFC
  5011 tracking (`auto-trust-anchor-file`) rewrites its file and the root file system is
  read-only; a root KSK rollover therefore arrives with an image built from a newer
  dns-root-data.
- `MAILWARD_MTA_RESOLVER_FORWARDERS`: comma-separated addresses (`IP` or `IP@port`) that every
  query is forwarded to. Empty: full recursion from the root.

The local cluster anchors at its signed test parent zone and forwards to its own servers.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

import dns.exception
import dns.name
import dns.rdatatype
import dns.zonefile

RESOLVER_PORT = 53
ROOT_TRUST_ANCHOR_FILE = "/usr/share/dns/root.ds"
# Zones Unbound answers itself by default (RFC 6761 special-use names): a trust anchor inside
# one of them is useless unless the default is switched off (`local-zone: <zone> nodefault`).
UNBOUND_DEFAULT_LOCAL_ZONES: tuple[str, ...] = (
    "localhost.",
    "test.",
    "invalid.",
    "onion.",
    "home.arpa.",
    "resolver.arpa.",
    "service.arpa.",
)


@dataclass(frozen=True)
class TrustAnchor:
    """One DS or DNSKEY record, in presentation form."""

    zone: str
    record: str


@dataclass(frozen=True)
class Forwarder:
    address: str
    port: int = RESOLVER_PORT

    def unbound(self) -> str:
        return self.address if self.port == RESOLVER_PORT else f"{self.address}@{self.port}"

    @property
    def loopback(self) -> bool:
        return ipaddress.ip_address(self.address).is_loopback


def parse_trust_anchors(text: str) -> tuple[TrustAnchor, ...]:
    """DS/DNSKEY records from zone-file text (comments, TTLs and classes allowed)."""
    if not text.strip():
        return ()
    try:
        rrsets = dns.zonefile.read_rrsets(text, rdclass=None, default_ttl=0)
    except dns.exception.DNSException as error:
        raise ValueError(f"MAILWARD_MTA_RESOLVER_TRUST_ANCHORS: {error}") from None
    anchors = []
    for rrset in rrsets:
        if rrset.rdtype not in (dns.rdatatype.DS, dns.rdatatype.DNSKEY):
            raise ValueError(
                f"MAILWARD_MTA_RESOLVER_TRUST_ANCHORS: {rrset.name} "
                f"{dns.rdatatype.to_text(rrset.rdtype)} is not a DS or DNSKEY record"
            )
        kind = dns.rdatatype.to_text(rrset.rdtype)
        anchors += [
            TrustAnchor(rrset.name.to_text(), f"{rrset.name.to_text()} IN {kind} {rdata}")
            for rdata in rrset
        ]
    return tuple(anchors)


def parse_forwarders(text: str) -> tuple[Forwarder, ...]:
    forwarders = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        address, _, port = item.partition("@")
        try:
            ipaddress.ip_address(address)
            forwarder = Forwarder(address, int(port) if port else RESOLVER_PORT)
        except ValueError:
            raise ValueError(
                f"MAILWARD_MTA_RESOLVER_FORWARDERS: {item!r} is not an IP address or IP@port"
            ) from None
        if not 0 < forwarder.port < 65536:
            raise ValueError(f"MAILWARD_MTA_RESOLVER_FORWARDERS: {item!r}: port out of range")
        forwarders.append(forwarder)
    return tuple(forwarders)


@dataclass(frozen=True)
class ResolverSettings:
    """Operator-level configuration of the MTA pods' resolver (see the module doc)."""

    trust_anchors: tuple[TrustAnchor, ...] = ()
    forwarders: tuple[Forwarder, ...] = ()


def _special_use_zones(anchors: Sequence[TrustAnchor]) -> list[str]:
    """The default local zones that hold an anchored zone."""
    names = [dns.name.from_text(a.zone) for a in anchors]
    return [
        zone
        for zone in UNBOUND_DEFAULT_LOCAL_ZONES
        if any(name.is_subdomain(dns.name.from_text(zone)) for name in names)
    ]


def render_unbound_conf(
    settings: ResolverSettings, address: str, directory: str, *, host_network: bool = False
) -> str:
    """unbound.conf for a resolver on `address`:53, for the pod's own processes only.

    On the host network its queries also leave from `address`, as the MTA's mail does: every
    socket of the pod is then on an address the domain publishes (firewall rules, and the
    local cluster's proof that nothing leaves loopback).

    Nothing is written at run time (no pid file, no chroot, no RFC 5011 anchor file, logs to
    stderr), so it runs on a read-only root file system; `username: ""` keeps it from switching
    users, which would need SETUID/SETGID (it runs as root with NET_BIND_SERVICE only).
    """
    family = ipaddress.ip_address(address)
    lines = [
        "# Rendered by mailward; edits are overwritten. See docs/mta.md.",
        "server:",
        f'    directory: "{directory}"',
        f"    interface: {address}",
        f"    port: {RESOLVER_PORT}",
        # Only the pod's processes: loopback, and on the host network the bound address
        # itself (the source of a query the host sends to its own address).
        "    access-control: 0.0.0.0/0 refuse",
        "    access-control: ::/0 refuse",
        "    access-control: 127.0.0.0/8 allow",
        "    access-control: ::1/128 allow",
    ]
    if not family.is_loopback:
        lines.append(f"    access-control: {address}/{family.max_prefixlen} allow")
    if host_network:
        lines.append(f"    outgoing-interface: {address}")
    lines += [
        '    username: ""',
        '    chroot: ""',
        '    pidfile: ""',
        "    do-daemonize: no",
        "    use-syslog: no",
        # One line per validation failure (a bogus answer), with the reason.
        "    val-log-level: 1",
        "    hide-identity: yes",
        "    hide-version: yes",
    ]
    if settings.trust_anchors:
        lines += [f'    trust-anchor: "{a.record}"' for a in settings.trust_anchors]
        special = _special_use_zones(settings.trust_anchors)
        lines += [f'    local-zone: "{zone}" nodefault' for zone in special]
    else:
        lines.append(f'    trust-anchor-file: "{ROOT_TRUST_ANCHOR_FILE}"')
    if any(f.loopback for f in settings.forwarders):
        # Unbound never asks loopback servers unless told to; the local cluster's are there.
        lines.append("    do-not-query-localhost: no")
    if settings.forwarders:
        lines += ["", "forward-zone:", '    name: "."']
        lines += [f"    forward-addr: {f.unbound()}" for f in settings.forwarders]
    return "\n".join(lines) + "\n"
