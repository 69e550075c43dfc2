"""pytest plugin: the MTA image's Postfix, started from mailward's rendered configuration.

Register with `pytest_plugins = [..., "tests.fixtures_mta"]` in tests/conftest.py.

What runs is the MTA image (`images/build.sh mta`: Debian trixie, Postfix 3.10), unpacked once
into the cache and entered per command with a private mount namespace and chroot
(`mailward_localstack.rootfs`); the machine's own Postfix is never used. The sidecars are the
image's too, as the pod runs them: the DANE-first policy socketmap
(`/usr/local/lib/mailward/tlspolicy.py` on the image's Python and dnspython) in front of
postfix-mta-sts-resolver (`mta-sts-daemon`), both as nobody.

Each instance gets exactly `render_postfix(...)` with `local_layout(...)`: the paths under a temp
directory, the listening address `tests.net.addr(n)` and `inet_protocols = ipv4` are the only
differences from the pod's configuration (tests/unit/test_postfix_render.py proves that).
Postfix and the sidecars resolve through the session's validating resolver (`dns_stack`).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from mailward.render.mta_pod import MTA_STS_RESOLVER_PORT, render_mta_sts_daemon_conf
from mailward.render.pods import NOBODY
from mailward.render.postfix import (
    TLS_POLICY_PORT,
    DomainConfig,
    MTAOptions,
    PostfixConfig,
    render_postfix,
)
from mailward_localstack._process import StackError
from mailward_localstack.dns import DNSStack
from mailward_localstack.pki import IssuedCert, LocalCA
from mailward_localstack.postfix import LocalPostfix, local_layout
from mailward_localstack.rootfs import Account, ImageRoot, mta_root
from tests.net import addr

MTA_ADDRESS = addr(25)
ACCOUNT = ("alice", "correct horse battery staple")


@dataclass
class RunningMTA:
    postfix: LocalPostfix
    config: PostfixConfig
    address: str
    cert: IssuedCert
    domains: tuple[DomainConfig, ...]

    def log(self) -> str:
        return self.postfix.log()


MTAFactory = Callable[..., RunningMTA]


def _wait_listening(address: str, port: int, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection((address, port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"nothing listens on {address}:{port}")


def _prerequisites() -> str | None:
    if os.geteuid() != 0:
        return "Postfix on port 25, mount namespaces and chroot need root"
    missing = [c for c in ("unshare", "chroot", "mount", "tar") if shutil.which(c) is None]
    if missing:
        return f"{', '.join(missing)} not installed"
    return None


def _start_sidecar(
    image: ImageRoot, postfix: LocalPostfix, name: str, argv: list[str]
) -> subprocess.Popen[bytes]:
    """One of the pod's sidecars, from the image, as nobody (the pod's securityContext)."""
    log = (postfix.state_dir / f"{name}.log").open("wb")
    command = image.command(
        argv,
        binds=[postfix.state_dir.resolve()],
        resolv_conf=postfix.state_dir / "resolv.conf",
        user=Account(NOBODY, NOBODY),
    )
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)


def _stop_sidecar(process: subprocess.Popen[bytes]) -> None:
    # `unshare`, `sh`, `chroot` and `env` exec the server: the pid is the server's, and its
    # mount namespace ends with it.
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


@pytest.fixture(scope="session")
def mta_factory(
    tmp_path_factory: pytest.TempPathFactory, local_ca: LocalCA, dns_stack: DNSStack
) -> Iterator[MTAFactory]:
    """Start a Postfix for some domains on `addr(host)`; all are stopped at session end."""
    reason = _prerequisites()
    if reason:
        pytest.skip(reason)
    try:
        image = mta_root()
    except StackError as error:
        pytest.fail(f"the MTA image is not available: {error}")
    started: list[LocalPostfix] = []
    sidecars: list[subprocess.Popen[bytes]] = []
    # Not under pytest's temp directory: pytest resets /tmp/pytest-of-<user> to 0700 whenever a
    # session starts (other sessions run side by side), and Postfix's unprivileged daemons and
    # the mailbox owner must be able to pass through every parent directory.
    base = Path(tempfile.mkdtemp(prefix="mailward-postfix-"))
    base.chmod(0o711)

    def start(
        host: int,
        domains: list[DomainConfig],
        *,
        options: MTAOptions | None = None,
        accounts: Mapping[str, Mapping[str, str]] | None = None,
        overrides: Mapping[str, str] | None = None,
    ) -> RunningMTA:
        address = addr(host)
        state = base / f"postfix-{host}"
        state.mkdir(mode=0o711)
        layout = local_layout(state, address)
        config = render_postfix(domains, options or MTAOptions(), layout)
        if overrides:
            # For one test instance only (e.g. a shortened retry clock); the test says so.
            unknown = set(overrides) - {name for name, _ in config.main}
            assert not unknown, f"not rendered, cannot override: {unknown}"
            main = [(name, overrides.get(name, value)) for name, value in config.main]
            config = dataclasses.replace(config, main=main)
        cert = local_ca.issue_server_cert(list(domains[0].mx_hosts), out_dir=state / "issued")
        postfix = LocalPostfix(state, layout, resolver=dns_stack.resolver.address, image=image)
        postfix.install(
            config,
            tls_chain_pem=cert.chain_file.read_bytes(),
            tls_key_pem=cert.key_file.read_bytes(),
            accounts=accounts,
        )
        started.append(postfix)
        options = options or MTAOptions()
        if options.mta_sts_fallback:
            # The MTA-STS resolver, then the DANE-first policy socketmap in front of it, as in
            # the pod (render/mta_pod.py), with the rendered mta-sts-daemon.yml.
            sts_conf = state / "mta-sts-daemon.yml"
            sts_conf.write_text(render_mta_sts_daemon_conf(address))
            sidecars.append(
                _start_sidecar(image, postfix, "mta-sts", ["mta-sts-daemon", "-c", str(sts_conf)])
            )
            _wait_listening(address, MTA_STS_RESOLVER_PORT)
            policy = [
                "python3",
                "/usr/local/lib/mailward/tlspolicy.py",
                "--listen",
                f"{address}:{TLS_POLICY_PORT}",
                "--sts",
                f"{address}:{MTA_STS_RESOLVER_PORT}",
                "--nameserver",
                dns_stack.resolver.address,
            ]
            sidecars.append(_start_sidecar(image, postfix, "tlspolicy", policy))
            _wait_listening(address, TLS_POLICY_PORT)
        postfix.start()
        return RunningMTA(postfix, config, address, cert, tuple(domains))

    try:
        yield start
    finally:
        for postfix in started:
            postfix.stop()
        for sidecar in sidecars:
            _stop_sidecar(sidecar)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def mta(mta_factory: MTAFactory) -> RunningMTA:
    """The MTA of example.test (MX mx1.example.test) with the account alice@example.test."""
    domain = DomainConfig("example.test", ("mx1.example.test",), (ACCOUNT[0],))
    return mta_factory(25, [domain], accounts={"example.test": {ACCOUNT[0]: ACCOUNT[1]}})


def set_statefulset_ready(api: Any, namespace: str, name: str) -> None:
    """Write the status a StatefulSet controller and kubelets would write for ready pods.

    The local control plane has neither; tests that need `MTAReady=True` without running
    Postfix (tests about other parts) use this, and say so.
    """
    apps = client.AppsV1Api(api)
    sts = apps.read_namespaced_stateful_set(name, namespace)
    replicas = sts.spec.replicas or 1
    revision = f"{name}-test"
    apps.patch_namespaced_stateful_set_status(
        name,
        namespace,
        {
            "status": {
                "observedGeneration": sts.metadata.generation,
                "replicas": replicas,
                "readyReplicas": replicas,
                "availableReplicas": replicas,
                "updatedReplicas": replicas,
                "currentReplicas": replicas,
                "currentRevision": revision,
                "updateRevision": revision,
            }
        },
    )
