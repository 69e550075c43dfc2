"""A MailDomain's own MTA rendered the way the MTA part renders it (shared by unit tests)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mailward.api.mta import DEFAULT_MTA_IMAGE
from mailward.api.v1alpha1 import KIND, MailDomainSpec
from mailward.owner import Owner
from mailward.render.mta_objects import own_mta_domain, render_own_mta_objects
from mailward.render.mta_pod import MTAFiles, render_mta_config, render_mta_files
from mailward.render.mta_server import own_mta_server
from mailward.render.postfix import PostfixConfig
from mailward.render.resolver import ResolverSettings

OWNER = Owner("default", "example", "0000-1111", kind=KIND)


def own_objects(
    spec: MailDomainSpec, accounts: Sequence[str] = (), resolver: ResolverSettings | None = None
) -> list[dict[str, Any]]:
    return render_own_mta_objects(OWNER, spec, accounts, resolver)


def own_config(spec: MailDomainSpec, accounts: Sequence[str] = ()) -> PostfixConfig:
    """The Postfix configuration of the MTA's pods, tables included."""
    server = own_mta_server(OWNER.name, OWNER.namespace, OWNER.uid, spec, DEFAULT_MTA_IMAGE)
    return render_mta_config(server, server.groups[0], [own_mta_domain(spec, accounts)])


def own_files(spec: MailDomainSpec, resolver: ResolverSettings) -> MTAFiles:
    server = own_mta_server(OWNER.name, OWNER.namespace, OWNER.uid, spec, DEFAULT_MTA_IMAGE)
    return render_mta_files(server, server.groups[0], resolver)
