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

A zone can also have a secondary (`ZoneSpec(..., secondary=True)` and a `SecondaryDNS` of
`mailward_localstack.dns_secondary` on an address of its own): its NS RRset and the glue in its
parent then name `ns1.<zone>` (this server) and `ns2.<zone>` (the secondary), and this server
NOTIFYs the secondary of every change to it. Zones without a secondary are untouched by this.

`ValidatingResolver` runs Unbound with the DS of `test.` as its trust anchor, a stub zone for
`test.` and a forward zone for "." both pointing at the authoritative server (no query ever leaves
loopback), and caches capped at a few seconds so that tests see updates quickly (both ends of the
cache's TTL range can be set, e.g. to cache answers for their whole TTL).

Every server is a `ManagedProcess` with its pid file in its state directory, and each class
writes a JSON description there, so another process can `attach()` to a running stack (the demo's
`down` command) or simply `stop_all(state_dir)`.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import shutil
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

from mailward_localstack._process import ManagedProcess, StackError, wait_until, write_private
from mailward_localstack.dns_common import (
    NAMED_LOGGING,
    PARENT_ZONE,
    TsigKey,
    _abs,
    _is_ipv6,
    _program,
    axfr,
    check_config,
    check_port_free,
    ensure_loopback_address,
    interface_addresses,
    named_common_options,
    query,
    remove_loopback_address,
    send_update,
    soa_serial,
    zone_signature_problems,
)
from mailward_localstack.dns_secondary import DEFAULT_CONTROL_PORT, SecondaryDNS

__all__ = [
    "PARENT_ZONE",
    "AuthoritativeDNS",
    "DNSStack",
    "DsMode",
    "SecondaryDNS",
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

DEFAULT_TTL = 300
DS_TTL = 60
NEGATIVE_TTL = 5
POLICY_NAME = "mailward-fast"
NS_LABEL = "ns1"
"""Each zone's name server is `ns1.<zone>` (glue in the parent), the parent's is `ns1.test.`."""
SECONDARY_NS_LABEL = "ns2"
"""A zone with a secondary also has `ns2.<zone>`, the secondary's address (glue in the parent)."""

DsMode = Literal["auto", "none", "bogus"]


def _address_rr(address: str) -> str:
    return f"{'AAAA' if _is_ipv6(address) else 'A'} {address}"


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

    `secondary`: the zone is also served by the stack's `SecondaryDNS` as `ns2.<zone>` (in the
    zone's NS RRset and the parent's delegation, with glue), kept current by NOTIFY and IXFR.
    """

    name: str
    signed: bool = True
    records: Sequence[str] = ()
    ds: DsMode = "auto"
    secondary: bool = False

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
            "secondary": self.secondary,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ZoneSpec:
        return cls(
            name=data["name"],
            signed=data["signed"],
            records=data["records"],
            ds=data["ds"],
            secondary=bool(data.get("secondary", False)),
        )


@dataclass
class _ZonePlan:
    name: dns.name.Name
    signed: bool
    records: Sequence[str]
    ds: DsMode
    parent: dns.name.Name | None
    secondary: bool = False
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
    """BIND serving `test.` and the given zones on one address, signed, updatable with TSIG.

    `secondary_address` (and `secondary_port`) is where the `SecondaryDNS` of the zones with
    `ZoneSpec.secondary` listens: `ns2.<zone>` points there, and those zones (only those) are
    NOTIFYed to it. It must be given when a zone has a secondary.
    """

    STATE_FILE = "authoritative.json"

    def __init__(
        self,
        state_dir: Path,
        address: str,
        zones: Sequence[ZoneSpec],
        port: int = 53,
        *,
        tsig: TsigKey | None = None,
        secondary_address: str | None = None,
        secondary_port: int = 53,
    ) -> None:
        self.state_dir = Path(state_dir)
        self._address = address
        self._port = port
        self.zones: tuple[ZoneSpec, ...] = tuple(zones)
        names = [z.name for z in self.zones]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate zone names in {names}")
        self.secondary_address = secondary_address
        self.secondary_port = secondary_port
        if secondary_address is None and any(z.secondary for z in self.zones):
            raise ValueError("zones with a secondary need the secondary's address")
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

    def secondary_zones(self) -> list[str]:
        """The zones the secondary transfers (`ZoneSpec.secondary`)."""
        return [z.name for z in self.zones if z.secondary]

    def serial(self, zone: str | dns.name.Name) -> int | None:
        """The SOA serial this server serves for `zone` now (None if it does not serve it)."""
        return soa_serial(self.address, self.port, zone)

    def parent_of(self, zone: str | dns.name.Name) -> dns.name.Name:
        plan = self._plans[_abs(zone)]
        if plan.parent is None:
            raise ValueError(f"{zone} has no parent here")
        return plan.parent

    # -- configuration ----------------------------------------------------------------------

    def _plan(self) -> dict[dns.name.Name, _ZonePlan]:
        plans = {PARENT_ZONE: _ZonePlan(PARENT_ZONE, True, (), "none", None)}
        for z in self.zones:
            plans[z.dns_name] = _ZonePlan(
                z.dns_name, z.signed, z.records, z.ds, None, secondary=z.secondary
            )
        for name, plan in plans.items():
            if name == PARENT_ZONE:
                continue
            enclosing = [p for p in plans if p != name and name.is_subdomain(p)]
            plan.parent = max(enclosing, key=len)
            plans[plan.parent].children.append(name)
        return plans

    def _name_servers(self, plan: _ZonePlan) -> list[tuple[str, str]]:
        """(name, address RR) of each server of the zone: `ns1` here, `ns2` the secondary."""
        servers = [(f"{NS_LABEL}.{plan.name}", _address_rr(self.address))]
        if plan.secondary and self.secondary_address is not None:
            servers.append(
                (f"{SECONDARY_NS_LABEL}.{plan.name}", _address_rr(self.secondary_address))
            )
        return servers

    def _zone_text(self, plan: _ZonePlan) -> str:
        origin = plan.name.to_text()
        servers = self._name_servers(plan)
        lines = [
            f"$ORIGIN {origin}",
            f"$TTL {DEFAULT_TTL}",
            f"@ IN SOA {servers[0][0]} hostmaster.{origin} 1 3600 600 86400 {NEGATIVE_TTL}",
            *(f"@ IN NS {ns}" for ns, _ in servers),
            *(f"{ns} IN {rr}" for ns, rr in servers),
        ]
        for child in sorted(plan.children):
            child_servers = self._name_servers(self._plans[child])
            lines += [f"{child} IN NS {ns}" for ns, _ in child_servers]
            lines += [f"{ns} IN {rr}" for ns, rr in child_servers]
        lines += ["", "; records given by the ZoneSpec", f"$ORIGIN {origin}", *plan.records, ""]
        return "\n".join(lines)

    def _notify_secondary(self, plan: _ZonePlan) -> str:
        """Zone options that NOTIFY the secondary (only for a zone that has one).

        `explicit`: the secondary alone, not every NS. The NOTIFY leaves from this server's own
        address (else the kernel picks the secondary's, and BIND refuses a NOTIFY from a
        non-primary), and `notify-delay 0` sends every change at once, not 5 s apart.
        """
        if not plan.secondary or self.secondary_address is None:
            return ""
        six = "-v6" if _is_ipv6(self.address) else ""
        return (
            "    notify explicit;\n"
            f"    also-notify {{ {self.secondary_address} port {self.secondary_port}; }};\n"
            f"    notify-source{six} {self.address};\n"
            "    notify-delay 0;\n"
        )

    def _named_conf(self) -> str:
        work = self.work_dir
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
                f"{self._notify_secondary(plan)}"
                "};\n"
            )
        return (
            "# Written by mailward_localstack.dns.AuthoritativeDNS; regenerated on every start.\n"
            f'include "{self.tsig_file}";\n'
            "options {\n"
            f"{named_common_options(work, self.address, self.port)}"
            "    notify no;\n"
            "    allow-transfer { none; };\n"
            "    allow-update { none; };\n"
            "};\n"
            "controls { };\n"
            f"{NAMED_LOGGING}"
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
        check_config("named-checkconf", self.conf_file)

    def _save_state(self) -> None:
        state = {
            "address": self.address,
            "port": self.port,
            "zones": [z.to_dict() for z in self.zones],
            "tsig": self.tsig.to_dict(),
            "trust_anchor": self._trust_anchor,
            "added_loopback_address": self._added_address,
            "secondary": [self.secondary_address, self.secondary_port],
        }
        write_private(self.state_dir / self.STATE_FILE, json.dumps(state, indent=2) + "\n")

    @classmethod
    def attach(cls, state_dir: Path) -> AuthoritativeDNS:
        """The server described in `state_dir` (started by another process, or stopped)."""
        state = json.loads((Path(state_dir) / cls.STATE_FILE).read_text())
        secondary_address, secondary_port = state.get("secondary", [None, 53])
        obj = cls(
            state_dir,
            state["address"],
            [ZoneSpec.from_dict(z) for z in state["zones"]],
            state["port"],
            tsig=TsigKey.from_dict(state["tsig"]),
            secondary_address=secondary_address,
            secondary_port=int(secondary_port),
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

    def interrupt(self, timeout: float = 10.0) -> None:
        """Stop named, keeping its configuration, keys and journals and the address: an outage
        that `resume` ends, not a fresh start."""
        self.process.stop(timeout)

    def resume(self, timeout: float = 30) -> None:
        """Start named again after `interrupt`; return once it serves every zone, signed."""
        self.process.start()
        self._wait_ready(time.monotonic() + timeout)

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
        return axfr(self.address, self.port, zone, tsig=self.tsig, timeout=timeout)

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
    """Unbound validating everything under `test.` from the DS of `test.`.

    Unbound keeps an answer for its TTL, but at most `cache_max_ttl` and at least
    `cache_min_ttl` seconds (Unbound's `cache-max-ttl`/`cache-min-ttl`), negative answers at most
    `cache_max_negative_ttl`. The defaults (5 s, 0, 1 s) let tests see every change at once; a
    test of caching itself (a TLSA rollover) sets `cache_max_ttl` to at least the records' TTL,
    so that answers are cached as long as a resolver on the internet would, and can set
    `cache_min_ttl` above it to play a resolver that holds data past its TTL.
    """

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
        cache_min_ttl: int = 0,
    ) -> None:
        if not 0 <= cache_min_ttl <= cache_max_ttl:
            raise ValueError(f"need 0 <= cache_min_ttl ({cache_min_ttl}) <= {cache_max_ttl=}")
        self.state_dir = Path(state_dir)
        self.cache_max_ttl = cache_max_ttl
        self.cache_min_ttl = cache_min_ttl
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
            f"    cache-min-ttl: {self.cache_min_ttl}\n"
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
        check_config("unbound-checkconf", self.conf_file)
        state = {
            "address": self.address,
            "port": self.port,
            "authoritative": [self.auth_address, self.auth_port, self.trust_anchor()],
            "cache_max_ttl": self.cache_max_ttl,
            "cache_max_negative_ttl": self.cache_max_negative_ttl,
            "cache_min_ttl": self.cache_min_ttl,
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
            cache_min_ttl=state.get("cache_min_ttl", 0),
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
    """The authoritative server, the resolver, and the secondary if some zone has one, in
    `<state_dir>/authoritative|resolver|secondary`."""

    authoritative: AuthoritativeDNS
    resolver: ValidatingResolver
    secondary: SecondaryDNS | None = None

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
        resolver_cache_min_ttl: int = 0,
        secondary_address: str | None = None,
        secondary_port: int = 53,
        secondary_control_port: int = DEFAULT_CONTROL_PORT,
    ) -> DNSStack:
        """A stack to `start`. Zones with `ZoneSpec.secondary` need `secondary_address`: the
        secondary BIND listens there (port `secondary_port`, rndc on `secondary_control_port`)."""
        auth = AuthoritativeDNS(
            Path(state_dir) / "authoritative",
            auth_address,
            zones,
            auth_port,
            secondary_address=secondary_address,
            secondary_port=secondary_port,
        )
        secondary = None
        if auth.secondary_zones():
            assert secondary_address is not None  # AuthoritativeDNS checked it
            secondary = SecondaryDNS(
                Path(state_dir) / "secondary",
                secondary_address,
                (auth_address, auth_port),
                auth.secondary_zones(),
                secondary_port,
                tsig=auth.tsig,
                control_port=secondary_control_port,
            )
        res = ValidatingResolver(
            Path(state_dir) / "resolver",
            resolver_address,
            auth,
            resolver_port,
            cache_max_ttl=resolver_cache_max_ttl,
            cache_min_ttl=resolver_cache_min_ttl,
        )
        return cls(auth, res, secondary)

    @classmethod
    def attach(cls, state_dir: Path) -> DNSStack:
        auth = AuthoritativeDNS.attach(Path(state_dir) / "authoritative")
        res = ValidatingResolver.attach(Path(state_dir) / "resolver")
        res._authoritative = auth
        secondary_dir = Path(state_dir) / "secondary"
        secondary = None
        if (secondary_dir / SecondaryDNS.STATE_FILE).exists():
            secondary = SecondaryDNS.attach(secondary_dir)
        return cls(auth, res, secondary)

    @property
    def tsig(self) -> TsigKey:
        return self.authoritative.tsig

    @property
    def zones(self) -> tuple[ZoneSpec, ...]:
        return self.authoritative.zones

    def start(self, timeout: float = 60) -> None:
        """Start the primary, then the secondary (once it serves the primary's zones), then the
        resolver, which must find every server of a zone it asks."""
        deadline = time.monotonic() + timeout
        self.authoritative.start(timeout=timeout)
        try:
            if self.secondary is not None:
                self.secondary.start(timeout=max(1.0, deadline - time.monotonic()))
            self.resolver.start(timeout=max(1.0, deadline - time.monotonic()))
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.resolver.stop()
        if self.secondary is not None:
            with contextlib.suppress(Exception):
                self.secondary.stop()
        self.authoritative.stop()
