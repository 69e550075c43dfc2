"""SMTP and TLS probes: what a server offers, seen from outside.

The TLS handshakes are made by OpenSSL 3 through Python's `ssl` module (one handshake per
question, on a fresh connection, exactly as a sending MTA would make it), plus `openssl
s_client` where `ssl` has no knob (the key-exchange groups a client offers). Two things the
OpenSSL 3 client cannot ask at all, TLS compression and RFC 5746 renegotiation support, are read
from the ServerHello answering a hand-built ClientHello.

Suites are enumerated the way sslyze and testssl.sh do it: offer everything still unknown, note
what the server picked, remove it, repeat. With a server that enforces its own order this yields
the accepted suites in the server's order; one extra handshake with the top two swapped tells
whether the server enforces its order at all.

All functions here are blocking and bounded by socket timeouts; the engine runs them in threads.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import socket
import ssl
import struct
import subprocess
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from mailward.adapters.wire import recv_exact

TIMEOUT = 10.0
_DER: int = getattr(ssl, "_ssl").ENCODING_DER  # noqa: B009 (private module, no stub)
PROBE_HELO = "compliance-probe.mailward.invalid"

# Port -> whether TLS starts with a STARTTLS-like command and in which protocol.
IMPLICIT_TLS_PORTS = {465: "smtps", 993: "imaps", 995: "pop3s"}
STARTTLS_PORTS = {25: "smtp", 587: "smtp"}


class ProbeError(RuntimeError):
    """The probe could not do what it set out to do (connection refused, protocol error)."""


@dataclass(frozen=True)
class Endpoint:
    host: str  # the name the certificate must carry (SNI)
    address: str
    port: int

    @property
    def starttls(self) -> bool:
        return self.port in STARTTLS_PORTS

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


# -- SMTP --------------------------------------------------------------------------------------


class SMTPConnection:
    """A minimal SMTP client over a blocking socket that shows every reply as it came."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._buffer = b""

    @classmethod
    def open(cls, address: str, port: int, timeout: float = TIMEOUT) -> SMTPConnection:
        try:
            sock = socket.create_connection((address, port), timeout=timeout)
        except OSError as e:
            raise ProbeError(f"cannot connect to {address}:{port}: {e}") from e
        return cls(sock)

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

    def command(self, line: str) -> tuple[int, list[str]]:
        self.sock.sendall(line.encode() + b"\r\n")
        return self.reply()

    def pending(self) -> bytes:
        return self._buffer

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.sendall(b"QUIT\r\n")
        self.sock.close()


@dataclass
class SMTPObservation:
    banner: str = ""
    ehlo: list[str] = field(default_factory=list)
    starttls_offered: bool = False
    vrfy: dict[str, str] = field(default_factory=dict)  # address -> "code text"
    relay_reply: str = ""
    relay_accepted: bool | None = None
    relay_recipient: str = ""


def smtp_dialogue(address: str, port: int, domain: str) -> SMTPObservation:
    """Banner, EHLO, VRFY of a known and a random address, and a relay attempt (never DATA).

    Every address used is on the domain under test: the "foreign" recipient lies in a
    subdomain that no MX serves, so no third party ever receives anything, and the transaction is
    reset before DATA.
    """
    obs = SMTPObservation()
    conn = SMTPConnection.open(address, port)
    try:
        code, lines = conn.reply()
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
            obs.vrfy[address_] = f"{code} {' '.join(lines)}"
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


# -- TLS handshakes ------------------------------------------------------------------------------


def _client_context(
    *,
    version: ssl.TLSVersion | None = None,
    ciphers: str | None = None,
    cafile: str | None = None,
) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if cafile:
        ctx.load_verify_locations(cafile)
        ctx.check_hostname = True
        ctx.verify_mode = ssl.CERT_REQUIRED
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    # Level 0: the probe must be able to *offer* what a compliant server has to refuse.
    ctx.set_ciphers((ciphers or "ALL:COMPLEMENTOFALL") + ":@SECLEVEL=0")
    with warnings.catch_warnings():
        # Offering TLS 1.0/1.1 is deprecated for clients; a probe has to offer them.
        warnings.simplefilter("ignore", DeprecationWarning)
        if version is not None:
            ctx.minimum_version = version
            ctx.maximum_version = version
        else:
            ctx.minimum_version = ssl.TLSVersion.TLSv1
    return ctx


def _pre_tls(ep: Endpoint, sock: socket.socket) -> None:
    """The plaintext part of a STARTTLS port, up to the point where TLS starts."""
    if not ep.starttls:
        return
    conn = SMTPConnection(sock)
    code, lines = conn.reply()
    if code != 220:
        raise ProbeError(f"greeting {code} {' '.join(lines)}")
    code, lines = conn.command(f"EHLO {PROBE_HELO}")
    if not any(k.upper().startswith("STARTTLS") for k in lines[1:]):
        raise ProbeError("STARTTLS not offered")
    code, lines = conn.command("STARTTLS")
    if code != 220:
        raise ProbeError(f"STARTTLS answered {code} {' '.join(lines)}")


