"""Real cert-manager on the local node: its controller as a pod, its CRDs, and CA issuers backed
by the stack's local CA (`LocalCA`).

Not the product: what the tests (tests/fixtures_certmanager.py) and the demo issue certificates
with, the way a cluster with cert-manager does (issue #14, TLSA rollover: the operator holds the
key and sends `CertificateRequest`s with its own CSR). cert-manager's controllers come from the
Go module proxy at the version pinned in tools/cert-manager/go.mod, packed into
`mailward.local/cert-manager` by images/cert-manager/build.sh and imported into the node's
containerd; the CRDs come from the same module (`deploy/crds`, plain YAML, not Helm templates).

- The controller runs on the host network and binds only a loopback address of the stack's /24
  (`--metrics-listen-address`, `--healthz-listen-address`); it reaches the API server as every
  pod does, in-cluster (the `kubernetes` Service's address and the ServiceAccount token).
- It runs the Issuer and ClusterIssuer controllers, the built-in approver (it approves every
  request for a cert-manager.io issuer, as in a default install), the CertificateRequest
  signers of the CA and SelfSigned issuers, and the Certificate controllers. ACME, Vault and
  Venafi are not linked in, nor is there leader election (one replica). Upstream's own main
  cannot be built here; see tools/cert-manager/go.mod.
- No webhook and no cainjector: neither is needed to sign with a CA issuer. What the webhook
  would do is then not done: a CertificateRequest is not validated at admission (a CSR that
  does not verify is accepted, and the CA signer fails it: `Ready=False`, reason `Failed`,
  where a full install refuses the create), `spec` is not made immutable, and
  `spec.username`/`groups`/`uid` stay empty. The `InvalidRequest` condition is never set by the
  built-in issuers; only external issuers set it.
- The ClusterIssuer `mailward-local-ca` (`spec.ca.secretName`) signs with the local CA, whose
  certificate and key are copied into a `kubernetes.io/tls` Secret of the cluster resource
  namespace (`cert-manager`); `CertManager.create_ca_issuer` makes a namespaced `Issuer` the same
  way.

The controller's ServiceAccount is bound to `cluster-admin`: acceptable for a test cluster,
not a pattern to copy (cert-manager's chart ships least-privilege ClusterRoles).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import NameOID

from mailward_localstack._process import StackError, wait_until
from mailward_localstack.controlplane import kubectl, repo_root, wait_established
from mailward_localstack.gotools import tool_path
from mailward_localstack.images import ImageArchive
from mailward_localstack.pki import LocalCA

NAMESPACE = "cert-manager"
"""The controller's namespace, and its cluster resource namespace (ClusterIssuers' Secrets)."""
SERVICE_ACCOUNT = "cert-manager"
DEPLOYMENT = "cert-manager"
CLUSTER_ISSUER = "mailward-local-ca"
"""The ClusterIssuer that signs with the stack's local CA."""
CA_SECRET = "mailward-local-ca"
GROUP = "cert-manager.io"
MODULE = "github.com/cert-manager/cert-manager"
BINARY = "cert-manager-controller"
METRICS_PORT = 9402
HEALTH_PORT = 9403
DEFAULT_USAGES = ("digital signature", "key encipherment", "server auth")
BINDING = "cert-manager-cluster-admin"


def build_image() -> ImageArchive:
    """`mailward.local/cert-manager` (built once per machine; progress goes to our stderr)."""
    script = repo_root() / "images" / "cert-manager" / "build.sh"
    result = subprocess.run(
        ["bash", str(script)], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True
    )
    lines = result.stdout.split()
    if result.returncode != 0 or len(lines) != 2:
        raise StackError(f"{script} failed (exit code {result.returncode})")
    return ImageArchive(lines[0], Path(lines[1]))


def _module() -> tuple[str, Path]:
    tool_path("cert-manager", BINARY)  # downloads the module if this machine lacks it
    result = subprocess.run(
        ["go", "list", "-m", "-json", MODULE],
        cwd=repo_root() / "tools" / "cert-manager",
        capture_output=True,
        text=True,
        env={**os.environ, "GOFLAGS": "-mod=mod"},
        check=True,
    )
    entry = json.loads(result.stdout)
    return entry["Version"], Path(entry["Dir"])


def module_version() -> str:
    """The pinned version of cert-manager (tools/cert-manager/go.mod), e.g. `v1.21.2`."""
    return _module()[0]


def crd_files() -> list[Path]:
    """cert-manager's six CRDs, from the module the controller was built from."""
    files = sorted((_module()[1] / "deploy" / "crds").glob("*.yaml"))
    if not files:
        raise StackError(
            "no cert-manager CRDs in the module cache (run tools/cert-manager/build.sh)"
        )
    return files


