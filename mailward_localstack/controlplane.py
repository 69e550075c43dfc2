"""A real kube-apiserver + etcd on loopback, for the integration tests and the demo.

This is the envtest setup, done in Python: an API server and its etcd. Alone, it runs no Pods,
namespaces never finish terminating, owner references are not garbage-collected and namespaces get
no `default` ServiceAccount; what we test against it is what an operator sees of a cluster:
schemas, CEL rules, RBAC, watches, status subresources and admission. `localstack.node` adds the
controller-manager, the scheduler and a kubelet on top of it to make a real single-node cluster.

The Service range is loopback (127.96.0.0/16 unless told otherwise), so no cluster IP can ever
name a private-range address. A node's cluster binds the API server on the first address of its
range, port 443: that is where the `kubernetes` Service points, so pods find it in-cluster.

Everything listens on one loopback address (127.0.0.1 unless told otherwise) on ports the kernel
picks, so the demo's control plane and the tests' can run side by side. The state directory is the
only thing another process needs to find, inspect or stop a running control plane:

    state_dir/
      controlplane.json         host, ports and binaries of the last start
      kubeconfig                context "mailward-local", admin client cert embedded
      pki/                      ca/ (a LocalCA), apiserver and admin certs, service-account keys
      etcd/                     etcd's data
      etcd.{pid,log}            kube-apiserver.{pid,log}
      audit/                    policy.yaml, audit.log (+ rotated copies): only with `audit`

With `audit` (or `$MAILWARD_CONTROLPLANE_AUDIT=1`, for callers that start the control plane
through `stack.up`) the API server writes an audit log of every mutating request (create, update,
patch, delete, deletecollection) at the Metadata level: who, which verb, which resource and
subresource, the request URI (with `fieldManager`), no bodies. It is bounded: 200 MB a file,
five rotated files kept. Nothing pays for it unless asked (the scale benchmark asks).

The CA, the admin certificate and the service-account keys are kept across restarts of the same
state directory (a kubeconfig copied elsewhere stays valid, tokens stay verifiable); the serving
certificate is issued anew on every start because it names the host.
"""

from __future__ import annotations

import base64
import datetime
import functools
import ipaddress
import json
import os
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from mailward_localstack._process import (
    ManagedProcess,
    StackError,
    free_port,
    port_is_free,
    wait_until,
    write_private,
)
from mailward_localstack.pki import LocalCA

CONTEXT_NAME = "mailward-local"
ADMIN_USER = "mailward-admin"
DEFAULT_SERVICE_CIDR = "127.96.0.0/16"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc"
BIN_DIR_ENV = "MAILWARD_CONTROLPLANE_BIN"
AUDIT_ENV = "MAILWARD_CONTROLPLANE_AUDIT"
AUDIT_VERBS = ("create", "update", "patch", "delete", "deletecollection")
# Metadata only (no bodies), one event per request (ResponseComplete; RequestReceived omitted).
AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [{"level": "Metadata", "verbs": list(AUDIT_VERBS)}, {"level": "None"}],
}
AUDIT_LOG_MAX_MB = 200
AUDIT_LOG_BACKUPS = 5
BINARIES = ("etcd", "kube-apiserver", "kubectl")

_STATE_FILE = "controlplane.json"
_ETCD = "etcd"
_APISERVER = "kube-apiserver"
# A port the kernel handed us can be taken by someone else before our server binds it.
_PORT_ATTEMPTS = 3
# Certificates are renewed this long before they expire.
_RENEW_BEFORE = datetime.timedelta(days=30)


def repo_root() -> Path:
    return Path(__file__).resolve().parents[1]


def controlplane_bin_dir() -> Path:
    """The directory with etcd, kube-apiserver and kubectl.

    `$MAILWARD_CONTROLPLANE_BIN` wins; otherwise tools/controlplane/build.sh is run, which returns
    at once when the binaries of the pinned version are already in the per-machine cache and
    builds them (10-20 minutes) when they are not.
    """
    override = os.environ.get(BIN_DIR_ENV)
    bin_dir = Path(override) if override else _built_bin_dir()
    missing = [name for name in BINARIES if not os.access(bin_dir / name, os.X_OK)]
    if missing:
        origin = f"${BIN_DIR_ENV}" if override else "tools/controlplane/build.sh"
        raise StackError(f"{bin_dir} (from {origin}) lacks the executables {', '.join(missing)}")
    return bin_dir


