"""Pytest plugin: the TLSRPT collector as a real process, its certificate, and PostgreSQL.

PostgreSQL comes from Debian's `postgresql` package: `initdb` into a temporary directory and
`pg_ctl` on a loopback address of the test net, run as the `postgres` user when the tests run as
root (PostgreSQL refuses to run as root). Each test gets a fresh database (SQLite file or
PostgreSQL database), so tests do not see each other's reports.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from mailward_localstack._process import free_port, http_ok
from mailward_localstack.controlplane import wait_established
from mailward_localstack.pki import IssuedCert, LocalCA
from tests.net import addr

DOMAIN = "example.test"
MAILBOX_HOST = f"tlsrpt.{DOMAIN}"
MAILBOX = f"tlsrpt@{MAILBOX_HOST}"
COLLECTOR_HOST = 26
PG_HOST = 27


@dataclass
class CollectorProcess:
    config_file: Path
    log_file: Path
    config: dict[str, Any]
    process: subprocess.Popen[bytes] | None = None
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def host(self) -> str:
        return str(self.config["smtp"]["address"])

    @property
    def smtp_port(self) -> int:
        return int(self.config["smtp"]["port"])

    @property
    def https_url(self) -> str:
        return f"https://{MAILBOX_HOST}:{self.config['https']['port']}/v1/tlsrpt"

    @property
    def https_port(self) -> int:
        return int(self.config["https"]["port"])

    @property
    def api_url(self) -> str:
        return f"http://{self.host}:{self.config['api']['port']}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> None:
        self.config_file.write_text(json.dumps(self.config, indent=2))
        with self.log_file.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "mailward",
                    "collect-reports",
                    "--config",
                    str(self.config_file),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **self.extra_env},
            )
        deadline = time.monotonic() + 30
        while not http_ok(f"{self.api_url}/healthz"):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the collector did not start:\n{self.log()}")
            time.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as in a crash or an OOM kill."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def peak_rss_bytes(self) -> int:
        """VmHWM: the peak resident set size of the collector process so far."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmHWM in /proc status")

    def log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""


@pytest.fixture(scope="session")
def tlsrpt_cert(local_ca: LocalCA, tmp_path_factory: pytest.TempPathFactory) -> IssuedCert:
    return local_ca.issue_server_cert(
        [MAILBOX_HOST, f"mx1.{DOMAIN}"], out_dir=tmp_path_factory.mktemp("tlsrpt-cert")
    )


@dataclass
class Postgres:
    host: str
    port: int
    data_dir: Path
    run_as: list[str]

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/{database}"

    def create_database(self) -> str:
        import psycopg

        name = f"tlsrpt_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.dsn(), autocommit=True) as connection:
            connection.execute(f"CREATE DATABASE {name}")
        return self.dsn(name)


