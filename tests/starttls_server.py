"""A minimal SMTP server that offers STARTTLS with a certificate the test can swap at once.

Only what a TLS probe needs (RFC 3207): greeting, EHLO with STARTTLS, the handshake, EHLO again,
QUIT. It stands for a mail server whose operator switches keys naively (new key served the moment
it is installed), which is what the rollover test's probe must catch.
"""

from __future__ import annotations

import socket
import ssl
import threading
from pathlib import Path


class StartTLSServer:
    def __init__(self, address: str, hostname: str, port: int = 25) -> None:
        self.address, self.hostname, self.port = address, hostname, port
        self._context: ssl.SSLContext | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None

    def serve(self, chain_file: Path, key_file: Path) -> None:
        """From now on, every new handshake presents this chain."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(chain_file, key_file)
        with self._lock:
            self._context = context

    def start(self) -> StartTLSServer:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.address, self.port))
        sock.listen(16)
        sock.settimeout(0.5)
        self._sock = sock
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._sock is not None:
            self._sock.close()

    def _accept(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._session, args=(conn,), daemon=True).start()

    def _session(self, conn: socket.socket) -> None:
        conn.settimeout(10)
        with self._lock:
            context = self._context
        try:
            stream = conn.makefile("rwb")
            self._say(stream, f"220 {self.hostname} ESMTP")
            tls: ssl.SSLSocket | None = None
            while line := stream.readline():
                verb = line.decode(errors="replace").strip().split(" ", 1)[0].upper()
                if verb in ("EHLO", "HELO"):
                    offer = [] if tls is not None or context is None else ["250-STARTTLS"]
                    self._say(stream, *(f"250-{self.hostname}", *offer, "250 8BITMIME"))
                elif verb == "STARTTLS" and tls is None and context is not None:
                    self._say(stream, "220 2.0.0 go ahead")
                    tls = context.wrap_socket(conn, server_side=True)
                    stream = tls.makefile("rwb")
                elif verb == "QUIT":
                    self._say(stream, "221 2.0.0 bye")
                    return
                else:
                    self._say(stream, "502 5.5.1 not implemented")
        except (OSError, ssl.SSLError):
            return
        finally:
            conn.close()

    @staticmethod
    def _say(stream: object, *lines: str) -> None:
        writer = stream  # a BufferedRWPair from makefile("rwb")
        for line in lines:
            writer.write(line.encode() + b"\r\n")  # type: ignore[attr-defined]
        writer.flush()  # type: ignore[attr-defined]
