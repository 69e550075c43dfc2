"""What the DNS servers of the local stack share: programs, loopback addresses, TSIG, queries.

`mailward_localstack.dns` (the signing primary, the validating resolver, `DNSStack`) and
`mailward_localstack.dns_secondary` (a BIND secondary) both build on these; `dns` re-exports the
public names, so `from mailward_localstack.dns import TsigKey, query, ...` keeps working.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import dns.dnssec
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.node
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
import dns.tsig
import dns.xfr
import dns.zone

from mailward.adapters.wire import dns_exchange_tcp
from mailward_localstack._process import StackError, write_private

__all__ = [
    "PARENT_ZONE",
    "TsigKey",
    "axfr",
    "check_port_free",
    "ensure_loopback_address",
    "interface_addresses",
    "query",
    "remove_loopback_address",
    "send_update",
    "serial_reached",
    "soa_serial",
    "zone_signature_problems",
]

PARENT_ZONE = dns.name.from_text("test.")
"""The zone every local zone hangs under; its DS is the resolver's only trust anchor."""

_SBIN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _find_program(name: str) -> str:
    path = shutil.which(name, path=os.environ.get("PATH", "") + ":" + _SBIN_PATH)
    if path is None:
        raise StackError(f"{name} not found; run scripts/install-system-deps.sh")
    return path


def _program(name: str) -> str:
    """Full path of a program if it is installed; its bare name otherwise (start will fail)."""
    try:
        return _find_program(name)
    except StackError:
        return name


def _abs(name: str | dns.name.Name) -> dns.name.Name:
    if isinstance(name, dns.name.Name):
        return name
    return dns.name.from_text(name)


def _is_ipv6(address: str) -> bool:
    return ":" in address


def interface_addresses() -> set[str]:
    """Every address configured on an interface of this machine (network namespace)."""
    out = subprocess.run(
        [_find_program("ip"), "-j", "addr", "show"], capture_output=True, text=True, check=True
    ).stdout
    return {
        str(info["local"])
        for link in json.loads(out)
        for info in link.get("addr_info", [])
        if "local" in info
    }


def ensure_loopback_address(address: str) -> bool:
    """Make sure `address` is configured on `lo`; True if it had to be added (needs root).

    BIND only listens on addresses it finds on an interface (Unbound and Postfix can bind any
    127.x address because of the kernel's 127.0.0.0/8 local route, BIND cannot), so an address
    such as 127.88.0.53 gets a /32 alias on `lo`. Only 127.0.0.0/8 is ever touched.
    """
    if address in interface_addresses():
        return False
    if ipaddress.ip_address(address) not in ipaddress.ip_network("127.0.0.0/8"):
        raise StackError(f"{address} is not configured on any interface (and not 127.0.0.0/8)")
    result = subprocess.run(
        [_find_program("ip"), "addr", "add", f"{address}/32", "dev", "lo"],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0 and address not in interface_addresses():
        raise StackError(f"could not add {address}/32 to lo: {result.stderr.strip()}")
    return result.returncode == 0


def check_port_free(address: str, port: int, what: str) -> None:
    """Raise StackError if something already listens on `address`:`port` (UDP or TCP).

    Without this, a second stack on the same address would start a server that cannot bind
    (BIND keeps running without listeners) while the readiness checks talk to the first one.
    """
    family = socket.AF_INET6 if _is_ipv6(address) else socket.AF_INET
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(family, kind) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((address, port))
            except OSError as e:
                proto = "UDP" if kind == socket.SOCK_DGRAM else "TCP"
                raise StackError(
                    f"cannot start {what}: {address} port {port}/{proto} is in use ({e}); "
                    "is another stack running there? (stop it with its state directory)"
                ) from e


def remove_loopback_address(address: str) -> None:
    """Remove a /32 alias that `ensure_loopback_address` added (never 127.0.0.1)."""
    if address == "127.0.0.1" or address not in interface_addresses():
        return
    subprocess.run(
        [_find_program("ip"), "addr", "del", f"{address}/32", "dev", "lo"],
        capture_output=True,
        check=False,
    )


# --------------------------------------------------------------------------------------------
# TSIG


@dataclass(frozen=True)
class TsigKey:
    """A TSIG key shared by BIND and the clients that update it (the operator, the tests)."""

    name: str
    secret: str
    """Base64 of the key bytes."""
    algorithm: str = "hmac-sha256"

    @classmethod
    def generate(cls, name: str = "mailward-update", algorithm: str = "hmac-sha256") -> TsigKey:
        size = {"hmac-sha256": 32, "hmac-sha384": 48, "hmac-sha512": 64}.get(algorithm, 32)
        return cls(
            name=name,
            secret=base64.b64encode(secrets.token_bytes(size)).decode(),
            algorithm=algorithm,
        )

    @property
    def dns_name(self) -> dns.name.Name:
        return dns.name.from_text(self.name)

    def key(self) -> dns.tsig.Key:
        """The key as dnspython wants it for `keyring=` (a single key is a valid keyring)."""
        return dns.tsig.Key(self.dns_name, self.secret, self.algorithm)

    def keyring(self) -> dict[dns.name.Name, dns.tsig.Key]:
        return {self.dns_name: self.key()}

    def bind_statement(self) -> str:
        return (
            f'key "{self.name}" {{\n'
            f"    algorithm {self.algorithm};\n"
            f'    secret "{self.secret}";\n'
            "};\n"
        )

    def write_bind_file(self, path: Path) -> Path:
        """Write the BIND `key` statement to `path` with mode 0600."""
        write_private(Path(path), self.bind_statement())
        return Path(path)

    @classmethod
    def from_bind_file(cls, path: Path) -> TsigKey:
        """Read the first `key "name" { algorithm ...; secret "..."; };` statement of a file."""
        text = Path(path).read_text()
        match = re.search(r'key\s+"?([^"\s{]+)"?\s*\{(.*?)\}\s*;', text, re.S)
        if match is None:
            raise ValueError(f"no key statement in {path}")
        body = match.group(2)
        algorithm = re.search(r"algorithm\s+\"?([\w-]+)\"?\s*;", body)
        secret = re.search(r'secret\s+"([^"]+)"\s*;', body)
        if algorithm is None or secret is None:
            raise ValueError(f"key statement in {path} lacks algorithm or secret")
        return cls(name=match.group(1), secret=secret.group(1), algorithm=algorithm.group(1))

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "algorithm": self.algorithm, "secret": self.secret}

    @classmethod
    def from_dict(cls, data: dict[str, str]) -> TsigKey:
        return cls(name=data["name"], secret=data["secret"], algorithm=data["algorithm"])


