"""The MTA-STS policy endpoint (`mailward serve-policies`) against the real API server, with
certificates from the local CA, fetched by the real MTA-STS client and by an independent one."""

from __future__ import annotations

import ast
import contextlib
import json
import os
import re
import socket
import ssl
import subprocess
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import dns.rdatatype
import pytest

from mailward.api.v1alpha1 import MUASRVSpec
from mailward.reconcile import parse_spec
from mailward.render.mta_sts import policy_for, policy_id, sts_txt_record
from mailward_localstack.dns import DNSStack
from tests.fixtures_operator import Kube
from tests.fixtures_policy import PolicyEndpoint

pytestmark = pytest.mark.controlplane

MTA_STS_QUERY = Path(os.environ.get("VIRTUAL_ENV", ".venv")) / "bin" / "mta-sts-query"


def _maildomain(namespace: str, name: str, domain: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "mailward.io/v1alpha1",
        "kind": "MailDomain",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "domain": domain,
            "mx": [{"host": f"mx1.{domain}", "priority": 10}, {"host": f"mx2.{domain}"}],
            "tls": {"secretName": "mx-tls"},
            "mtaSts": {"mode": "enforce", "maxAge": 604800},
            **spec,
        },
    }


def _fresh_domain(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:8]}.example.test"


def _served(endpoint: PolicyEndpoint, domain: str, expected: bytes, timeout: float = 10) -> float:
    """Seconds until the endpoint serves `expected` for `domain`."""
    started = time.monotonic()
    last: Any = None
    while time.monotonic() - started < timeout:
        try:
            last = endpoint.fetch(f"mta-sts.{domain}")
        except OSError as error:
            last = error
        if isinstance(last, tuple) and last[0] == 200 and last[2] == expected:
            return time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError(f"{domain}: not served within {timeout}s; last answer {last!r}")


def _policy(body: dict[str, Any]) -> bytes:
    return policy_for(parse_spec(body["spec"])).encode("ascii")


@pytest.fixture
def two_domains(
    kube: Kube, namespace: str, policy_endpoint: PolicyEndpoint
) -> list[dict[str, Any]]:
    bodies = [
        _maildomain(namespace, "alpha", _fresh_domain("alpha")),
        _maildomain(
            namespace,
            "beta",
            _fresh_domain("beta"),
            mtaSts={"mode": "testing", "maxAge": 86400},
        ),
    ]
    for body in bodies:
        policy_endpoint.add_certificate(body["spec"]["domain"])
        kube.apply(body)
    for body in bodies:
        _served(policy_endpoint, body["spec"]["domain"], _policy(body))
    return bodies


def test_independent_fetch_gets_each_policy_byte_for_byte(
    policy_endpoint: PolicyEndpoint, two_domains: list[dict[str, Any]]
) -> None:
    for body in two_domains:
        domain = body["spec"]["domain"]
        status, headers, payload = policy_endpoint.fetch(f"mta-sts.{domain}")
        assert status == 200
        assert payload == _policy(body)
        assert headers["Content-Type"].startswith("text/plain")
        assert headers["Cache-Control"] == "no-store"
        assert "Location" not in headers
        # HEAD: the same headers, no body.
        status, head_headers, head_payload = policy_endpoint.fetch(
            f"mta-sts.{domain}", method="HEAD"
        )
        assert (status, head_payload) == (200, b"")
        assert head_headers["Content-Length"] == str(len(payload))
    assert two_domains[0]["spec"]["domain"] != two_domains[1]["spec"]["domain"]
    assert _policy(two_domains[0]) != _policy(two_domains[1])


def _publish(dns_stack: DNSStack, endpoint: PolicyEndpoint, domain: str, policy: bytes) -> None:
    """What the DNS part publishes: the `_mta-sts` TXT and the endpoint's address."""
    update = dns_stack.authoritative.new_update("example.test")
    update.replace(f"_mta-sts.{domain}.", 60, "TXT", f'"{sts_txt_record(policy.decode())}"')
    update.replace(f"mta-sts.{domain}.", 60, "A", endpoint.address)
    dns_stack.authoritative.send_update(update)


