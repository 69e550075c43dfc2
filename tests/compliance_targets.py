"""Servers for the compliance tests: real Postfix instances and an HTTPS policy server.

Each Postfix runs from its own minimal configuration directory (main.cf + master.cf written
here, independent of the production rendering in mailward.render), on its own loopback address
(an address of the session's 127/8 prefix, or `::1`, the only IPv6 loopback address), with SMTP
on 25 and SUBMISSIONS (implicit TLS) on 465. A `PostfixTarget` describes one such
server, compliant by default; each broken variant changes one setting.

`PolicyServer` is Python's http.server behind `ssl`, picking the certificate by SNI, serving
`/.well-known/mta-sts.txt` per host name (or a redirect, for the broken variant).
"""

from __future__ import annotations

import contextlib
import http.server
import shutil
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from mailward_localstack.dns import ensure_loopback_address, remove_loopback_address
from mailward_localstack.pki import IssuedCert

# TR-03116-4 / TR-02102-2 compliant TLS 1.2 suites for an ECDSA key, mandatory one first.
COMPLIANT_CIPHERS = (
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-AES128-SHA256:ECDHE-ECDSA-AES256-SHA384"
)
COMPLIANT_GROUPS = "brainpoolP256r1 prime256v1 secp384r1"
COMPLIANT_TLS13_SUITES = "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384"