@dataclass(frozen=True)
class Handshake:
    version: str
    cipher: str
    chain: tuple[bytes, ...]  # DER, as presented (leaf first)


@contextlib.contextmanager
def _tls(ep: Endpoint, ctx: ssl.SSLContext) -> Iterator[ssl.SSLSocket]:
    try:
        sock = socket.create_connection((ep.address, ep.port), timeout=TIMEOUT)
    except OSError as e:
        raise ProbeError(f"cannot connect to {ep.address}:{ep.port}: {e}") from e
    try:
        _pre_tls(ep, sock)
        tls = ctx.wrap_socket(sock, server_hostname=ep.host)
    except BaseException:
        sock.close()
        raise
    try:
        yield tls
    finally:
        tls.close()


def handshake(ep: Endpoint, ctx: ssl.SSLContext) -> Handshake:
    """One handshake; raises ssl.SSLError (refused) or ProbeError (could not get there)."""
    with _tls(ep, ctx) as tls:
        # Python 3.13 makes this public (SSLSocket.get_unverified_chain); 3.11 has it on _sslobj.
        sslobj: Any = getattr(tls, "_sslobj", None)
        chain_obj = sslobj.get_unverified_chain() if sslobj is not None else None
        chain = tuple(c.public_bytes(_DER) for c in chain_obj or [])
        cipher = tls.cipher()
        return Handshake(str(tls.version()), cipher[0] if cipher else "", chain)


def try_handshake(ep: Endpoint, ctx: ssl.SSLContext) -> Handshake | None:
    """A handshake, or None when the server refused it (alert, reset, closed).

    A timeout is tried once more before it counts as a refusal: a busy server (a new process
    per connection) must not turn into "does not support this".
    """
    for attempt in range(2):
        try:
            return handshake(ep, ctx)
        except TimeoutError:
            if attempt:
                return None
        except (ssl.SSLError, ConnectionError):
            return None
    return None


with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    VERSIONS = {
        "TLSv1": ssl.TLSVersion.TLSv1,
        "TLSv1.1": ssl.TLSVersion.TLSv1_1,
        "TLSv1.2": ssl.TLSVersion.TLSv1_2,
        "TLSv1.3": ssl.TLSVersion.TLSv1_3,
    }


