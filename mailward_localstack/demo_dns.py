"""The demo's DNS provider: the operator publishes the example's records into the demo BIND.

`create_cluster_dns_provider` creates the TSIG Secret (in the release's namespace) and the
`ClusterDNSProvider local-bind` that `examples/maildomain.yaml` names, so a copy of the example in
any namespace publishes too; `create_dns_provider` makes a namespaced `DNSProvider local-bind`
(the tests' namespaces). Both from the TSIG key the demo's BIND was started with. `check`
then shows, through the validating resolver, that every record the example wants resolves with
the AD bit (`python -m mailward_localstack.demo_dns check`, for scripts/demo.sh).
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import time
from pathlib import Path
from typing import Any

import dns.flags
import dns.rcode
import dns.rdatatype

from mailward.api.v1alpha1 import MXHost
from mailward.parts import Findings, ServedPolicy
from mailward.parts.certificate import issuer_digests
from mailward.parts.dns import desired_for
from mailward.reconcile import parse_spec
from mailward.render.certificates import serving_secret_name
from mailward_localstack.controlplane import kubectl, wait_established
from mailward_localstack.dns import DNSStack

PROVIDER_NAME = "local-bind"
TSIG_SECRET_NAME = "local-bind-tsig"


def provider_manifests(stack: DNSStack, namespace: str) -> list[dict[str, object]]:
    tsig = stack.tsig
    return [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": TSIG_SECRET_NAME, "namespace": namespace},
            "data": {"secret": base64.b64encode(tsig.secret.encode()).decode()},
        },
        {
            "apiVersion": "mailward.io/v1alpha1",
            "kind": "DNSProvider",
            "metadata": {"name": PROVIDER_NAME, "namespace": namespace},
            "spec": {
                "rfc2136": {
                    "nameserver": {
                        "host": stack.authoritative.address,
                        "port": stack.authoritative.port,
                    },
                    "tsigKeyName": tsig.name,
                    "tsigAlgorithm": tsig.algorithm,
                    "tsigSecretRef": {"name": TSIG_SECRET_NAME, "key": "secret"},
                }
            },
        },
    ]


def cluster_provider_manifests(stack: DNSStack, secret_namespace: str) -> list[dict[str, object]]:
    secret, provider = provider_manifests(stack, secret_namespace)
    spec: dict[str, Any] = json.loads(json.dumps(provider["spec"]))
    spec["rfc2136"]["tsigSecretRef"]["namespace"] = secret_namespace
    cluster_provider: dict[str, object] = {
        "apiVersion": "mailward.io/v1alpha1",
        "kind": "ClusterDNSProvider",
        "metadata": {"name": PROVIDER_NAME},
        "spec": spec,
    }
    return [secret, cluster_provider]


def create_cluster_dns_provider(
    kubeconfig: Path, dns_state_dir: Path, secret_namespace: str
) -> None:
    """After the CRDs are applied: the TSIG Secret in `secret_namespace` and the
    `ClusterDNSProvider local-bind` for the demo's BIND."""
    stack = DNSStack.attach(dns_state_dir)
    wait_established(kubeconfig, "clusterdnsproviders.mailward.io")
    for manifest in cluster_provider_manifests(stack, secret_namespace):
        kubectl(kubeconfig, "apply", "-f", "-", input=json.dumps(manifest))
    print(
        f"[stack] ClusterDNSProvider {PROVIDER_NAME}: RFC 2136 to "
        f"{stack.authoritative.address}, TSIG key {stack.tsig.name} in Secret "
        f"{secret_namespace}/{TSIG_SECRET_NAME}",
        flush=True,
    )


def create_dns_provider(kubeconfig: Path, dns_state_dir: Path, namespace: str = "default") -> None:
    """After the CRDs are applied: the TSIG Secret and DNSProvider for the demo's BIND.

    `dns_state_dir` is where the DNS stack lives (`state_dir / "dns"` in stack.py).
    """
    stack = DNSStack.attach(dns_state_dir)
    wait_established(kubeconfig, "dnsproviders.mailward.io")
    for manifest in provider_manifests(stack, namespace):
        kubectl(kubeconfig, "apply", "-f", "-", input=json.dumps(manifest))
    print(
        f"[stack] DNSProvider {namespace}/{PROVIDER_NAME}: RFC 2136 to "
        f"{stack.authoritative.address}, TSIG key {stack.tsig.name} in Secret {TSIG_SECRET_NAME}",
        flush=True,
    )


