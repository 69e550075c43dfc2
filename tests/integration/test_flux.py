"""MailDomains in Git, applied by a real Flux pipeline on the real node.

Flux's source-controller reads a Git repository served on loopback (tests/fixtures_flux.py);
its kustomize-controller applies what the repository holds with `prune: true` and
`wait: true`, so the Kustomization is Ready only when every object it applied is healthy: for
mailward's kinds by the CEL `healthCheckExprs` the chart ships, which read `Ready`,
`Reconciling`, `Stalled` and `observedGeneration` as kstatus does. The domains attach to one
MailServer fleet (one MTA pod), which becomes
Ready faster on two cores than an MTA pod per domain. The tests run in file order, each with a
commit of its own, and print how long Flux took from the commit.

Flux v1.9.6, not v1.10.x (see tools/flux/go.mod). A domain that is Stalled fails the
Kustomization early, but Flux's message names the domain and its kstatus verdict
(`MailDomain/flux-mail/fluxbad status: 'Failed'`), not the domain's reason: fluxcd/pkg/ssa
prints no more. The test asserts that, and the reason (`UpdateRefused`) on the domain itself.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pytest
import yaml

from mailward.render.policy_objects import policy_hosts, tls_secret_name
from mailward_localstack.controlplane import kubectl
from mailward_localstack.demo_dns import create_dns_provider
from mailward_localstack.dns import ensure_loopback_address, remove_loopback_address
from mailward_localstack.flux import NAMESPACE as FLUX_NAMESPACE
from mailward_localstack.flux import Flux, Repository
from mailward_localstack.stack import RELEASE_NAMESPACE, Stack
from tests.chart import CHART
from tests.fixtures_cluster import condition, fleet_maildomain, get_json, wait_for
from tests.fixtures_dnspublish import tls_secret_manifest
from tests.manifests import INVALID_CASES

pytestmark = [pytest.mark.controlplane, pytest.mark.dnsstack, pytest.mark.node]

ZONE = "example.test"
PLATFORM_NAMESPACE = "flux-platform"
MAIL_NAMESPACE = "flux-mail"
ALLOW_LABEL = ("mail.example.test/flux-fleet", "allowed")
FLEET = "flux-fleet"
FLEET_HOST = "mx.flux.example.test"
FLEET_HOST_NUMBER = 87  # a loopback address of the cluster's /24 that no other fixture uses
GOOD = ("fluxa", "fluxb", "fluxc")
BROKEN = "fluxbad"
BROKEN_PROVIDER = "broken-bind"
INVALID = next(c for c in INVALID_CASES if c.id == "mta-sts-mode-unknown")
KUSTOMIZATION = "mail"
REPOSITORY = "mail"
HEALTH_CHECK_EXPRS = CHART / "files" / "flux-health-check-exprs.yaml"
# One poll of the API server (three kubectl calls) takes about 0.2 s on two busy cores.
POLL = 0.25


def _domain(name: str) -> str:
    return f"{name}.{ZONE}"


def _maildomain(stack: Stack, name: str, provider: str = "local-bind") -> dict[str, Any]:
    return fleet_maildomain(
        stack.layout,
        name,
        MAIL_NAMESPACE,
        _domain(name),
        (PLATFORM_NAMESPACE, FLEET),
        provider=provider,
    )


def _mail_server(stack: Stack) -> dict[str, Any]:
    return {
        "apiVersion": "mailward.io/v1alpha1",
        "kind": "MailServer",
        "metadata": {"name": FLEET, "namespace": PLATFORM_NAMESPACE},
        "spec": {
            "hosts": [
                {
                    "host": FLEET_HOST,
                    "priority": 10,
                    "addresses": [stack.layout.address(FLEET_HOST_NUMBER)],
                }
            ],
            "replicas": 1,
            "hostNetwork": True,
            "tls": {"secretName": "flux-fleet-tls"},
            "dns": {"providerRef": {"kind": "DNSProvider", "name": "local-bind"}},
            "allowedDomains": {
                "namespaces": {
                    "from": "Selector",
                    "selector": {"matchLabels": {ALLOW_LABEL[0]: ALLOW_LABEL[1]}},
                }
            },
        },
    }


def _broken_provider(stack: Stack) -> list[dict[str, Any]]:
    """The local BIND's DNSProvider with a TSIG secret BIND does not know: updates are refused."""
    provider = get_json(stack, "dnsprovider", "local-bind", "-n", MAIL_NAMESPACE)
    spec = provider["spec"]
    spec["rfc2136"]["tsigSecretRef"] = {"name": f"{BROKEN_PROVIDER}-tsig", "key": "secret"}
    wrong = base64.b64encode(base64.b64encode(b"\x5a" * 32)).decode()
    return [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": f"{BROKEN_PROVIDER}-tsig", "namespace": MAIL_NAMESPACE},
            "data": {"secret": wrong},
        },
        {
            "apiVersion": "mailward.io/v1alpha1",
            "kind": "DNSProvider",
            "metadata": {"name": BROKEN_PROVIDER, "namespace": MAIL_NAMESPACE},
            "spec": spec,
        },
    ]


