"""MailServer: the model, who may attach, and the fleet's objects (pure)."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from mailward.adapters.workloads import StatefulSetObservation
from mailward.api.mailserver import MailServerSpec
from mailward.api.v1alpha1 import MailDomainStatus
from mailward.attachment import NAMESPACE_NOT_ALLOWED, ServerKey, decide
from mailward.endpoint.catalog import site_for
from mailward.parts import ReconcileContext
from mailward.parts.mta import MTAPart
from mailward.reconcile import InvalidSpec, parse_spec
from mailward.render.dns_records import fleet_host_rrsets
from mailward.render.mta_objects import (
    CONFIG_HASH_ANNOTATION,
    domains_digest,
    render_mta_objects,
)
from mailward.render.mta_server import fleet_server
from mailward.render.postfix import DomainConfig
from tests.manifests import valid_maildomain
from tests.own_mta import own_objects

SERVER = ServerKey("mail", "fleet")
HOSTS = ("mx1.fleet.test", "mx2.fleet.test")


def _server(**overrides: Any) -> MailServerSpec:
    spec: dict[str, Any] = {
        "hosts": [
            {"host": "mx1.fleet.test", "addresses": ["127.0.0.31"]},
            {"host": "mx2.fleet.test", "priority": 20, "addresses": ["127.0.0.32"]},
        ],
        "tls": {"secretName": "fleet-tls"},
        **overrides,
    }
    return MailServerSpec.model_validate(spec)


def test_allowed_namespaces_follow_gateway_api() -> None:
    same = _server()
    assert decide("mail", SERVER, same, {}).allowed
    refused = decide("tenant", SERVER, same, {})
    assert not refused.allowed
    assert refused.reason == NAMESPACE_NOT_ALLOWED
    assert "MailServer mail/fleet" in refused.message
    assert "from: Same" in refused.message
    selected = _server(
        allowedDomains={
            "namespaces": {"from": "Selector", "selector": {"matchLabels": {"mail": "fleet"}}}
        }
    )
    assert decide("tenant", SERVER, selected, {"mail": "fleet"}).allowed
    no = decide("other", SERVER, selected, {"team": "x"})
    assert not no.allowed
    assert "mail=fleet" in no.message
    assert "team=x" in no.message
    assert decide("other", SERVER, _server(allowedDomains={"namespaces": {"from": "All"}}), {})
    missing = decide("mail", SERVER, None, None, server_found=False)
    assert (missing.allowed, missing.reason) == (False, "MailServerNotFound")


def test_selector_expressions() -> None:
    spec = _server(
        allowedDomains={
            "namespaces": {
                "from": "Selector",
                "selector": {
                    "matchExpressions": [
                        {"key": "tier", "operator": "In", "values": ["gold", "silver"]},
                        {"key": "frozen", "operator": "DoesNotExist"},
                    ]
                },
            }
        }
    )
    assert decide("a", SERVER, spec, {"tier": "gold"}).allowed
    assert not decide("a", SERVER, spec, {"tier": "gold", "frozen": "1"}).allowed
    assert not decide("a", SERVER, spec, {"tier": "bronze"}).allowed


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"allowedDomains": {"namespaces": {"from": "Selector"}}}, "selector is required"),
        ({"hostNetwork": True, "hosts": [{"host": "mx.fleet.test"}]}, "requires addresses"),
        ({"hosts": [{"host": "mx.fleet.test"}, {"host": "mx.fleet.test"}]}, "listed twice"),
    ],
)
def test_invalid_mailservers_name_the_reason(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        _server(**overrides)


def test_a_maildomain_either_attaches_or_has_its_own_mx() -> None:
    attached = parse_spec({"domain": "a.test", "mailServerRef": {"name": "fleet"}})
    assert attached.attached
    assert attached.mx == []
    with pytest.raises(InvalidSpec, match=r"spec\.mailServerRef"):
        parse_spec(
            {
                "domain": "a.test",
                "mailServerRef": {"name": "fleet"},
                "mx": [{"host": "mx.a.test"}],
            }
        )
    with pytest.raises(InvalidSpec, match=r"spec\.mailServerRef"):
        parse_spec({"domain": "a.test"})


def test_host_network_fleet_has_one_statefulset_per_host_and_shared_tables() -> None:
    fleet = fleet_server("fleet", "mail", "uid-1", _server(hostNetwork=True, replicas=1), "img")
    domains = [DomainConfig(f"d{i}.test", ("mx1.fleet.test", "mx2.fleet.test")) for i in range(3)]
    objects = render_mta_objects(fleet, domains)
    statefulsets = [o for o in objects if o["kind"] == "StatefulSet"]
    assert [s["metadata"]["name"] for s in statefulsets] == ["fleet-0", "fleet-1"]
    tables = [o for o in objects if o["metadata"]["name"] == "fleet-domains"]
    assert len(tables) == 1
    assert tables[0]["data"]["domains"] == "d0.test OK\nd1.test OK\nd2.test OK\n"
    main_cf = next(o for o in objects if o["metadata"]["name"] == "fleet-1-config")["data"]
    assert "inet_interfaces = 127.0.0.32\n" in main_cf["main.cf"]
    assert "myhostname = mx2.fleet.test\n" in main_cf["main.cf"]
    for statefulset in statefulsets:
        pod = statefulset["spec"]["template"]["spec"]
        assert pod["hostNetwork"] is True
        assert {"name": "domains", "configMap": {"name": "fleet-domains"}} in pod["volumes"]
        (owner,) = statefulset["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["uid"]) == ("MailServer", "uid-1")
    # A 101st domain changes the tables only: the pod templates stay, so nothing restarts.
    more = render_mta_objects(fleet, [*domains, DomainConfig("new.test", ("mx1.fleet.test",))])
    digests = [
        o["spec"]["template"]["metadata"]["annotations"][CONFIG_HASH_ANNOTATION]
        for o in (objects, more)
        for o in o
        if o["kind"] == "StatefulSet"
    ]
    assert digests[:2] == digests[2:]
    assert [o for o in more if o["kind"] != "ConfigMap" or "domains" not in o["data"]] == [
        o for o in objects if o["kind"] != "ConfigMap" or "domains" not in o["data"]
    ]


def test_service_fleet_is_one_statefulset_behind_one_service() -> None:
    fleet = fleet_server("fleet", "mail", "uid-1", _server(), "img")
    objects = render_mta_objects(fleet, [])
    (statefulset,) = [o for o in objects if o["kind"] == "StatefulSet"]
    assert statefulset["spec"]["replicas"] == 2
    assert "hostNetwork" not in statefulset["spec"]["template"]["spec"]
    service = next(
        o for o in objects if o["kind"] == "Service" and o["metadata"]["name"] == "fleet"
    )
    assert service["spec"]["externalTrafficPolicy"] == "Local"


def test_fleet_records_hold_one_tlsa_rrset_per_host() -> None:
    rrsets = fleet_host_rrsets(
        "mx1.fleet.test", ["127.0.0.31"], ttl=3600, tlsa_ttl=600, tlsa_spki_sha256=["ab" * 32]
    )
    assert [(r.name, r.type) for r in rrsets] == [
        ("_25._tcp.mx1.fleet.test.", "TLSA"),
        ("mx1.fleet.test.", "A"),
    ]


def test_the_policy_endpoint_serves_an_attached_domain_with_its_fleets_hosts() -> None:
    body: dict[str, Any] = {
        "metadata": {"namespace": "a", "name": "shop", "uid": "u", "resourceVersion": "1"},
        "spec": {
            "domain": "shop.test",
            "mailServerRef": {"name": "fleet"},
            "mtaSts": {"mode": "enforce", "maxAge": 86400},
        },
    }
    assert site_for(body) is None  # the operator has not found the fleet yet
    body["status"] = {"mailServer": {"namespace": "a", "name": "fleet", "hosts": list(HOSTS)}}
    site = site_for(body)
    assert site is not None
    assert "mx: mx1.fleet.test\r\nmx: mx2.fleet.test\r\n" in site.policy


def test_a_fleet_copies_its_domains_accounts_into_its_own_namespace() -> None:
    fleet = fleet_server("fleet", "mail", "uid-1", _server(), "img")
    domains = [DomainConfig("shop.test", HOSTS, ("alice",)), DomainConfig("lab.test", HOSTS)]
    objects = render_mta_objects(fleet, domains, passwords={"shop.test": {"alice": "s3cret"}})
    (secret,) = [o for o in objects if o["kind"] == "Secret"]
    assert secret["metadata"] == {
        **secret["metadata"],
        "name": "fleet-accounts",
        "namespace": "mail",
    }
    assert secret["data"] == {"shop.test_alice": base64.b64encode(b"s3cret").decode()}
    tables = next(o for o in objects if o["metadata"]["name"] == "fleet-domains")["data"]
    assert tables["sender_logins"] == "alice@shop.test alice@shop.test\n"
    assert "s3cret" not in json.dumps([o for o in objects if o["kind"] != "Secret"])
    pod = next(o for o in objects if o["kind"] == "StatefulSet")["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v["name"] == "accounts")
    assert volume["secret"]["optional"] is True
    mounts = pod["containers"][0]["volumeMounts"]
    assert {"name": "accounts", "mountPath": "/etc/mailward/accounts", "readOnly": True} in mounts
    # A password change is a reload too: it changes the digest the pods are annotated with.
    assert domains_digest(domains, {"shop.test": {"alice": "a"}}) != domains_digest(
        domains, {"shop.test": {"alice": "b"}}
    )


def test_an_own_mtas_claim_template_keeps_the_labels_of_the_first_release() -> None:
    """volumeClaimTemplates are immutable: a new label there would refuse every upgrade."""
    spec = parse_spec(valid_maildomain()["spec"])
    statefulset = next(o for o in own_objects(spec) if o["kind"] == "StatefulSet")
    (claim,) = statefulset["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["labels"] == {
        "app.kubernetes.io/name": "mailward-mta",
        "app.kubernetes.io/instance": "example-mta",
        "app.kubernetes.io/managed-by": "mailward",
        "mailward.io/maildomain": "example",
    }


class _RefusingWorkloads:
    async def apply(self, manifest: dict[str, Any]) -> dict[str, Any]:
        if manifest["kind"] == "StatefulSet":
            body = json.dumps({"message": 'StatefulSet.apps "example-mta" is invalid: spec'})
            error = ApiException(status=422, reason="Unprocessable Entity")
            error.body = body
            raise error
        return manifest

    async def secret_keys(self, namespace: str, name: str) -> list[str] | None:
        return []

    async def observe_statefulset(self, namespace: str, name: str) -> StatefulSetObservation:
        raise AssertionError("not reached")


def test_an_mta_the_api_server_refuses_is_a_condition_not_a_crash() -> None:
    spec = parse_spec(valid_maildomain()["spec"])
    ctx = ReconcileContext("example", "default", "uid-1", 1, spec, MailDomainStatus())
    result = asyncio.run(MTAPart(_RefusingWorkloads()).reconcile(ctx))
    (verdict,) = result.verdicts
    assert (verdict.status, verdict.reason) == ("False", "ApplyRefused")
    assert "StatefulSet example-mta" in verdict.message
    assert "is invalid" in verdict.message
    assert result.retry_after is not None
