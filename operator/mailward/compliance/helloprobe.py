"""A hand-built TLS 1.2 ClientHello, for what the OpenSSL 3 client will not offer.

TLS compression and RFC 5746 renegotiation support are read from the ServerHello that answers a
ClientHello offering DEFLATE and renegotiation_info; the handshake is never finished.
"""

from __future__ import annotations

import secrets
import struct

from mailward.adapters.wire import recv_exact
from mailward.compliance.observations import Endpoint
from mailward.compliance.smtpprobe import connect, retry_on_timeout, starttls_preamble

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
        return retry_on_timeout(_hello, ep)
    except (ConnectionError, TimeoutError, OSError) as e:
        return None, None, f"no ServerHello: {e}"


def _hello(ep: Endpoint) -> tuple[int | None, bool | None, str]:
    sock = connect(ep.address, ep.port)
    try:
        starttls_preamble(ep, sock)
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
    finally:
        sock.close()