def _apply(stack: Stack, items: list[dict[str, Any]]) -> None:
    kubectl(
        stack.kubeconfig,
        "apply",
        "-f",
        "-",
        input=json.dumps({"kind": "List", "apiVersion": "v1", "items": items}),
    )


def _ready(body: dict[str, Any]) -> bool:
    found = condition(body, "Ready")
    return bool(
        found
        and found["status"] == "True"
        and body.get("status", {}).get("observedGeneration") == body["metadata"].get("generation")
    )


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@dataclass
class Pipeline:
    stack: Stack
    flux: Flux
    repo: Repository
    files: dict[str, str | None] = field(default_factory=dict)

    def commit(self, files: dict[str, dict[str, Any] | None], message: str) -> tuple[str, float]:
        """Commit the manifests (None removes one), ask Flux to look now; (hash, when)."""
        texts = {
            path: None if body is None else yaml.safe_dump(body, sort_keys=False)
            for path, body in files.items()
        }
        sha = self.repo.commit(texts, message)
        committed = time.monotonic()
        # What `flux reconcile source git` does: the controller reads the repository now, not
        # at its next interval; the Kustomization follows the new artifact by itself.
        kubectl(
            self.stack.kubeconfig,
            "annotate", "--overwrite", "-n", FLUX_NAMESPACE, "gitrepository", REPOSITORY,
            f"reconcile.fluxcd.io/requestedAt={time.time_ns()}",
        )  # fmt: skip
        return sha, committed

    def kustomization(self) -> dict[str, Any]:
        body: dict[str, Any] = get_json(
            self.stack, "kustomization", KUSTOMIZATION, "-n", FLUX_NAMESPACE
        )
        return body

    def wait_kustomization(
        self, sha: str, status: str, what: str, *, reason: str | None = None, timeout: float = 240
    ) -> dict[str, Any]:
        """Until the Kustomization's Ready is `status` for the revision `sha`."""

        def settled() -> dict[str, Any] | None:
            body = self.kustomization()
            ready = condition(body, "Ready")
            revision = body.get("status", {}).get(
                "lastAppliedRevision" if status == "True" else "lastAttemptedRevision", ""
            )
            if ready is None or not revision.endswith(sha) or ready["status"] != status:
                return None
            if reason is not None and ready["reason"] != reason:
                return None
            return body

        found: dict[str, Any] = wait_for(what, settled, timeout=timeout, interval=POLL)
        return found


def _kustomization_manifests(flux: Flux) -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": "source.toolkit.fluxcd.io/v1",
            "kind": "GitRepository",
            "metadata": {"name": REPOSITORY, "namespace": FLUX_NAMESPACE},
            "spec": {
                "interval": "10m",
                "timeout": "30s",
                "url": flux.addresses.repository_url(REPOSITORY),
                "ref": {"branch": "main"},
            },
        },
        {
            "apiVersion": "kustomize.toolkit.fluxcd.io/v1",
            "kind": "Kustomization",
            "metadata": {"name": KUSTOMIZATION, "namespace": FLUX_NAMESPACE},
            "spec": {
                "interval": "10m",
                "retryInterval": "5s",
                "timeout": "4m",
                "sourceRef": {"kind": "GitRepository", "name": REPOSITORY},
                "path": "./",
                "prune": True,
                "wait": True,
                # The rules the chart ships for users (files/flux-health-check-exprs.yaml): Flux
                # judges mailward's kinds by these CEL expressions instead of kstatus.
                "healthCheckExprs": yaml.safe_load(HEALTH_CHECK_EXPRS.read_text()),
            },
        },
    ]


