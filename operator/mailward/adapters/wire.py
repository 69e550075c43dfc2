"""Bytes on a TCP socket: DNS messages with their TSIG errors visible, and exact reads.

dnspython's `dns.query.tcp` raises on a response whose TSIG reports an error (a wrong secret
comes back NOTAUTH/BADSIG, unsigned), which hides exactly what a person must be told. This
exchange returns such a response instead; a response whose own signature does not verify still
raises.
"""

from __future__ import annotations

import socket
import struct

import dns.message
import dns.tsig


def recv_exact(sock: socket.socket, n: int) -> bytes:
    """Exactly `n` bytes, or ConnectionError when the peer closes first."""
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError(f"connection closed after {len(data)} of {n} bytes")
        data += chunk
    return data


def dns_exchange_tcp(
    host: str, port: int, message: dns.message.Message, timeout: float
) -> dns.message.Message:
    wire = message.to_wire()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect((host, port))
        sock.sendall(struct.pack("!H", len(wire)) + wire)
        (length,) = struct.unpack("!H", recv_exact(sock, 2))
        data = recv_exact(sock, length)
    try:
        return dns.message.from_wire(data, keyring=message.keyring, request_mac=message.mac)
    except dns.tsig.PeerError:
        return dns.message.from_wire(data, keyring=False)
