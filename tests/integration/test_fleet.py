"""One MailServer fleet serving 100 MailDomains from three namespaces, on the real node.

The fleet is two host-network StatefulSets (`mx1`/`mx2.fleet.example.test` on their own loopback
addresses, one pod each: two MTA pods). The domains are `fNNN.example.test` in the namespaces
`fleet-mail` (where the MailServer lives), `fleet-a` and `fleet-b`, all labelled
`mail.example.test/fleet=allowed`, which the MailServer's namespace selector asks for; a fourth
namespace without the label may not attach. The tests run in file order on one fleet.
"""

from __future__ import annotations

import itertools
import json
import re
import smtplib
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import dns.rdataclass
import dns.rdatatype
import pytest

from mailward.render.policy_objects import policy_hosts, tls_secret_name
from mailward_localstack.controlplane import kubectl
from mailward_localstack.demo_dns import create_dns_provider
from mailward_localstack.dns import ensure_loopback_address, remove_loopback_address
from mailward_localstack.stack import RELEASE_NAMESPACE, Stack
from tests.fixtures_cluster import condition, fleet_maildomain, get_json, wait_for
from tests.fixtures_dnspublish import tls_secret_manifest

# The module's fixture brings up 100 domains inside the first test's time: its own waits (300 s
# for the fleet, 600 s for the domains) bound it, not the suite's 300 s per test. 47.7 s on a
# quiet machine; two CI rehearsals beside other builds on 2 cores went over 300 s.
pytestmark = [
    pytest.mark.controlplane,
    pytest.mark.dnsstack,
    pytest.mark.node,
    pytest.mark.timeout(1200),
]

ZONE = "example.test"
SERVER_NAMESPACE = "fleet-mail"
NAMESPACES = (SERVER_NAMESPACE, "fleet-a", "fleet-b")
OUTSIDER_NAMESPACE = "fleet-outside"
ALLOW_LABEL = ("mail.example.test/fleet", "allowed")
COUNT = 100
HOSTS = ("mx1.fleet.example.test", "mx2.fleet.example.test")
HOST_NUMBERS = (31, 32)
SENDER = "probe@sender.test"


def _domain(index: int) -> str:
    return f"f{index:03d}.{ZONE}"


def _namespace(index: int) -> str:
    return NAMESPACES[index % len(NAMESPACES)]


def _maildomain(stack: Stack, index: int) -> dict[str, Any]:
    return fleet_maildomain(
        stack.layout,
        f"f{index:03d}",
        _namespace(index),
        _domain(index),
        (SERVER_NAMESPACE, "fleet"),
    )


def _mail_server(stack: Stack) -> dict[str, Any]:
    return {
        "apiVersion": "mailward.io/v1alpha1",
        "kind": "MailServer",
        "metadata": {"name": "fleet", "namespace": SERVER_NAMESPACE},
        "spec": {
            "hosts": [
                {"host": host, "priority": 10 * (i + 1), "addresses": [stack.layout.address(n)]}
                for i, (host, n) in enumerate(zip(HOSTS, HOST_NUMBERS, strict=True))
            ],
            "replicas": 1,
            "hostNetwork": True,
            "tls": {"secretName": "fleet-tls"},
            "dns": {"providerRef": {"kind": "DNSProvider", "name": "local-bind"}},
            "allowedDomains": {
                "namespaces": {
                    "from": "Selector",
                    "selector": {"matchLabels": {ALLOW_LABEL[0]: ALLOW_LABEL[1]}},
                }
            },
        },
    }


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
    generation = body["metadata"].get("generation")
    return bool(
        found
        and found["status"] == "True"
        and body.get("status", {}).get("observedGeneration") == generation
    )


def _domains_ready(stack: Stack) -> int:
    bodies = get_json(stack, "maildomains", "-A", "-l", "test.mailward.io/fleet=yes")["items"]
    return sum(1 for body in bodies if _ready(body))


