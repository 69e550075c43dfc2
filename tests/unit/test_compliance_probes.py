"""SMTP probes against a fake server on loopback that greets late, or not at all.

A server may accept a connection and send its 220 much later (RFC 5321 §4.5.3.2.1: clients wait
5 minutes): Postfix looks up the client's name first, and where its resolver drops a query that
costs 5 or 10 s. The lab's MX hosts did exactly that under load, and the SMTP dialogue, which
waited 10 s for every reply and tried once, ended in `error` for some domains at concurrency 16.
The timeouts here are shrunk so that the tests take a second.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import threading
import time
from collections.abc import Iterator

import pytest

from mailward.compliance import gather, smtpprobe, tlsprobe
from mailward.compliance.observations import (
    MAX_ADDRESSES_PER_HOST,
    Answer,
    DomainObservations,
    Endpoint,
    InjectionObservation,
    SMTPObservation,
    TLSObservation,
)


class LateServer:
    """Greets each connection after `delays[n]` seconds (the last one repeats); None: never."""

    def __init__(self, delays: list[float | None]) -> None:
        self.delays = delays
        self.connections = 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        self.sock.settimeout(0.1)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            delay = self.delays[min(self.connections, len(self.delays) - 1)]
            self.connections += 1
            threading.Thread(target=self._session, args=(conn, delay), daemon=True).start()

    def _session(self, conn: socket.socket, delay: float | None) -> None:
        with conn:
            if delay is None:
                self._stop.wait(5)
                return
            time.sleep(delay)
            conn.sendall(b"220 late.test ESMTP\r\n")
            file = conn.makefile("rb")
            for raw in file:
                verb = raw.decode().strip().split(" ")[0].upper()
                if verb == "QUIT":
                    conn.sendall(b"221 bye\r\n")
                    return
                reply = {
                    "EHLO": b"250-late.test\r\n250 STARTTLS\r\n",
                    "VRFY": b"252 2.0.0 cannot verify\r\n",
                    "RCPT": b"554 5.7.1 relay access denied\r\n",
                }.get(verb, b"250 ok\r\n")
                conn.sendall(reply)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()


@pytest.fixture
def short_timeouts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(smtpprobe, "FIRST_REPLY_TIMEOUT", 1.0)
    monkeypatch.setattr(smtpprobe, "TIMEOUT", 0.3)


@pytest.fixture
def late() -> Iterator[list[LateServer]]:
    servers: list[LateServer] = []
    yield servers
    for server in servers:
        server.close()


@pytest.mark.usefixtures("short_timeouts")
def test_a_greeting_later_than_the_reply_timeout_is_waited_for(late: list[LateServer]) -> None:
    server = LateServer([0.6])  # beyond TIMEOUT (0.3), within FIRST_REPLY_TIMEOUT (1.0)
    late.append(server)
    obs = smtpprobe.smtp_dialogue("127.0.0.1", server.port, "d.test")
    assert obs.banner == "220 late.test ESMTP"
    assert obs.starttls_offered
    assert obs.relay_accepted is False
    assert [reply for _, reply in obs.vrfy] == ["252 2.0.0 cannot verify"] * 2
    assert server.connections == 1


@pytest.mark.usefixtures("short_timeouts")
def test_a_dialogue_that_times_out_is_tried_once_more(late: list[LateServer]) -> None:
    server = LateServer([None, 0.0])
    late.append(server)
    obs = smtpprobe.smtp_dialogue("127.0.0.1", server.port, "d.test")
    assert obs.banner.startswith("220")
    assert server.connections == 2


@pytest.mark.usefixtures("short_timeouts")
def test_a_server_that_never_greets_times_out_after_two_tries(late: list[LateServer]) -> None:
    server = LateServer([None])
    late.append(server)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        smtpprobe.smtp_dialogue("127.0.0.1", server.port, "d.test")
    assert server.connections == 2
    assert time.monotonic() - started < 4


def test_a_refused_connection_is_a_probe_error_at_once() -> None:
    with socket.create_server(("127.0.0.1", 0)) as sock:
        port = sock.getsockname()[1]
    with pytest.raises(smtpprobe.ProbeError, match="cannot connect"):
        smtpprobe.smtp_dialogue("127.0.0.1", port, "d.test")


def test_openssl_is_given_an_ipv6_address_in_brackets(monkeypatch: pytest.MonkeyPatch) -> None:
    # `-connect ::1:25` is no address for openssl: every s_client probe of an AAAA failed.
    seen: list[list[str]] = []

    def run(argv: list[str], **_: object) -> subprocess.CompletedProcess[str]:
        seen.append(argv)
        return subprocess.CompletedProcess(argv, 1, "", "")

    monkeypatch.setattr(subprocess, "run", run)  # as tlsprobe calls it
    for address, expected in (("::1", "[::1]:25"), ("127.0.0.1", "127.0.0.1:25")):
        tlsprobe._s_client(Endpoint("mx.example.test", address, 25), [])
        assert seen[-1][seen[-1].index("-connect") + 1] == expected
    assert Endpoint("mx.example.test", "::1", 25).subject == "mx.example.test:25 [::1]"


class _Zone:
    """A resolver that knows one MX host and its addresses; every other name is NXDOMAIN."""

    def __init__(self, a: tuple[str, ...], aaaa: tuple[str, ...]) -> None:
        self.records = {("d.test", "MX"): ("10 mx.d.test.",), ("mx.d.test", "A"): a,
                        ("mx.d.test", "AAAA"): aaaa}  # fmt: skip

    async def query(self, name: str, rdtype: str) -> Answer:
        records = self.records.get((name, rdtype))
        if records is None:
            return Answer(name, rdtype, "NXDOMAIN", True)
        return Answer(name, rdtype, "NOERROR", True, records, 300)


def _gather(monkeypatch: pytest.MonkeyPatch, zone: _Zone) -> tuple[DomainObservations, list[str]]:
    """Gather `d.test` with every network probe replaced: nothing is sent anywhere."""
    dialogues: list[str] = []

    def dialogue(address: str, port: int, domain: str) -> SMTPObservation:
        dialogues.append(address)
        return SMTPObservation(banner="220 mx.d.test", starttls_offered=True)

    monkeypatch.setattr(gather, "smtp_dialogue", dialogue)
    monkeypatch.setattr(gather, "starttls_injection", lambda ep: InjectionObservation(False, False))
    monkeypatch.setattr(gather, "observe_tls", lambda ep, cafile: TLSObservation(ep))
    monkeypatch.setattr(gather, "reachable", lambda ep: False)
    obs = asyncio.run(gather.Gatherer(zone).gather("d.test"))
    return obs, dialogues


def test_every_a_and_aaaa_address_of_an_mx_is_probed(monkeypatch: pytest.MonkeyPatch) -> None:
    obs, dialogues = _gather(monkeypatch, _Zone(("127.98.0.201", "127.98.0.202"), ("::1",)))
    (mx,) = obs.mx
    assert [p.address for p in mx.probes] == ["127.98.0.201", "127.98.0.202", "::1"]
    assert sorted(dialogues) == sorted(["127.98.0.201", "127.98.0.202", "::1"])
    assert all(p.injection is not None for p in mx.probes)
    assert [t.endpoint.address for t in obs.tls] == ["127.98.0.201", "127.98.0.202", "::1"]
    # Client ports at the first address only.
    assert {p.endpoint.address for p in obs.client_ports} == {"127.98.0.201"}


def test_the_addresses_of_a_host_are_probed_up_to_a_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    a = tuple(f"127.98.0.{i}" for i in range(201, 210))
    obs, dialogues = _gather(monkeypatch, _Zone(a, ("::1",)))
    (mx,) = obs.mx
    assert len(mx.probes) == len(dialogues) == MAX_ADDRESSES_PER_HOST == 8
    assert mx.unprobed == ["127.98.0.209", "::1"]


def test_an_ipv6_only_mx_is_probed_at_its_aaaa(monkeypatch: pytest.MonkeyPatch) -> None:
    obs, dialogues = _gather(monkeypatch, _Zone((), ("::1",)))
    (mx,) = obs.mx
    assert [p.address for p in mx.probes] == dialogues == ["::1"]
    assert {p.endpoint.address for p in obs.client_ports} == {"::1"}
