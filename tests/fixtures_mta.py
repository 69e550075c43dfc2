"""pytest plugin: real Postfix instances started from mailward's rendered configuration.

Register with `pytest_plugins = [..., "tests.fixtures_mta"]` in tests/conftest.py.

Each instance gets exactly `render_postfix(...)` with `local_layout(...)`: the paths under a temp
directory, the listening address `tests.net.addr(n)` and `inet_protocols = ipv4` are the only
differences from the pod's configuration (tests/unit/test_postfix_render.py proves that).
Postfix resolves through the session's validating resolver (`dns_stack`).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from mailward.render.postfix import DomainConfig, MTAOptions, PostfixConfig, render_postfix
from mailward_localstack.dns import DNSStack
from mailward_localstack.pki import IssuedCert, LocalCA
from mailward_localstack.postfix import LocalPostfix, local_layout
from tests.net import addr

MTA_ADDRESS = addr(25)
TLS_POLICY_PORT = 8461
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
        return "Postfix on port 25 needs root"
    missing = [p for p in ("/usr/sbin/postfix", "/usr/sbin/saslpasswd2") if not Path(p).exists()]
    if missing or shutil.which("unshare") is None:
        return f"{', '.join(missing) or 'unshare'} not installed (scripts/install-system-deps.sh)"
    return None


@pytest.fixture(scope="session")
def mta_factory(
    tmp_path_factory: pytest.TempPathFactory, local_ca: LocalCA, dns_stack: DNSStack
) -> Iterator[MTAFactory]:
    """Start a Postfix for some domains on `addr(host)`; all are stopped at session end."""
    reason = _prerequisites()
    if reason:
        pytest.skip(reason)
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
    ) -> RunningMTA:
        address = addr(host)
        state = base / f"postfix-{host}"
        state.mkdir(mode=0o711)
        layout = local_layout(state, address)
        config = render_postfix(domains, options or MTAOptions(), layout)
        cert = local_ca.issue_server_cert(list(domains[0].mx_hosts), out_dir=state / "issued")
        postfix = LocalPostfix(state, layout, resolver=dns_stack.resolver.address)
        postfix.install(
            config,
            tls_chain_pem=cert.chain_file.read_bytes(),
            tls_key_pem=cert.key_file.read_bytes(),
            accounts=accounts,
        )
        started.append(postfix)
        options = options or MTAOptions()
        if options.mta_sts_fallback:
            # The DANE-first policy socketmap, as in the pod (without an MTA-STS resolver
            # behind it: the test zone publishes no MTA-STS policies).
            log = (state / "tlspolicy.log").open("wb")
            sidecars.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "mailward.sidecars.tlspolicy",
                        "--listen",
                        f"{address}:{TLS_POLICY_PORT}",
                        "--nameserver",
                        dns_stack.resolver.address,
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
            _wait_listening(address, TLS_POLICY_PORT)
        postfix.start()
        return RunningMTA(postfix, config, address, cert, tuple(domains))

    try:
        yield start
    finally:
        for postfix in started:
            postfix.stop()
        for sidecar in sidecars:
            sidecar.terminate()
            sidecar.wait(timeout=10)
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
