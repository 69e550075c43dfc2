"""SMTP probes: the dialogue on port 25 (banner, EHLO, VRFY, a relay attempt) and the STARTTLS
command-injection test; the plaintext preamble that STARTTLS handshakes share.

Timeouts. A server may accept a connection and send its greeting much later: RFC 5321
§4.5.3.2.1 gives clients 5 minutes for the 220, because "many SMTP servers accept a TCP
connection but delay delivery of the 220 message" (a DNS lookup of the client, postscreen's
greet pause, load). Postfix looks up the client's name before it greets, and where its resolver
drops a query that costs glibc's retry interval, 5 or 10 s. So the first reply of a connection
(the greeting, or the ServerHello on an implicit-TLS port) gets FIRST_REPLY_TIMEOUT; later
replies, which no server delays, get TIMEOUT. A probe that still times out is tried once more
before it counts: a busy server must not turn into "does not support this".

All functions here are blocking; the engine runs them in threads.
"""

from __future__ import annotations

import contextlib
import secrets
import socket
import ssl
import warnings
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from mailward.compliance.observations import Endpoint, InjectionObservation, SMTPObservation

CONNECT_TIMEOUT = 10.0
FIRST_REPLY_TIMEOUT = 30.0
TIMEOUT = 10.0
PROBE_HELO = "compliance-probe.mailward.invalid"

P = ParamSpec("P")
T = TypeVar("T")


class ProbeError(RuntimeError):
    """The probe could not do what it set out to do (connection refused, protocol error)."""