def _pg_bin(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    if not candidates:
        pytest.skip("PostgreSQL is not installed (scripts/install-system-deps.sh)")
    return str(candidates[-1])


@pytest.fixture(scope="session")
def tlsrpt_postgres() -> Iterator[Postgres]:
    # Outside pytest's 0700 temp tree: the postgres user must be able to reach its directory.
    base = Path(tempfile.mkdtemp(prefix="mailward-pg-"))
    data_dir, socket_dir = base / "data", base / "run"
    socket_dir.mkdir()
    run_as: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(base, "postgres", "postgres")
        shutil.chown(socket_dir, "postgres", "postgres")
        run_as = ["runuser", "-u", "postgres", "--"]
    host = addr(PG_HOST)
    port = free_port(host)
    subprocess.run(
        [
            *run_as,
            _pg_bin("initdb"),
            "-D",
            str(data_dir),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-instructions",
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    options = f"-h {host} -p {port} -k {socket_dir} -c fsync=on -c max_connections=50"
    subprocess.run(
        [
            *run_as,
            _pg_bin("pg_ctl"),
            "-D",
            str(data_dir),
            "-o",
            options,
            "-l",
            str(base / "postgres.log"),
            "-w",
            "-t",
            "60",
            "start",
        ],
        check=True,
        capture_output=True,
        timeout=90,
    )
    try:
        yield Postgres(host, port, data_dir, run_as)
    finally:
        subprocess.run(
            [*run_as, _pg_bin("pg_ctl"), "-D", str(data_dir), "-m", "fast", "-w", "stop"],
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def tlsrpt_database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'reports.db'}"
    postgres: Postgres = request.getfixturevalue("tlsrpt_postgres")
    return postgres.create_database()


CollectorFactory = Callable[..., CollectorProcess]


@pytest.fixture
def tlsrpt_collector_factory(tmp_path: Path, tlsrpt_cert: IssuedCert) -> Iterator[CollectorFactory]:
    started: list[CollectorProcess] = []

    def make(database: str, *, start: bool = True, **limits: Any) -> CollectorProcess:
        host = addr(COLLECTOR_HOST)
        config = {
            "hostname": MAILBOX_HOST,
            "domains": [DOMAIN],
            "mailboxDomains": [MAILBOX_HOST],
            "smtp": {"address": host, "port": free_port(host)},
            "https": {"address": host, "port": free_port(host)},
            "api": {"address": host, "port": free_port(host)},
            "certificates": [
                {"certFile": str(tlsrpt_cert.chain_file), "keyFile": str(tlsrpt_cert.key_file)}
            ],
            "database": database,
            "limits": limits,
        }
        directory = tmp_path / f"collector-{len(started)}"
        directory.mkdir()
        collector = CollectorProcess(
            directory / "collector.json", directory / "collector.log", config
        )
        started.append(collector)
        if start:
            collector.start()
        return collector

    try:
        yield make
    finally:
        for collector in started:
            collector.stop()


@dataclass
class TLSRptCluster:
    """A control plane of its own with an operator that asks the test's collector: the shared
    operator fixture runs cluster-wide without a collector, and two operators on one cluster
    would fight over the same MailDomains."""

    kube: Any
    kubeconfig: Path
    log_file: Path


@pytest.fixture(scope="session")
def tlsrpt_control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from mailward_localstack._process import start_watchdog
    from mailward_localstack.controlplane import ControlPlane

    plane = ControlPlane(tmp_path_factory.mktemp("tlsrpt-controlplane"), host=addr(30))
    watchdog = start_watchdog(plane.state_dir)
    try:
        plane.start()
        yield plane
    finally:
        plane.stop()
        watchdog.terminate()
        watchdog.wait()


@pytest.fixture
def tlsrpt_operator(
    tlsrpt_control_plane: Any, tmp_path: Path
) -> Iterator[Callable[[str], TLSRptCluster]]:
    from kubernetes import config as kube_config

    from mailward.api.v1alpha1 import API_GROUP, PLURAL
    from tests.fixtures_operator import REPO, Kube

    api = kube_config.new_client_from_config(config_file=str(tlsrpt_control_plane.kubeconfig))
    kube = Kube(tlsrpt_control_plane.kubeconfig, api)
    kube.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    wait_established(kube.kubeconfig, f"{PLURAL}.{API_GROUP}")
    processes: list[subprocess.Popen[bytes]] = []

    def start(collector_api: str) -> TLSRptCluster:
        log_file = tmp_path / "operator.log"
        liveness = f"http://{addr(30)}:{free_port(addr(30))}/healthz"
        env = {
            **os.environ,
            "KUBECONFIG": str(tlsrpt_control_plane.kubeconfig),
            "MAILWARD_TLSRPT_COLLECTOR_URL": collector_api,
            "MAILWARD_TLSRPT_DEPLOY": "true",
            "MAILWARD_TLSRPT_RETRY_SECONDS": "2",
            "MAILWARD_TLS_SECRET_RETRY_SECONDS": "2",
            "MAILWARD_RESYNC_SECONDS": "3",
        }
        with log_file.open("wb") as log:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "mailward",
                    "run",
                    "--all-namespaces",
                    "--liveness",
                    liveness,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        processes.append(process)
        kube.wait_for(
            "the operator", lambda: process.poll() is not None or http_ok(liveness), timeout=60
        )
        assert process.poll() is None, log_file.read_text()
        return TLSRptCluster(kube, tlsrpt_control_plane.kubeconfig, log_file)

    try:
        yield start
    finally:
        for process in processes:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        api.close()
