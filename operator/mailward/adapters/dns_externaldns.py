"""Hand the records to external-dns: one `DNSEndpoint` object per MailDomain (its CRD source).

external-dns then owns the records in the real provider through its own TXT registry. It knows
no TLSA (its endpoint types are A, AAAA, CNAME, TXT, SRV, NS, PTR, MX, NAPTR), so those are
reported as unpublished: DANE needs a provider that can write TLSA, such as RFC 2136.
The DNSEndpoint carries mailward's owner label; an object of that name without it is someone
else's and is left alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, cast

import dns.rdata
import dns.rdataclass
import dns.rdatatype
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from mailward.adapters.dns_provider import PublishResult
from mailward.api.v1alpha1 import API_GROUP
from mailward.plan.records import Conflict, Key, Owner, Plan
from mailward.render.dns_records import RRset

GROUP = "externaldns.k8s.io"
VERSION = "v1alpha1"
PLURAL = "dnsendpoints"
SUPPORTED_TYPES = frozenset({"A", "AAAA", "CNAME", "TXT", "SRV", "NS", "PTR", "MX", "NAPTR"})
OWNER_LABEL = f"{API_GROUP}/owner-uid"


def endpoint_name(owner: Owner) -> str:
    return f"mailward-{owner.name}"[:253]


def _targets(rrset: RRset) -> list[str]:
    if rrset.type == "SRV":
        return sorted(rrset.rdata)  # its CRD wants the SRV target absolute, with the dot
    if rrset.type != "TXT":
        return sorted(r.rstrip(".") for r in rrset.rdata)
    # external-dns quotes TXT targets itself: hand it the text, strings joined.
    texts = []
    for text in rrset.rdata:
        rdata = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.TXT, text)
        texts.append(b"".join(rdata.strings).decode("ascii"))  # type: ignore[attr-defined]
    return sorted(texts)


def endpoints(desired: Sequence[RRset]) -> list[dict[str, Any]]:
    return [
        {
            "dnsName": r.name.rstrip("."),
            "recordType": r.type,
            "recordTTL": r.ttl,
            "targets": _targets(r),
        }
        for r in desired
        if r.type in SUPPORTED_TYPES
    ]


class ExternalDNSProvider:
    def __init__(self, api: client.ApiClient | None, description: str) -> None:
        self._api = api
        self.description = description

    async def publish(
        self,
        owner: Owner,
        domain: str,
        desired: Sequence[RRset],
        keep_if_owned: frozenset[Key] = frozenset(),
    ) -> PublishResult:
        # The DNSEndpoint is rewritten as a whole; keeping one old record would mean reading it
        # back, so the MTA-STS id follows the spec here (RFC 8461 ordering is not kept).
        return await asyncio.to_thread(self._publish, owner, domain, desired)

    async def release(self, owner: Owner, domain: str) -> PublishResult:
        return await asyncio.to_thread(self._release, owner)

    async def verify(self) -> str:
        # external-dns, not mailward, talks to the DNS service; what it does with the
        # DNSEndpoints shows in their status, not here.
        return "records are handed to external-dns as DNSEndpoint objects"

    def _custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self._api)

    def _get(self, owner: Owner) -> dict[str, Any] | None:
        try:
            body = cast(
                dict[str, Any],
                self._custom().get_namespaced_custom_object(
                    GROUP, VERSION, owner.namespace, PLURAL, endpoint_name(owner)
                ),
            )
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return body

    def _publish(self, owner: Owner, domain: str, desired: Sequence[RRset]) -> PublishResult:
        supported = [r for r in desired if r.type in SUPPORTED_TYPES]
        unpublished = [
            f"{r.describe()}: external-dns has no {r.type} records; use an rfc2136 provider"
            for r in desired
            if r.type not in SUPPORTED_TYPES
        ]
        name = endpoint_name(owner)
        existing = self._get(owner)
        labels = (existing or {}).get("metadata", {}).get("labels") or {}
        if existing is not None and labels.get(OWNER_LABEL) != owner.uid:
            reason = f"DNSEndpoint {owner.namespace}/{name} exists and is not this MailDomain's"
            conflicts = tuple(Conflict(r.key, reason) for r in supported)
            return PublishResult(domain, Plan(conflicts=conflicts), 0, unpublished)
        spec = {"endpoints": endpoints(supported)}
        plan = Plan(owned=frozenset(r.key for r in supported))
        if existing is not None and existing.get("spec") == spec:
            return PublishResult(domain, plan, 0, unpublished, tuple(supported))
        body: dict[str, Any] = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "DNSEndpoint",
            "metadata": {
                "name": name,
                "namespace": owner.namespace,
                "labels": {OWNER_LABEL: owner.uid, "app.kubernetes.io/managed-by": "mailward"},
                "ownerReferences": [owner.reference()],
            },
            "spec": spec,
        }
        if existing is None:
            self._custom().create_namespaced_custom_object(
                GROUP, VERSION, owner.namespace, PLURAL, body
            )
        else:
            body["metadata"]["resourceVersion"] = existing["metadata"]["resourceVersion"]
            self._custom().replace_namespaced_custom_object(
                GROUP, VERSION, owner.namespace, PLURAL, name, body
            )
        return PublishResult(domain, plan, 1, unpublished, tuple(supported))

    def _release(self, owner: Owner) -> PublishResult:
        existing = self._get(owner)
        labels = (existing or {}).get("metadata", {}).get("labels") or {}
        if existing is None or labels.get(OWNER_LABEL) != owner.uid:
            return PublishResult("", Plan(), 0)
        try:
            self._custom().delete_namespaced_custom_object(
                GROUP, VERSION, owner.namespace, PLURAL, endpoint_name(owner)
            )
        except ApiException as error:
            if error.status != 404:
                raise
        return PublishResult("", Plan(), 1)