def retry_on_timeout(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """`fn`, tried once more when it times out."""
    try:
        return fn(*args, **kwargs)
    except TimeoutError:
        return fn(*args, **kwargs)


def connect(address: str, port: int) -> socket.socket:
    """A TCP connection whose first reply may take FIRST_REPLY_TIMEOUT."""
    try:
        sock = socket.create_connection((address, port), timeout=CONNECT_TIMEOUT)
    except OSError as e:
        raise ProbeError(f"cannot connect to {address}:{port}: {e}") from e
    sock.settimeout(FIRST_REPLY_TIMEOUT)
    return sock


def reachable(ep: Endpoint, timeout: float = 2.0) -> bool:
    try:
        with socket.create_connection((ep.address, ep.port), timeout=timeout):
            return True
    except OSError:
        return False


class SMTPConnection:
    """A minimal SMTP client over a blocking socket that shows every reply as it came."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._buffer = b""

    @classmethod
    def open(cls, address: str, port: int) -> SMTPConnection:
        return cls(connect(address, port))

    def _line(self) -> bytes:
        while b"\n" not in self._buffer:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ProbeError("connection closed by the server")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.rstrip(b"\r")

    def reply(self) -> tuple[int, list[str]]:
        lines: list[str] = []
        while True:
            raw = self._line().decode("utf-8", "replace")
            if len(raw) < 3 or not raw[:3].isdigit():
                raise ProbeError(f"not an SMTP reply: {raw[:80]!r}")
            lines.append(raw[4:])
            if len(raw) < 4 or raw[3] != "-":
                return int(raw[:3]), lines

    def greeting(self) -> tuple[int, list[str]]:
        """The 220 (or whatever came first), then the shorter timeout for every later reply."""
        reply = self.reply()
        self.sock.settimeout(TIMEOUT)
        return reply

    def command(self, line: str) -> tuple[int, list[str]]:
        self.sock.sendall(line.encode() + b"\r\n")
        return self.reply()

    def pending(self) -> bytes:
        return self._buffer

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.sendall(b"QUIT\r\n")
        self.sock.close()


def starttls_preamble(ep: Endpoint, sock: socket.socket) -> None:
    """The plaintext part of a STARTTLS port, up to the point where TLS starts."""
    if not ep.starttls:
        return
    conn = SMTPConnection(sock)
    code, lines = conn.greeting()
    if code != 220:
        raise ProbeError(f"greeting {code} {' '.join(lines)}")
    code, lines = conn.command(f"EHLO {PROBE_HELO}")
    if not any(k.upper().startswith("STARTTLS") for k in lines[1:]):
        raise ProbeError("STARTTLS not offered")
    code, lines = conn.command("STARTTLS")
    if code != 220:
        raise ProbeError(f"STARTTLS answered {code} {' '.join(lines)}")


def smtp_dialogue(address: str, port: int, domain: str) -> SMTPObservation:
    """Banner, EHLO, VRFY of a known and a random address, and a relay attempt (never DATA).

    Every address used is on the domain under test: the "foreign" recipient lies in a
    subdomain that no MX serves, so no third party ever receives anything, and the transaction is
    reset before DATA.
    """
    return retry_on_timeout(_dialogue, address, port, domain)


def _dialogue(address: str, port: int, domain: str) -> SMTPObservation:
    obs = SMTPObservation()
    conn = SMTPConnection.open(address, port)
    try:
        code, lines = conn.greeting()
        obs.banner = f"{code} {' / '.join(lines)}"
        if code != 220:
            raise ProbeError(f"greeting was {obs.banner!r}")
        code, lines = conn.command(f"EHLO {PROBE_HELO}")
        if code != 250:
            raise ProbeError(f"EHLO answered {code} {' '.join(lines)}")
        obs.ehlo = lines[1:]
        obs.starttls_offered = any(k.upper().split()[0] == "STARTTLS" for k in lines[1:] if k)
        random_local = "mailward-probe-" + secrets.token_hex(6)
        for address_ in (f"postmaster@{domain}", f"{random_local}@{domain}"):
            code, lines = conn.command(f"VRFY <{address_}>")
            obs.vrfy.append((address_, f"{code} {' '.join(lines)}"))
        conn.command("RSET")
        code, lines = conn.command(f"MAIL FROM:<mailward-probe@{domain}>")
        if code == 250:
            obs.relay_recipient = f"mailward-relay-probe@relay-probe.{domain}"
            code, lines = conn.command(f"RCPT TO:<{obs.relay_recipient}>")
            obs.relay_reply = f"{code} {' '.join(lines)}"
            obs.relay_accepted = code in (250, 251)
        else:
            obs.relay_reply = f"MAIL FROM refused: {code} {' '.join(lines)}"
        conn.command("RSET")
    finally:
        conn.close()
    return obs


def _lax_context() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_ciphers("ALL:COMPLEMENTOFALL:@SECLEVEL=0")
    with warnings.catch_warnings():
        # Offering TLS 1.0/1.1 is deprecated for clients; the injection test takes any version.
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = ssl.TLSVersion.TLSv1
    return ctx


def starttls_injection(ep: Endpoint) -> InjectionObservation:
    """Send `STARTTLS\\r\\nNOOP\\r\\n` in one segment; a reply to NOOP after TLS is the bug."""
    try:
        return retry_on_timeout(_injection, ep)
    except (ssl.SSLError, ConnectionError, TimeoutError) as e:
        return InjectionObservation(detail=f"TLS after STARTTLS failed: {e}")


def _injection(ep: Endpoint) -> InjectionObservation:
    obs = InjectionObservation()
    conn = SMTPConnection.open(ep.address, ep.port)
    try:
        conn.greeting()
        conn.command(f"EHLO {PROBE_HELO}")
        conn.sock.sendall(b"STARTTLS\r\nNOOP\r\n")
        code, lines = conn.reply()
        if code != 220:
            obs.detail = f"STARTTLS answered {code} {' '.join(lines)}"
            return obs
        if conn.pending():
            obs.vulnerable = True
            obs.detail = "a plaintext reply to NOOP arrived before TLS started"
            return obs
        tls = _lax_context().wrap_socket(conn.sock, server_hostname=ep.host)
        tls.settimeout(1.5)
        try:
            early = tls.recv(4096)
        except (TimeoutError, ssl.SSLError, OSError):
            early = b""
        if early:
            obs.vulnerable = True
            obs.detail = f"after TLS the server answered the injected NOOP: {early[:60]!r}"
        else:
            obs.vulnerable = False
            obs.detail = "no reply to the injected NOOP after TLS (pre-TLS input discarded)"
        tls.settimeout(TIMEOUT)
        inner = SMTPConnection(tls)
        code, lines = inner.command(f"EHLO {PROBE_HELO}")
        obs.readvertised = any(k.upper().startswith("STARTTLS") for k in lines[1:])
        if obs.readvertised:
            obs.detail += "; STARTTLS advertised again inside TLS"
        with contextlib.suppress(OSError):
            tls.sendall(b"QUIT\r\n")
        tls.close()
    finally:
        with contextlib.suppress(OSError):
            conn.sock.close()
    return obs
