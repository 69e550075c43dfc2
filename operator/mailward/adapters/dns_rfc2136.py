"""RFC 2136 dynamic updates with TSIG (dnspython): the provider for BIND, Knot, PowerDNS, ...

Reading: the zone is found from the SOA (RFC 2136 §4: updates go to the zone's primary), then
read by a TSIG-signed zone transfer. A copy of each zone is kept and brought up to date by IXFR,
so a pass over many domains of one zone does not transfer the whole zone every time; any doubt
(an error, a serial gone backwards, an old copy) falls back to a full AXFR.

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
import logging
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.tsig
import dns.update
import dns.xfr
import dns.zone

from mailward.adapters.dns_provider import (
    ConcurrentChange,
    ProviderUnreachable,
    PublishResult,
    UpdateRefused,
)
from mailward.adapters.wire import dns_exchange_tcp
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


class _ZoneCopy:
    def __init__(self, origin: dns.name.Name) -> None:
        self.zone = dns.zone.Zone(origin, relativize=False)
        self.lock = threading.Lock()
        self.fetched_at = 0.0
        self.complete = False

    def serial(self) -> int | None:
        origin = self.zone.origin
        soa = self.zone.get_rdataset(origin, dns.rdatatype.SOA) if origin is not None else None
        return int(soa[0].serial) if soa else None


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
        zone, serial = self._zone_and_serial(domain)
        inside = [r for r in desired if dns.name.from_text(r.name).is_subdomain(zone)]
        unpublished = [
            f"{r.describe()}: outside zone {zone.to_text(omit_final_dot=True)}"
            for r in desired
            if r not in inside
        ]
        for attempt in range(1, _ATTEMPTS + 1):
            copy = self._read_zone(zone, serial if attempt == 1 else None)
            with copy.lock:
                current = self._current(copy.zone, domain, inside)
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

    def _read_zone(self, zone: dns.name.Name, serial: int | None = None) -> _ZoneCopy:
        """The kept copy of the zone, brought up to date; `serial`, the SOA serial the server
        just answered with, spares the transfer when the copy already has it."""
        with _copies_lock:
            copy = _copies.setdefault(self._copy_key(zone), _ZoneCopy(zone))
        with copy.lock:
            fresh = time.monotonic() - copy.fetched_at < _ZONE_COPY_MAX_AGE
            try:
                if copy.complete and fresh and serial is not None and serial == copy.serial():
                    return copy
                if copy.complete and fresh:
                    try:
                        self._transfer(copy, incremental=True)
                        return copy
                    except (dns.xfr.TransferError, dns.exception.FormError, ValueError):
                        pass  # IXFR not possible here: fall back to a full transfer
                copy.zone = dns.zone.Zone(zone, relativize=False)
                copy.complete = False
                self._transfer(copy, incremental=False)
                copy.complete = True
                copy.fetched_at = time.monotonic()
            except BaseException:
                copy.complete = False
                raise
        return copy

    def _transfer(self, copy: _ZoneCopy, *, incremental: bool) -> None:
        zone_name = copy.zone.origin
        assert zone_name is not None
        zone_text = zone_name.to_text(omit_final_dot=True)
        query, _ = dns.xfr.make_query(
            copy.zone,
            serial=0 if incremental else None,
            keyring=self._key,
            keyname=self._key.name,
            keyalgorithm=self._key.algorithm,
        )
        try:
            dns.query.inbound_xfr(
                self.config.host,
                copy.zone,
                query,
                port=self.config.port,
                timeout=self.config.timeout,
                lifetime=self.config.timeout * 6,
            )
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

    @staticmethod
    def _current(zone: dns.zone.Zone, domain: str, desired: Sequence[RRset]) -> dict[Key, RRset]:
        """The zone's RRsets at every name the plan can touch: the desired names, the registry
        and whatever the registry lists."""

        def at(names: Iterable[str]) -> dict[Key, RRset]:
            found: dict[Key, RRset] = {}
            for name in names:
                node = zone.get_node(dns.name.from_text(name))
                if node is None:
                    continue
                for rdataset in node.rdatasets:
                    rdtype = dns.rdatatype.to_text(rdataset.rdtype)
                    if rdtype in _SIGNER_TYPES or rdtype.startswith("TYPE"):
                        continue
                    rdata = tuple(sorted(r.to_text() for r in rdataset))
                    found[(name, rdtype)] = RRset(name, rdtype, rdataset.ttl, rdata)
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