@pytest.fixture(scope="module")
def fleet(cluster: Stack, example: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The example runs the TLSRPT collector the fleet's domains send reports to."""
    addresses = [cluster.layout.address(n) for n in HOST_NUMBERS]
    added = [a for a in addresses if ensure_loopback_address(a)]
    try:
        kubeconfig = cluster.kubeconfig
        for namespace in NAMESPACES:
            kubectl(kubeconfig, "create", "namespace", namespace)
            kubectl(kubeconfig, "label", "namespace", namespace, "=".join(ALLOW_LABEL))
            create_dns_provider(kubeconfig, cluster.state_dir / "dns", namespace)
        kubectl(kubeconfig, "create", "namespace", OUTSIDER_NAMESPACE)
        create_dns_provider(kubeconfig, cluster.state_dir / "dns", OUTSIDER_NAMESPACE)
        certs = cluster.state_dir / "certs" / "fleet"
        mx = cluster.ca.issue_server_cert(list(HOSTS), out_dir=certs)
        secrets = [tls_secret_manifest(SERVER_NAMESPACE, mx, "fleet-tls")]
        for index in range(COUNT + 2):
            domain = _domain(index)
            policy = cluster.ca.issue_server_cert(policy_hosts(domain), out_dir=certs / domain)
            secrets.append(tls_secret_manifest(RELEASE_NAMESPACE, policy, tls_secret_name(domain)))
        _apply(cluster, secrets)

        began = time.monotonic()
        _apply(cluster, [_mail_server(cluster)])
        domains = []
        for index in range(COUNT):
            manifest = _maildomain(cluster, index)
            manifest["metadata"]["labels"] = {"test.mailward.io/fleet": "yes"}
            domains.append(manifest)
        _apply(cluster, domains)

        def fleet_ready() -> dict[str, Any] | None:
            body = get_json(cluster, "mailserver", "fleet", "-n", SERVER_NAMESPACE)
            status = body.get("status", {})
            ready = _ready(body) and status.get("attachedDomains") == COUNT
            return body if ready else None

        server = wait_for("the MailServer Ready with 100 domains", fleet_ready, timeout=300)
        wait_for(
            "100 MailDomains Ready",
            lambda: _domains_ready(cluster) == COUNT,
            timeout=600,
            interval=3,
        )
        elapsed = time.monotonic() - began
        print(f"\nfleet Ready with {COUNT} domains, all Ready {elapsed:.1f}s after apply")
        yield server
    finally:
        for address in added:
            remove_loopback_address(address)


# Sources of the test's SMTP sessions: every client on loopback would otherwise come from the
# address it connects to, the same as the operator's compliance probes, and share Postfix's
# per-client connection rate limit (60/min) with them. Any 127/8 address is the machine's own.
_SOURCES = itertools.cycle(range(100, 128))


def _smtp(stack: Stack, host_index: int, *, port: int = 25) -> smtplib.SMTP:
    """A STARTTLS session with the fleet host, its certificate verified by name."""
    context = ssl.create_default_context(cafile=str(stack.ca.ca_file))
    source = (stack.layout.address(next(_SOURCES)), 0)
    session = smtplib.SMTP(
        stack.layout.address(HOST_NUMBERS[host_index]), port, timeout=30, source_address=source
    )
    vars(session)["_host"] = HOSTS[host_index]  # the name STARTTLS checks the certificate for
    session.ehlo("probe.sender.test")
    session.starttls(context=context)
    session.ehlo("probe.sender.test")
    return session


def _message(recipient: str) -> str:
    return f"From: <{SENDER}>\r\nTo: <{recipient}>\r\nSubject: fleet\r\n\r\nhello\r\n"


def _rcpt_code(stack: Stack, recipient: str, host_index: int = 0) -> int:
    with _smtp(stack, host_index) as session:
        session.mail(SENDER)
        code, _ = session.rcpt(recipient)
        session.rset()
        return code


def _fleet_pods(stack: Stack) -> dict[str, tuple[str, int]]:
    pods = get_json(
        stack,
        "pods",
        "-n",
        SERVER_NAMESPACE,
        "-l",
        "app.kubernetes.io/name=mailward-mta,app.kubernetes.io/part-of=fleet",
    )["items"]
    return {
        pod["metadata"]["name"]: (
            pod["metadata"]["uid"],
            sum(s["restartCount"] for s in pod["status"].get("containerStatuses", [])),
        )
        for pod in pods
    }


def _fleet_configmaps(stack: Stack) -> dict[str, dict[str, str]]:
    names = ["fleet-domains", "fleet-0-config", "fleet-1-config"]
    return {
        name: get_json(stack, "configmap", name, "-n", SERVER_NAMESPACE)["data"] for name in names
    }


def _records_at(zone: Any, name: str) -> list[str]:
    """The data at `name` but DNSSEC's own (signatures change with every zone update)."""
    node = zone.get_node(f"{name}.")
    skip = (dns.rdatatype.RRSIG, dns.rdatatype.NSEC, dns.rdatatype.NSEC3)
    return sorted(
        f"{dns.rdatatype.to_text(r.rdtype)} {r.ttl} {sorted(x.to_text() for x in r)}"
        for r in node.rdatasets
        if r.rdtype not in skip
    )


def test_every_attached_domain_accepts_postmaster_over_starttls(
    cluster: Stack, fleet: dict[str, Any]
) -> None:
    assert fleet["status"]["readyReplicas"] == 2
    # Half of the domains through each host: each pod must serve every domain.
    for host_index in (0, 1):
        with _smtp(cluster, host_index) as session:
            for index in range(host_index, COUNT, 2):
                recipient = f"postmaster@{_domain(index)}"
                session.sendmail(SENDER, [recipient], _message(recipient))
    # A domain no MailDomain attached is somebody else's: relaying is refused.
    assert _rcpt_code(cluster, "postmaster@not-attached.test") == 554
    assert _rcpt_code(cluster, f"postmaster@{_domain(COUNT + 1)}", 1) == 554


def test_the_zone_holds_one_tlsa_rrset_per_fleet_host(
    cluster: Stack, fleet: dict[str, Any]
) -> None:
    zone = cluster.dns.authoritative.axfr(ZONE)
    tlsa = sorted(
        name.to_text()
        for name, node in zone.nodes.items()
        if node.get_rdataset(dns.rdataclass.IN, dns.rdatatype.TLSA) is not None
    )
    fleet_tlsa = [n for n in tlsa if n.endswith(f".fleet.{ZONE}.")]
    assert fleet_tlsa == [f"_25._tcp.{HOSTS[0]}.", f"_25._tcp.{HOSTS[1]}."], tlsa
    # Not one per domain: no TLSA anywhere under the 100 domains.
    assert not [n for n in tlsa if re.search(rf"\.f[0-9]{{3}}\.{ZONE}\.$", n)], tlsa
    for index in (0, 37, COUNT - 1):
        node = zone.get_node(f"{_domain(index)}.")
        assert node is not None
        mx = node.get_rdataset(dns.rdataclass.IN, dns.rdatatype.MX)
        assert mx is not None
        assert sorted(r.to_text() for r in mx) == [
            "10 mx1.fleet.example.test.",
            "20 mx2.fleet.example.test.",
        ]


@pytest.mark.timeout(900)
def test_mailward_check_passes_for_a_sample_of_the_domains(
    cluster: Stack, fleet: dict[str, Any]
) -> None:
    outsider = ["--resolver", cluster.layout.resolver, "--ca-file", str(cluster.ca.ca_file)]

    def check(domain: str) -> dict[str, Any]:
        result = subprocess.run(
            [sys.executable, "-m", "mailward", "check", domain, "--json", *outsider],
            capture_output=True,
            text=True,
            timeout=300,
        )
        report: dict[str, Any] = json.loads(result.stdout)
        return report

    # The operator probes each new domain once it is Ready: 100 first checks at once, all from
    # one source address (on loopback, the address probed). Wait for that round and for the
    # fleet's per-client rate window (Postfix's anvil: 60 connections a minute) to pass.
    def first_round() -> dict[str, int] | None:
        bodies = get_json(cluster, "maildomains", "-A", "-l", "test.mailward.io/fleet=yes")
        verdicts = [condition(b, "Compliant") for b in bodies["items"]]
        if any(v is None for v in verdicts):
            return None
        counts: dict[str, int] = {}
        for verdict in verdicts:
            assert verdict is not None
            counts[verdict["status"]] = counts.get(verdict["status"], 0) + 1
        return counts

    counts = wait_for("the operator's first compliance round", first_round, timeout=600)
    print(f"\noperator's first compliance round over the fleet: Compliant {counts}")
    time.sleep(60)
    for index in (0, 1, 2):  # one per namespace
        domain = _domain(index)
        # The probe connects from the address it probes, as the operator's own compliance
        # probes of all 100 domains do: the fleet's per-client rate limit (60 connections a
        # minute) may answer 421 for a while after they ran. That is retried, and said.
        report = check(domain)
        began = time.monotonic()
        while not report["compliant"] and time.monotonic() - began < 200:
            # A check makes dozens of connections per MX: the next waits out the rate window.
            print(f"\n{domain}: not yet compliant: {report['failingMust']}; again in 65 s")
            time.sleep(65)
            report = check(domain)
        assert report["compliant"] is True, (domain, report["failingMust"])
        results = {c["id"]: c["result"] for c in report["checks"]}
        for must in ("TR-DANE-01", "TR-SMTP-02", "TR-TLS-01", "TR-STS-01"):
            assert results.get(must) == "pass", (domain, must, results)


def test_attaching_a_101st_domain_restarts_nothing_and_keeps_open_sessions(
    cluster: Stack, fleet: dict[str, Any]
) -> None:
    pods = _fleet_pods(cluster)
    assert len(pods) == 2
    new = _domain(COUNT)
    # A session in the middle of a transaction while the fleet takes the new domain.
    open_session = _smtp(cluster, 0)
    open_session.mail(SENDER)
    assert open_session.rcpt(f"postmaster@{_domain(0)}")[0] == 250

    began = time.monotonic()
    manifest = _maildomain(cluster, COUNT)
    _apply(cluster, [manifest])
    wait_for(
        f"mail to postmaster@{new} accepted on both hosts",
        lambda: all(_rcpt_code(cluster, f"postmaster@{new}", i) == 250 for i in (0, 1)),
        timeout=180,
        interval=0.5,
    )
    accepted = time.monotonic() - began
    code, _ = open_session.data(_message(f"postmaster@{_domain(0)}"))
    open_session.quit()
    print(f"\npostmaster@{new} accepted {accepted:.1f}s after `kubectl apply`")
    assert code == 250
    assert _fleet_pods(cluster) == pods  # same UIDs, same restart counts


def test_a_namespace_the_mailserver_does_not_allow_changes_nothing(
    cluster: Stack, fleet: dict[str, Any]
) -> None:
    before = _fleet_configmaps(cluster)
    manifest = _maildomain(cluster, COUNT + 1)
    manifest["metadata"]["namespace"] = OUTSIDER_NAMESPACE
    _apply(cluster, [manifest])

    def refused() -> dict[str, Any] | None:
        body = get_json(
            cluster, "maildomain", manifest["metadata"]["name"], "-n", OUTSIDER_NAMESPACE
        )
        ready = condition(body, "Ready")
        return ready if ready and ready["status"] == "False" else None

    ready = wait_for("Ready=False on the outsider", refused, timeout=60)
    assert ready["reason"] == "NamespaceNotAllowed"
    assert f"MailServer {SERVER_NAMESPACE}/fleet" in ready["message"]
    assert "=".join(ALLOW_LABEL) in ready["message"]
    # Let the fleet's daemon see the new MailDomain (it polls its index every second).
    wait_for(
        "the refusal counted by the MailServer",
        lambda: (
            get_json(cluster, "mailserver", "fleet", "-n", SERVER_NAMESPACE)["status"].get(
                "refusedDomains"
            )
            == 1
        ),
        timeout=30,
    )
    assert _fleet_configmaps(cluster) == before
    assert _rcpt_code(cluster, f"postmaster@{_domain(COUNT + 1)}") == 554
    zone = cluster.dns.authoritative.axfr(ZONE)
    assert zone.get_node(f"{_domain(COUNT + 1)}.") is None  # nothing published for it

    # The namespace gets the label the MailServer asks for: the fleet takes the domain without
    # any MailDomain changing (the operator watches namespaces' labels).
    began = time.monotonic()
    kubectl(cluster.kubeconfig, "label", "namespace", OUTSIDER_NAMESPACE, "=".join(ALLOW_LABEL))
    wait_for(
        f"postmaster@{_domain(COUNT + 1)} accepted after the label",
        lambda: _rcpt_code(cluster, f"postmaster@{_domain(COUNT + 1)}") == 250,
        timeout=120,
        interval=1,
    )
    print(f"\n{_domain(COUNT + 1)} accepted {time.monotonic() - began:.1f}s after the label")


def test_detaching_a_domain_removes_it_and_changes_nothing_else(
    cluster: Stack, fleet: dict[str, Any]
) -> None:
    gone, kept = _domain(COUNT - 1), _domain(COUNT - 2)
    tables_before = _fleet_configmaps(cluster)["fleet-domains"]
    zone_before = cluster.dns.authoritative.axfr(ZONE)
    kept_before = _records_at(zone_before, kept)
    kubectl(
        cluster.kubeconfig, "delete", "maildomain", f"f{COUNT - 1:03d}", "-n", _namespace(COUNT - 1)
    )
    wait_for(
        f"postmaster@{gone} refused",
        lambda: _rcpt_code(cluster, f"postmaster@{gone}") == 554,
        timeout=120,
        interval=0.5,
    )
    tables_after = _fleet_configmaps(cluster)["fleet-domains"]
    for table, text in tables_before.items():
        remaining = "".join(line + "\n" for line in text.splitlines() if gone not in line)
        assert tables_after[table] == remaining, table
    zone = cluster.dns.authoritative.axfr(ZONE)
    assert zone.get_node(f"{gone}.") is None
    assert zone.get_node(f"_mta-sts.{gone}.") is None
    assert _records_at(zone, kept) == kept_before
    assert _rcpt_code(cluster, f"postmaster@{kept}") == 250


def test_a_domains_accounts_submit_through_the_fleet_without_a_restart(
    cluster: Stack, fleet: dict[str, Any]
) -> None:
    pods = _fleet_pods(cluster)
    index = 3
    namespace, name = _namespace(index), f"f{index:03d}"
    login = f"alice@{_domain(index)}"
    kubectl(
        cluster.kubeconfig,
        "create", "secret", "generic", "accounts", "-n", namespace,
        "--from-literal=alice=fleet-pass-1",
    )  # fmt: skip
    kubectl(
        cluster.kubeconfig,
        "patch", "maildomain", name, "-n", namespace, "--type=merge",
        "-p", json.dumps({"spec": {"mta": {"accountsSecretName": "accounts"}}}),
    )  # fmt: skip

    def submitted() -> bool:
        try:
            with _smtp(cluster, 1, port=587) as session:
                session.login(login, "fleet-pass-1")
                recipient = f"postmaster@{_domain(0)}"
                session.sendmail(login, [recipient], _message(recipient))
        except smtplib.SMTPAuthenticationError:
            return False
        return True

    began = time.monotonic()
    wait_for(f"{login} submitting on port 587 of the fleet", submitted, timeout=180, interval=2)
    print(f"\n{login} could submit {time.monotonic() - began:.1f}s after the patch")
    # Another domain's name is not this account's to send as.
    with _smtp(cluster, 1, port=587) as session:
        session.login(login, "fleet-pass-1")
        session.mail(f"postmaster@{_domain(0)}")
        assert session.rcpt(f"postmaster@{_domain(0)}")[0] == 553
    assert _fleet_pods(cluster) == pods