@pytest.fixture(scope="module")
def pipeline(cluster: Stack, flux: Flux) -> Iterator[Pipeline]:
    """The fleet, the domains' namespace, Secrets and DNSProviders (the platform's part, not in
    Git), and a Kustomization of an empty repository, Ready."""
    kubeconfig = cluster.kubeconfig
    fleet_address = cluster.layout.address(FLEET_HOST_NUMBER)
    added = ensure_loopback_address(fleet_address)  # Postfix binds only configured addresses
    try:
        for namespace in (PLATFORM_NAMESPACE, MAIL_NAMESPACE):
            kubectl(kubeconfig, "create", "namespace", namespace)
            create_dns_provider(kubeconfig, cluster.state_dir / "dns", namespace)
        kubectl(kubeconfig, "label", "namespace", MAIL_NAMESPACE, "=".join(ALLOW_LABEL))
        certs = cluster.state_dir / "certs" / "flux"
        mx = cluster.ca.issue_server_cert([FLEET_HOST], out_dir=certs)
        secrets = [tls_secret_manifest(PLATFORM_NAMESPACE, mx, "flux-fleet-tls")]
        for name in (*GOOD, BROKEN):
            policy = cluster.ca.issue_server_cert(policy_hosts(_domain(name)), out_dir=certs / name)
            secrets.append(
                tls_secret_manifest(RELEASE_NAMESPACE, policy, tls_secret_name(_domain(name)))
            )
        _apply(cluster, [*secrets, *_broken_provider(cluster)])
        began = time.monotonic()
        _apply(cluster, [_mail_server(cluster)])
        wait_for(
            "the MailServer Ready",
            lambda: _ready(get_json(cluster, "mailserver", FLEET, "-n", PLATFORM_NAMESPACE)),
            timeout=240,
        )
        print(f"\n[flux] MailServer {FLEET} Ready {time.monotonic() - began:.1f}s after apply")

        repo = flux.forge.create(REPOSITORY)
        state = Pipeline(cluster, flux, repo)
        sha = repo.commit({"README.md": "MailDomains of the flux-mail namespace.\n"}, "empty")
        _apply(cluster, _kustomization_manifests(flux))
        began = time.monotonic()
        state.wait_kustomization(sha, "True", "the Kustomization of the empty repository Ready")
        print(f"[flux] empty repository applied {time.monotonic() - began:.1f}s after creation")
        yield state
    finally:
        # Flux prunes what the Kustomization applied when it is deleted (prune: true).
        kubectl(
            kubeconfig, "delete", "kustomization", KUSTOMIZATION, "-n", FLUX_NAMESPACE,
            "--ignore-not-found", "--timeout=60s", check=False,
        )  # fmt: skip
        kubectl(
            kubeconfig, "delete", "gitrepository", REPOSITORY, "-n", FLUX_NAMESPACE,
            "--ignore-not-found", "--timeout=60s", check=False,
        )  # fmt: skip
        kubectl(
            kubeconfig, "delete", "dnsprovider", BROKEN_PROVIDER, "-n", MAIL_NAMESPACE,
            "--ignore-not-found", check=False,
        )  # fmt: skip
        kubectl(
            kubeconfig, "delete", "mailserver", FLEET, "-n", PLATFORM_NAMESPACE,
            "--ignore-not-found", "--timeout=60s", check=False,
        )  # fmt: skip
        if added:
            remove_loopback_address(fleet_address)


def _domains(stack: Stack) -> dict[str, dict[str, Any]]:
    items = get_json(stack, "maildomains", "-n", MAIL_NAMESPACE)["items"]
    return {item["metadata"]["name"]: item for item in items}


def _zone_names(stack: Stack) -> set[str]:
    """Every owner name in the zone, from BIND itself (a transfer with the TSIG key)."""
    zone = stack.dns.authoritative.axfr(ZONE)
    return {name.to_text() for name in zone.nodes}