def tls12_suites() -> list[str]:
    """Every TLS <= 1.2 suite this OpenSSL can offer (at security level 0)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.set_ciphers("ALL:COMPLEMENTOFALL:@SECLEVEL=0")
    return [c["name"] for c in ctx.get_ciphers() if c["protocol"] != "TLSv1.3"]


@dataclass
class TLSObservation:
    endpoint: Endpoint
    reachable: bool = True
    error: str = ""
    versions: dict[str, bool] = field(default_factory=dict)
    suites: list[str] = field(default_factory=list)  # TLS 1.2, in the order the server chose them
    server_order: bool | None = None
    groups: dict[str, bool] = field(default_factory=dict)
    tls13_suites: list[str] = field(default_factory=list)
    compression: int | None = None
    secure_renegotiation: bool | None = None
    hello_error: str = ""
    negotiated: Handshake | None = None  # default handshake: best version, server's choice
    pkix_error: str | None = None  # None: chain and name verified against the CA file
    pkix_checked: bool = False


def enumerate_suites(ep: Endpoint, limit: int = 40) -> tuple[list[str], bool | None]:
    remaining = tls12_suites()
    accepted: list[str] = []
    for _ in range(limit):
        if not remaining:
            break
        ctx = _client_context(version=ssl.TLSVersion.TLSv1_2, ciphers=":".join(remaining))
        hs = try_handshake(ep, ctx)
        if hs is None or hs.cipher not in remaining:
            break
        accepted.append(hs.cipher)
        remaining.remove(hs.cipher)
    order: bool | None = None
    if len(accepted) >= 2:
        swapped = f"{accepted[1]}:{accepted[0]}"
        hs = try_handshake(ep, _client_context(version=ssl.TLSVersion.TLSv1_2, ciphers=swapped))
        order = hs is not None and hs.cipher == accepted[0]
    return accepted, order


_OPENSSL_CURVES = {
    "secp256r1": "prime256v1",
    "secp384r1": "secp384r1",
    "secp521r1": "secp521r1",
    "brainpoolP256r1": "brainpoolP256r1",
    "brainpoolP384r1": "brainpoolP384r1",
}


def _s_client(ep: Endpoint, options: list[str]) -> str:
    argv = ["openssl", "s_client", "-connect", f"{ep.address}:{ep.port}", "-servername", ep.host,
            "-brief", *options]  # fmt: skip
    if ep.starttls:
        argv += ["-starttls", "smtp", "-name", PROBE_HELO]
    try:
        out = subprocess.run(
            argv,
            input="",
            capture_output=True,
            text=True,
            timeout=TIMEOUT * 2,
            check=False,
            env={**os.environ, "OPENSSL_CONF": "/dev/null"},
        )
    except subprocess.TimeoutExpired:
        raise ProbeError(f"openssl s_client timed out on {ep}") from None
    return out.stdout + out.stderr


def probe_tls13_suites(ep: Endpoint, suites: tuple[str, ...]) -> list[str]:
    """The TLS 1.3 suites the server accepts, each offered alone (`ssl` cannot restrict them)."""
    accepted = []
    for suite in suites:
        text = _s_client(ep, ["-tls1_3", "-ciphersuites", suite])
        match = re.search(r"Ciphersuite: (\S+)", text)
        if match and match.group(1) == suite:
            accepted.append(suite)
    return accepted


def probe_groups(ep: Endpoint, groups: tuple[str, ...], cert_curve: str | None) -> dict[str, bool]:
    """Which of `groups` the server picks for ECDHE when offered first (TLS 1.2).

    In TLS 1.2 the client's group list also limits the curves of an ECDSA certificate (RFC 8422
    §5.1), so the certificate's own curve is offered second; a server that honours its own order
    and ranks that curve above `group` is reported as not accepting `group`.
    """
    result: dict[str, bool] = {}
    for group in groups:
        offer = group
        curve = _OPENSSL_CURVES.get(cert_curve or "")
        if curve and curve != group:
            offer = f"{group}:{curve}"
        text = _s_client(ep, ["-tls1_2", "-groups", offer, "-cipher", "ECDHE:@SECLEVEL=0"])
        match = re.search(r"(?:Server Temp Key|Peer Temp Key): ECDH, ([\w-]+)", text)
        result[group] = bool(match and match.group(1).lower() == group.lower())
    return result


# -- a hand-built ClientHello, for what OpenSSL 3 will not offer ----------------------------------

_HELLO_SUITES = [
    0xC02B, 0xC02C, 0xC02F, 0xC030, 0xC023, 0xC024, 0xC027, 0xC028, 0xC009, 0xC00A, 0xC013,
    0xC014, 0x009E, 0x009F, 0x0067, 0x006B, 0x009C, 0x009D, 0x003C, 0x003D, 0x002F, 0x0035,
    0xCCA8, 0xCCA9, 0xC0AC, 0xC0AD,
]  # fmt: skip


def _ext(kind: int, data: bytes) -> bytes:
    return struct.pack("!HH", kind, len(data)) + data


def client_hello(server_name: str) -> bytes:
    """A TLS 1.2 ClientHello offering DEFLATE compression and RFC 5746 renegotiation_info."""
    name = server_name.encode()
    sni = struct.pack("!HBH", len(name) + 3, 0, len(name)) + name
    groups = struct.pack("!H", 14) + struct.pack("!7H", 23, 24, 25, 26, 27, 28, 29)
    sigalgs = [0x0403, 0x0503, 0x0603, 0x0804, 0x0805, 0x0806, 0x0401, 0x0501, 0x0601, 0x0201]
    sig = struct.pack("!H", 2 * len(sigalgs)) + struct.pack(f"!{len(sigalgs)}H", *sigalgs)
    extensions = (
        _ext(0x0000, sni)
        + _ext(0x000A, groups)
        + _ext(0x000B, b"\x01\x00")
        + _ext(0x000D, sig)
        + _ext(0xFF01, b"\x00")
    )
    suites = struct.pack(f"!{len(_HELLO_SUITES)}H", *_HELLO_SUITES)
    body = (
        b"\x03\x03"
        + secrets.token_bytes(32)
        + b"\x00"
        + struct.pack("!H", len(suites))
        + suites
        + b"\x02\x01\x00"  # compression methods: DEFLATE, null
        + struct.pack("!H", len(extensions))
        + extensions
    )
    handshake_msg = b"\x01" + struct.pack("!I", len(body))[1:] + body
    return b"\x16\x03\x01" + struct.pack("!H", len(handshake_msg)) + handshake_msg


def hello_probe(ep: Endpoint) -> tuple[int | None, bool | None, str]:
    """(compression method chosen, renegotiation_info echoed, error) from a raw ServerHello."""
    try:
        sock = socket.create_connection((ep.address, ep.port), timeout=TIMEOUT)
    except OSError as e:
        raise ProbeError(f"cannot connect to {ep}: {e}") from e
    try:
        _pre_tls(ep, sock)
        sock.sendall(client_hello(ep.host))
        buffer = b""
        while len(buffer) < 4:
            header = recv_exact(sock, 5)
            kind, _version, length = struct.unpack("!BHH", header)
            payload = recv_exact(sock, length)
            if kind == 0x15:
                return None, None, f"alert {payload.hex()}"
            if kind != 0x16:
                return None, None, f"unexpected record type {kind}"
            buffer += payload
        if buffer[0] != 0x02:
            return None, None, f"unexpected handshake type {buffer[0]}"
        length = int.from_bytes(buffer[1:4], "big")
        while len(buffer) < 4 + length:
            header = recv_exact(sock, 5)
            buffer += recv_exact(sock, struct.unpack("!BHH", header)[2])
        hello = buffer[4 : 4 + length]
        pos = 2 + 32
        pos += 1 + hello[pos]
        pos += 2  # cipher suite
        compression = hello[pos]
        pos += 1
        extensions: set[int] = set()
        if pos + 2 <= len(hello):
            end = pos + 2 + int.from_bytes(hello[pos : pos + 2], "big")
            pos += 2
            while pos + 4 <= end:
                kind, size = struct.unpack("!HH", hello[pos : pos + 4])
                extensions.add(kind)
                pos += 4 + size
        return compression, 0xFF01 in extensions, ""
    except (ConnectionError, TimeoutError, OSError) as e:
        return None, None, f"no ServerHello: {e}"
    finally:
        sock.close()


def reachable(ep: Endpoint, timeout: float = 2.0) -> bool:
    try:
        with socket.create_connection((ep.address, ep.port), timeout=timeout):
            return True
    except OSError:
        return False


def observe_tls(ep: Endpoint, cafile: str | None) -> TLSObservation:
    """Everything the TLS checks need about one endpoint."""
    obs = TLSObservation(ep)
    try:
        obs.negotiated = try_handshake(ep, _client_context())
        if obs.negotiated is None:
            obs.reachable = False
            obs.error = "no TLS handshake succeeded with any version or suite"
            return obs
        for name, version in VERSIONS.items():
            obs.versions[name] = try_handshake(ep, _client_context(version=version)) is not None
        obs.suites, obs.server_order = enumerate_suites(ep)
        leaf = (
            x509.load_der_x509_certificate(obs.negotiated.chain[0])
            if obs.negotiated.chain
            else None
        )
        key = leaf.public_key() if leaf else None
        curve = key.curve.name if isinstance(key, ec.EllipticCurvePublicKey) else None
        obs.groups = probe_groups(ep, ("prime256v1", "brainpoolP256r1"), curve)
        if obs.versions.get("TLSv1.3"):
            from mailward.compliance.rules import TLS13_SUITES

            obs.tls13_suites = probe_tls13_suites(ep, TLS13_SUITES)
        obs.compression, obs.secure_renegotiation, obs.hello_error = hello_probe(ep)
        if cafile:
            obs.pkix_checked = True
            try:
                for attempt in range(2):
                    try:
                        handshake(ep, _client_context(cafile=cafile, ciphers="ALL"))
                        break
                    except TimeoutError:
                        if attempt:
                            raise
            except ssl.SSLCertVerificationError as e:
                obs.pkix_error = e.verify_message or str(e)
            except ssl.SSLError as e:
                obs.pkix_error = f"handshake failed: {e.reason or e}"
    except (ProbeError, OSError) as e:
        obs.reachable = False
        obs.error = str(e)
    return obs


@dataclass
class InjectionObservation:
    vulnerable: bool | None = None
    readvertised: bool | None = None
    detail: str = ""


def starttls_injection(ep: Endpoint) -> InjectionObservation:
    """Send `STARTTLS\\r\\nNOOP\\r\\n` in one segment; a reply to NOOP after TLS is the bug."""
    obs = InjectionObservation()
    conn = SMTPConnection.open(ep.address, ep.port)
    try:
        code, lines = conn.reply()
        code, lines = conn.command(f"EHLO {PROBE_HELO}")
        conn.sock.sendall(b"STARTTLS\r\nNOOP\r\n")
        code, lines = conn.reply()
        if code != 220:
            obs.detail = f"STARTTLS answered {code} {' '.join(lines)}"
            return obs
        if conn.pending():
            obs.vulnerable = True
            obs.detail = "a plaintext reply to NOOP arrived before TLS started"
            return obs
        tls = _client_context().wrap_socket(conn.sock, server_hostname=ep.host)
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
    except (ssl.SSLError, ConnectionError, TimeoutError) as e:
        obs.detail = f"TLS after STARTTLS failed: {e}"
    finally:
        with contextlib.suppress(OSError):
            conn.sock.close()
    return obs