def crd_names() -> list[str]:
    """`certificaterequests.cert-manager.io`, ... from the files' names (`<group>_<plural>`)."""
    return [f"{p.stem.split('_', 1)[1]}.{p.stem.split('_', 1)[0]}" for p in crd_files()]


@dataclass(frozen=True)
class CertManagerAddresses:
    """Where the controller listens: one loopback address of the stack's /24."""

    controller: str

    @property
    def metrics(self) -> str:
        return f"{self.controller}:{METRICS_PORT}"

    @property
    def healthz(self) -> str:
        return f"{self.controller}:{HEALTH_PORT}"


# ------------------------------------------------------------------------------ manifests


def ca_secret_manifest(ca: LocalCA, name: str, namespace: str) -> dict[str, Any]:
    """A `kubernetes.io/tls` Secret with the local CA's certificate and key (a CA issuer's)."""
    cert = ca.ca_file.read_bytes()
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/tls",
        "metadata": {"name": name, "namespace": namespace},
        "data": {
            "tls.crt": _b64(cert),
            "tls.key": _b64(ca.key_file.read_bytes()),
            "ca.crt": _b64(cert),
        },
    }


def ca_issuer_manifest(
    name: str, secret_name: str, namespace: str | None, crl_url: str | None = None
) -> dict[str, Any]:
    """A CA `ClusterIssuer` (namespace None) or namespaced `Issuer` signing with `secret_name`;
    with `crl_url`, its certificates name that CRL distribution point (the local CA's own, as
    the certificates it issues itself do: TR-03108's certificate profile asks for one)."""
    metadata: dict[str, Any] = {"name": name}
    if namespace is not None:
        metadata["namespace"] = namespace
    ca: dict[str, Any] = {"secretName": secret_name}
    if crl_url:
        ca["crlDistributionPoints"] = [crl_url]
    return {
        "apiVersion": f"{GROUP}/v1",
        "kind": "ClusterIssuer" if namespace is None else "Issuer",
        "metadata": metadata,
        "spec": {"ca": ca},
    }


def issuer_ref(name: str = CLUSTER_ISSUER, kind: str = "ClusterIssuer") -> dict[str, str]:
    """A CertificateRequest's `spec.issuerRef`."""
    return {"group": GROUP, "kind": kind, "name": name}


def certificate_request_manifest(
    name: str,
    namespace: str,
    csr_pem: bytes,
    ref: dict[str, str],
    *,
    duration: str = "1h",
    usages: Sequence[str] = DEFAULT_USAGES,
) -> dict[str, Any]:
    """A `CertificateRequest` for the PEM CSR `csr_pem` (`spec.request` is base64 of the PEM)."""
    return {
        "apiVersion": f"{GROUP}/v1",
        "kind": "CertificateRequest",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "request": _b64(csr_pem),
            "issuerRef": dict(ref),
            "duration": duration,
            "usages": list(usages),
        },
    }


def controller_manifests(image: str, addresses: CertManagerAddresses) -> list[dict[str, Any]]:
    """Namespace, ServiceAccount, its binding to cluster-admin, and the controller Deployment."""
    probe: dict[str, Any] = {
        "httpGet": {"host": addresses.controller, "port": HEALTH_PORT, "path": "/livez"},
        "periodSeconds": 2,
    }
    labels = {"app.kubernetes.io/name": "cert-manager", "app.kubernetes.io/component": "controller"}
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": SERVICE_ACCOUNT, "namespace": NAMESPACE},
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": BINDING},
            # Test cluster only (see the module's docstring).
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "cluster-admin",
            },
            "subjects": [
                {"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": NAMESPACE}
            ],
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": DEPLOYMENT, "namespace": NAMESPACE, "labels": labels},
            "spec": {
                "replicas": 1,
                # Fixed host ports and no leader election: the old pod goes before the new one.
                "strategy": {"type": "Recreate"},
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "serviceAccountName": SERVICE_ACCOUNT,
                        "hostNetwork": True,
                        "dnsPolicy": "Default",  # addresses only: nothing to resolve
                        "terminationGracePeriodSeconds": 5,
                        "securityContext": {
                            "runAsNonRoot": True,
                            "runAsUser": 65534,
                            "runAsGroup": 65534,
                            "seccompProfile": {"type": "RuntimeDefault"},
                        },
                        "containers": [
                            {
                                "name": "controller",
                                "image": image,
                                "imagePullPolicy": "Never",
                                "command": [f"/usr/local/bin/{BINARY}"],
                                "args": [
                                    f"--cluster-resource-namespace={NAMESPACE}",
                                    f"--metrics-listen-address={addresses.metrics}",
                                    f"--healthz-listen-address={addresses.healthz}",
                                    "--v=2",
                                ],
                                "readinessProbe": probe,
                                "livenessProbe": {**probe, "failureThreshold": 15},
                                "securityContext": {
                                    "allowPrivilegeEscalation": False,
                                    "readOnlyRootFilesystem": True,
                                    "capabilities": {"drop": ["ALL"]},
                                },
                                "resources": {
                                    "requests": {"cpu": "20m", "memory": "64Mi"},
                                    "limits": {"memory": "512Mi"},
                                },
                            }
                        ],
                    },
                },
            },
        },
    ]


