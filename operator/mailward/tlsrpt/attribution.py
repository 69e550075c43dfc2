"""Which served domain a report's policy counts for: a pure rule over names.

RFC 8460 §1.1 (Terminology, "Policy Domain"): for MTA-STS the policy domain is the recipient
domain, for DANE it is the "TLSA base domain" of the receiving SMTP server (RFC 7672 §2.2.3),
which is the MX host, e.g. `mx.example.org`; the report's `policy-domain` (§4.4) carries it. So
a DANE report about a domain mailward serves names the domain's MX host, not the domain, and
Postfix 3.10 does exactly that.

A report for such a policy counts for exactly one served domain, never for every domain whose
MX host it is. A sender sends its report to the rua of the recipient domain's `_smtp._tls`
record (RFC 8460 §3) and tlsrpt-reportd builds one report per recipient domain, so the sessions
in it are the sessions of mail to that one domain. Counting
the report for each domain that shares a fleet MX would multiply one domain's figures by the
number of domains on the fleet and mix other domains' traffic into each domain's figures. The one
domain is:

1. the policy domain itself, when it is a served domain (MTA-STS, `no-policy-found`, and DANE
   for a domain that is its own MX host);
2. for a `tlsa` policy naming an MX host of served domains: the domain the report says it is
   for (the mail's `TLS-Report-Domain` header, or the `tlsrpt.<domain>` host an upload was
   sent to) when that domain has this MX host;
3. otherwise, the single served domain with that MX host, when there is only one.

When none of these decides (a fleet MX shared by several domains, and a report that does not
say which one it is for), the report is still about an MX host this collector serves: it is
kept under the MX host's name and counted for no domain (`Attribution.unattributed`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from mailward.tlsrpt.rua import collector_host

TLSA = "tlsa"


def _name(domain: str) -> str:
    return domain.strip().rstrip(".").lower()


@dataclass(frozen=True)
class ServedNames:
    """The domains a collector serves and, per MX host name, the served domains using it."""

    domains: frozenset[str]
    domains_by_mx: Mapping[str, frozenset[str]] = field(default_factory=dict)

    @classmethod
    def of(cls, domains: Iterable[str], mx_hosts: Mapping[str, Iterable[str]]) -> ServedNames:
        """`mx_hosts`: served domain -> its MX host names (domains not served are ignored)."""
        served = frozenset(_name(d) for d in domains)
        by_mx: dict[str, set[str]] = {}
        for domain, hosts in mx_hosts.items():
            if _name(domain) not in served:
                continue
            for host in hosts:
                by_mx.setdefault(_name(host), set()).add(_name(domain))
        return cls(served, {host: frozenset(names) for host, names in by_mx.items()})


@dataclass(frozen=True)
class Attribution:
    """Where one policy of a report goes: a served domain, or an MX host's name only."""

    domain: str | None  # the served domain whose figures the policy counts for
    unattributed: str | None = None  # a shared MX host named without a deciding domain

    @property
    def accepted(self) -> bool:
        return self.domain is not None or self.unattributed is not None

    @property
    def stored_as(self) -> str | None:
        """The name the policy's rows are stored under."""
        return self.domain or self.unattributed


NOT_OURS = Attribution(None)


def attribute(
    policy_domain: str, policy_type: str, report_domain: str | None, served: ServedNames
) -> Attribution:
    """The served domain one policy of a report counts for (rules in the module docstring)."""
    name = _name(policy_domain)
    if name in served.domains:
        return Attribution(name)
    if policy_type != TLSA:
        # MTA-STS names the recipient domain (RFC 8460 §1.1): an MX host is not one.
        return NOT_OURS
    candidates = served.domains_by_mx.get(name, frozenset())
    if not candidates:
        return NOT_OURS
    claimed = _name(report_domain) if report_domain else ""
    if claimed in candidates:
        return Attribution(claimed)
    if len(candidates) == 1:
        (only,) = candidates
        return Attribution(only)
    return Attribution(None, unattributed=name)


def report_domain_of_host(host: str, served: ServedNames) -> str | None:
    """The served domain an HTTPS upload was addressed to: `tlsrpt.<domain>` (rua.py)."""
    prefix = collector_host("")
    name = _name(host.rpartition(":")[0] if host.count(":") == 1 else host)
    if name.startswith(prefix) and name.removeprefix(prefix) in served.domains:
        return name.removeprefix(prefix)
    return None
