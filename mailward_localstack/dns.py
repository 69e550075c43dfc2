"""DNS of the "internet in a box": a DNSSEC-signing authoritative server and a validating resolver.

`AuthoritativeDNS` runs BIND on one loopback address. It serves a signed parent zone `test.`
and delegates every configured zone from it (NS plus glue pointing back at itself), so the
chain of trust is realistic: the resolver's only trust anchor is the DS of `test.`, and a child
zone is secure only if its DS is in the parent. Each signed child's DS is put into the parent by
a TSIG-signed RFC 2136 UPDATE once BIND has signed the child, exactly as a registrar interface
would. Unsigned zones get no DS (insecure: they resolve, without the AD bit); a zone can also be
given a DS that matches none of its keys (bogus: the resolver answers SERVFAIL).

All zones accept RFC 2136 UPDATEs and AXFR signed with the stack's TSIG key, nothing unsigned.
BIND signs updates as it applies them (dnssec-policy on a dynamic zone), so the new RRsets carry
RRSIGs immediately.

`ValidatingResolver` runs Unbound with the DS of `test.` as its trust anchor, a stub zone for
`test.` and a forward zone for "." both pointing at the authoritative server (no query ever leaves
loopback), and caches capped at a few seconds so that tests see updates quickly.

Every server is a `ManagedProcess` with its pid file in its state directory, and each class
writes a JSON description there, so another process can `attach()` to a running stack (the demo's
`down` command) or simply `stop_all(state_dir)`.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import ipaddress
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import dns.dnssec
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.node
import dns.query
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
import dns.rdtypes.ANY.DNSKEY
import dns.rdtypes.ANY.DS
import dns.rrset
import dns.tsig
import dns.update
import dns.xfr
import dns.zone

from mailward.adapters.wire import dns_exchange_tcp
from mailward_localstack._process import ManagedProcess, StackError, wait_until, write_private

__all__ = [
    "PARENT_ZONE",
    "AuthoritativeDNS",
    "DNSStack",
    "DsMode",
    "TsigKey",
    "ValidatingResolver",
    "ZoneSpec",
    "check_port_free",
    "ensure_loopback_address",
    "interface_addresses",
    "query",
    "remove_loopback_address",
    "send_update",
    "zone_signature_problems",
]

PARENT_ZONE = dns.name.from_text("test.")
"""The zone every local zone hangs under; its DS is the resolver's only trust anchor."""

DEFAULT_TTL = 300
DS_TTL = 60
NEGATIVE_TTL = 5
POLICY_NAME = "mailward-fast"
NS_LABEL = "ns1"
"""Each zone's name server is `ns1.<zone>` (glue in the parent), the parent's is `ns1.test.`."""

_SBIN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

DsMode = Literal["auto", "none", "bogus"]


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


# --------------------------------------------------------------------------------------------
# Authoritative server


@dataclass(frozen=True)
class ZoneSpec:
    """A zone to serve under `test.`.

    `records` are zone-file lines, each starting with its owner name (relative to the zone or
    absolute); the SOA, the apex NS and `ns1.<zone>` are generated. `ds` says what the parent
    publishes:
    "auto" = the DS of the zone's key if the zone is signed, nothing if not; "none" = no DS
    even for a signed zone (an island of security: insecure); "bogus" = a DS that matches no key
    of the zone (validating resolvers answer SERVFAIL).
    """

    name: str
    signed: bool = True
    records: Sequence[str] = ()
    ds: DsMode = "auto"

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", _abs(self.name).to_text(omit_final_dot=True).lower())
        object.__setattr__(self, "records", tuple(self.records))
        if self.ds not in ("auto", "none", "bogus"):
            raise ValueError(f"ds must be 'auto', 'none' or 'bogus', not {self.ds!r}")
        if not _abs(self.name).is_subdomain(PARENT_ZONE) or _abs(self.name) == PARENT_ZONE:
            raise ValueError(f"zone {self.name!r} must lie below {PARENT_ZONE}")

    @property
    def dns_name(self) -> dns.name.Name:
        return _abs(self.name)

    @property
    def secure(self) -> bool:
        """Whether a validating resolver will find the zone secure (AD bit)."""
        return self.signed and self.ds == "auto"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "signed": self.signed,
            "records": list(self.records),
            "ds": self.ds,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ZoneSpec:
        return cls(name=data["name"], signed=data["signed"], records=data["records"], ds=data["ds"])


