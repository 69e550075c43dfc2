"""Whether a MailDomain may attach to the MailServer it names, decided from plain values.

The same decision is taken twice, on purpose with the same function: by the MailDomain's MTA
part (its `MTAReady` condition says why not) and by the fleet's controller (which serves only
the domains it allows). As with Gateway API's `allowedRoutes`, the MailServer's owner decides:
a domain in a namespace it does not allow changes nothing of the fleet.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from mailward.api.mailserver import MailServerSpec

MAILSERVER_NOT_FOUND = "MailServerNotFound"
MAILSERVER_INVALID = "MailServerInvalid"
NAMESPACE_NOT_ALLOWED = "NamespaceNotAllowed"
ATTACHED = "Attached"


@dataclass(frozen=True)
class ServerKey:
    namespace: str
    name: str

    def describe(self) -> str:
        return f"MailServer {self.namespace}/{self.name}"


@dataclass(frozen=True)
class Attachment:
    allowed: bool
    reason: str
    message: str


def decide(
    domain_namespace: str,
    server: ServerKey,
    spec: MailServerSpec | None,
    namespace_labels: Mapping[str, str] | None,
    *,
    server_found: bool = True,
) -> Attachment:
    """`spec` None with `server_found` means the MailServer exists but its spec is invalid."""
    what = server.describe()
    if not server_found:
        return Attachment(False, MAILSERVER_NOT_FOUND, f"{what} does not exist")
    if spec is None:
        return Attachment(False, MAILSERVER_INVALID, f"{what} has an invalid spec")
    allowed = spec.allowed_domains.namespaces
    if allowed.from_ == "All":
        return Attachment(True, ATTACHED, f"{what} allows every namespace")
    if allowed.from_ == "Same":
        if domain_namespace == server.namespace:
            return Attachment(True, ATTACHED, f"{what} allows its own namespace")
        return Attachment(
            False,
            NAMESPACE_NOT_ALLOWED,
            f"{what} allows only its own namespace (spec.allowedDomains.namespaces.from: Same); "
            f"namespace {domain_namespace!r} may not attach",
        )
    assert allowed.selector is not None  # the model requires it with from: Selector
    labels = dict(namespace_labels or {})
    if allowed.selector.matches(labels):
        return Attachment(True, ATTACHED, f"{what} allows namespace {domain_namespace!r}")
    shown = ", ".join(f"{k}={v}" for k, v in sorted(labels.items())) or "none"
    return Attachment(
        False,
        NAMESPACE_NOT_ALLOWED,
        f"{what} allows namespaces matching {allowed.selector.describe()} "
        f"(spec.allowedDomains.namespaces.selector); namespace {domain_namespace!r} "
        f"(labels: {shown}) does not match",
    )