# --------------------------------------------------------------------------------------------
# Queries and updates (usable without any of the classes below)


def query(
    server: str,
    port: int,
    name: str | dns.name.Name,
    rdtype: str | dns.rdatatype.RdataType,
    *,
    dnssec: bool = True,
    tcp: bool = False,
    recursion_desired: bool = True,
    checking_disabled: bool = False,
    timeout: float = 3.0,
) -> dns.message.Message:
    """One DNS query to `server`:`port`; returns the response whatever its rcode.

    With `dnssec` the DO bit is set (RRSIGs are returned; a validating resolver sets AD on
    secure answers). UDP falls back to TCP on truncation.
    """
    q = dns.message.make_query(_abs(name), rdtype, want_dnssec=dnssec, use_edns=0, payload=1232)
    if not recursion_desired:
        q.flags &= ~dns.flags.RD
    if checking_disabled:
        q.flags |= dns.flags.CD
    if tcp:
        return dns.query.tcp(q, server, timeout=timeout, port=port)
    response, _ = dns.query.udp_with_fallback(q, server, timeout=timeout, port=port)
    return response


def send_update(
    server: str, port: int, message: dns.message.Message, *, timeout: float = 5.0
) -> dns.message.Message:
    """Send an UPDATE (or any message) over TCP and return the response.

    Unlike `dns.query.tcp`, a response that reports a TSIG error (e.g. NOTAUTH/BADSIG for a
    wrong secret) is returned rather than raised, so callers can look at its rcode; its
    `tsig[0].error` says which TSIG error. A response whose own TSIG does not verify still
    raises.
    """
    return dns_exchange_tcp(server, port, message, timeout)


