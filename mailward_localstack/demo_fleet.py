"""`python -m mailward_localstack.demo_fleet prepare --state-dir S`: what examples/mailserver.yaml
references and a platform team would have created beforehand: the namespaces (the tenants'
labelled so the MailServer allows them), a DNSProvider in each, the fleet's certificate for its
MX name, and the policy endpoint's certificate for each attached domain's `mta-sts` name."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from mailward.render.policy_objects import policy_hosts, tls_secret_name
from mailward_localstack.controlplane import kubectl
from mailward_localstack.demo_dns import create_dns_provider
from mailward_localstack.pki import LocalCA
from mailward_localstack.stack import RELEASE_NAMESPACE, apply_tls_secret

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "mailserver.yaml"


def prepare(state_dir: Path, example: Path = EXAMPLE) -> None:
    documents = [d for d in yaml.safe_load_all(example.read_text()) if d]
    kubeconfig = state_dir / "controlplane" / "kubeconfig"
    ca = LocalCA.load(state_dir / "ca")
    certs = state_dir / "certs" / "fleet"
    for namespace in (d for d in documents if d["kind"] == "Namespace"):
        kubectl(kubeconfig, "apply", "-f", "-", input=yaml.safe_dump(namespace))
    namespaces = {d["metadata"]["namespace"] for d in documents if "namespace" in d["metadata"]}
    for namespace in sorted(namespaces):
        create_dns_provider(kubeconfig, state_dir / "dns", namespace)
    # Issued once: a new key on every `make demo` would be a key rollover (the fleet's TLSA
    # record follows its Secret only at its next pass).
    for server in (d for d in documents if d["kind"] == "MailServer"):
        hosts = [h["host"] for h in server["spec"]["hosts"]]
        namespace = server["metadata"]["namespace"]
        secret = server["spec"]["tls"]["secretName"]
        if not _exists(kubeconfig, namespace, secret):
            cert = ca.issue_server_cert(hosts, out_dir=certs / server["metadata"]["name"])
            apply_tls_secret(kubeconfig, namespace, secret, cert)
    for domain in (d["spec"]["domain"] for d in documents if d["kind"] == "MailDomain"):
        if not _exists(kubeconfig, RELEASE_NAMESPACE, tls_secret_name(domain)):
            cert = ca.issue_server_cert(policy_hosts(domain), out_dir=certs / domain)
            apply_tls_secret(kubeconfig, RELEASE_NAMESPACE, tls_secret_name(domain), cert)


def _exists(kubeconfig: Path, namespace: str, secret: str) -> bool:
    found = kubectl(kubeconfig, "get", "secret", secret, "-n", namespace, "--ignore-not-found")
    return bool(found.strip())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mailward_localstack.demo_fleet")
    parser.add_argument("action", choices=["prepare"])
    parser.add_argument("--state-dir", type=Path, required=True)
    args = parser.parse_args(argv)
    prepare(args.state_dir.resolve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