_MASTER_SERVICES = """\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


@dataclass
class PostfixTarget:
    """One Postfix MX; the defaults are TR-03108 compliant."""

    name: str
    address: str
    hostname: str
    cert: IssuedCert
    domains: list[str]
    starttls: bool = True
    ciphers: str = COMPLIANT_CIPHERS
    submissions_protocols: str = ">=TLSv1.2"
    submissions_ciphers: str = COMPLIANT_CIPHERS
    tls13_suites: str = COMPLIANT_TLS13_SUITES
    groups: str = COMPLIANT_GROUPS
    # tls_preempt_cipherlist: the server's order of suites, and in OpenSSL also of groups.
    server_order: bool = True
    # SUBMISSIONS on 465; without it the MX serves port 25 only (a receive-only domain).
    submissions: bool = True
    open_relay: bool = False
    vrfy_answers_250: bool = False
    directory: Path = field(default=Path("."))
    added_address: bool = False

    @property
    def ipv6(self) -> bool:
        return ":" in self.address

    @property
    def listen(self) -> str:
        """The address as Postfix writes it before `:port` (IPv6 in brackets)."""
        return f"[{self.address}]" if self.ipv6 else self.address

    def _main_cf(self) -> str:
        d = self.directory
        relay = "permit_mynetworks, reject_unauth_destination"
        lines = {
            "compatibility_level": "3.6",
            "queue_directory": f"{d}/queue",
            "data_directory": f"{d}/data",
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "myhostname": self.hostname,
            "mydomain": self.hostname.partition(".")[2],
            "myorigin": "$myhostname",
            "inet_interfaces": self.listen,
            "inet_protocols": "all" if self.ipv6 else "ipv4",
            "mydestination": "",
            # No client is trusted: the probe must be treated as a stranger. The open relay is
            # the classic misconfiguration (Postfix refuses `permit` outright): a mynetworks
            # that takes in every client, as behind a proxy that hides the client address.
            "mynetworks": "127.0.0.0/8" if self.open_relay else "127.255.255.254/32",
            "virtual_mailbox_domains": " ".join(self.domains),
            "virtual_mailbox_maps": f"texthash:{d}/vmailbox",
            "virtual_mailbox_base": f"{d}/mail",
            "virtual_uid_maps": "static:102",
            "virtual_gid_maps": "static:105",
            "smtpd_relay_restrictions": relay,
            "smtpd_banner": "$myhostname ESMTP",
            # No lookup of the client's name before the greeting: it would go to the machine's
            # resolver, outside the lab, and where that one drops queries under load the
            # greeting comes 5 or 10 s late (glibc's retry), which made lab results depend on
            # the machine. The engine copes with late greetings (smtpprobe.FIRST_REPLY_TIMEOUT);
            # tests/unit/test_compliance_probes.py covers that with a server that greets late.
            "smtpd_peername_lookup": "no",
            # RFC 5321 §7.3: a site that does not verify answers VRFY (and EXPN) with 252, as
            # mailward's own MTA does; every command is rewritten into one such VRFY.
            "disable_vrfy_command": "no",
            "smtpd_command_filter": f"pcre:{d}/command_filter",
            "alias_maps": "",
            "alias_database": "",
            "local_recipient_maps": "",
            "biff": "no",
            "maillog_file": f"{d}/log/postfix.log",
            "maillog_file_prefixes": str(d),
            "smtpd_tls_security_level": "may" if self.starttls else "none",
            "smtpd_tls_chain_files": f"{self.cert.key_file}, {self.cert.chain_file}",
            "smtpd_tls_protocols": ">=TLSv1.2",
            "smtpd_tls_mandatory_protocols": ">=TLSv1.2",
            "smtpd_tls_ciphers": "high",
            "smtpd_tls_mandatory_ciphers": "high",
            "tls_high_cipherlist": self.ciphers,
            "tls_preempt_cipherlist": "yes" if self.server_order else "no",
            "tls_eecdh_auto_curves": self.groups,
            "smtpd_tls_loglevel": "0",
            # TLS 1.3 suites are not a Postfix parameter: OpenSSL's Ciphersuites, per application.
            "tls_config_file": f"{d}/openssl.cnf",
            "tls_config_name": "postfix",
        }
        return "".join(f"{k} = {v}\n" for k, v in lines.items())

    def _master_cf(self) -> str:
        old = self.submissions_protocols != ">=TLSv1.2"
        sub_ciphers = self.submissions_ciphers + (":@SECLEVEL=0" if old else "")
        submissions = (
            f"{self.listen}:465 inet n - n - - smtpd\n"
            "  -o smtpd_tls_wrappermode=yes\n"
            "  -o smtpd_tls_security_level=encrypt\n"
            f"  -o smtpd_tls_mandatory_protocols={self.submissions_protocols}\n"
            f"  -o smtpd_tls_protocols={self.submissions_protocols}\n"
            f"  -o tls_high_cipherlist={sub_ciphers}\n"
        )
        if not self.submissions:
            submissions = ""
        return f"{self.listen}:25 inet n - n - - smtpd\n" + submissions + _MASTER_SERVICES

    def _postfix(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            ["/usr/sbin/postfix", "-c", str(self.directory), *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if check and result.returncode != 0:
            log = self.directory / "log" / "postfix.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(
                f"postfix {' '.join(args)} ({self.name}) failed: {result.stdout}{result.stderr}"
                f"\n{tail}"
            )
        return result

    def start(self, base: Path) -> None:
        self.directory = base / self.name
        d = self.directory
        shutil.rmtree(d, ignore_errors=True)
        for sub in ("queue", "data", "log", "mail"):
            (d / sub).mkdir(parents=True)
        shutil.chown(d / "data", "postfix", "postfix")
        shutil.chown(d / "mail", "postfix", "postfix")
        (d / "main.cf").write_text(self._main_cf())
        (d / "master.cf").write_text(self._master_cf())
        (d / "vmailbox").write_text(
            "".join(f"postmaster@{dom} {dom}/postmaster/\n" for dom in self.domains)
        )
        if self.vrfy_answers_250:
            # A server that "verifies" anything: VRFY is rewritten into NOOP, answered 250.
            (d / "command_filter").write_text("/^VRFY\\s.*/ NOOP\n")
        else:
            (d / "command_filter").write_text("/^(VRFY|EXPN)\\s.*/ VRFY postmaster\n")
        (d / "openssl.cnf").write_text(
            "postfix = postfix_settings\n"
            "[postfix_settings]\nssl_conf = postfix_ssl_settings\n"
            "[postfix_ssl_settings]\nsystem_default = postfix_tls\n"
            f"[postfix_tls]\nCiphersuites = {self.tls13_suites}\n"
        )
        # ::1 is always there (and only 127/8 is ever added).
        self.added_address = not self.ipv6 and ensure_loopback_address(self.address)
        self._postfix("check", check=False)
        self._postfix("start")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.submissions and _tls_ready(self.address, self.hostname, 465):
                return
            if not self.submissions and _listening(self.address, 25):
                return
            time.sleep(0.2)
        raise RuntimeError(f"postfix {self.name} on {self.address} did not start serving")

    def stop(self) -> None:
        if (self.directory / "main.cf").exists():
            self._postfix("stop", check=False)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and _listening(self.address, 25):
                time.sleep(0.1)
            if _listening(self.address, 25):
                self._postfix("abort", check=False)
        if self.added_address:
            remove_loopback_address(self.address)
            self.added_address = False


def port_taken(address: str, port: int) -> str | None:
    """Why `address`:`port` cannot be bound (another session's server on it), or None."""
    import socket

    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((address, port))
        except OSError as e:
            return f"[{address}]:{port} is taken ({e.strerror}): another session listens there"
    return None


def _tls_ready(address: str, hostname: str, port: int) -> bool:
    """One complete TLS handshake: Postfix's tlsmgr is up, later probes will not wait for it."""
    import socket

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with (
            socket.create_connection((address, port), timeout=5) as sock,
            ctx.wrap_socket(sock, server_hostname=hostname),
        ):
            return True
    except OSError:
        return False


def _listening(address: str, port: int) -> bool:
    import socket

    with contextlib.suppress(OSError), socket.create_connection((address, port), timeout=0.5):
        return True
    return False


@dataclass
class PolicyRoute:
    status: int = 200
    body: str = ""
    content_type: str = "text/plain; charset=utf-8"
    location: str | None = None


class PolicyServer:
    """HTTPS on `address`:443: one certificate and one MTA-STS policy (or redirect) per host."""

    def __init__(self, address: str, routes: dict[str, PolicyRoute], certs: dict[str, IssuedCert]):
        self.address = address
        self.routes = routes
        self.contexts: dict[str, ssl.SSLContext] = {}
        for host, cert in certs.items():
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            ctx.load_cert_chain(cert.chain_file, cert.key_file)
            self.contexts[host] = ctx
        default = next(iter(self.contexts.values()))
        self._base = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._base.minimum_version = ssl.TLSVersion.TLSv1_2
        first = next(iter(certs.values()))
        self._base.load_cert_chain(first.chain_file, first.key_file)

        def pick(sock: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
            sock.context = self.contexts.get((name or "").lower(), default)

        self._base.sni_callback = pick  # type: ignore[assignment]
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.requests: list[tuple[str, str]] = []
        self._added_address = False

    def start(self) -> None:
        routes, requests = self.routes, self.requests

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                host = (self.headers.get("Host") or "").split(":")[0].lower()
                requests.append((host, self.path))
                route = routes.get(host)
                if route is None or not self.path.startswith("/.well-known/mta-sts.txt"):
                    self.send_error(404)
                    return
                body = route.body.encode()
                self.send_response(route.status)
                if route.location:
                    self.send_header("Location", route.location)
                self.send_header("Content-Type", route.content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._added_address = ensure_loopback_address(self.address)
        server = http.server.ThreadingHTTPServer((self.address, 443), Handler)
        server.daemon_threads = True
        base = self._base

        def wrap_socket(sock: object) -> object:
            return base.wrap_socket(sock, server_side=True)  # type: ignore[arg-type]

        original_get_request = server.get_request

        def get_request() -> tuple[object, object]:
            sock, addr = original_get_request()
            sock.settimeout(10)
            try:
                return wrap_socket(sock), addr
            except (ssl.SSLError, OSError):
                sock.close()
                raise

        server.get_request = get_request  # type: ignore[method-assign,assignment]
        server.handle_error = lambda request, client_address: None  # type: ignore[method-assign,assignment]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._added_address:
            remove_loopback_address(self.address)


def sts_policy(mx: list[str], mode: str = "enforce", max_age: int = 604800) -> str:
    lines = ["version: STSv1", f"mode: {mode}", *(f"mx: {m}" for m in mx), f"max_age: {max_age}"]
    return "\r\n".join(lines) + "\r\n"