# ------------------------------------------------------------------------- request outcome


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any] | None:
    """The status condition `kind` of a cert-manager object, if it has one."""
    for found in obj.get("status", {}).get("conditions", []) or []:
        if found.get("type") == kind:
            return dict(found)
    return None


def request_outcome(cr: dict[str, Any]) -> str | None:
    """Where a CertificateRequest ended: `Issued`, `Denied`, `Failed`, `InvalidRequest`, or None
    while it is still pending (not yet approved, or approved and not yet signed)."""
    denied = condition(cr, "Denied")
    if denied and denied.get("status") == "True":
        return "Denied"
    invalid = condition(cr, "InvalidRequest")
    if invalid and invalid.get("status") == "True":
        return "InvalidRequest"
    ready = condition(cr, "Ready")
    if ready and ready.get("status") == "True":
        return "Issued"
    if ready and ready.get("reason") in ("Failed", "Denied"):
        return str(ready["reason"])
    return None


def get_certificate_request(kubeconfig: Path, namespace: str, name: str) -> dict[str, Any]:
    out = kubectl(kubeconfig, "get", "certificaterequest", name, "-n", namespace, "-o", "json")
    result: dict[str, Any] = json.loads(out)
    return result


def wait_for_certificate_request(
    kubeconfig: Path, namespace: str, name: str, *, timeout: float = 60, interval: float = 0.2
) -> dict[str, Any]:
    """The CertificateRequest once it has an outcome (`request_outcome` is not None)."""
    found: dict[str, Any] = {}

    def done() -> bool:
        found.update(get_certificate_request(kubeconfig, namespace, name))
        return request_outcome(found) is not None

    wait_until(
        done, timeout=timeout, what=f"CertificateRequest {namespace}/{name}", interval=interval
    )
    return found


def issued_chain(cr: dict[str, Any]) -> list[x509.Certificate]:
    """`status.certificate` of an issued request: the leaf first."""
    return x509.load_pem_x509_certificates(base64.b64decode(cr["status"]["certificate"]))


def issuer_ready(kubeconfig: Path, kind: str, name: str, namespace: str | None = None) -> bool:
    args = ["get", kind.lower(), name, "-o", "json"]
    if namespace is not None:
        args += ["-n", namespace]
    ready = condition(json.loads(kubectl(kubeconfig, *args)), "Ready")
    return bool(ready and ready.get("status") == "True")


# ---------------------------------------------------------------------------------- install


@dataclass
class CertManager:
    """cert-manager running in one stack, with the ClusterIssuer `cluster_issuer`."""

    kubeconfig: Path
    addresses: CertManagerAddresses
    image: ImageArchive
    version: str
    ca: LocalCA
    cluster_issuer: str = CLUSTER_ISSUER
    namespace: str = NAMESPACE

    @property
    def issuer_ref(self) -> dict[str, str]:
        """`spec.issuerRef` of the ClusterIssuer that signs with the local CA."""
        return issuer_ref(self.cluster_issuer, "ClusterIssuer")

    def create_ca_issuer(
        self, namespace: str, name: str = CLUSTER_ISSUER, *, timeout: float = 60
    ) -> dict[str, str]:
        """A namespaced CA `Issuer` `name` in `namespace` (with a Secret of the same name holding
        the local CA), once Ready; returns its `issuerRef`."""
        objects = [
            ca_secret_manifest(self.ca, name, namespace),
            ca_issuer_manifest(name, name, namespace, self.ca.crl_url),
        ]
        _apply(self.kubeconfig, objects)
        wait_until(
            lambda: issuer_ready(self.kubeconfig, "Issuer", name, namespace),
            timeout=timeout,
            what=f"Issuer {namespace}/{name} Ready",
            interval=0.2,
        )
        return issuer_ref(name, "Issuer")


