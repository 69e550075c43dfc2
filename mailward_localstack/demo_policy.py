"""The demo's look at the MTA-STS policy endpoint pod, as a sending MTA fetches from it.

`python -m mailward_localstack.demo_policy check` fetches the example's policy and autoconfig
document from the running endpoint, with the local CA as the only trust anchor.
"""

from __future__ import annotations

import argparse
import http.client
import os
import socket
import ssl
import sys

DEMO_ADDRESS = "127.77.0.44"
HTTPS_PORT = 443


def fetch(address: str, host: str, path: str, ca_file: str) -> tuple[int, str, bytes]:
    """GET over TLS as a sender does: SNI and Host `host`, verified against `ca_file`."""
    context = ssl.create_default_context(cafile=ca_file)
    raw = socket.create_connection((address, HTTPS_PORT), timeout=5)
    connection = http.client.HTTPSConnection(address, HTTPS_PORT, timeout=5)
    connection.sock = context.wrap_socket(raw, server_hostname=host)
    try:
        connection.putrequest("GET", path, skip_host=True)
        connection.putheader("Host", host)
        connection.endheaders()
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type") or "", response.read()
    finally:
        connection.close()


def check(domain: str, address: str, ca_file: str) -> int:
    status, content_type, body = fetch(
        address, f"mta-sts.{domain}", "/.well-known/mta-sts.txt", ca_file
    )
    print(f"GET https://mta-sts.{domain}/.well-known/mta-sts.txt -> {status} {content_type}")
    print(body.decode("ascii", errors="replace").replace("\r\n", "\n"), end="")
    status, content_type, body = fetch(
        address, f"autoconfig.{domain}", "/mail/config-v1.1.xml", ca_file
    )
    print(f"GET https://autoconfig.{domain}/mail/config-v1.1.xml -> {status} {content_type}")
    if status == 200:
        print(body.decode("utf-8", errors="replace"), end="")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mailward_localstack.demo_policy")
    parser.add_argument("action", choices=["check"])
    parser.add_argument("--domain", default=os.environ.get("DEMO_DOMAIN", "example.test"))
    parser.add_argument("--address", default=DEMO_ADDRESS)
    parser.add_argument("--ca-file", default=os.environ.get("MAILWARD_CA_FILE", ""))
    args = parser.parse_args(argv)
    return check(args.domain, args.address, args.ca_file)


if __name__ == "__main__":
    sys.exit(main())
