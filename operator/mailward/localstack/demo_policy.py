"""The demo's MTA-STS policy endpoint: `mailward serve-policies` as a local process.

The local control plane has no kubelet, so the Deployment the operator renders never gets a pod.
`start_policy_endpoint` applies the endpoint's shared objects exactly as the operator's mtasts
part does (server-side apply, field manager `mailward`), reads the Deployment back from the API
server, and runs its container's command line as a local process, only with the listen
addresses moved from the pod's `0.0.0.0:<port>` to the demo's address (HTTPS on port 443, so
that `https://mta-sts.example.test/.well-known/mta-sts.txt` works as a sender fetches it). The
certificate for `mta-sts.<domain>` and `autoconfig.<domain>` (no wildcard) comes from the local
CA, in the TLS Secret the domain's Ingress names, which the process reads through its watch.

`python -m mailward.localstack.demo_policy check` fetches the example's policy and autoconfig
document from the running endpoint, with the local CA as the only trust anchor.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import ssl
import sys
from dataclasses import dataclass
from pathlib import Path

from mailward.localstack._process import ManagedProcess, http_ok, wait_until
from mailward.localstack.controlplane import kubectl
from mailward.localstack.pki import LocalCA
from mailward.render.policy_objects import (
    NAME,
    EndpointSettings,
    policy_hosts,
    render_shared_objects,
    tls_secret_name,
)

DEMO_ADDRESS = "127.77.0.44"
HTTPS_PORT = 443
HTTP_PORT = 80
ADMIN_PORT = 9094
NAMESPACE = "mailward-system"


@dataclass(frozen=True)
class DemoPolicyEndpoint:
    process: ManagedProcess
    url: str
    admin_url: str
    operator_env: dict[str, str]
    """What the operator needs in its environment to manage and verify this endpoint."""


def local_command(args: list[str], address: str, admin_port: int = ADMIN_PORT) -> list[str]:
    """The container's arguments with the listeners moved to `address` (nothing else changed)."""
    moved = {
        "--https": f"{address}:{HTTPS_PORT}",
        "--http": f"{address}:{HTTP_PORT}",
        "--admin": f"{address}:{admin_port}",
    }
    out: list[str] = []
    replace_next: str | None = None
    for arg in args:
        if replace_next is not None:
            out.append(moved[replace_next])
            replace_next = None
        else:
            out.append(arg)
            replace_next = arg if arg in moved else None
    return out


def start_policy_endpoint(
    state_dir: Path,
    kubeconfig: Path,
    ca: LocalCA,
    *,
    domain: str = "example.test",
    address: str = DEMO_ADDRESS,
    settings: EndpointSettings | None = None,
) -> DemoPolicyEndpoint:
    """Start the endpoint for the demo (call after the CRDs are applied, before the operator).

    Returns the running process and the environment the operator needs
    (`MAILWARD_POLICY_ENDPOINT_URL`, `_CA_FILE`, `_NAMESPACE`).
    """
    settings = settings or EndpointSettings(namespace=NAMESPACE)
    namespace = settings.namespace
    if kubectl(kubeconfig, "get", "namespace", namespace, check=False) == "":
        kubectl(kubeconfig, "create", "namespace", namespace)
    objects = {"apiVersion": "v1", "kind": "List", "items": render_shared_objects(settings)}
    kubectl(
        kubeconfig,
        "apply",
        "--server-side",
        "--field-manager=mailward",
        "--force-conflicts",
        "-f",
        "-",
        input=json.dumps(objects),
    )
    cert = ca.issue_server_cert(policy_hosts(domain), out_dir=state_dir / "certs")
    secret = kubectl(
        kubeconfig,
        "create",
        "secret",
        "tls",
        tls_secret_name(domain),
        "-n",
        namespace,
        f"--cert={cert.chain_file}",
        f"--key={cert.key_file}",
        "--dry-run=client",
        "-o",
        "json",
    )
    kubectl(kubeconfig, "apply", "-f", "-", input=secret)

    deployment = json.loads(
        kubectl(kubeconfig, "get", "deployment", NAME, "-n", namespace, "-o", "json")
    )
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    args = local_command(list(container["args"]), address)
    process = ManagedProcess(
        "serve-policies",
        [sys.executable, "-m", "mailward", *args],
        state_dir,
        extra_env={"KUBECONFIG": str(kubeconfig), "POD_NAMESPACE": namespace},
    )
    process.start()
    admin_url = f"http://{address}:{ADMIN_PORT}"
    wait_until(
        lambda: http_ok(f"{admin_url}/readyz"),
        timeout=30,
        what="the MTA-STS policy endpoint",
        process=process,
    )
    url = f"https://{address}:{HTTPS_PORT}"
    return DemoPolicyEndpoint(
        process=process,
        url=url,
        admin_url=admin_url,
        operator_env={
            "MAILWARD_POLICY_ENDPOINT_URL": url,
            "MAILWARD_POLICY_CA_FILE": str(ca.ca_file),
            "MAILWARD_POLICY_NAMESPACE": namespace,
        },
    )


def fetch(address: str, host: str, path: str, ca_file: str) -> tuple[int, str, bytes]:
    """GET over TLS as a sender does: SNI and Host `host`, verified against `ca_file`."""
    context = ssl.create_default_context(cafile=ca_file)
    raw = socket.create_connection((address, HTTPS_PORT), timeout=5)
    connection = http.client.HTTPSConnection(address, HTTPS_PORT, timeout=5)
    connection.sock = context.wrap_socket(raw, server_hostname=host)
    try:
        connection.putrequest("GET", path, skip_host=True)
        connection.putheader("Host", host)
        connection.endheaders()
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type") or "", response.read()
    finally:
        connection.close()


def check(domain: str, address: str, ca_file: str) -> int:
    status, content_type, body = fetch(
        address, f"mta-sts.{domain}", "/.well-known/mta-sts.txt", ca_file
    )
    print(f"GET https://mta-sts.{domain}/.well-known/mta-sts.txt -> {status} {content_type}")
    print(body.decode("ascii", errors="replace").replace("\r\n", "\n"), end="")
    status, content_type, body = fetch(
        address, f"autoconfig.{domain}", "/mail/config-v1.1.xml", ca_file
    )
    print(f"GET https://autoconfig.{domain}/mail/config-v1.1.xml -> {status} {content_type}")
    if status == 200:
        print(body.decode("utf-8", errors="replace"), end="")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mailward.localstack.demo_policy")
    parser.add_argument("action", choices=["check"])
    parser.add_argument("--domain", default=os.environ.get("DEMO_DOMAIN", "example.test"))
    parser.add_argument("--address", default=DEMO_ADDRESS)
    parser.add_argument("--ca-file", default=os.environ.get("MAILWARD_CA_FILE", ""))
    args = parser.parse_args(argv)
    return check(args.domain, args.address, args.ca_file)


if __name__ == "__main__":
    sys.exit(main())