def install(
    kubeconfig: Path,
    state_dir: Path,
    addresses: CertManagerAddresses,
    import_image: Callable[[ImageArchive], None],
    ca: LocalCA,
    *,
    timeout: float = 110,
) -> CertManager:
    """Build and import the image, apply the CRDs, the controller and the ClusterIssuer of the
    local CA; returns once a self-check CertificateRequest has been approved and issued.
    `import_image(ImageArchive)` imports into the node; `state_dir` keeps the applied manifests."""
    began = time.monotonic()
    image = build_image()
    import_image(image)
    _say(f"image {image.ref} imported ({time.monotonic() - began:.0f}s)")
    for crd in crd_files():
        kubectl(kubeconfig, "apply", "--server-side", "--force-conflicts", "-f", str(crd))
    names = crd_names()
    wait_established(kubeconfig, *names)
    _say(f"CRDs: {', '.join(names)}")
    objects = [
        *controller_manifests(image.ref, addresses),
        ca_secret_manifest(ca, CA_SECRET, NAMESPACE),
        ca_issuer_manifest(CLUSTER_ISSUER, CA_SECRET, None, ca.crl_url),
    ]
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / "manifests.json").write_text(
        json.dumps([o for o in objects if o["kind"] != "Secret"], indent=1) + "\n"
    )
    _apply(kubeconfig, objects)
    kubectl(
        kubeconfig, "rollout", "status", "-n", NAMESPACE, f"deployment/{DEPLOYMENT}",
        f"--timeout={int(timeout)}s",
    )  # fmt: skip
    wait_until(
        lambda: issuer_ready(kubeconfig, "ClusterIssuer", CLUSTER_ISSUER),
        timeout=timeout,
        what=f"ClusterIssuer {CLUSTER_ISSUER} Ready",
        interval=0.2,
    )
    version = module_version()
    handle = CertManager(kubeconfig, addresses, image, version, ca)
    took = self_check(handle, timeout=timeout)
    _say(
        f"cert-manager {version} controller on {addresses.controller} (metrics "
        f"http://{addresses.metrics}/metrics), ClusterIssuer {CLUSTER_ISSUER} (CA "
        f"{ca.name!r}); self-check issued in {took:.1f}s ({time.monotonic() - began:.0f}s)"
    )
    return handle


def attach(kubeconfig: Path, addresses: CertManagerAddresses, ca: LocalCA) -> CertManager:
    """A handle on the cert-manager a stack installed (`stack.up` installs it)."""
    return CertManager(kubeconfig, addresses, build_image(), module_version(), ca)


def self_check(cert_manager: CertManager, *, timeout: float = 60) -> float:
    """Issue one certificate through the ClusterIssuer and check it; the seconds it took."""
    kubeconfig, name = cert_manager.kubeconfig, "mailward-self-check"
    key = ec.generate_private_key(ec.SECP256R1())
    csr = csr_pem(key, ["self-check.cert-manager.test"])
    kubectl(kubeconfig, "delete", "certificaterequest", name, "-n", NAMESPACE, "--ignore-not-found")
    began = time.monotonic()
    manifest = certificate_request_manifest(name, NAMESPACE, csr, cert_manager.issuer_ref)
    kubectl(kubeconfig, "create", "-f", "-", input=json.dumps(manifest))
    cr = wait_for_certificate_request(kubeconfig, NAMESPACE, name, timeout=timeout)
    took = time.monotonic() - began
    outcome = request_outcome(cr)
    if outcome != "Issued":
        raise StackError(f"cert-manager self-check ended {outcome}: {condition(cr, 'Ready')}")
    leaf = issued_chain(cr)[0]
    leaf.verify_directly_issued_by(cert_manager.ca.cert)
    if spki_der(leaf.public_key()) != spki_der(key.public_key()):
        raise StackError("cert-manager self-check: the certificate is not for the CSR's key")
    kubectl(kubeconfig, "delete", "certificaterequest", name, "-n", NAMESPACE, "--wait=false")
    return took


def spki_der(public_key: CertificatePublicKeyTypes) -> bytes:
    """The DER SubjectPublicKeyInfo of a public key (to compare keys)."""
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def csr_pem(key: ec.EllipticCurvePrivateKey, dns_names: Sequence[str]) -> bytes:
    """A PEM CSR for `dns_names` (the first also as CN), signed by `key` with SHA-256."""
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns_names[0])]))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in dns_names]), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)


def uninstall(cert_manager: CertManager) -> None:
    """The ClusterIssuer, the controller, its namespace and binding (the CRDs stay, as with
    Flux: the cluster goes with the session). For teardown: best effort."""
    kubeconfig = cert_manager.kubeconfig
    kubectl(
        kubeconfig, "delete", "clusterissuer", cert_manager.cluster_issuer, "--ignore-not-found",
        check=False,
    )  # fmt: skip
    kubectl(
        kubeconfig, "delete", "namespace", NAMESPACE, "--ignore-not-found", "--wait=false",
        check=False,
    )  # fmt: skip
    kubectl(kubeconfig, "delete", "clusterrolebinding", BINDING, "--ignore-not-found", check=False)


def _apply(kubeconfig: Path, objects: list[dict[str, Any]]) -> None:
    body = json.dumps({"apiVersion": "v1", "kind": "List", "items": objects})
    kubectl(kubeconfig, "apply", "-f", "-", input=body)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _say(message: str) -> None:
    print(f"[cert-manager] {message}", flush=True)