@pytest.mark.timeout(1200)
def test_a_commit_of_three_domains_is_ready_only_after_the_three_are(
    pipeline: Pipeline,
) -> None:
    stack = pipeline.stack
    sha, committed = pipeline.commit(
        {f"{name}.yaml": _maildomain(stack, name) for name in GOOD}, "three MailDomains"
    )
    # Poll: the Kustomization first, then the domains, both stamped with the poll's start. A
    # domain that is Ready stays Ready, so when the Kustomization is Ready at one poll, the
    # domains read right after it must all be.
    domain_ready_at: dict[str, float] = {}
    waited_with_unready_domain = False
    kustomization_ready_at = None
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        body = pipeline.kustomization()
        status = body.get("status", {})
        ready = condition(body, "Ready") or {}
        now = time.monotonic()
        applied = status.get("lastAppliedRevision", "").endswith(sha)
        ks_ready = applied and ready.get("status") == "True"
        attempted = status.get("lastAttemptedRevision", "").endswith(sha)
        domains = _domains(stack)
        for name in GOOD:
            if name in domains and _ready(domains[name]) and name not in domain_ready_at:
                domain_ready_at[name] = now
        if ks_ready:
            kustomization_ready_at = now
            break
        if attempted and len(domain_ready_at) < len(GOOD) and set(GOOD) <= set(domains):
            # The three are applied, not all Ready, and the Kustomization is not Ready.
            waited_with_unready_domain = True
        time.sleep(POLL)
    assert kustomization_ready_at is not None, f"not Ready: {pipeline.kustomization()}"
    assert sorted(domain_ready_at) == sorted(GOOD), (
        "the Kustomization was Ready before every MailDomain was",
        domain_ready_at,
    )
    assert waited_with_unready_domain, "never saw the Kustomization wait for an unready domain"
    assert max(domain_ready_at.values()) <= kustomization_ready_at

    # The same order in the API server's own timestamps (second precision).
    domains = _domains(stack)
    domain_times = {
        name: _time(condition(domains[name], "Ready")["lastTransitionTime"])  # type: ignore[index]
        for name in GOOD
    }
    ks_ready_condition = condition(pipeline.kustomization(), "Ready")
    assert ks_ready_condition is not None
    ks_time = _time(ks_ready_condition["lastTransitionTime"])
    assert max(domain_times.values()) <= ks_time, (domain_times, ks_time)
    assert ks_ready_condition["message"].startswith("Applied revision")

    print(f"\n[flux] commit {sha[:12]} of three MailDomains:")
    for name in GOOD:
        print(f"[flux]   MailDomain {name} Ready {domain_ready_at[name] - committed:6.1f}s")
    api_times = sorted(t.isoformat() for t in domain_times.values())
    print(
        f"[flux]   Kustomization Ready    {kustomization_ready_at - committed:6.1f}s "
        f"after the commit (API times: domains {api_times}, Kustomization {ks_time.isoformat()})"
    )


@pytest.mark.timeout(600)
def test_a_commit_the_api_server_rejects_names_the_field(pipeline: Pipeline) -> None:
    stack = pipeline.stack
    manifest = INVALID.manifest("fluxinvalid", MAIL_NAMESPACE)
    sha, committed = pipeline.commit({"fluxinvalid.yaml": manifest}, "an invalid MailDomain")
    body = pipeline.wait_kustomization(sha, "False", "the Kustomization not Ready")
    elapsed = time.monotonic() - committed
    ready = condition(body, "Ready")
    assert ready is not None
    print(f"\n[flux] commit {sha[:12]} (invalid spec): Ready=False {elapsed:.1f}s after it:")
    print(f"[flux]   {ready['reason']}: {ready['message'][:400]}")
    assert INVALID.field in ready["message"], ready
    assert "fluxinvalid" in ready["message"], ready
    # Nothing of that commit was applied, and the domains it did not touch are still Ready.
    domains = _domains(stack)
    assert "fluxinvalid" not in domains
    assert all(_ready(domains[name]) for name in GOOD)


