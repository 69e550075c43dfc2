"""What the MTA renderers need to run one MTA fleet, from either resource that asks for one.

A MailServer is a fleet serving many domains; a MailDomain with `spec.mx` runs an MTA of its
own, which is rendered as a fleet of one domain by the same code (render/mta_objects.py). The
renderers only see `MTAServer`: plain values, no resource models.

A fleet is one or more groups, each one StatefulSet: without the host network one group serves
every host name behind one Service; on the host network each host is a group whose pods bind
exactly its addresses (a MailDomain's own MTA is one group binding every MX address, as
before MailServers existed).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from mailward.api.mailserver import MAILSERVER_KIND, MailServerSpec
from mailward.api.tlsrpt_sending import TLSReportSending
from mailward.api.v1alpha1 import KIND, MailDomainSpec
from mailward.owner import Owner
from mailward.render import tlsrpt_sending
from mailward.render.certificates import serving_secret_name
from mailward.render.postfix import MTAOptions


@dataclass(frozen=True)
class ServerGroup:
    """One StatefulSet of the fleet."""

    name: str
    # Postfix's `myhostname`: the greeting, HELO, and the name the certificate must carry.
    hostname: str
    # Addresses the pods bind on the host network (empty: the pod's own network namespace).
    addresses: tuple[str, ...] = ()


@dataclass(frozen=True)
class MTAServer:
    owner: Owner
    # Prefix of the shared objects' names (the domain tables' ConfigMap).
    base_name: str
    image: str
    replicas: int
    cpu: str
    memory: str
    storage_size: str
    storage_class: str | None
    host_network: bool
    tls_secret: str
    # `mydomain`: the domain of a MailDomain's own MTA, the parent of the first host of a fleet.
    origin: str
    options: MTAOptions
    groups: tuple[ServerGroup, ...]
    # The accounts Secret: a MailDomain's own (keys are local parts), mounted as
    # <accounts dir>/<origin>/; a fleet's is the operator's copy of its domains' accounts (keys
    # `<domain>_<local part>`), mounted as <accounts dir>/ (render/mta_objects.py).
    accounts_secret: str | None = None

    @property
    def is_fleet(self) -> bool:
        return self.owner.kind == MAILSERVER_KIND

    def accounts_mount(self) -> str:
        """Below the accounts directory: the domain's own directory, or the directory itself."""
        return "" if self.is_fleet else self.origin

    @property
    def namespace(self) -> str:
        return self.owner.namespace

    def domains_configmap(self) -> str:
        return f"{self.base_name}-domains"


class _MTASettings(Protocol):
    """What `spec.mta` of a MailDomain and the spec of a MailServer both say about Postfix."""

    @property
    def message_size_limit(self) -> int: ...

    @property
    def hide_submission_client(self) -> bool: ...

    @property
    def mta_sts_fallback(self) -> bool: ...

    @property
    def tls_reports(self) -> TLSReportSending: ...


def mta_options(settings: _MTASettings) -> MTAOptions:
    return MTAOptions(
        message_size_limit=settings.message_size_limit,
        hide_submission_client=settings.hide_submission_client,
        mta_sts_fallback=settings.mta_sts_fallback,
        tlsrpt=tlsrpt_sending.from_spec(settings.tls_reports),
    )


def own_mta_server(
    name: str, namespace: str, uid: str, spec: MailDomainSpec, default_image: str
) -> MTAServer:
    """A MailDomain's own MTA (`spec.mx`, `spec.mta`): a fleet of one group and one domain."""
    mta = spec.mta
    if spec.tls is None or not spec.mx:
        raise ValueError("a MailDomain's own MTA needs spec.mx and spec.tls")
    addresses = tuple(spec.mx_addresses()) if mta.host_network else ()
    base = f"{name}-mta"
    return MTAServer(
        owner=Owner(namespace, name, uid, kind=KIND),
        base_name=base,
        image=mta.image or default_image,
        replicas=mta.replicas,
        cpu=mta.resources.cpu,
        memory=mta.resources.memory,
        storage_size=mta.storage.size,
        storage_class=mta.storage.storage_class_name,
        host_network=mta.host_network,
        tls_secret=serving_secret_name(name),
        origin=spec.domain,
        options=mta_options(mta),
        groups=(ServerGroup(base, spec.mx[0].host, addresses),),
        accounts_secret=mta.accounts_secret_name,
    )


def fleet_server(
    name: str, namespace: str, uid: str, spec: MailServerSpec, default_image: str
) -> MTAServer:
    """A MailServer's fleet."""
    if spec.host_network:
        groups = tuple(
            ServerGroup(f"{name}-{index}", entry.host, tuple(entry.addresses))
            for index, entry in enumerate(spec.hosts)
        )
    else:
        groups = (ServerGroup(name, spec.hosts[0].host),)
    first = spec.hosts[0].host
    return MTAServer(
        owner=Owner(namespace, name, uid, kind=MAILSERVER_KIND),
        base_name=name,
        image=spec.image or default_image,
        replicas=spec.replicas,
        cpu=spec.resources.cpu,
        memory=spec.resources.memory,
        storage_size=spec.storage.size,
        storage_class=spec.storage.storage_class_name,
        host_network=spec.host_network,
        tls_secret=spec.tls.secret_name,
        origin=first.partition(".")[2] or first,
        options=mta_options(spec),
        groups=groups,
        accounts_secret=f"{name}-accounts",
    )
