"""What the DKIM integration tests share: stand-ins for the cluster (the DKIM Secret, the dkim
part's clock), the signer as the pod's `dkim` container runs it, and dkimpy's verification with
keys fetched only through a validating resolver."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

import dkim
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype

from mailward.adapters.dkim_keys import DKIMKeyState
from mailward.render.dkim import (
    DKIM_MILTER_PORT,
    MILTER_CONF,
    MILTER_PROBE,
    DKIMSigning,
    milter_argv,
    render_milter_files,
)
from mailward.render.pods import NOBODY
from mailward_localstack.rootfs import Account, mta_root
from tests.fixtures_mta import RunningMTA

# --------------------------------------------------------------------------------------------
# Stand-ins for the cluster: the Secret, and the part's clock


class MemoryKeyStore:
    """The DKIM Secret (adapters/dkim_keys.py) without an API server: same state, in memory."""

    def __init__(self) -> None:
        self.state = DKIMKeyState()
        self.writes = 0

    async def read(self, namespace: str, name: str) -> DKIMKeyState:
        return self.state

    async def write(
        self, namespace: str, name: str, owner: dict[str, object], state: DKIMKeyState
    ) -> str:
        self.writes += 1
        self.state = replace(state, found=True, resource_version=str(self.writes))
        return str(self.writes)


@dataclass
class Clock:
    now: datetime = field(default_factory=lambda: datetime(2026, 12, 1, 12, 0, tzinfo=UTC))

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


# --------------------------------------------------------------------------------------------
# The signer, as the pod's `dkim` container runs it


class Signer:
    """dkimpy-milter from the MTA image, as nobody, with the rendered configuration."""

    def __init__(self, mta: RunningMTA) -> None:
        self.mta = mta
        self.dir = mta.postfix.state_dir / "dkim"
        self.dir.mkdir(mode=0o755, exist_ok=True)
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = self.dir / "milter.log"
        self.starts = 0

    def start(self, signing: DKIMSigning, private: dict[str, str]) -> None:
        """`private`: each key's private half by its Secret item (`SigningKey.secret_key`)."""
        self.stop()
        for key in signing.keys:
            path = self.dir / key.secret_key
            path.write_text(private[key.secret_key])
            path.chmod(0o644)  # the test's files; in the pod a Secret volume, 0444
        files = render_milter_files(signing, self.mta.address, str(self.dir), str(self.dir))
        for name, text in files.items():
            (self.dir / name).write_text(text)
            (self.dir / name).chmod(0o644)
        conf = self.dir / MILTER_CONF
        image = mta_root()
        command = image.command(
            milter_argv(str(conf)),
            binds=[self.mta.postfix.state_dir.resolve()],
            resolv_conf=self.mta.postfix.state_dir / "resolv.conf",
            user=Account(NOBODY, NOBODY),
        )
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        self.starts += 1
        probe = [
            "python3",
            "-c",
            MILTER_PROBE,
            self.mta.address,
            str(DKIM_MILTER_PORT),
            "2",
        ]
        deadline = time.monotonic() + 30
        while True:
            # The container's own liveness probe, from the image, against the running signer.
            done = subprocess.run(image.command(probe), capture_output=True)
            if done.returncode == 0:
                return
            assert self.process.poll() is None, f"the signer exited:\n{self.log()}"
            assert time.monotonic() < deadline, f"the signer never answered:\n{self.log()}"
            time.sleep(0.3)

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None
        # The port is free again before the next start binds it.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection((self.mta.address, DKIM_MILTER_PORT), timeout=0.5).close()
            except OSError:
                return
            time.sleep(0.2)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


# --------------------------------------------------------------------------------------------
# Fixtures


def validated_txt(resolver: str) -> Callable[..., bytes | None]:
    """dkimpy's `dnsfunc`: the TXT data as the validating resolver returns it, and nothing when
    the answer is not validated (no AD bit) or there is none."""

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes | None:
        query = dns.message.make_query(name.decode(), "TXT", want_dnssec=True)
        answer = dns.query.tcp(query, resolver, timeout=timeout)
        if answer.rcode() != dns.rcode.NOERROR or not answer.flags & dns.flags.AD:
            return None
        for rrset in answer.answer:
            if rrset.rdtype == dns.rdatatype.TXT:
                return b"".join(next(iter(rrset)).strings)
        return None

    return dnsfunc


def verify_all(message: bytes, resolver: str) -> list[tuple[str, str, bool]]:
    """(selector, algorithm, verified) for every DKIM-Signature of `message`."""
    count = sum(1 for line in message.split(b"\r\n") if line.lower().startswith(b"dkim-signature:"))
    results = []
    for index in range(count):
        checker = dkim.DKIM(message)
        try:
            ok = checker.verify(idx=index, dnsfunc=validated_txt(resolver))
        except dkim.DKIMException:
            ok = False
        fields = checker.signature_fields
        results.append((fields[b"s"].decode(), fields[b"a"].decode(), bool(ok)))
    return results
