"""A remote domain secured by MTA-STS only, on loopback, for tests of mailward's sending MTA.

Its policy is served over HTTPS (RFC 8461 §3.3) with a certificate of the local test CA, which
the sender's MTA-STS resolver and Postfix are made to trust for the test (TEST TRUST ONLY).
"""

from __future__ import annotations

import http.server
import os
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

from mailward.render.mta_pod import MTA_STS_RESOLVER_PORT
from mailward.render.pods import NOBODY
from mailward_localstack.rootfs import Account
from tests.fixtures_mta import RunningMTA

# The test's way to run a program from the MTA image beside the sender (name, argv, user, env).
StartInImage = Callable[
    [RunningMTA, str, list[str], Account, dict[str, str] | None], subprocess.Popen[bytes]
]


def _wait_until(what: str, check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.5)


class _PolicyHandler(http.server.BaseHTTPRequestHandler):
    policy = b""

    def do_GET(self) -> None:
        found = self.path == "/.well-known/mta-sts.txt"
        body = self.policy if found else b"not found\n"
        self.send_response(200 if found else 404)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        print(f"mta-sts policy server: {format % args}")


def serve_policy(address: str, policy: str, chain: Path, key: Path) -> http.server.HTTPServer:
    """`https://mta-sts.<domain>/.well-known/mta-sts.txt` (RFC 8461 §3.3), on port 443."""
    handler = type("Handler", (_PolicyHandler,), {"policy": policy.encode()})
    server = http.server.ThreadingHTTPServer((address, 443), handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(chain), str(key))
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def trust_test_ca_for_mta_sts(
    sender: RunningMTA, ca_file: Path, start_in_image: StartInImage
) -> subprocess.Popen[bytes]:
    """TEST TRUST ONLY: the local CA for the sender's policy fetch and for its Postfix.

    The image trusts the system's CAs only. `smtp_tls_CApath` is pointed at a directory with the
    test CA alone, and the MTA-STS resolver the MTA factory started (as the pod does) is stopped
    (that one process, found by its own configuration file) and started again with
    `SSL_CERT_FILE` naming the CA. `ca_file` must be inside the sender's state directory.
    """
    state = sender.postfix.state_dir
    ca_dir = state / "test-ca-path"
    ca_dir.mkdir(exist_ok=True)
    (ca_dir / "test-ca.pem").write_bytes(ca_file.read_bytes())
    subprocess.run(["openssl", "rehash", str(ca_dir)], check=True, capture_output=True)
    sender.postfix.postconf("-e", f"smtp_tls_CApath={ca_dir}")
    reload = sender.postfix.in_image(
        ["/usr/sbin/postfix", "-c", str(sender.postfix.config_dir), "reload"]
    )
    subprocess.run(reload, check=True, capture_output=True, timeout=60)
    sts_conf = state / "mta-sts-daemon.yml"
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if str(sts_conf).encode() in argv and any(b"mta-sts-daemon" in a for a in argv):
            os.kill(int(entry.name), signal.SIGTERM)
    _wait_until(
        "the first MTA-STS resolver gone",
        lambda: not listening(sender.address, MTA_STS_RESOLVER_PORT),
        30,
    )
    resolver = start_in_image(
        sender,
        "mta-sts-test-ca",
        ["mta-sts-daemon", "-c", str(sts_conf)],
        Account(NOBODY, NOBODY),
        {"SSL_CERT_FILE": str(ca_file)},
    )
    _wait_until(
        "the MTA-STS resolver with the test CA",
        lambda: listening(sender.address, MTA_STS_RESOLVER_PORT),
        30,
    )
    return resolver


def listening(address: str, port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex((address, port)) == 0
