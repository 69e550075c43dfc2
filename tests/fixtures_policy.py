"""pytest plugin: the MTA-STS policy endpoint (`mailward serve-policies`) against the test cluster.

The endpoint runs as the real command in its own process, with the arguments the rendered
Deployment gives it (only the addresses differ), on `addr(44)` port 443 (HTTPS, SNI), port 80
(plain HTTP, as behind an Ingress) and an admin port. Its TLS Secrets live in the namespace
`POLICY_NAMESPACE`; `PolicyEndpoint.add_certificate(domain)` issues one from the local CA.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import ssl
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from mailward.render.policy_objects import EndpointSettings, policy_server_args
from mailward_localstack._process import free_port
from mailward_localstack.pki import LocalCA
from tests.fixtures_operator import Kube
from tests.net import addr
from tests.processes import mailward_process

POLICY_ADDRESS = addr(44)
POLICY_NAMESPACE = "mailward-system"


@dataclass
class PolicyEndpoint:
    address: str
    https_port: int
    http_port: int
    admin_url: str
    ca: LocalCA
    kube: Kube
    log_file: Path
    process: subprocess.Popen[bytes]

    def log(self) -> str:
        return self.log_file.read_text(errors="replace")

    def add_certificate(self, domain: str, names: list[str] | None = None) -> None:
        """A TLS Secret for mta-sts.<domain> and autoconfig.<domain> (no wildcard)."""
        names = names or [f"mta-sts.{domain}", f"autoconfig.{domain}"]
        cert = self.ca.issue_server_cert(names, out_dir=self.ca.dir / "policy")
        secret = self.kube.kubectl(
            "create",
            "secret",
            "tls",
            f"mta-sts-{domain.replace('.', '-')}",
            "-n",
            POLICY_NAMESPACE,
            f"--cert={cert.chain_file}",
            f"--key={cert.key_file}",
            "--dry-run=client",
            "-o",
            "json",
        ).stdout
        self.kube.apply(json.loads(secret))

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca.ca_file))

    def fetch(
        self,
        host: str,
        path: str = "/.well-known/mta-sts.txt",
        *,
        method: str = "GET",
        timeout: float = 5.0,
    ) -> tuple[int, dict[str, str], bytes]:
        """An independent HTTPS fetch (ssl + http.client), SNI and Host = `host`."""
        connection = http.client.HTTPSConnection(
            self.address, self.https_port, timeout=timeout, context=self.client_context()
        )
        # http.client sends SNI for the connection host; connect by address, verify by name.
        connection.sock = self.client_context().wrap_socket(
            socket.create_connection((self.address, self.https_port), timeout=timeout),
            server_hostname=host,
        )
        try:
            connection.putrequest(method, path, skip_host=True)
            connection.putheader("Host", host)
            connection.endheaders()
            response = connection.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            connection.close()


@contextmanager
def running_policy_endpoint(
    kube: Kube, ca: LocalCA, address: str, log_file: Path
) -> Iterator[PolicyEndpoint]:
    """`mailward serve-policies` on `address` (443, 80, and an admin port), as its Deployment
    runs it, watching the API server behind `kube`; stopped when the block ends."""
    if kube.kubectl("get", "namespace", POLICY_NAMESPACE, check=False).returncode != 0:
        kube.kubectl("create", "namespace", POLICY_NAMESPACE)
    admin_port = free_port(address)
    settings = EndpointSettings(namespace=POLICY_NAMESPACE)
    argv = policy_server_args(
        settings,
        https=f"{address}:443",
        http=f"{address}:80",
        admin=f"{address}:{admin_port}",
    )
    env = {**os.environ, "KUBECONFIG": str(kube.kubeconfig)}
    admin_url = f"http://{address}:{admin_port}"
    with mailward_process(
        argv,
        env=env,
        log_file=log_file,
        ready_url=f"{admin_url}/readyz",
        what="the policy endpoint",
        timeout=30,
    ) as process:
        yield PolicyEndpoint(
            address=address,
            https_port=443,
            http_port=80,
            admin_url=admin_url,
            ca=ca,
            kube=kube,
            log_file=log_file,
            process=process,
        )


@pytest.fixture(scope="session")
def policy_endpoint(
    kube: Kube, local_ca: LocalCA, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PolicyEndpoint]:
    if os.geteuid() != 0:
        pytest.skip("the policy endpoint listens on port 443 (root)")
    log_file = tmp_path_factory.mktemp("policy-endpoint") / "serve-policies.log"
    with running_policy_endpoint(kube, local_ca, POLICY_ADDRESS, log_file) as endpoint:
        yield endpoint