def zone_signature_problems(zone: dns.zone.Zone) -> list[str]:
    """Why `zone` (e.g. from an AXFR) is not completely and validly signed; [] if it is.

    Every authoritative RRset must carry an RRSIG that validates with the apex DNSKEY RRset,
    and the apex needs a SEP key (flags 257). Delegation NS RRsets and glue are not signed.
    """
    origin = zone.origin
    assert origin is not None
    dnskeys = zone.get_rdataset(origin, dns.rdatatype.DNSKEY)
    if dnskeys is None:
        return ["no DNSKEY at the apex"]
    if not any(k.flags & 0x0001 for k in dnskeys):
        return ["no SEP (KSK/CSK) key at the apex"]
    keys: dict[dns.name.Name, dns.node.Node | dns.rdataset.Rdataset] = {origin: dnskeys}
    cuts = [
        name.derelativize(origin)
        for name, node in zone.nodes.items()
        if name.derelativize(origin) != origin
        and node.get_rdataset(dns.rdataclass.IN, dns.rdatatype.NS) is not None
    ]
    problems = []
    now = time.time()
    for rel_name, node in zone.nodes.items():
        name = rel_name.derelativize(origin)
        if any(name != cut and name.is_subdomain(cut) for cut in cuts):
            continue  # glue below a delegation
        for rdataset in node:
            if rdataset.rdtype == dns.rdatatype.RRSIG:
                continue
            if name in cuts and rdataset.rdtype not in (dns.rdatatype.DS, dns.rdatatype.NSEC):
                continue  # delegation NS: the child's data, not signed by the parent
            rrtype = dns.rdatatype.to_text(rdataset.rdtype)
            sigs = node.get_rdataset(dns.rdataclass.IN, dns.rdatatype.RRSIG, rdataset.rdtype)
            if sigs is None:
                problems.append(f"{name} {rrtype}: no RRSIG")
                continue
            try:
                dns.dnssec.validate((name, rdataset), (name, sigs), keys, now=now)
            except dns.exception.ValidationFailure as e:
                problems.append(f"{name} {rrtype}: {e}")
    return problems


def soa_serial(
    server: str, port: int, zone: str | dns.name.Name, *, timeout: float = 1.0
) -> int | None:
    """The SOA serial `server` serves for `zone` with authority (AA), or None if it does not.

    Asked over TCP without recursion, as a secondary's refresh query would.
    """
    name = _abs(zone)
    r = query(
        server, port, name, "SOA", dnssec=False, tcp=True, recursion_desired=False, timeout=timeout
    )
    if r.rcode() != dns.rcode.NOERROR or not r.flags & dns.flags.AA:
        return None
    for rrset in r.answer:
        if rrset.rdtype == dns.rdatatype.SOA and rrset.name == name:
            return int(rrset[0].serial)
    return None


def serial_reached(served: int, wanted: int) -> bool:
    """Whether SOA serial `served` is `wanted` or newer, in RFC 1982 serial arithmetic."""
    return (served - wanted) % 2**32 < 2**31


# --------------------------------------------------------------------------------------------
# named.conf pieces both BIND configurations use


def named_listen(address: str, port: int) -> str:
    """`listen-on` and `listen-on-v6` for exactly one address."""
    on = f"port {port} {{ {address}; }}"
    if _is_ipv6(address):
        return f"listen-on {{ none; }};\n    listen-on-v6 {on};"
    return f"listen-on {on};\n    listen-on-v6 {{ none; }};"


def named_common_options(work_dir: Path, address: str, port: int) -> str:
    """The lines of an `options` block every BIND of the stack has: its own directory, one
    listening address, authoritative only (no recursion, no validation), nothing elsewhere."""
    return (
        f'    directory "{work_dir}";\n'
        "    pid-file none;\n"
        "    session-keyfile none;\n"
        f'    managed-keys-directory "{work_dir}";\n'
        f"    {named_listen(address, port)}\n"
        "    recursion no;\n"
        "    dnssec-validation no;\n"
        "    allow-query { any; };\n"
    )


NAMED_LOGGING = (
    "logging {\n"
    "    channel to_stderr { stderr; severity info; print-time yes;\n"
    "                        print-category yes; print-severity yes; };\n"
    "    category default { to_stderr; };\n"
    "    category lame-servers { null; };\n"
    "};\n"
)
"""Everything to stderr (the ManagedProcess log), lame-server noise left out."""


def check_config(program: str, conf_file: Path) -> None:
    """Run `named-checkconf` or `unbound-checkconf` on `conf_file`; StackError if it objects."""
    check = subprocess.run(
        [_find_program(program), str(conf_file)], capture_output=True, text=True, check=False
    )
    if check.returncode != 0:
        raise StackError(f"{program} rejected {conf_file}:\n{check.stdout}{check.stderr}")


def axfr(
    server: str,
    port: int,
    zone: str | dns.name.Name,
    *,
    tsig: TsigKey | None = None,
    timeout: float = 5.0,
) -> dns.zone.Zone:
    """The zone as `server` serves it now, by AXFR (signed with `tsig` if given)."""
    z = dns.zone.Zone(_abs(zone), relativize=False)
    xfr_query, _ = dns.xfr.make_query(z, keyring=tsig.key() if tsig else None)
    dns.query.inbound_xfr(server, z, xfr_query, port=port, timeout=timeout, lifetime=timeout)
    return z