def kubectl_path() -> Path:
    return controlplane_bin_dir() / "kubectl"


def kubectl(kubeconfig: Path, *args: str, input: str | None = None, check: bool = True) -> str:
    """Run the pinned kubectl against `kubeconfig`, as a person would; its standard output.

    With `check`, a failure raises StackError with kubectl's own message.
    """
    result = subprocess.run(
        [str(kubectl_path()), "--kubeconfig", str(kubeconfig), *args],
        input=input,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if check and result.returncode != 0:
        raise StackError(f"kubectl {' '.join(args[:3])} failed: {result.stderr.strip()}")
    return result.stdout


def wait_established(kubeconfig: Path, *crds: str, timeout: float = 60) -> None:
    """Wait until every named CRD (e.g. `maildomains.mailward.io`) is Established.

    Polls the condition rather than using `kubectl wait`: right after an apply a CRD can have no
    conditions yet, and `kubectl wait` then fails at once instead of waiting.
    """
    jsonpath = '{.status.conditions[?(@.type=="Established")].status}'

    def established() -> bool:
        return all(
            kubectl(kubeconfig, "get", "crd", crd, "-o", f"jsonpath={jsonpath}", check=False)
            == "True"
            for crd in crds
        )

    wait_until(established, timeout=timeout, what=f"CRDs {', '.join(crds)} to be Established")


@functools.cache
def _built_bin_dir() -> Path:
    script = repo_root() / "tools" / "controlplane" / "build.sh"
    if not script.is_file():
        raise StackError(
            f"cannot find the control plane build script {script}; "
            f"set ${BIN_DIR_ENV} to a directory with {', '.join(BINARIES)}"
        )
    # Progress goes to our stderr unchanged; the last line on stdout is the directory.
    result = subprocess.run(
        ["bash", str(script)], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True
    )
    lines = [line.strip() for line in result.stdout.splitlines() if line.strip()]
    if result.returncode != 0 or not lines:
        raise StackError(
            f"{script} failed (exit code {result.returncode}); its output is on stderr above"
        )
    return Path(lines[-1])


@dataclass(frozen=True)
class _Ports:
    etcd_client: int
    etcd_peer: int
    apiserver: int


class ControlPlane:
    """One kube-apiserver + etcd pair, owned by a state directory."""

    def __init__(
        self,
        state_dir: Path,
        host: str = "127.0.0.1",
        *,
        bin_dir: Path | None = None,
        service_cidr: str = DEFAULT_SERVICE_CIDR,
        apiserver_port: int | None = None,
        audit: bool | None = None,
    ):
        address = ipaddress.ip_address(host)
        if address.version != 4 or not address.is_loopback:
            raise ValueError(f"the control plane must stay on 127.0.0.0/8, not {host}")
        services = ipaddress.ip_network(service_cidr)
        if services.version != 4 or not services.is_loopback:
            raise ValueError(f"the Service range must stay in 127.0.0.0/8, not {service_cidr}")
        self.state_dir = Path(state_dir).absolute()
        self.host = host
        self.service_cidr = service_cidr
        self.apiserver_port = apiserver_port
        """A fixed port for the API server; the kernel picks one when None."""
        self.audit = os.environ.get(AUDIT_ENV) == "1" if audit is None else audit
        """Write the audit log of mutating requests (`audit_log`); None: `$AUDIT_ENV` == 1."""
        self._bin_dir = bin_dir
        self._ports: _Ports | None = None
        self.ready_after: float | None = None
        """Seconds from start() to a ready API server, once start() succeeded."""

    @classmethod
    def attach(cls, state_dir: Path) -> ControlPlane:
        """The control plane last started in `state_dir`, from another process.

        It may have stopped since: ask `is_running()` / `is_ready()`; `stop()` is always safe.
        """
        state_file = Path(state_dir) / _STATE_FILE
        try:
            state = json.loads(state_file.read_text())
            plane = cls(
                state_dir,
                state["host"],
                bin_dir=Path(state["bin_dir"]),
                service_cidr=state.get("service_cidr", DEFAULT_SERVICE_CIDR),
                apiserver_port=state.get("apiserver_port"),
            )
            plane._ports = _Ports(**state["ports"])
        except FileNotFoundError:
            raise StackError(f"no control plane was ever started in {state_dir}") from None
        except (ValueError, KeyError, TypeError) as exc:
            raise StackError(f"{state_file} is unreadable: {exc!r}") from exc
        return plane

    # -- where things are --------------------------------------------------------------------

    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / "kubeconfig"

    @property
    def pki_dir(self) -> Path:
        return self.state_dir / "pki"

    @property
    def ca_file(self) -> Path:
        """The CA that signs the API server's serving certificate and the admin client cert."""
        return self.pki_dir / "ca" / "ca.pem"

    @property
    def audit_log(self) -> Path:
        """The current audit log (`audit-<time>.log` beside it are the rotated ones)."""
        return self.state_dir / "audit" / "audit.log"

    @property
    def server_url(self) -> str:
        return f"https://{self.host}:{self._known_ports().apiserver}"

    @property
    def etcd_url(self) -> str:
        return f"http://{self.host}:{self._known_ports().etcd_client}"

    @property
    def bin_dir(self) -> Path:
        if self._bin_dir is None:
            self._bin_dir = controlplane_bin_dir()
        return self._bin_dir

    def _known_ports(self) -> _Ports:
        if self._ports is None:
            raise StackError(f"the control plane in {self.state_dir} has not been started")
        return self._ports

    def _process(self, name: str, argv: list[str] | None = None) -> ManagedProcess:
        return ManagedProcess(name, argv or [name], self.state_dir, cwd=self.state_dir)

    # -- state -------------------------------------------------------------------------------

    def is_running(self) -> bool:
        """True if etcd or the API server of this state directory still runs."""
        return any(self._process(name).is_running() for name in (_ETCD, _APISERVER))

    def is_ready(self) -> bool:
        """True if the API server answers /readyz with ok right now."""
        if self._ports is None or not self._process(_APISERVER).is_running():
            return False
        try:
            return self._apiserver_ready()
        except (OSError, ssl.SSLError):
            return False

    # -- start / stop ------------------------------------------------------------------------

    def start(self, timeout: float = 90) -> None:
        """Start etcd and the API server and wait until the API server is ready.

        Raises StackError (with the failing server's last log lines) and leaves nothing running
        if that does not happen within `timeout` seconds.
        """
        if self.is_running():
            raise StackError(f"a control plane already runs in {self.state_dir}; stop it first")
        began = time.monotonic()
        deadline = began + timeout
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            bin_dir = self.bin_dir
            _ensure_pki(self.pki_dir, self.host, self.service_cidr)
            for attempt in range(_PORT_ATTEMPTS):
                self._ports = self._choose_ports(reuse_previous=attempt == 0)
                try:
                    self._start_etcd(bin_dir, deadline)
                    self._start_apiserver(bin_dir, deadline)
                    break
                except _PortTaken:
                    self._stop_processes()
            else:
                raise StackError(f"no free ports on {self.host} after {_PORT_ATTEMPTS} attempts")
            self._write_kubeconfig()
        except BaseException as exc:
            self._stop_processes()
            if isinstance(exc, Exception) and not isinstance(exc, StackError):
                raise StackError(f"the control plane in {self.state_dir} failed: {exc}") from exc
            raise
        self.ready_after = time.monotonic() - began

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the API server, then etcd. Safe to call when nothing runs."""
        self._stop_processes(timeout)

    def restart_apiserver(self, down_seconds: float = 0.0, timeout: float = 90) -> float:
        """Stop the API server (etcd keeps its data), wait `down_seconds`, start it again on
        the same port; the seconds it answered nothing."""
        began = time.monotonic()
        self._process(_APISERVER).stop()
        time.sleep(down_seconds)
        self._start_apiserver(self.bin_dir, time.monotonic() + timeout)
        return time.monotonic() - began

    def _stop_processes(self, timeout: float = 10.0) -> None:
        for name in (_APISERVER, _ETCD):
            self._process(name).stop(timeout)

    def _choose_ports(self, *, reuse_previous: bool) -> _Ports:
        # Keep the previous ports when they are free, so a restarted demo keeps its server URL.
        previous = self._ports or _read_state_ports(self.state_dir / _STATE_FILE)
        if (
            reuse_previous
            and previous is not None
            and self.apiserver_port in (None, previous.apiserver)
        ):
            wanted = (previous.etcd_client, previous.etcd_peer, previous.apiserver)
            if len(set(wanted)) == 3 and all(port_is_free(self.host, p) for p in wanted):
                return previous
        ports: set[int] = set()
        while len(ports) < (2 if self.apiserver_port else 3):
            port = free_port(self.host)
            if port != self.apiserver_port:
                ports.add(port)
        if self.apiserver_port:
            etcd_client, etcd_peer = sorted(ports)
            apiserver = self.apiserver_port
        else:
            etcd_client, etcd_peer, apiserver = sorted(ports)
        return _Ports(etcd_client=etcd_client, etcd_peer=etcd_peer, apiserver=apiserver)

    def _start_etcd(self, bin_dir: Path, deadline: float) -> None:
        ports = self._known_ports()
        peer_url = f"http://{self.host}:{ports.etcd_peer}"
        etcd = self._process(
            _ETCD,
            [
                str(bin_dir / "etcd"),
                "--name=mailward",
                f"--data-dir={self.state_dir / 'etcd'}",
                f"--listen-client-urls={self.etcd_url}",
                f"--advertise-client-urls={self.etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=mailward={peer_url}",
                "--initial-cluster-state=new",
                # Test data: durability is not worth the fsync latency on slow disks.
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
        )
        _start_fresh(etcd)
        _await(etcd, self._etcd_healthy, deadline, f"etcd health at {self.etcd_url}/health")

    def _start_apiserver(self, bin_dir: Path, deadline: float) -> None:
        pki = self.pki_dir
        apiserver = self._process(
            _APISERVER,
            [
                str(bin_dir / "kube-apiserver"),
                f"--etcd-servers={self.etcd_url}",
                f"--bind-address={self.host}",
                f"--advertise-address={self.host}",
                f"--secure-port={self._known_ports().apiserver}",
                f"--cert-dir={pki}",
                f"--tls-cert-file={pki / 'apiserver.crt'}",
                f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--client-ca-file={self.ca_file}",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
                f"--service-cluster-ip-range={self.service_cidr}",
                # Node: a kubelet may read only what its own pods need.
                "--authorization-mode=Node,RBAC",
                "--enable-admission-plugins=NodeRestriction",
                f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
                f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
                f"--kubelet-certificate-authority={self.ca_file}",
                "--kubelet-preferred-address-types=InternalIP",
                "--allow-privileged=true",
                # The endpoint reconciler would publish the advertise address as the endpoint of
                # the `kubernetes` Service, and Endpoints reject loopback addresses: it would log
                # an error every 10 s. Nothing in the cluster needs that endpoint.
                "--endpoint-reconciler-type=none",
                "--profiling=false",
                *self._audit_flags(),
            ],
        )
        _start_fresh(apiserver)
        _await(apiserver, self._apiserver_ready, deadline, f"{self.server_url}/readyz")

    def _audit_flags(self) -> list[str]:
        if not self.audit:
            return []
        policy = self.audit_log.with_name("policy.yaml")
        policy.parent.mkdir(parents=True, exist_ok=True)
        policy.write_text(yaml.safe_dump(AUDIT_POLICY, sort_keys=False))
        return [
            f"--audit-policy-file={policy}",
            f"--audit-log-path={self.audit_log}",
            "--audit-log-format=json",
            f"--audit-log-maxsize={AUDIT_LOG_MAX_MB}",
            f"--audit-log-maxbackup={AUDIT_LOG_BACKUPS}",
        ]

    # -- probes ------------------------------------------------------------------------------

    def _etcd_healthy(self) -> bool:
        with _NO_PROXY.open(f"{self.etcd_url}/health", timeout=2) as response:
            return bool(json.load(response).get("health") == "true")

    def _apiserver_ready(self) -> bool:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        context.load_cert_chain(self.pki_dir / "admin.crt", self.pki_dir / "admin.key")
        opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context)
        )
        with opener.open(f"{self.server_url}/readyz", timeout=5) as response:
            return bool(response.status == 200 and response.read().strip() == b"ok")

    # -- outputs -----------------------------------------------------------------------------

    def kubeconfig_for(self, user: str, groups: Sequence[str] = ()) -> Path:
        """A kubeconfig that authenticates as `user` (in `groups`) with a client certificate.

        Tests use it to run the operator with exactly the RBAC rules of the Helm chart, e.g. as
        `system:serviceaccount:mailward-system:mailward`.
        """
        slug = "".join(c if c.isalnum() else "-" for c in user).strip("-")
        ca = LocalCA.load(self.pki_dir / "ca")
        cert = ca.issue_client_cert(user, groups, out_dir=self.pki_dir / "users", basename=slug)
        path = self.state_dir / "users" / f"{slug}.kubeconfig"
        self._write_kubeconfig_file(path, user, cert.cert_file, cert.key_file)
        return path

    def _write_kubeconfig(self) -> None:
        pki = self.pki_dir
        self._write_kubeconfig_file(
            self.kubeconfig, ADMIN_USER, pki / "admin.crt", pki / "admin.key"
        )
        self._save_state()

    def _write_kubeconfig_file(self, path: Path, user: str, cert: Path, key: Path) -> None:
        def data(path: Path) -> str:
            return base64.b64encode(path.read_bytes()).decode()

        config: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": CONTEXT_NAME,
                    "cluster": {
                        "server": self.server_url,
                        "certificate-authority-data": data(self.ca_file),
                    },
                }
            ],
            "users": [
                {
                    "name": user,
                    "user": {
                        "client-certificate-data": data(cert),
                        "client-key-data": data(key),
                    },
                }
            ],
            "contexts": [
                {"name": CONTEXT_NAME, "context": {"cluster": CONTEXT_NAME, "user": user}}
            ],
            "current-context": CONTEXT_NAME,
            "preferences": {},
        }
        write_private(path, yaml.safe_dump(config, sort_keys=False).encode())

    def _save_state(self) -> None:
        ports = self._known_ports()
        state = {
            "host": self.host,
            "ports": {
                "etcd_client": ports.etcd_client,
                "etcd_peer": ports.etcd_peer,
                "apiserver": ports.apiserver,
            },
            "bin_dir": str(self.bin_dir),
            "server_url": self.server_url,
            "service_cidr": self.service_cidr,
            "apiserver_port": self.apiserver_port,
        }
        (self.state_dir / _STATE_FILE).write_text(json.dumps(state, indent=2) + "\n")


class _PortTaken(Exception):
    """A server exited because its port was taken between our choice and its bind."""


_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _start_fresh(process: ManagedProcess) -> None:
    # One log per start, so a failure's log tail shows this start and not an older one.
    process.log_file.unlink(missing_ok=True)
    process.start()


def _await(process: ManagedProcess, ready: Callable[[], bool], deadline: float, what: str) -> None:
    try:
        wait_until(
            ready,
            timeout=max(deadline - time.monotonic(), 0.0),
            what=what,
            interval=0.2,
            process=process,
        )
    except StackError:
        if not process.is_running() and "address already in use" in process.log_tail(200):
            raise _PortTaken(process.name) from None
        raise


def _read_state_ports(state_file: Path) -> _Ports | None:
    try:
        return _Ports(**json.loads(state_file.read_text())["ports"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


# -- PKI -------------------------------------------------------------------------------------


def _ensure_pki(pki: Path, host: str, service_cidr: str) -> None:
    """CA, client certs and service-account keys (kept while valid), a fresh serving cert."""
    ca = LocalCA.load_or_create(pki / "ca", name="mailward local control plane CA")
    if not _still_valid(pki / "admin.crt", ca):
        ca.issue_client_cert(ADMIN_USER, ["system:masters"], out_dir=pki, basename="admin")
    # The kubelets accept any client certificate of this CA; the user name is for their logs.
    if not _still_valid(pki / "apiserver-kubelet-client.crt", ca):
        ca.issue_client_cert(
            "kube-apiserver-kubelet-client", [], out_dir=pki, basename="apiserver-kubelet-client"
        )
    service_ip = str(kubernetes_service_ip(service_cidr))
    names = [host, "127.0.0.1", "localhost", "kubernetes", "kubernetes.default"]
    names += ["kubernetes.default.svc", "kubernetes.default.svc.cluster.local", service_ip]
    ca.issue_server_cert(list(dict.fromkeys(names)), out_dir=pki, basename="apiserver")
    if not (pki / "sa.key").is_file() or not (pki / "sa.pub").is_file():
        sa_key = ec.generate_private_key(ec.SECP256R1())
        write_private(
            pki / "sa.key",
            sa_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )
        (pki / "sa.pub").write_bytes(
            sa_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )


def kubernetes_service_ip(service_cidr: str) -> ipaddress.IPv4Address:
    """The `kubernetes` Service's cluster IP: the first address of the Service range."""
    return ipaddress.IPv4Network(service_cidr)[1]


def _still_valid(cert_file: Path, ca: LocalCA) -> bool:
    """Issued by this CA and not about to expire (a copied kubeconfig should keep working)."""
    try:
        cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    except (OSError, ValueError):
        return False
    remaining = cert.not_valid_after_utc - datetime.datetime.now(datetime.UTC)
    return cert.issuer == ca.cert.subject and remaining > _RENEW_BEFORE