def check(kubeconfig: Path, dns_state_dir: Path, namespace: str, name: str, timeout: float) -> int:
    """Print every record the MailDomain wants as the resolver answers it, with its AD flag;
    1 if one is missing, different or not validated."""
    stack = DNSStack.attach(dns_state_dir)
    body = json.loads(kubectl(kubeconfig, "get", "maildomain", name, "-n", namespace, "-o", "json"))
    spec = parse_spec(body["spec"])
    if spec.attached:
        hosts = (body.get("status", {}).get("mailServer") or {}).get("hosts") or []
        spec = spec.model_copy(update={"mx": [MXHost(host=h) for h in hosts]})
    found = Findings()
    if spec.tls is not None and not spec.attached:
        # The keys the rollover publishes (current, next, previous), and with issuerRecord the
        # CAs of the chains mailward holds, read where the operator keeps them.
        keys = (body.get("status", {}).get("certificate") or {}).get("keys") or []
        digests = sorted(k["spkiSha256"] for k in keys)
        found.tlsa_digests = {mx.host: digests for mx in spec.mx}
        if spec.dane.issuer_record:
            secret = json.loads(
                kubectl(
                    kubeconfig,
                    "get",
                    "secret",
                    serving_secret_name(name),
                    "-n",
                    namespace,
                    "-o",
                    "json",
                )
            )
            data = secret.get("data") or {}
            chains = [base64.b64decode(data[i]) for i in ("tls.crt", "next.crt", "previous.crt")
                      if data.get(i)]  # fmt: skip
            found.tlsa_issuer_digests = {mx.host: issuer_digests(chains) for mx in spec.mx}
    served = _served_policy_id(stack, spec.domain)
    if served:
        # whatever the policy endpoint serves, as the operator
        found.served_policy = ServedPolicy(served)
    failures = 0
    for rrset in desired_for(spec, found):
        deadline = time.monotonic() + timeout
        while True:
            response = stack.resolver.query(rrset.name, rrset.type)
            rdtype = dns.rdatatype.from_text(rrset.type)
            answer = [a for a in response.answer if a.rdtype == rdtype]
            data = tuple(sorted(r.to_text() for r in answer[0])) if answer else ()
            secure = bool(response.flags & dns.flags.AD)
            ok = response.rcode() == dns.rcode.NOERROR and secure and data == rrset.rdata
            if ok or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        flag = "ad" if secure else "--"
        shown = " | ".join(data) if data else dns.rcode.to_text(response.rcode())
        print(f"  {'ok ' if ok else 'BAD'} [{flag}] {rrset.name} {rrset.type} {shown}"[:200])
        failures += not ok
    return 1 if failures else 0


def _served_policy_id(stack: DNSStack, domain: str) -> str | None:
    response = stack.resolver.query(f"_mta-sts.{domain}", "TXT")
    for rrset in response.answer:
        for rdata in rrset:
            text = b"".join(getattr(rdata, "strings", ())).decode("ascii", "replace")
            if text.startswith("v=STSv1;") and "id=" in text:
                return text.split("id=", 1)[1].strip().rstrip(";")
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mailward_localstack.demo_dns")
    parser.add_argument("action", choices=["check"])
    parser.add_argument("--state-dir", type=Path, default=Path(".local/stack"))
    parser.add_argument("--kubeconfig", type=Path, default=None)
    parser.add_argument("-n", "--namespace", default="default")
    parser.add_argument("--name", default="example")
    parser.add_argument("--timeout", type=float, default=30.0)
    args = parser.parse_args(argv)
    kubeconfig = args.kubeconfig or args.state_dir / "controlplane" / "kubeconfig"
    dns_state_dir = args.state_dir.resolve() / "dns"
    return check(kubeconfig, dns_state_dir, args.namespace, args.name, args.timeout)


if __name__ == "__main__":
    sys.exit(main())