@pytest.mark.timeout(600)
def test_a_domain_broken_at_reconcile_time_keeps_the_kustomization_not_ready(
    pipeline: Pipeline,
) -> None:
    stack = pipeline.stack
    sha, committed = pipeline.commit(
        {
            "fluxinvalid.yaml": None,
            f"{BROKEN}.yaml": _maildomain(stack, BROKEN, provider=BROKEN_PROVIDER),
        },
        "a MailDomain whose DNS provider refuses updates",
    )
    body = pipeline.wait_kustomization(
        sha, "False", "the Kustomization failed by the broken domain", reason="HealthCheckFailed"
    )
    elapsed = time.monotonic() - committed
    ready = condition(body, "Ready")
    assert ready is not None
    print(f"\n[flux] commit {sha[:12]} (refused DNS updates): Ready=False {elapsed:.1f}s after it:")
    print(f"[flux]   {ready['reason']}: {ready['message'][:400]}")
    # Failed early (kstatus reads Stalled=True as Failed), not after the 4 minute timeout.
    assert "failed early due to stalled resources" in ready["message"], ready
    broken = _domains(stack)[BROKEN]
    stalled = condition(broken, "Stalled")
    assert stalled is not None, broken["status"]
    assert stalled["status"] == "True", broken["status"]
    assert stalled["reason"] == "UpdateRefused", stalled
    domain_ready = condition(broken, "Ready")
    assert domain_ready is not None
    assert domain_ready["status"] == "False"
    assert "refused to update zone" in stalled["message"], stalled
    print(f"[flux]   the domain: Stalled {stalled['reason']}: {stalled['message'][:300]}")
    # Flux names the resource and its kstatus verdict, not the resource's own reason:
    # fluxcd/pkg/ssa (manager_wait.go) writes "<kind>/<namespace>/<name> status: 'Failed'"
    # and nothing of the Stalled condition; the reason is one `kubectl get` away, on the domain.
    assert f"[MailDomain/{MAIL_NAMESPACE}/{BROKEN} status: 'Failed']" in ready["message"], ready


@pytest.mark.timeout(600)
def test_removing_a_domain_from_git_prunes_it_and_withdraws_its_records(
    pipeline: Pipeline,
) -> None:
    stack = pipeline.stack
    gone, kept = GOOD[2], GOOD[0]
    names = _zone_names(stack)
    assert f"{_domain(gone)}." in names
    assert f"_mta-sts.{_domain(gone)}." in names
    sha, committed = pipeline.commit(
        {f"{gone}.yaml": None, f"{BROKEN}.yaml": None}, f"remove {gone} and {BROKEN}"
    )
    pipeline.wait_kustomization(sha, "True", "the Kustomization Ready after the prune")
    ready_after = time.monotonic() - committed
    wait_for(
        f"MailDomain {gone} deleted",
        lambda: gone not in _domains(stack),
        timeout=120,
        interval=POLL,
    )
    deleted_after = time.monotonic() - committed

    def withdrawn() -> bool:
        names = _zone_names(stack)
        return f"{_domain(gone)}." not in names and f"_mta-sts.{_domain(gone)}." not in names

    wait_for(f"the records of {_domain(gone)} withdrawn", withdrawn, timeout=60, interval=POLL)
    withdrawn_after = time.monotonic() - committed
    names = _zone_names(stack)
    assert not [n for n in names if n.endswith(f".{_domain(gone)}.") or n == f"{_domain(gone)}."]
    assert f"{_domain(kept)}." in names  # the others' records stay
    assert _ready(_domains(stack)[kept])
    print(
        f"\n[flux] commit {sha[:12]} removing {gone}: Kustomization Ready {ready_after:.1f}s, "
        f"MailDomain gone {deleted_after:.1f}s, records withdrawn {withdrawn_after:.1f}s after it"
    )
    # The broken domain's records were never written, so its deletion needed no withdrawal and
    # finished with the prune; its provider goes too.
    kubectl(stack.kubeconfig, "delete", "dnsprovider", BROKEN_PROVIDER, "-n", MAIL_NAMESPACE)
    wait_for(f"MailDomain {BROKEN} deleted", lambda: BROKEN not in _domains(stack), timeout=120)