def _mta_sts_query(dns_stack: DNSStack, domain: str, tmp_path: Path) -> str:
    """`mta-sts-query <domain>` with the test resolver as its system resolver (a private mount
    namespace, /etc/resolv.conf bind-mounted) and the local CA as its trust store."""
    resolv = tmp_path / "resolv.conf"
    resolv.write_text(f"nameserver {dns_stack.resolver.address}\noptions timeout:2 attempts:2\n")
    ca_file = os.environ["MAILWARD_TEST_CA_FILE"]
    result = subprocess.run(
        [
            "unshare",
            "-m",
            "sh",
            "-c",
            'mount --bind "$0" /etc/resolv.conf && exec "$@"',
            str(resolv),
            str(MTA_STS_QUERY),
            domain,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "SSL_CERT_FILE": ca_file},
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_real_mta_sts_client_gets_each_policy(
    policy_endpoint: PolicyEndpoint,
    two_domains: list[dict[str, Any]],
    dns_stack: DNSStack,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MAILWARD_TEST_CA_FILE", str(policy_endpoint.ca.ca_file))
    for body in two_domains:
        domain, policy = body["spec"]["domain"], _policy(body)
        _publish(dns_stack, policy_endpoint, domain, policy)
        answer = dns_stack.resolver.query(f"mta-sts.{domain}", "A")
        assert any(rr.rdtype == dns.rdatatype.A for rr in answer.answer), answer
        output = _mta_sts_query(dns_stack, domain, tmp_path)
        # `(<STSFetchResult.VALID: 0>, ('<id>', {...policy fields...}))`
        match = re.fullmatch(r"\(<STSFetchResult\.(\w+): \d+>, (.*)\)", output, re.S)
        assert match is not None, output
        assert match.group(1) == "VALID", output
        fetched_id, fields = ast.literal_eval(match.group(2))
        lines = [line.split(": ", 1) for line in policy.decode().split("\r\n") if line]
        expected: dict[str, Any] = {"mx": []}
        for key, value in lines:
            if key == "mx":
                expected["mx"].append(value)
            else:
                expected[key] = int(value) if key == "max_age" else value
        assert fetched_id == policy_id(policy.decode())
        assert fields == expected


def test_unknown_host_and_path_get_404(
    policy_endpoint: PolicyEndpoint, two_domains: list[dict[str, Any]]
) -> None:
    domain = two_domains[0]["spec"]["domain"]
    assert policy_endpoint.fetch(f"mta-sts.{domain}", "/.well-known/other.txt")[0] == 404
    assert policy_endpoint.fetch(f"mta-sts.{domain}", "/")[0] == 404
    # A certificate exists for a domain without a MailDomain (deleted, or never created).
    orphan = _fresh_domain("orphan")
    policy_endpoint.add_certificate(orphan)
    deadline = time.monotonic() + 10
    while True:
        try:
            status = policy_endpoint.fetch(f"mta-sts.{orphan}")[0]
            break
        except ssl.SSLError:
            assert time.monotonic() < deadline, "the orphan's certificate was never loaded"
            time.sleep(0.1)
    assert status == 404
    # Plain HTTP listener (behind an Ingress): the Host header alone decides.
    request = urllib.request.Request(
        f"http://{policy_endpoint.address}:{policy_endpoint.http_port}/.well-known/mta-sts.txt",
        headers={"Host": "mta-sts.unknown.example.test"},
    )
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(request, timeout=5)
    assert error.value.code == 404
    # No certificate for the name: refused in the TLS handshake.
    with pytest.raises(ssl.SSLError):
        policy_endpoint.fetch("mta-sts.unknown.example.test")


def test_changed_spec_is_served_within_5_seconds(
    kube: Kube, policy_endpoint: PolicyEndpoint, two_domains: list[dict[str, Any]]
) -> None:
    body = two_domains[0]
    meta = body["metadata"]
    body["spec"]["mtaSts"] = {"mode": "testing", "maxAge": 3600}
    started = time.monotonic()
    kube.kubectl(
        "patch",
        "maildomain",
        meta["name"],
        "-n",
        meta["namespace"],
        "--type=merge",
        "-p",
        json.dumps({"spec": {"mtaSts": body["spec"]["mtaSts"]}}),
    )
    patched = time.monotonic() - started
    seconds = _served(policy_endpoint, body["spec"]["domain"], _policy(body), timeout=5 - patched)
    print(
        f"changed policy served {patched + seconds:.2f}s after `kubectl patch` started "
        f"({patched:.2f}s of it kubectl itself)"
    )
    assert b"mode: testing\r\n" in _policy(body)


def test_autoconfig_steers_clients_to_implicit_tls(
    kube: Kube, namespace: str, policy_endpoint: PolicyEndpoint
) -> None:
    domain = _fresh_domain("clients")
    srv = {
        "submissions": {"target": f"smtp.{domain}", "port": 465},
        "submission": {"target": f"smtp.{domain}", "port": 587},
        "imaps": {"target": f"imap.{domain}", "port": 993},
        # The wire name as the model spells it (the camelCase generator makes it `pop3S`).
        MUASRVSpec.model_fields["pop3s"].alias or "pop3s": {"target": f"pop.{domain}", "port": 995},
    }
    body = _maildomain(
        namespace,
        "clients",
        domain,
        dns={"providerRef": {"name": "local-bind"}, "srv": srv},
    )
    policy_endpoint.add_certificate(domain)
    kube.apply(body)
    _served(policy_endpoint, domain, _policy(body))
    hostile = "%3Cscript%3Ealert(1)%3C/script%3E%40example.test"
    status, headers, payload = policy_endpoint.fetch(
        f"autoconfig.{domain}", f"/mail/config-v1.1.xml?emailaddress={hostile}"
    )
    assert status == 200, payload
    assert headers["Content-Type"].startswith("application/xml")
    assert b"script" not in payload
    assert b"alert" not in payload
    root = ElementTree.fromstring(payload)
    assert root.tag == "clientConfig"
    provider = root.find("emailProvider")
    assert provider is not None
    assert provider.findtext("domain") == domain
    servers = {
        (element.tag, element.get("type")): (
            element.findtext("hostname"),
            element.findtext("port"),
            element.findtext("socketType"),
        )
        for element in provider
        if element.tag in ("incomingServer", "outgoingServer")
    }
    assert servers == {
        ("incomingServer", "imap"): (f"imap.{domain}", "993", "SSL"),
        ("incomingServer", "pop3"): (f"pop.{domain}", "995", "SSL"),
        ("outgoingServer", "smtp"): (f"smtp.{domain}", "465", "SSL"),
    }
    # The first incoming server a client tries is IMAPS.
    first = provider.find("incomingServer")
    assert first is not None
    assert first.get("type") == "imap"
    # Also under the domain itself (RFC-less Thunderbird lookup), through the plain listener.
    request = urllib.request.Request(
        f"http://{policy_endpoint.address}:{policy_endpoint.http_port}"
        "/.well-known/autoconfig/mail/config-v1.1.xml",
        headers={"Host": domain},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.read() == payload


# -- hostile clients ----------------------------------------------------------------------


def _tls_socket(endpoint: PolicyEndpoint, host: str, timeout: float) -> ssl.SSLSocket:
    raw = socket.create_connection((endpoint.address, endpoint.https_port), timeout=timeout)
    return endpoint.client_context().wrap_socket(raw, server_hostname=host)


def _exchange(
    endpoint: PolicyEndpoint, host: str, data: bytes, *, timeout: float = 15
) -> tuple[bytes, float]:
    """Send `data`, read until the server closes; the bytes received and the seconds taken."""
    started = time.monotonic()
    with _tls_socket(endpoint, host, timeout) as sock:
        with contextlib.suppress(OSError):
            sock.sendall(data)
        received = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, ssl.SSLError):
                break
            if not chunk:
                break
            received += chunk
    return received, time.monotonic() - started


def _status(response: bytes) -> int:
    match = re.match(rb"HTTP/1\.[01] (\d{3}) ", response)
    return int(match.group(1)) if match else 0


def _slow_sender(endpoint: PolicyEndpoint, host: str, head: bytes, trickle: bytes) -> float:
    """Slowloris: a request that never finishes, one byte every half second; returns how long
    the server kept the connection open."""
    started = time.monotonic()
    with _tls_socket(endpoint, host, 30) as sock:
        try:
            sock.sendall(head)
            for byte in trickle * 100:
                sock.sendall(bytes([byte]))
                time.sleep(0.5)
                if time.monotonic() - started > 30:
                    break
        except OSError:
            pass
    return time.monotonic() - started


def test_hostile_requests_are_refused_and_the_server_keeps_serving(
    policy_endpoint: PolicyEndpoint, two_domains: list[dict[str, Any]]
) -> None:
    domain = two_domains[0]["spec"]["domain"]
    host = f"mta-sts.{domain}"
    policy = _policy(two_domains[0])

    def request(line: str, *headers: str) -> bytes:
        return ("\r\n".join([line, *headers, "", ""])).encode("latin-1")

    cases: dict[str, tuple[bytes, set[int]]] = {
        "huge header": (
            request(
                "GET /.well-known/mta-sts.txt HTTP/1.1", f"Host: {host}", "X-A: " + "a" * 70000
            ),
            {400, 431},
        ),
        "many headers": (
            request(
                "GET /.well-known/mta-sts.txt HTTP/1.1",
                f"Host: {host}",
                *[f"X-{i}: x" for i in range(500)],
            ),
            {400, 431},
        ),
        "huge request line": (
            request("GET /" + "a" * 70000 + " HTTP/1.1", f"Host: {host}"),
            {400, 414},
        ),
        "path traversal": (
            request("GET /.well-known/../../../etc/passwd HTTP/1.1", f"Host: {host}"),
            {400, 404},
        ),
        "encoded traversal": (
            request("GET /.well-known/%2e%2e/%2e%2e/etc/passwd HTTP/1.1", f"Host: {host}"),
            {400, 404},
        ),
        "unknown method": (
            request("BREW /.well-known/mta-sts.txt HTTP/1.1", f"Host: {host}"),
            {405, 501, 400},
        ),
        "PUT": (
            request("PUT /.well-known/mta-sts.txt HTTP/1.1", f"Host: {host}", "Content-Length: 3")
            + b"abc",
            {405},
        ),
        "TRACE": (request("TRACE / HTTP/1.1", f"Host: {host}"), {405}),
        "GET with a body": (
            request("GET /.well-known/mta-sts.txt HTTP/1.1", f"Host: {host}", "Content-Length: 3")
            + b"abc",
            {400},
        ),
        "no Host": (request("GET /.well-known/mta-sts.txt HTTP/1.1"), {400}),
        "invalid Host": (
            request("GET /.well-known/mta-sts.txt HTTP/1.1", "Host: ../../etc"),
            {400},
        ),
        "Host with spaces": (request("GET /.well-known/mta-sts.txt HTTP/1.1", "Host: a b"), {400}),
        "other domain on this certificate": (
            request("GET /.well-known/mta-sts.txt HTTP/1.1", "Host: mta-sts.example.test"),
            {421},
        ),
        "not HTTP": (b"\x16\x03\x01garbage\r\n\r\n", {400}),
    }
    for name, (data, accepted) in cases.items():
        response, seconds = _exchange(policy_endpoint, host, data)
        status = _status(response)
        assert status in accepted, f"{name}: {response[:200]!r}"
        assert seconds < 12, f"{name}: connection held {seconds:.1f}s"
        assert b"passwd" not in response
        assert b"root:" not in response
        assert policy_endpoint.fetch(host)[2] == policy, f"not serving after {name}"

    # Slowloris, slow head and slow body, 40 connections at once: a head not complete within
    # the keep-alive time (5 s) or the connection deadline (10 s) is cut off, a body is never
    # waited for, and a fetch in the middle of it is answered.
    slow_head = b"GET /.well-known/mta-sts.txt HTTP/1.1\r\nHost: " + host.encode() + b"\r\n"
    slow_body = (
        b"POST /.well-known/mta-sts.txt HTTP/1.1\r\nHost: "
        + host.encode()
        + b"\r\nContent-Length: 100000\r\n\r\n"
    )
    with ThreadPoolExecutor(max_workers=40) as pool:
        futures = [
            pool.submit(_slow_sender, policy_endpoint, host, slow_head, b"X-Slow: 1\r\n")
            for _ in range(20)
        ] + [pool.submit(_slow_sender, policy_endpoint, host, slow_body, b"a") for _ in range(20)]
        time.sleep(2)
        assert policy_endpoint.fetch(host)[2] == policy
        held = [f.result(timeout=60) for f in futures]
    assert max(held[:20]) < 15, f"slow heads held for {max(held[:20]):.1f}s"
    # A body is never read: the 405 comes at once and the connection closes.
    assert max(held[20:]) < 15, f"slow bodies held for {max(held[20:]):.1f}s"
    assert policy_endpoint.fetch(host)[2] == policy

    print(
        f"slow heads closed after {min(held[:20]):.1f}..{max(held[:20]):.1f}s, "
        f"slow bodies after {min(held[20:]):.1f}..{max(held[20:]):.1f}s"
    )


def test_health_and_metrics_on_their_own_port(policy_endpoint: PolicyEndpoint) -> None:
    with urllib.request.urlopen(f"{policy_endpoint.admin_url}/healthz", timeout=5) as response:
        assert response.status == 200
    with urllib.request.urlopen(f"{policy_endpoint.admin_url}/readyz", timeout=5) as response:
        assert response.status == 200
    with urllib.request.urlopen(f"{policy_endpoint.admin_url}/metrics", timeout=5) as response:
        text = response.read().decode()
    assert "mailward_policy_requests_total" in text
    assert "mailward_policy_domains" in text
    # The admin paths are not on the public listeners.
    request = urllib.request.Request(
        f"http://{policy_endpoint.address}:{policy_endpoint.http_port}/metrics",
        headers={"Host": "mta-sts.example.test"},
    )
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(request, timeout=5)
    assert error.value.code == 404


def test_mx_patterns_are_checked_at_admission(kube: Kube, namespace: str) -> None:
    domain = _fresh_domain("patterns")
    body = _maildomain(namespace, "patterns", domain)
    body["spec"]["mtaSts"]["mxPatterns"] = [f"mx1.{domain}"]
    refused = kube.kubectl("apply", "-f", "-", input=json.dumps(body), check=False)
    assert refused.returncode != 0
    assert "spec.mtaSts.mxPatterns" in refused.stderr
    body["spec"]["mtaSts"]["mxPatterns"] = [f"*.{domain}"]
    kube.apply(body)
    stored = kube.get_maildomain(namespace, "patterns")
    assert f"mx: *.{domain}\r\n" in policy_for(parse_spec(stored["spec"]))
