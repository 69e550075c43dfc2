"""RFC 2136 dynamic updates with TSIG (dnspython): the provider for BIND, Knot, PowerDNS, ...

Reading: the zone is found from the SOA (RFC 2136 §4: updates go to the zone's primary), then
read by a TSIG-signed zone transfer. A copy of each zone is kept and brought up to date by IXFR,
so a pass over many domains of one zone does not transfer the whole zone every time; any doubt
(an error, a serial gone backwards, an old copy) falls back to a full AXFR. The copy holds the
zone's RRsets by owner name, without what the signer maintains: the transfer is read record by
record and RRSIG/NSEC/NSEC3 data (most of a signed zone, and most of each IXFR after an UPDATE)
is skipped unparsed, while the TSIG of every signed message is verified as usual (RFC 8945 §5.3.1).

Writing: all changes of one domain go into ONE UPDATE message, together with the ownership
registry and a prerequisite on every RRset as it was read (RFC 2136 §2.4). The server applies
all of it or nothing; if someone changed those records in between, it refuses and the next
attempt reads and plans again. `UPDATES_SENT` counts every UPDATE message sent, for the tests and
the benchmark.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import logging
import re
import socket
import struct
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import cast

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.SOA
import dns.rdtypes.ANY.TSIG
import dns.serial
import dns.tsig
import dns.update
import dns.xfr

from mailward.adapters.dns_provider import (
    ConcurrentChange,
    ProviderUnreachable,
    PublishResult,
    UpdateRefused,
)
from mailward.adapters.wire import dns_exchange_tcp, recv_exact
from mailward.plan.records import Key, Owner, Plan, calculate, decode_registry, registry_name
from mailward.render.dns_records import RRset, absolute

log = logging.getLogger("mailward.dns")

# Records a signer maintains: never planned, never compared (BIND's TYPE65534 is its own
# signing state).
_SIGNER_TYPES = frozenset({"RRSIG", "NSEC", "NSEC3", "NSEC3PARAM", "DNSKEY", "CDS", "CDNSKEY"})
_PREREQUISITE_FAILED = {
    dns.rcode.NXRRSET,
    dns.rcode.YXRRSET,
    dns.rcode.NXDOMAIN,
    dns.rcode.YXDOMAIN,
}
_ZONE_COPY_MAX_AGE = 300.0
_ATTEMPTS = 3


class UpdateCounter:
    """UPDATE messages sent by this process (a plain counter; the GIL guards the increment)."""

    def __init__(self) -> None:
        self.sent = 0
        self.records = 0


UPDATES_SENT = UpdateCounter()


@dataclass(frozen=True)
class RFC2136Config:
    host: str
    port: int
    key_name: str
    algorithm: str
    secret: str  # base64, as in BIND's key statement; never logged
    secret_source: str  # where the secret came from, for messages: "Secret ns/name key 'k'"
    timeout: float = 5.0

    def tsig_key(self) -> dns.tsig.Key:
        try:
            base64.b64decode(self.secret, validate=True)
        except (binascii.Error, ValueError):
            raise UpdateRefused(
                f"the TSIG secret in {self.secret_source} is not base64; put the key's secret "
                "there as BIND shows it in its key statement"
            ) from None
        return dns.tsig.Key(dns.name.from_text(self.key_name), self.secret, self.algorithm)

    @property
    def server(self) -> str:
        return f"{self.host}#{self.port}"


class _Data:
    """The records of one RRset in the copy."""

    __slots__ = ("rdata", "ttl")

    def __init__(self, ttl: int) -> None:
        self.ttl = ttl
        self.rdata: set[dns.rdata.Rdata] = set()


class _ZoneCopy:
    """What mailward knows of a zone: its RRsets by owner name (lower-case absolute text) and
    type, without what the signer maintains, as of SOA serial `serial`."""

    def __init__(self, origin: dns.name.Name) -> None:
        self.origin = origin
        self.origin_text = origin.canonicalize().to_text()
        self.names: dict[str, dict[str, _Data]] = {}
        self.serial: int | None = None
        self.read_at = 0.0  # time.monotonic() when the last transfer that completed was asked
        self.lock = threading.Lock()
        self.fetched_at = 0.0
        self.complete = False

    def rrsets_at(self, name: str) -> dict[Key, RRset]:
        node = self.names.get(_owner_key(name))
        if not node:
            return {}
        return {(name, rdtype): _rrset(name, rdtype, data) for rdtype, data in node.items()}

    def rrsets(self) -> dict[Key, RRset]:
        """Every RRset of the copy (for tests: it must equal what a fresh AXFR reads)."""
        return {
            (name, rdtype): _rrset(name, rdtype, data)
            for name, node in self.names.items()
            for rdtype, data in node.items()
        }


def _rrset(name: str, rdtype: str, data: _Data) -> RRset:
    return RRset(name, rdtype, data.ttl, tuple(sorted(r.to_text() for r in data.rdata)))


def _owner_key(name: str) -> str:
    return dns.name.from_text(name).canonicalize().to_text()


_copies: dict[tuple[str, int, str, str], _ZoneCopy] = {}
_copies_lock = threading.Lock()


def _exchange_tcp(config: RFC2136Config, message: dns.message.Message) -> dns.message.Message:
    return dns_exchange_tcp(config.host, config.port, message, config.timeout)


# RFC 8945 §4.3 TSIG error codes. dnspython's rcode table names 16 BADVERS (the EDNS meaning of
# the same number), which would hide from the person that the secret is wrong.
_TSIG_ERRORS = {16: "BADSIG", 17: "BADKEY", 18: "BADTIME", 22: "BADTRUNC"}


def _tsig_advice(config: RFC2136Config, error: str) -> str:
    if error == "BADKEY":
        return (
            f"the server does not know the TSIG key {config.key_name!r} ({config.algorithm}); "
            "check tsigKeyName and tsigAlgorithm of the provider"
        )
    if error == "BADSIG":
        return (
            f"the TSIG secret in {config.secret_source} does not match the key "
            f"{config.key_name!r} on the server; put the right secret there"
        )
    if error in ("BADTIME", "BADSIGTIME"):
        return "the clocks of the operator and the server differ too much (TSIG BADTIME)"
    return f"TSIG error {error}"


def _refusal(config: RFC2136Config, zone: str, action: str, response: dns.message.Message) -> str:
    rcode = dns.rcode.to_text(response.rcode())
    tsig_error = response.tsig_error if response.had_tsig or response.tsig else 0
    if tsig_error:
        why = _tsig_advice(config, _TSIG_ERRORS.get(tsig_error, f"code {tsig_error}"))
    elif response.rcode() == dns.rcode.NOTAUTH:
        why = _tsig_advice(config, "BADSIG")
    elif response.rcode() == dns.rcode.REFUSED:
        why = (
            f"either key {config.key_name!r} may not {action} zone {zone} there "
            "(allow-update, allow-transfer, update-policy) or the server rejected the data "
            "(BIND refuses e.g. an MX whose target in the zone has no A/AAAA); its log says which"
        )
    elif response.rcode() == dns.rcode.NOTZONE or response.rcode() == dns.rcode.NOTAUTH:
        why = f"the server is not authoritative for {zone}"
    else:
        why = "see the server's log"
    return f"{config.server} refused to {action} zone {zone} ({rcode}): {why}"


# -- reading a zone transfer ---------------------------------------------------------------
# dnspython parses every record of a transfer into objects (some 15 ms for the IXFR after one
# domain's UPDATE in a signed zone, 5 times the server's time to send it); this reader walks the
# wire and builds objects only for the records the copy keeps.


def _malformed(why: str) -> dns.exception.FormError:
    return dns.exception.FormError(why)  # type: ignore[no-untyped-call]


_PLAIN_LABEL = re.compile(rb"[a-z0-9_*-]+")
_XFR_MESSAGES_AT_MOST = 100_000


@functools.cache
def _type_text(rdtype: int) -> str:
    return dns.rdatatype.to_text(dns.rdatatype.RdataType.make(rdtype))


@functools.cache
def _kept(rdtype: int) -> bool:
    text = _type_text(rdtype)
    return not (text in _SIGNER_TYPES or text.startswith("TYPE"))


def _read_name(wire: bytes, offset: int, memo: dict[int, str]) -> tuple[str, int]:
    """The (possibly compressed) name at `offset`: lower-case absolute text as dnspython writes
    it, and the offset after it. `memo` holds the names read from this message by offset."""
    labels: list[tuple[int, str]] = []
    end = -1
    position = lowest = offset
    suffix = ""
    while True:
        known = memo.get(position)
        if known is not None:
            suffix = known
            break
        length = wire[position]
        if length == 0:
            position += 1
            break
        if length & 0xC0 == 0xC0:
            pointer = (length & 0x3F) << 8 | wire[position + 1]
            if end < 0:
                end = position + 2
            if pointer >= lowest:  # each jump before the last one: no loops
                raise _malformed("a compression pointer that does not point back")
            position = lowest = pointer
            continue
        if length & 0xC0:
            raise _malformed("unknown label type")
        label = wire[position + 1 : position + 1 + length].lower()
        if len(label) != length:
            raise _malformed("truncated name")
        text = (
            label.decode("ascii")
            if _PLAIN_LABEL.fullmatch(label)
            else dns.name.Name((label,)).to_text()
        )
        labels.append((position, text))
        position += 1 + length
    if end < 0:
        end = position
    for at, text in reversed(labels):
        suffix = f"{text}.{suffix}"
        memo[at] = suffix
    return suffix or ".", end


_Op = tuple[bool, str, str, int, dns.rdata.Rdata]  # (add, owner, type, ttl, rdata)


class _Inbound:
    """The state of one zone transfer (RFC 5936 AXFR, RFC 1995 IXFR, and the AXFR-style answer
    a server may give to an IXFR); the copy changes only when it completed."""

    def __init__(self, origin: str, serial: int | None) -> None:
        self.origin = origin
        self.serial = serial  # the copy's serial for an IXFR, None for an AXFR
        self.incremental = serial is not None
        self.final: dns.rdtypes.ANY.SOA.SOA | None = None  # the first SOA: the new version
        self.final_ttl = 0
        self.expecting_soa = False
        self.deleting = False
        self.at = serial  # the serial the current IXFR sequence starts from or leads to
        self.ops: list[_Op] = []
        self.done = False
        self.up_to_date = False

    def feed(self, name: str, rdtype: int, ttl: int, rdata: dns.rdata.Rdata | None) -> None:
        if self.done:
            raise _malformed("records after the final SOA")
        is_soa = rdtype == dns.rdatatype.SOA and name == self.origin
        if self.final is None:
            if not is_soa or rdata is None:
                raise _malformed("the transfer does not start with the zone's SOA")
            self.final = cast(dns.rdtypes.ANY.SOA.SOA, rdata)
            self.final_ttl = ttl
            if self.incremental:
                assert self.serial is not None
                if self.final.serial == self.serial:
                    self.done = self.up_to_date = True
                elif dns.serial.Serial(self.final.serial) < self.serial:
                    raise dns.xfr.SerialWentBackwards
                else:
                    self.expecting_soa = True
            return
        if is_soa:
            soa = cast(dns.rdtypes.ANY.SOA.SOA, rdata)
            if self.expecting_soa:  # IXFR: the first deletion sequence
                self.expecting_soa = False
                self.deleting = True
                if soa.serial != self.serial:
                    raise _malformed("IXFR base serial mismatch")
            elif not self.incremental:
                if soa != self.final:
                    raise _malformed("unexpected SOA in an AXFR")
                self.done = True
            elif self.deleting:  # the additions up to this version follow
                self.deleting = False
                self.at = soa.serial
            elif soa == self.final:
                if self.at != soa.serial:
                    raise _malformed("unexpected end of IXFR sequence")
                self.done = True
            else:  # the next deletion sequence
                if soa.serial != self.at:
                    raise _malformed("IXFR sequences do not follow each other")
                self.deleting = True
            return
        if self.expecting_soa:  # an IXFR answered with the whole zone
            self.incremental = False
            self.expecting_soa = False
        if rdata is not None:
            self.ops.append((not self.deleting, name, _type_text(rdtype), ttl, rdata))

    def commit(self, copy: _ZoneCopy) -> None:
        assert self.done
        assert self.final is not None
        if self.up_to_date:
            return
        names: dict[str, dict[str, _Data]] = copy.names if self.incremental else {}
        for add, name, rdtype, ttl, rdata in self.ops:
            node = names.get(name)
            data = node.get(rdtype) if node is not None else None
            if add:
                if node is None:
                    node = names[name] = {}
                if data is None:
                    data = node[rdtype] = _Data(ttl)
                elif ttl < data.ttl:
                    data.ttl = ttl
                data.rdata.add(rdata)
                continue
            if node is None or data is None or rdata not in data.rdata:
                raise _malformed(f"IXFR deletes {name} {rdtype} the copy lacks")
            data.rdata.discard(rdata)
            if not data.rdata:
                del node[rdtype]
                if not node:
                    del names[name]
        soa = _Data(self.final_ttl)
        soa.rdata.add(self.final)
        names.setdefault(self.origin, {})["SOA"] = soa
        copy.names = names
        copy.serial = self.final.serial


def _read_xfr_message(
    wire: bytes,
    query: dns.message.Message,
    key: dns.tsig.Key,
    ctx: object,
    inbound: _Inbound,
) -> tuple[object, bool]:
    """Feed one message of a transfer to `inbound`; the TSIG context to go on with, and whether
    this message was signed. A signed message is verified before any of its records is used."""
    memo: dict[int, str] = {}
    records: list[tuple[str, int, int, int, int, int]] = []
    tsig: tuple[str, int, int, int] | None = None
    try:
        ident, flags, questions, answers, authority, additional = struct.unpack_from("!6H", wire, 0)
        position = 12
        for _ in range(questions):
            _, position = _read_name(wire, position, memo)
            position += 4
        for section, count in enumerate((answers, authority, additional)):
            for index in range(count):
                start = position
                name, position = _read_name(wire, position, memo)
                rdtype, rdclass, ttl, length = struct.unpack_from("!HHIH", wire, position)
                position += 10
                if position + length > len(wire):
                    raise _malformed("truncated record")
                if section == 0:
                    records.append((name, rdtype, rdclass, ttl, position, length))
                elif section == 2 and rdtype == dns.rdatatype.TSIG:
                    if index != count - 1:
                        raise _malformed("TSIG is not the last record")
                    tsig = (name, start, position, length)
                position += length
    except (IndexError, struct.error):
        raise _malformed("truncated message") from None
    if position != len(wire):
        raise _malformed("trailing data after the message")
    if ident != query.id or not flags & dns.flags.QR:
        raise _malformed("not an answer to the transfer query")
    if tsig is not None:
        owner, start, at, length = tsig
        signature = cast(
            dns.rdtypes.ANY.TSIG.TSIG,
            dns.rdata.from_wire(dns.rdataclass.ANY, dns.rdatatype.TSIG, wire, at, length),
        )
        ctx = dns.tsig.validate(  # type: ignore[no-untyped-call]
            wire, key, dns.name.from_text(owner), signature, int(time.time()), query.mac, start,
            ctx, True,
        )  # fmt: skip
    elif ctx is not None:
        ctx.update(wire)  # type: ignore[attr-defined]  # unsigned, covered by the next TSIG
    rcode = dns.rcode.from_flags(flags, 0)
    if rcode != dns.rcode.NOERROR:
        raise dns.xfr.TransferError(rcode)  # type: ignore[no-untyped-call]
    if ctx is None:
        raise _malformed("the transfer's first message is not signed")
    for name, rdtype, rdclass, ttl, at, length in records:
        data = None
        if rdtype == dns.rdatatype.SOA or _kept(rdtype):
            data = dns.rdata.from_wire(
                dns.rdataclass.RdataClass.make(rdclass),
                dns.rdatatype.RdataType.make(rdtype),
                wire,
                at,
                length,
            )
        inbound.feed(name, rdtype, ttl, data)
    return ctx, tsig is not None


class RFC2136Provider:
    """Publishes through one primary server with one TSIG key."""

    def __init__(self, config: RFC2136Config, description: str) -> None:
        self.config = config
        self.description = description
        self._key = config.tsig_key()

    # -- the DNSProvider interface --------------------------------------------------------

    async def publish(
        self,
        owner: Owner,
        domain: str,
        desired: Sequence[RRset],
        keep_if_owned: frozenset[Key] = frozenset(),
    ) -> PublishResult:
        return await asyncio.to_thread(self._sync, owner, domain, desired, keep_if_owned)

    async def release(self, owner: Owner, domain: str) -> PublishResult:
        return await asyncio.to_thread(self._sync, owner, domain, ())

    async def verify(self) -> str:
        return await asyncio.to_thread(self._verify)

    # -- blocking work, in a thread --------------------------------------------------------

    def _verify(self) -> str:
        """A query signed with the key, for the root's SOA (no zone is needed): a server that
        does not know the key or the secret answers with a TSIG error, one that does signs its
        answer, whatever it says about the root."""
        query = dns.message.make_query(dns.name.root, dns.rdatatype.SOA)
        query.flags &= ~dns.flags.RD
        query.use_tsig(self._key)
        try:
            response = _exchange_tcp(self.config, query)
        except (OSError, EOFError, dns.exception.Timeout) as error:
            raise ProviderUnreachable(
                f"no answer from {self.config.server}: {error or type(error).__name__}"
            ) from None
        tsig_error = response.tsig_error if response.had_tsig or response.tsig else 0
        if tsig_error or response.rcode() == dns.rcode.NOTAUTH:
            why = _TSIG_ERRORS.get(tsig_error, "BADSIG") if tsig_error else "BADSIG"
            raise UpdateRefused(
                f"{self.config.server} rejects the TSIG key: {_tsig_advice(self.config, why)}"
            )
        if not response.had_tsig:
            raise UpdateRefused(
                f"{self.config.server} answered without signing: it does not use TSIG key "
                f"{self.config.key_name!r}"
            )
        return (
            f"{self.config.server} answers and accepts TSIG key {self.config.key_name!r} "
            f"({self.config.algorithm})"
        )

    # -- publishing --------------------------------------------------------

    def _sync(
        self,
        owner: Owner,
        domain: str,
        desired: Sequence[RRset],
        keep_if_owned: frozenset[Key] = frozenset(),
    ) -> PublishResult:
        began = time.monotonic()
        zone, serial = self._zone_and_serial(domain)
        inside = [r for r in desired if dns.name.from_text(r.name).is_subdomain(zone)]
        unpublished = [
            f"{r.describe()}: outside zone {zone.to_text(omit_final_dot=True)}"
            for r in desired
            if r not in inside
        ]
        for attempt in range(1, _ATTEMPTS + 1):
            copy = self._read_zone(zone, serial, began) if attempt == 1 else self._read_zone(zone)
            with copy.lock:
                current = self._current(copy, domain, inside)
            plan = calculate(
                owner=owner,
                domain=domain,
                current=current,
                desired=inside,
                keep_if_owned=keep_if_owned,
            )
            if plan.empty:
                return self._result(zone, plan, 0, unpublished, inside)
            try:
                self._send_update(zone, plan)
            except ConcurrentChange:
                if attempt == _ATTEMPTS:
                    raise
                self._forget(zone)  # read everything again, not just the journal
                continue
            return self._result(zone, plan, 1, unpublished, inside)
        raise AssertionError("unreachable")

    def _result(
        self,
        zone: dns.name.Name,
        plan: Plan,
        writes: int,
        unpublished: list[str],
        desired: Sequence[RRset],
    ) -> PublishResult:
        # After the UPDATE, every owned RRset holds exactly the desired data.
        managed = tuple(r for r in desired if r.key in plan.owned)
        return PublishResult(
            zone=zone.to_text(omit_final_dot=True),
            plan=plan,
            writes=writes,
            unpublished=unpublished,
            managed=managed,
        )

    def find_zone(self, domain: str) -> dns.name.Name:
        """The zone that holds `domain`: the owner of the SOA in the answer or authority."""
        return self._zone_and_serial(domain)[0]

    def _zone_and_serial(self, domain: str) -> tuple[dns.name.Name, int]:
        name = dns.name.from_text(absolute(domain))
        query = dns.message.make_query(name, dns.rdatatype.SOA)
        query.flags &= ~dns.flags.RD
        try:
            # TCP, not UDP: an unconnected UDP socket is bound to the wildcard address while it
            # waits, which a pod confined to loopback must not hold (test_real_node checks).
            response = dns.query.tcp(
                query, self.config.host, port=self.config.port, timeout=self.config.timeout
            )
        except (OSError, dns.exception.Timeout, EOFError) as error:
            raise ProviderUnreachable(
                f"no answer from {self.config.server} for the SOA of {domain}: {error}"
            ) from None
        for section in (response.answer, response.authority):
            for rrset in section:
                if rrset.rdtype == dns.rdatatype.SOA and name.is_subdomain(rrset.name):
                    return rrset.name, int(rrset[0].serial)
        if response.rcode() == dns.rcode.SERVFAIL:
            raise ProviderUnreachable(f"{self.config.server} answers SERVFAIL for {domain}")
        raise UpdateRefused(
            f"{self.config.server} is not authoritative for {domain} "
            f"({dns.rcode.to_text(response.rcode())}, no SOA): it cannot publish its records"
        )

    def _copy_key(self, zone: dns.name.Name) -> tuple[str, int, str, str]:
        return (self.config.host, self.config.port, zone.to_text(), self.config.key_name)

    def _forget(self, zone: dns.name.Name) -> None:
        with _copies_lock:
            _copies.pop(self._copy_key(zone), None)

    def _read_zone(
        self, zone: dns.name.Name, serial: int | None = None, began: float | None = None
    ) -> _ZoneCopy:
        """The kept copy of the zone, brought up to date. `serial`, the SOA serial the server
        answered with after `began` (time.monotonic()), spares the transfer when the copy has
        it, or when a concurrent publish transferred the zone after `began` anyway."""
        with _copies_lock:
            copy = _copies.setdefault(self._copy_key(zone), _ZoneCopy(zone))
        with copy.lock:
            fresh = time.monotonic() - copy.fetched_at < _ZONE_COPY_MAX_AGE
            try:
                if (
                    copy.complete
                    and fresh
                    and serial is not None
                    and (serial == copy.serial or (began is not None and copy.read_at >= began))
                ):
                    return copy
                if copy.complete and fresh:
                    try:
                        self._transfer(copy, incremental=True)
                        return copy
                    except (dns.xfr.TransferError, dns.exception.FormError, ValueError):
                        pass  # IXFR not possible here: fall back to a full transfer
                copy.complete = False
                self._transfer(copy, incremental=False)
                copy.complete = True
                copy.fetched_at = time.monotonic()
            except BaseException:
                copy.complete = False
                raise
        return copy

    def _transfer(self, copy: _ZoneCopy, *, incremental: bool) -> None:
        """Bring `copy` up to date by IXFR from its serial, or replace it by an AXFR."""
        zone_text = copy.origin.to_text(omit_final_dot=True)
        query = dns.message.make_query(
            copy.origin, dns.rdatatype.IXFR if incremental else dns.rdatatype.AXFR
        )
        serial = copy.serial if incremental else None
        if serial is not None:
            # RFC 1995 §3: the version the client has, as an SOA in the authority section.
            soa = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.SOA, f". . {serial} 0 0 0 0")
            query.find_rrset(
                query.authority, copy.origin, dns.rdataclass.IN, dns.rdatatype.SOA, create=True
            ).add(soa, 0)
        elif incremental:
            raise ValueError("no serial to start an IXFR from")
        query.use_tsig(self._key)
        wire = query.to_wire()
        inbound = _Inbound(copy.origin_text, serial)
        asked = time.monotonic()
        deadline = asked + self.config.timeout * 6
        family = socket.AF_INET6 if ":" in self.config.host else socket.AF_INET
        try:
            with socket.socket(family, socket.SOCK_STREAM) as sock:
                sock.settimeout(self.config.timeout)
                sock.connect((self.config.host, self.config.port))
                sock.sendall(struct.pack("!H", len(wire)) + wire)
                ctx: object = None
                signed = False
                for _ in range(_XFR_MESSAGES_AT_MOST):
                    if inbound.done:
                        break
                    if time.monotonic() > deadline:
                        raise dns.exception.Timeout
                    (length,) = struct.unpack("!H", recv_exact(sock, 2))
                    message = recv_exact(sock, length)
                    ctx, signed = _read_xfr_message(message, query, self._key, ctx, inbound)
                else:
                    raise _malformed("a transfer that does not end")
            if not signed:
                raise _malformed("the transfer's last message is not signed")
        except dns.xfr.TransferError as error:
            if error.rcode in (dns.rcode.NOTAUTH, dns.rcode.REFUSED, dns.rcode.NOTZONE):
                response = dns.message.make_response(query)
                response.set_rcode(error.rcode)
                raise UpdateRefused(
                    _refusal(self.config, zone_text, "transfer", response)
                ) from None
            if not incremental and error.rcode == dns.rcode.SERVFAIL:
                raise ProviderUnreachable(
                    f"{self.config.server}: SERVFAIL for {zone_text}"
                ) from None
            raise
        except dns.tsig.PeerError as error:
            raise UpdateRefused(
                f"{self.config.server} refused to transfer zone {zone_text}: "
                + _tsig_advice(self.config, _peer_error_name(error))
            ) from None
        except (OSError, EOFError, dns.exception.Timeout) as error:
            raise ProviderUnreachable(
                f"cannot read zone {zone_text} from {self.config.server}: "
                f"{error or type(error).__name__}"
            ) from None
        inbound.commit(copy)
        copy.read_at = asked

    @staticmethod
    def _current(copy: _ZoneCopy, domain: str, desired: Sequence[RRset]) -> dict[Key, RRset]:
        """The zone's RRsets at every name the plan can touch: the desired names, the registry
        and whatever the registry lists."""

        def at(names: Iterable[str]) -> dict[Key, RRset]:
            found: dict[Key, RRset] = {}
            for name in names:
                found.update(copy.rrsets_at(name))
            return found

        registry = registry_name(domain)
        current = at({registry, *(r.name for r in desired)})
        registry_rrset = current.get((registry, "TXT"))
        if registry_rrset is not None:
            listed = decode_registry(registry_rrset, domain).keys
            current.update(at({name for name, _ in listed} - {n for n, _ in current}))
        return current

    def _send_update(self, zone: dns.name.Name, plan: Plan) -> None:
        update = dns.update.UpdateMessage(zone, keyring=self._key, keyname=self._key.name)
        _prerequisite(update, plan.registry_current, registry_name_of(plan))
        for old in (*(old for old, _ in plan.update), *plan.delete):
            _prerequisite(update, old, old.name)
        for new in plan.create:
            update.absent(new.name, new.type)
        for _, new in plan.update:
            update.delete(new.name, new.type)
            update.add(new.name, *_rdataset(new))
        for new in plan.create:
            update.add(new.name, *_rdataset(new))
        for old in plan.delete:
            update.delete(old.name, old.type)
        if plan.registry_changes:
            registry = registry_name_of(plan)
            update.delete(registry, "TXT")
            if plan.registry_desired is not None:
                update.add(registry, *_rdataset(plan.registry_desired))
        zone_text = zone.to_text(omit_final_dot=True)
        try:
            response = _exchange_tcp(self.config, update)
        except (OSError, EOFError, dns.exception.Timeout) as error:
            raise ProviderUnreachable(
                f"UPDATE of zone {zone_text} at {self.config.server} got no answer: "
                f"{error or type(error).__name__}"
            ) from None
        finally:
            UPDATES_SENT.sent += 1
        rcode = response.rcode()
        if rcode == dns.rcode.NOERROR:
            UPDATES_SENT.records += plan.record_changes
            log.info(
                "UPDATE of zone %s at %s: %d created, %d replaced, %d deleted",
                zone_text,
                self.config.server,
                len(plan.create),
                len(plan.update),
                len(plan.delete),
            )
            return
        if rcode in _PREREQUISITE_FAILED:
            raise ConcurrentChange(
                f"records in zone {zone_text} changed while mailward was updating them "
                f"({dns.rcode.to_text(rcode)}); planning again"
            )
        if rcode == dns.rcode.SERVFAIL:
            raise ProviderUnreachable(f"{self.config.server} answered SERVFAIL to the UPDATE")
        raise UpdateRefused(_refusal(self.config, zone_text, "update", response))


def registry_name_of(plan: Plan) -> str:
    rrset = plan.registry_current or plan.registry_desired
    assert rrset is not None
    return rrset.name


def _peer_error_name(error: dns.tsig.PeerError) -> str:
    return {
        dns.tsig.PeerBadKey: "BADKEY",
        dns.tsig.PeerBadSignature: "BADSIG",
        dns.tsig.PeerBadTime: "BADTIME",
        dns.tsig.PeerBadTruncation: "BADTRUNC",
    }.get(type(error), "TSIG")


def _rdataset(rrset: RRset) -> tuple[int, *tuple[dns.rdata.Rdata, ...]]:
    rdtype = dns.rdatatype.from_text(rrset.type)
    return (rrset.ttl, *(dns.rdata.from_text(dns.rdataclass.IN, rdtype, t) for t in rrset.rdata))


def _prerequisite(update: dns.update.UpdateMessage, rrset: RRset | None, name: str) -> None:
    """RFC 2136 §2.4.2: the RRset exists with exactly this data; §2.4.3: it does not exist."""
    if rrset is None:
        update.absent(name, "TXT")
        return
    update.present(rrset.name, *_rdataset(rrset)[1:])