@dataclass
class _ZonePlan:
    name: dns.name.Name
    signed: bool
    records: Sequence[str]
    ds: DsMode
    parent: dns.name.Name | None
    children: list[dns.name.Name] = field(default_factory=list)

    @property
    def gets_ds(self) -> bool:
        """Whether the parent publishes a DS for this zone (a real one or a bogus one)."""
        if self.parent is None:
            return False
        return self.ds == "bogus" or (self.ds == "auto" and self.signed)

    @property
    def file_stem(self) -> str:
        return self.name.to_text(omit_final_dot=True) or "root"


class AuthoritativeDNS:
    """BIND serving `test.` and the given zones on one address, signed, updatable with TSIG."""

    STATE_FILE = "authoritative.json"

    def __init__(
        self,
        state_dir: Path,
        address: str,
        zones: Sequence[ZoneSpec],
        port: int = 53,
        *,
        tsig: TsigKey | None = None,
    ) -> None:
        self.state_dir = Path(state_dir)
        self._address = address
        self._port = port
        self.zones: tuple[ZoneSpec, ...] = tuple(zones)
        names = [z.name for z in self.zones]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate zone names in {names}")
        self._tsig = tsig or TsigKey.generate()
        self._trust_anchor: str | None = None
        self._added_address = False
        self.process = ManagedProcess(
            "named",
            [_program("named"), "-f", "-c", str(self.conf_file)],
            self.state_dir,
        )
        self._plans = self._plan()

    # -- accessors ------------------------------------------------------------------------

    @property
    def address(self) -> str:
        return self._address

    @property
    def port(self) -> int:
        return self._port

    @property
    def tsig(self) -> TsigKey:
        return self._tsig

    @property
    def conf_file(self) -> Path:
        return self.state_dir / "named.conf"

    @property
    def tsig_file(self) -> Path:
        return self.state_dir / "tsig.key"

    @property
    def work_dir(self) -> Path:
        """BIND's `directory`: zone files, journals and DNSSEC keys."""
        return self.state_dir / "named"

    @property
    def zone_names(self) -> list[str]:
        """All served zones, `test` first."""
        return [PARENT_ZONE.to_text(omit_final_dot=True), *(z.name for z in self.zones)]

    def trust_anchor(self) -> str:
        """The DS RR of `test.` in zone-file syntax: the resolver's trust anchor."""
        if self._trust_anchor is None:
            raise StackError("the authoritative server has not been started (no trust anchor)")
        return self._trust_anchor

    def is_running(self) -> bool:
        return self.process.is_running()

    def zone(self, name: str) -> ZoneSpec:
        wanted = _abs(name)
        for z in self.zones:
            if z.dns_name == wanted:
                return z
        raise KeyError(name)

    def parent_of(self, zone: str | dns.name.Name) -> dns.name.Name:
        plan = self._plans[_abs(zone)]
        if plan.parent is None:
            raise ValueError(f"{zone} has no parent here")
        return plan.parent

    # -- configuration ----------------------------------------------------------------------

    def _plan(self) -> dict[dns.name.Name, _ZonePlan]:
        plans = {PARENT_ZONE: _ZonePlan(PARENT_ZONE, True, (), "none", None)}
        for z in self.zones:
            plans[z.dns_name] = _ZonePlan(z.dns_name, z.signed, z.records, z.ds, None)
        for name, plan in plans.items():
            if name == PARENT_ZONE:
                continue
            enclosing = [p for p in plans if p != name and name.is_subdomain(p)]
            plan.parent = max(enclosing, key=len)
            plans[plan.parent].children.append(name)
        return plans

    def _address_rr(self) -> str:
        return f"{'AAAA' if _is_ipv6(self.address) else 'A'} {self.address}"

    def _zone_text(self, plan: _ZonePlan) -> str:
        origin = plan.name.to_text()
        ns = f"{NS_LABEL}.{origin}"
        lines = [
            f"$ORIGIN {origin}",
            f"$TTL {DEFAULT_TTL}",
            f"@ IN SOA {ns} hostmaster.{origin} 1 3600 600 86400 {NEGATIVE_TTL}",
            f"@ IN NS {ns}",
            f"{ns} IN {self._address_rr()}",
        ]
        for child in sorted(plan.children):
            child_ns = f"{NS_LABEL}.{child.to_text()}"
            lines += [f"{child.to_text()} IN NS {child_ns}", f"{child_ns} IN {self._address_rr()}"]
        lines += ["", "; records given by the ZoneSpec", f"$ORIGIN {origin}", *plan.records, ""]
        return "\n".join(lines)

    def _named_conf(self) -> str:
        work = self.work_dir
        on = f"port {self.port} {{ {self.address}; }}"
        if _is_ipv6(self.address):
            listen = f"listen-on {{ none; }};\n    listen-on-v6 {on};"
        else:
            listen = f"listen-on {on};\n    listen-on-v6 {{ none; }};"
        key = self.tsig.name
        zones = []
        for plan in self._plans.values():
            stem = plan.file_stem
            signing = (
                f'    dnssec-policy "{POLICY_NAME}";\n    inline-signing no;\n'
                f'    key-directory "{work / "keys"}";\n'
                if plan.signed
                else "    dnssec-policy none;\n"
            )
            zones.append(
                f'zone "{plan.name.to_text(omit_final_dot=True)}" {{\n'
                "    type primary;\n"
                f'    file "{work / "zones" / (stem + ".db")}";\n'
                f"{signing}"
                f'    allow-update {{ key "{key}"; }};\n'
                f'    allow-transfer {{ key "{key}"; }};\n'
                "};\n"
            )
        return (
            "# Written by mailward_localstack.dns.AuthoritativeDNS; regenerated on every start.\n"
            f'include "{self.tsig_file}";\n'
            "options {\n"
            f'    directory "{work}";\n'
            "    pid-file none;\n"
            "    session-keyfile none;\n"
            f'    managed-keys-directory "{work}";\n'
            f"    {listen}\n"
            "    recursion no;\n"
            "    dnssec-validation no;\n"
            "    notify no;\n"
            "    allow-query { any; };\n"
            "    allow-transfer { none; };\n"
            "    allow-update { none; };\n"
            "};\n"
            "controls { };\n"
            "logging {\n"
            "    channel to_stderr { stderr; severity info; print-time yes;\n"
            "                        print-category yes; print-severity yes; };\n"
            "    category default { to_stderr; };\n"
            "    category lame-servers { null; };\n"
            "};\n"
            f'dnssec-policy "{POLICY_NAME}" {{\n'
            "    keys { csk lifetime unlimited algorithm ecdsap256sha256; };\n"
            "    dnskey-ttl 60;\n"
            "    max-zone-ttl 86400;\n"
            "    zone-propagation-delay 1;\n"
            "    publish-safety 1;\n"
            "    retire-safety 1;\n"
            f"    parent-ds-ttl {DS_TTL};\n"
            "    parent-propagation-delay 1;\n"
            "};\n" + "".join(zones)
        )

    def _write_config(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        # A fresh start: old keys, journals and signed zones would not match the new files.
        shutil.rmtree(self.work_dir, ignore_errors=True)
        (self.work_dir / "zones").mkdir(parents=True)
        (self.work_dir / "keys").mkdir()
        os.chmod(self.work_dir / "keys", 0o700)
        for plan in self._plans.values():
            text = self._zone_text(plan)
            try:
                dns.zone.from_text(text, origin=plan.name, relativize=False, check_origin=True)
            except Exception as e:
                raise ValueError(f"records of zone {plan.name} do not parse: {e}") from e
            (self.work_dir / "zones" / f"{plan.file_stem}.db").write_text(text)
        self.tsig.write_bind_file(self.tsig_file)
        self.conf_file.write_text(self._named_conf())
        check = subprocess.run(
            [_find_program("named-checkconf"), str(self.conf_file)],
            capture_output=True,
            text=True,
            check=False,
        )
        if check.returncode != 0:
            raise StackError(
                f"named-checkconf rejected {self.conf_file}:\n{check.stdout}{check.stderr}"
            )

    def _save_state(self) -> None:
        state = {
            "address": self.address,
            "port": self.port,
            "zones": [z.to_dict() for z in self.zones],
            "tsig": self.tsig.to_dict(),
            "trust_anchor": self._trust_anchor,
            "added_loopback_address": self._added_address,
        }
        write_private(self.state_dir / self.STATE_FILE, json.dumps(state, indent=2) + "\n")

    @classmethod
    def attach(cls, state_dir: Path) -> AuthoritativeDNS:
        """The server described in `state_dir` (started by another process, or stopped)."""
        state = json.loads((Path(state_dir) / cls.STATE_FILE).read_text())
        obj = cls(
            state_dir,
            state["address"],
            [ZoneSpec.from_dict(z) for z in state["zones"]],
            state["port"],
            tsig=TsigKey.from_dict(state["tsig"]),
        )
        obj._trust_anchor = state.get("trust_anchor")
        obj._added_address = bool(state.get("added_loopback_address"))
        return obj

    # -- lifecycle --------------------------------------------------------------------------

    def start(self, timeout: float = 30) -> None:
        """Start BIND; return once every zone is served and signed and every DS is in place."""
        deadline = time.monotonic() + timeout
        if self.process.is_running():
            raise StackError(f"named is already running (pid file {self.process.pid_file})")
        self._write_config()
        self._trust_anchor = None
        self._added_address = ensure_loopback_address(self.address)
        try:
            check_port_free(self.address, self.port, "BIND")
        except StackError:
            self.stop()
            raise
        self._save_state()
        self.process.start()
        try:
            self._wait_ready(deadline)
        except BaseException:
            self.stop()
            raise
        self._save_state()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop BIND and remove the loopback alias if `start` added it."""
        self.process.stop(timeout)
        if self._added_address:
            remove_loopback_address(self.address)
            self._added_address = False
            if (self.state_dir / self.STATE_FILE).exists():
                self._save_state()

    def _remaining(self, deadline: float) -> float:
        return max(0.1, deadline - time.monotonic())

    def _wait_ready(self, deadline: float) -> None:
        def wait(what: str, predicate: Callable[[], bool]) -> None:
            wait_until(
                predicate,
                timeout=self._remaining(deadline),
                what=what,
                interval=0.1,
                process=self.process,
            )

        for plan in self._plans.values():
            wait(f"BIND to serve zone {plan.name}", functools.partial(self._serves, plan.name))
        for plan in self._plans.values():
            if plan.signed:
                wait(
                    f"BIND to sign zone {plan.name}",
                    functools.partial(self._fully_signed, plan.name),
                )
        for plan in self._plans.values():
            if not plan.gets_ds:
                continue
            ds = self.ds_for(plan.name) if plan.ds == "auto" else self.bogus_ds_for(plan.name)
            self.set_parent_ds(plan.name, ds)
            wait(
                f"the signed DS of {plan.name} in its parent",
                functools.partial(self._parent_serves_signed_ds, plan.name),
            )
        parent_ds = self.ds_for(PARENT_ZONE)
        self._trust_anchor = "\n".join(f"{PARENT_ZONE} IN DS {ds.to_text()}" for ds in parent_ds)

    def _fully_signed(self, zone: dns.name.Name) -> bool:
        return not self.signature_problems(zone)

    def _serves(self, zone: dns.name.Name) -> bool:
        r = query(
            self.address,
            self.port,
            zone,
            "SOA",
            dnssec=False,
            recursion_desired=False,
            timeout=0.25,
        )
        return (
            r.rcode() == dns.rcode.NOERROR
            and bool(r.flags & dns.flags.AA)
            and any(rr.rdtype == dns.rdatatype.SOA and rr.name == zone for rr in r.answer)
        )

    def _parent_serves_signed_ds(self, zone: dns.name.Name) -> bool:
        r = query(self.address, self.port, zone, "DS", recursion_desired=False, timeout=1.0)
        types = {rr.rdtype for rr in r.answer}
        return dns.rdatatype.DS in types and dns.rdatatype.RRSIG in types

    # -- DNSSEC helpers -----------------------------------------------------------------------

    def axfr(self, zone: str | dns.name.Name, *, timeout: float = 5.0) -> dns.zone.Zone:
        """The zone's current content, transferred with the TSIG key."""
        z = dns.zone.Zone(_abs(zone), relativize=False)
        xfr_query, _ = dns.xfr.make_query(z, keyring=self.tsig.key())
        dns.query.inbound_xfr(
            self.address, z, xfr_query, port=self.port, timeout=timeout, lifetime=timeout
        )
        return z

    def signature_problems(self, zone: str | dns.name.Name) -> list[str]:
        """`zone_signature_problems` of the zone as served right now."""
        return zone_signature_problems(self.axfr(zone))

    def dnskeys(self, zone: str | dns.name.Name) -> list[dns.rdtypes.ANY.DNSKEY.DNSKEY]:
        r = query(self.address, self.port, zone, "DNSKEY", recursion_desired=False, tcp=True)
        return [
            key
            for rrset in r.answer
            if rrset.rdtype == dns.rdatatype.DNSKEY
            for key in rrset
            if isinstance(key, dns.rdtypes.ANY.DNSKEY.DNSKEY)
        ]

    def ds_for(self, zone: str | dns.name.Name) -> list[dns.rdtypes.ANY.DS.DS]:
        """SHA-256 DS records of the zone's current SEP keys."""
        name = _abs(zone)
        return [
            dns.dnssec.make_ds(name, key, "SHA256")
            for key in self.dnskeys(name)
            if key.flags & 0x0001
        ]

    def bogus_ds_for(self, zone: str | dns.name.Name) -> list[dns.rdtypes.ANY.DS.DS]:
        """A DS that names the zone's key tag (or a made-up one) but whose digest is wrong."""
        keys = self.ds_for(zone)
        key_tag = keys[0].key_tag if keys else 4242
        digest = hashlib.sha256(f"mailward bogus DS {_abs(zone)}".encode()).hexdigest()
        rdata = dns.rdata.from_text("IN", "DS", f"{key_tag} 13 2 {digest}")
        assert isinstance(rdata, dns.rdtypes.ANY.DS.DS)
        return [rdata]

    def set_parent_ds(
        self,
        zone: str | dns.name.Name,
        ds: Iterable[dns.rdtypes.ANY.DS.DS | str] | None,
        *,
        ttl: int = DS_TTL,
    ) -> None:
        """Replace the zone's DS RRset in its parent by `ds` (None or empty: delete it)."""
        name = _abs(zone)
        update = self.new_update(self.parent_of(name))
        rdatas = [
            d if isinstance(d, dns.rdata.Rdata) else dns.rdata.from_text("IN", "DS", d)
            for d in (ds or ())
        ]
        if rdatas:
            update.replace(name, ttl, *rdatas)
        else:
            update.delete(name, "DS")
        self.send_update(update)

    # -- updates --------------------------------------------------------------------------------

    def new_update(self, zone: str | dns.name.Name) -> dns.update.UpdateMessage:
        """An UPDATE message for `zone`, to be signed with the stack's TSIG key."""
        return dns.update.UpdateMessage(_abs(zone), keyring=self.tsig.key())

    def send_update(
        self, update: dns.message.Message, *, check: bool = True, timeout: float = 5.0
    ) -> dns.message.Message:
        """Send `update`; with `check`, raise StackError unless the answer is NOERROR."""
        response = send_update(self.address, self.port, update, timeout=timeout)
        if check and response.rcode() != dns.rcode.NOERROR:
            raise StackError(
                f"UPDATE of {update.question[0].name if update.question else '?'} refused: "
                f"{dns.rcode.to_text(response.rcode())}"
            )
        return response

    def query(self, name: str | dns.name.Name, rdtype: str, **kwargs: Any) -> dns.message.Message:
        kwargs.setdefault("recursion_desired", False)
        return query(self.address, self.port, name, rdtype, **kwargs)


# --------------------------------------------------------------------------------------------
# Validating resolver


class ValidatingResolver:
    """Unbound validating everything under `test.` from the DS of `test.`."""

    STATE_FILE = "resolver.json"

    def __init__(
        self,
        state_dir: Path,
        address: str,
        authoritative: AuthoritativeDNS | tuple[str, int, str],
        port: int = 53,
        *,
        cache_max_ttl: int = 5,
        cache_max_negative_ttl: int = 1,
    ) -> None:
        self.state_dir = Path(state_dir)
        self.cache_max_ttl = cache_max_ttl
        self.cache_max_negative_ttl = cache_max_negative_ttl
        self._address = address
        self._port = port
        self._authoritative = authoritative
        if isinstance(authoritative, AuthoritativeDNS):
            self.auth_address, self.auth_port = authoritative.address, authoritative.port
        else:
            self.auth_address, self.auth_port, _ = authoritative
        self.process = ManagedProcess(
            "unbound",
            [_program("unbound"), "-d", "-c", str(self.conf_file)],
            self.state_dir,
        )

    @property
    def address(self) -> str:
        return self._address

    @property
    def port(self) -> int:
        return self._port

    @property
    def conf_file(self) -> Path:
        return self.state_dir / "unbound.conf"

    @property
    def trust_anchor_file(self) -> Path:
        return self.state_dir / "unbound-trust-anchors.ds"

    def trust_anchor(self) -> str:
        if isinstance(self._authoritative, AuthoritativeDNS):
            return self._authoritative.trust_anchor()
        return self._authoritative[2]

    def _probe_name(self) -> dns.name.Name:
        """A name whose SOA must validate (AD) once the resolver works."""
        if isinstance(self._authoritative, AuthoritativeDNS):
            for z in self._authoritative.zones:
                if z.secure:
                    return z.dns_name
        return PARENT_ZONE

    def is_running(self) -> bool:
        return self.process.is_running()

    def _unbound_conf(self) -> str:
        ip6 = _is_ipv6(self.address) or _is_ipv6(self.auth_address)
        auth = f"{self.auth_address}@{self.auth_port}"
        return (
            "# Written by mailward_localstack.dns.ValidatingResolver; regenerated on every start.\n"
            "server:\n"
            "    verbosity: 1\n"
            f"    interface: {self.address}@{self.port}\n"
            f"    port: {self.port}\n"
            f"    outgoing-interface: {self.address}\n"
            "    do-ip4: yes\n"
            f"    do-ip6: {'yes' if ip6 else 'no'}\n"
            "    do-udp: yes\n"
            "    do-tcp: yes\n"
            "    access-control: 127.0.0.0/8 allow\n"
            "    access-control: ::1/128 allow\n"
            '    username: ""\n'
            '    chroot: ""\n'
            f'    directory: "{self.state_dir}"\n'
            '    pidfile: ""\n'
            "    do-daemonize: no\n"
            "    use-syslog: no\n"
            '    logfile: ""\n'
            "    log-time-ascii: yes\n"
            "    num-threads: 1\n"
            "    do-not-query-localhost: no\n"
            '    local-zone: "test." nodefault\n'
            f'    trust-anchor-file: "{self.trust_anchor_file}"\n'
            "    val-log-level: 2\n"
            "    ede: yes\n"
            "    trust-anchor-signaling: no\n"
            "    cache-min-ttl: 0\n"
            f"    cache-max-ttl: {self.cache_max_ttl}\n"
            f"    cache-max-negative-ttl: {self.cache_max_negative_ttl}\n"
            "    val-bogus-ttl: 1\n"
            "    infra-host-ttl: 5\n"
            "    aggressive-nsec: no\n"
            "    prefetch: no\n"
            "    serve-expired: no\n"
            "stub-zone:\n"
            f'    name: "{PARENT_ZONE}"\n'
            f"    stub-addr: {auth}\n"
            "forward-zone:\n"
            '    name: "."\n'
            f"    forward-addr: {auth}\n"
            "remote-control:\n"
            "    control-enable: no\n"
        )

    def _write_config(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.trust_anchor_file.write_text(self.trust_anchor().strip() + "\n")
        self.conf_file.write_text(self._unbound_conf())
        check = subprocess.run(
            [_find_program("unbound-checkconf"), str(self.conf_file)],
            capture_output=True,
            text=True,
            check=False,
        )
        if check.returncode != 0:
            raise StackError(
                f"unbound-checkconf rejected {self.conf_file}:\n{check.stdout}{check.stderr}"
            )
        state = {
            "address": self.address,
            "port": self.port,
            "authoritative": [self.auth_address, self.auth_port, self.trust_anchor()],
            "cache_max_ttl": self.cache_max_ttl,
            "cache_max_negative_ttl": self.cache_max_negative_ttl,
        }
        (self.state_dir / self.STATE_FILE).write_text(json.dumps(state, indent=2) + "\n")

    @classmethod
    def attach(cls, state_dir: Path) -> ValidatingResolver:
        state = json.loads((Path(state_dir) / cls.STATE_FILE).read_text())
        auth_address, auth_port, anchor = state["authoritative"]
        return cls(
            state_dir,
            state["address"],
            (auth_address, int(auth_port), anchor),
            state["port"],
            cache_max_ttl=state.get("cache_max_ttl", 5),
            cache_max_negative_ttl=state.get("cache_max_negative_ttl", 1),
        )

    def start(self, timeout: float = 30) -> None:
        """Start Unbound; return once a signed zone's SOA comes back with the AD bit."""
        if self.process.is_running():
            raise StackError(f"unbound is already running (pid file {self.process.pid_file})")
        check_port_free(self.address, self.port, "Unbound")
        self._write_config()
        self.process.start()
        probe = self._probe_name()
        try:
            wait_until(
                lambda: self.is_secure(probe, "SOA", timeout=0.25),
                timeout=timeout,
                what=f"Unbound to validate the SOA of {probe} (AD bit)",
                process=self.process,
            )
        except BaseException:
            self.stop()
            raise

    def stop(self, timeout: float = 10.0) -> None:
        self.process.stop(timeout)

    def query(self, name: str | dns.name.Name, rdtype: str, **kwargs: Any) -> dns.message.Message:
        return query(self.address, self.port, name, rdtype, **kwargs)

    def is_secure(self, name: str | dns.name.Name, rdtype: str, *, timeout: float = 2.0) -> bool:
        """NOERROR with data and the AD bit."""
        r = self.query(name, rdtype, timeout=timeout)
        return r.rcode() == dns.rcode.NOERROR and bool(r.answer) and bool(r.flags & dns.flags.AD)


# --------------------------------------------------------------------------------------------
# Both together


@dataclass
class DNSStack:
    """The authoritative server and the resolver in `<state_dir>/authoritative|resolver`."""

    authoritative: AuthoritativeDNS
    resolver: ValidatingResolver

    @classmethod
    def create(
        cls,
        state_dir: Path,
        *,
        auth_address: str,
        resolver_address: str,
        zones: Sequence[ZoneSpec],
        auth_port: int = 53,
        resolver_port: int = 53,
        resolver_cache_max_ttl: int = 5,
    ) -> DNSStack:
        auth = AuthoritativeDNS(Path(state_dir) / "authoritative", auth_address, zones, auth_port)
        res = ValidatingResolver(
            Path(state_dir) / "resolver",
            resolver_address,
            auth,
            resolver_port,
            cache_max_ttl=resolver_cache_max_ttl,
        )
        return cls(auth, res)

    @classmethod
    def attach(cls, state_dir: Path) -> DNSStack:
        auth = AuthoritativeDNS.attach(Path(state_dir) / "authoritative")
        res = ValidatingResolver.attach(Path(state_dir) / "resolver")
        res._authoritative = auth
        return cls(auth, res)

    @property
    def tsig(self) -> TsigKey:
        return self.authoritative.tsig

    @property
    def zones(self) -> tuple[ZoneSpec, ...]:
        return self.authoritative.zones

    def start(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        self.authoritative.start(timeout=timeout)
        try:
            self.resolver.start(timeout=max(1.0, deadline - time.monotonic()))
        except BaseException:
            self.authoritative.stop()
            raise

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.resolver.stop()
        self.authoritative.stop()
