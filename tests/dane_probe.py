"""A DANE client probing an MX host once a second, as a validating sender would.

Each probe is Postfix's own `posttls-finger -l dane` (the TLS client of Postfix's SMTP client),
run in a private mount namespace whose /etc/resolv.conf names the test's validating resolver
(with `trust-ad`, or glibc drops the AD bit and DANE is never used). A probe counts as verified
only when posttls-finger says "Verified TLS connection established": an unknown key under a
secure TLSA RRset, a failed handshake or a missing AD bit all count as failures.
"""

from __future__ import annotations

import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

POSTTLS_FINGER = "/usr/sbin/posttls-finger"
VERIFIED = "Verified TLS connection established"


@dataclass(frozen=True)
class ProbeResult:
    at: float
    verified: bool
    summary: str


def probe_once(resolv_conf: Path, host: str, timeout: float = 5.0) -> ProbeResult:
    """`resolv_conf`'s folder also holds the (empty) main.cf posttls-finger reads."""
    script = 'mount --bind "$1" /etc/resolv.conf && shift && exec "$@"'
    command = [
        "unshare", "-m", "sh", "-c", script, "sh", str(resolv_conf),
        POSTTLS_FINGER, "-c", "-l", "dane", "-L", "summary", "-t", "3", "-T", "3", f"[{host}]",
    ]  # fmt: skip
    started = time.time()
    try:
        result = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={"MAIL_CONFIG": str(resolv_conf.parent), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
        )
        output = (result.stdout + result.stderr).strip()
    except subprocess.TimeoutExpired:
        output = "timed out"
    line = next((x for x in output.splitlines() if "TLS connection" in x), output[-300:])
    return ProbeResult(started, VERIFIED in output, line)


@dataclass
class DaneProbe:
    """Probes `host` every `interval` seconds in a thread until stopped (at most `limit`
    probes, so a test that forgets to stop it still ends)."""

    resolver: str
    host: str
    interval: float = 1.0
    limit: int = 1800
    results: list[ProbeResult] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _dir: tempfile.TemporaryDirectory[str] | None = None

    def start(self) -> DaneProbe:
        self._dir = tempfile.TemporaryDirectory(prefix="dane-probe-")
        resolv = Path(self._dir.name) / "resolv.conf"
        resolv.write_text(f"nameserver {self.resolver}\noptions trust-ad\n")
        (Path(self._dir.name) / "main.cf").write_text("")
        self._thread = threading.Thread(target=self._run, args=(resolv,), daemon=True)
        self._thread.start()
        return self

    def _run(self, resolv: Path) -> None:
        while not self._stop.is_set() and len(self.results) < self.limit:
            began = time.monotonic()
            result = probe_once(resolv, self.host)
            if not result.verified:
                # What the sender saw, so that a failure explains itself.
                result = replace(
                    result, summary=f"{result.summary} [{diagnose(self.resolver, self.host)}]"
                )
            self.results.append(result)
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - began)))

    def stop(self) -> list[ProbeResult]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=15)
        if self._dir is not None:
            self._dir.cleanup()
        return list(self.results)

    def failures(self) -> list[ProbeResult]:
        return [r for r in self.results if not r.verified]


def probe_once_verified(resolver: str, host: str) -> bool:
    """One probe, outside a DaneProbe (e.g. to wait until a record has reached the resolver)."""
    with tempfile.TemporaryDirectory(prefix="dane-probe-") as directory:
        resolv = Path(directory) / "resolv.conf"
        resolv.write_text(f"nameserver {resolver}\noptions trust-ad\n")
        (Path(directory) / "main.cf").write_text("")
        return probe_once(resolv, host).verified


def diagnose(resolver: str, host: str) -> str:
    """The TLSA RRset the resolver gives now (rcode, AD, digests) and the key the host presents."""
    import dns.flags
    import dns.message
    import dns.query
    import dns.rcode
    import dns.rdatatype

    from mailward.adapters.endpoint_keys import presented_key

    try:
        query = dns.message.make_query(f"_25._tcp.{host}.", "TLSA", want_dnssec=True)
        response = dns.query.tcp(query, resolver, timeout=2)
        tlsa = [r for r in response.answer if r.rdtype == dns.rdatatype.TLSA]
        records = sorted(str(r)[:22] for r in tlsa[0]) if tlsa else []
        ad = "AD" if response.flags & dns.flags.AD else "no AD"
        seen = f"TLSA {dns.rcode.to_text(response.rcode())} {ad} {records}"
        address_query = dns.message.make_query(f"{host}.", "A")
        answer = dns.query.tcp(address_query, resolver, timeout=2).answer
        address = str(answer[0][0]) if answer else ""
        key = presented_key(host, address).spki_sha256 if address else None
        return f"{seen}; presented {key[:16] if key else None}"
    except Exception as error:  # a diagnosis must never stop the probe
        return f"diagnosis failed: {error}"
