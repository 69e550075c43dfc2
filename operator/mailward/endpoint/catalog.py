"""What the policy endpoint serves, decided from the MailDomain objects alone (pure).

Every response body is rendered once, when the MailDomains change, and looked up by host name
per request: a fetch costs a dictionary lookup, never a render.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from mailward.api.v1alpha1 import MXHost
from mailward.reconcile import InvalidSpec, parse_spec
from mailward.render.autoconfig import autoconfig_for
from mailward.render.mta_sts import policy_id, served_policy

POLICY_PATH = "/.well-known/mta-sts.txt"
AUTOCONFIG_PATH = "/mail/config-v1.1.xml"
WELL_KNOWN_AUTOCONFIG_PATH = "/.well-known/autoconfig/mail/config-v1.1.xml"
POLICY_PREFIX = "mta-sts."
AUTOCONFIG_PREFIX = "autoconfig."

# A Host header value: a lower-cased DNS name, optionally with a port. Anything else (spaces,
# slashes, IP literals, user info) is a bad request, not an unknown host.
_HOST_HEADER = re.compile(
    r"(?P<name>(?:[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?\.)+[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?)"
    r"\.?(?::(?P<port>[0-9]{1,5}))?"
)


@dataclass(frozen=True)
class Document:
    body: bytes
    content_type: str


@dataclass(frozen=True)
class Site:
    """Everything served for one mail domain."""

    domain: str
    owner: str  # namespace/name of the MailDomain
    policy: str
    policy_id: str
    withdrawing: bool
    autoconfig: str | None


@dataclass(frozen=True)
class Catalog:
    """The sites by domain, and every (host, path) → document, precomputed."""

    sites: Mapping[str, Site]
    documents: Mapping[tuple[str, str], Document]
    hosts: frozenset[str]

    def lookup(self, host: str, path: str) -> Document | None:
        return self.documents.get((host, path))


EMPTY = Catalog({}, {}, frozenset())

POLICY_CONTENT_TYPE = "text/plain; charset=us-ascii"
AUTOCONFIG_CONTENT_TYPE = "application/xml; charset=utf-8"


def parse_host_header(value: str | None) -> str | None:
    """The host name of a Host header, lower case, without port or final dot; None if invalid."""
    if value is None or len(value) > 260:
        return None
    match = _HOST_HEADER.fullmatch(value.lower())
    if match is None:
        return None
    port = match.group("port")
    if port is not None and not 0 < int(port) < 65536:
        return None
    return match.group("name")


def _age_key(body: Mapping[str, Any]) -> tuple[str, str, str]:
    meta = body.get("metadata") or {}
    return (
        str(meta.get("creationTimestamp") or ""),
        str(meta.get("namespace") or ""),
        str(meta.get("name") or ""),
    )


def site_for(body: Mapping[str, Any]) -> Site | None:
    """The site of one MailDomain object, or None when its spec is invalid (not served)."""
    meta = body.get("metadata") or {}
    try:
        spec = parse_spec(body.get("spec") or {})
    except InvalidSpec:
        return None
    if spec.attached:
        # The fleet's hosts, as the operator's MTA part found them; none yet: nothing served.
        hosts = ((body.get("status") or {}).get("mailServer") or {}).get("hosts") or []
        if not hosts:
            return None
        spec = spec.model_copy(update={"mx": [MXHost(host=h) for h in hosts]})
    withdrawing = bool(meta.get("deletionTimestamp"))
    # The MX hosts the operator publishes and, during an MX change under `enforce`, the names
    # being replaced: the policy keeps naming them (plan/mtasts_changes.py).
    recorded = (body.get("status") or {}).get("mtaSts") or {}
    kept = [str(name) for name in recorded.get("keptMx") or []]
    published = [str(mx.get("host")) for mx in recorded.get("mxHosts") or []]
    promoted = bool(recorded.get("promotedTime"))
    policy = served_policy(spec, kept, published, deleting=withdrawing, promoted=promoted)
    return Site(
        domain=spec.domain,
        owner=f"{meta.get('namespace')}/{meta.get('name')}",
        policy=policy,
        policy_id=policy_id(policy),
        withdrawing=withdrawing,
        autoconfig=autoconfig_for(spec),
    )


SiteCache = dict[tuple[str, str], "Site | None"]


def _version_key(body: Mapping[str, Any]) -> tuple[str, str]:
    meta = body.get("metadata") or {}
    return str(meta.get("uid")), str(meta.get("resourceVersion"))


def _cached_site(body: Mapping[str, Any], cache: SiteCache | None) -> Site | None:
    if cache is None:
        return site_for(body)
    key = _version_key(body)
    if key not in cache:
        cache[key] = site_for(body)
    return cache[key]


def build_catalog(
    maildomains: Iterable[Mapping[str, Any]], cache: SiteCache | None = None
) -> Catalog:
    """The catalog for a set of MailDomain objects.

    Two MailDomains may name one domain (in two namespaces); the oldest one is served, so a
    newcomer cannot take over a domain's policy, and the other one's operator verification sees
    a policy that is not its own and stays Pending.
    """
    bodies = sorted(maildomains, key=_age_key)
    if cache is not None:
        # Rendering is the costly step (pydantic and the renderers), so a change of one
        # MailDomain re-renders that one only; entries of replaced versions are dropped.
        live = {
            (
                str(b.get("metadata", {}).get("uid")),
                str(b.get("metadata", {}).get("resourceVersion")),
            )
            for b in bodies
        }
        for key in list(cache):
            if key not in live:
                del cache[key]
    sites: dict[str, Site] = {}
    for body in bodies:
        site = _cached_site(body, cache)
        if site is not None and site.domain not in sites:
            sites[site.domain] = site
    documents: dict[tuple[str, str], Document] = {}
    for domain, site in sites.items():
        documents[(POLICY_PREFIX + domain, POLICY_PATH)] = Document(
            site.policy.encode("ascii"), POLICY_CONTENT_TYPE
        )
        if site.autoconfig is not None:
            xml = Document(site.autoconfig.encode("utf-8"), AUTOCONFIG_CONTENT_TYPE)
            documents[(AUTOCONFIG_PREFIX + domain, AUTOCONFIG_PATH)] = xml
            documents[(domain, WELL_KNOWN_AUTOCONFIG_PATH)] = xml
    return Catalog(sites, documents, frozenset(host for host, _ in documents))
