"""DANE-first TLS policy for Postfix: a socketmap in front of postfix-mta-sts-resolver.

Postfix consults `smtp_tls_policy_maps` before its default level `dane`, and an MTA-STS answer
(`secure ...`) from postfix-mta-sts-resolver replaces DANE for that destination: a domain that
publishes both would be authenticated by the weaker WebPKI check (mta-sts-resolver issue #67).
RFC 8461 §2 and TR-03108 (TR-STS-05) want the opposite: MTA-STS never overrides DANE.

So this proxy answers first: when the destination has DNSSEC-validated TLSA records for one of
its MX hosts, it answers NOTFOUND, and Postfix's own `dane` level stays in force (and defers on
a mismatch). Only for a destination without secure TLSA does it pass the request on to the
MTA-STS resolver. When DNS fails it answers TEMP, so Postfix defers rather than downgrades.

TLSRPT (RFC 8460): Postfix 3.10 reports a session under policy type `sts` only when the policy
answer says so (TLSRPT_README, "MTA-STS Support via smtp_tls_policy_maps"); without it the
session counts as `no-policy-found`. postfix-mta-sts-resolver 1.5 (Debian trixie) adds those
attributes only with its zone option `tlsrpt: true`, off by default. So an MTA-STS answer that
lacks them gets `policy_type=sts`, `policy_domain=<domain>` and one `mx_host_pattern=` per
`match=` host here (`with_tlsrpt_attributes`); an answer that has them passes unchanged. DANE
answers (NOTFOUND: Postfix's own `dane` level reports `tlsa` itself) carry none: Postfix refuses
these attributes on a non-STS policy.

Protocol: socketmap_table(5), netstrings `<name> <key>` in, `OK <value>` / `NOTFOUND ` /
`TEMP <reason>` out. Runs as a sidecar next to Postfix; needs only dnspython.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import signal
from collections.abc import Sequence
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.flags
import dns.name
import dns.rdatatype
import dns.resolver

log = logging.getLogger("mailward.tlspolicy")

MAX_NETSTRING = 100_000


class DNSTemporaryError(Exception):
    """A lookup failed in a way that may heal (SERVFAIL, timeout, bogus)."""


@dataclass(frozen=True)
class Lookup:
    """The DNSSEC facts the decision needs."""

    secure: bool
    names: tuple[str, ...]


def decide(mx: Lookup, tlsa_secure: Sequence[bool]) -> str:
    """`dane` when any MX host has secure TLSA (the MX RRset itself must be secure), else `sts`.

    RFC 7672 §2.2: TLSA records of an MX host count only when the MX lookup was secure too.
    """
    if mx.secure and any(tlsa_secure):
        return "dane"
    return "sts"


class Resolver:
    def __init__(self, nameservers: Sequence[str] | None = None, timeout: float = 5.0) -> None:
        self._resolver = dns.asyncresolver.Resolver(configure=not nameservers)
        if nameservers:
            self._resolver.nameservers = list(nameservers)
        # DO asks the validating resolver for DNSSEC; its AD bit says "validated".
        self._resolver.use_edns(0, dns.flags.DO, 1232)
        self._resolver.lifetime = timeout

    async def lookup(self, name: str, rdtype: str) -> Lookup:
        try:
            answer = await self._resolver.resolve(name, rdtype, raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN as error:
            # A validated NXDOMAIN (AD) proves there is nothing; an unvalidated one proves less.
            qname = error.qnames()[0]  # type: ignore[no-untyped-call]
            response = error.response(qname)  # type: ignore[no-untyped-call]
            return Lookup(bool(response.flags & dns.flags.AD), ())
        except (dns.resolver.NoNameservers, dns.exception.Timeout) as error:
            raise DNSTemporaryError(f"{name}/{rdtype}: {error}") from error
        secure = bool(answer.response.flags & dns.flags.AD)
        if answer.rrset is None:
            return Lookup(secure, ())
        if rdtype == "MX":
            hosts = tuple(
                str(r.exchange).rstrip(".")
                for r in sorted(answer.rrset, key=lambda r: r.preference)
            )
            return Lookup(secure, hosts)
        return Lookup(secure, tuple(r.to_text() for r in answer.rrset))


async def policy_for(domain: str, resolver: Resolver) -> str:
    mx = await resolver.lookup(domain, "MX")
    hosts = mx.names or (domain,)  # RFC 5321 §5.1: no MX, the domain itself (implicit MX)
    if hosts == (".",) or hosts == ("",):
        return "sts"  # null MX (RFC 7505): nothing to protect
    tlsa = [await resolver.lookup(f"_25._tcp.{host}", "TLSA") for host in hosts]
    return decide(mx, [t.secure and bool(t.names) for t in tlsa])


def with_tlsrpt_attributes(domain: str, answer: bytes) -> bytes:
    """An MTA-STS `OK secure match=...` answer with the attributes Postfix's TLSRPT needs.

    The resolver lists the policy's `mx:` patterns in `match=` with a `*.` wildcard shortened to
    `.` (Postfix's form for "any subdomain"); `mx_host_pattern` wants the policy's own form back.
    """
    if not answer.startswith(b"OK "):
        return answer
    text = answer.decode("utf-8", "replace")
    words = text.split()
    if any(word.startswith("policy_type=") for word in words):
        return answer
    patterns = [
        f"*{host}" if host.startswith(".") else host
        for word in words
        if word.startswith("match=")
        for host in word.removeprefix("match=").split(":")
        if host
    ]
    extra = [f"policy_type=sts policy_domain={domain}"]
    extra += [f"mx_host_pattern={pattern}" for pattern in patterns]
    return (text.rstrip() + " " + " ".join(extra)).encode()


def netstring(data: bytes) -> bytes:
    return str(len(data)).encode() + b":" + data + b","


async def read_netstring(reader: asyncio.StreamReader) -> bytes:
    length = await reader.readuntil(b":")
    size = int(length[:-1])
    if not 0 <= size <= MAX_NETSTRING:
        raise ValueError("netstring too long")
    data = await reader.readexactly(size + 1)
    if data[-1:] != b",":
        raise ValueError("netstring without its comma")
    return data[:-1]


class StsUpstream:
    """A socketmap client of postfix-mta-sts-resolver (`mta-sts-daemon`)."""

    def __init__(self, host: str, port: int) -> None:
        self._host, self._port = host, port

    async def ask(self, request: bytes) -> bytes:
        reader, writer = await asyncio.open_connection(self._host, self._port)
        try:
            writer.write(netstring(request))
            await writer.drain()
            return await asyncio.wait_for(read_netstring(reader), timeout=30)
        finally:
            writer.close()


class PolicyServer:
    def __init__(self, resolver: Resolver, sts: StsUpstream | None) -> None:
        self._resolver = resolver
        self._sts = sts

    async def answer(self, request: bytes) -> bytes:
        _, _, key = request.decode("utf-8", "replace").partition(" ")
        domain = key.strip().lower().rstrip(".")
        # Postfix also asks for parent domains (".example.org"); policies are per domain here.
        if not domain or domain.startswith(".") or domain.startswith("["):
            return b"NOTFOUND "
        try:
            verdict = await policy_for(domain, self._resolver)
        except DNSTemporaryError as error:
            log.warning("domain=%s result=TEMP reason=%s", domain, error)
            return b"TEMP DNS lookup failed"
        if verdict == "dane" or self._sts is None:
            log.info("domain=%s policy=%s", domain, "dane" if verdict == "dane" else "none")
            return b"NOTFOUND "
        try:
            upstream = await self._sts.ask(request)
        except (OSError, ValueError, TimeoutError) as error:
            log.warning("domain=%s result=TEMP reason=mta-sts resolver: %s", domain, error)
            return b"TEMP MTA-STS resolver unavailable"
        answer = with_tlsrpt_attributes(domain, upstream)
        log.info("domain=%s policy=sts answer=%s", domain, answer[:300].decode(errors="replace"))
        return answer

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not local_peer(writer.get_extra_info("peername"), writer.get_extra_info("sockname")):
            # On the host network the socketmap listens on a public MX address; only the pod's
            # own processes (loopback, or that address itself as the source) may ask it.
            writer.close()
            return
        try:
            while True:
                try:
                    request = await read_netstring(reader)
                except (asyncio.IncompleteReadError, ValueError):
                    return
                writer.write(netstring(await self.answer(request)))
                await writer.drain()
        finally:
            writer.close()


def local_peer(peer: object, own: object) -> bool:
    """The connection comes from this host: a loopback source, or the listening address."""
    if not isinstance(peer, tuple) or not isinstance(own, tuple):
        return False
    address = ipaddress.ip_address(peer[0])
    return address.is_loopback or address == ipaddress.ip_address(own[0])


def split_host_port(text: str) -> tuple[str, int]:
    """`host:port` or `[v6]:port`."""
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


async def serve(host: str, port: int, server: PolicyServer) -> None:
    listener = await asyncio.start_server(server.handle, host, port)
    # PID 1 of its container ignores an unhandled SIGTERM: stop at once instead of waiting
    # for the kill at the end of the grace period (a request in flight is retried by Postfix).
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with listener:
        await stop.wait()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="127.0.0.1:8461", help="host:port of the socketmap")
    parser.add_argument("--sts", default="", help="host:port of mta-sts-daemon; empty: none")
    parser.add_argument("--nameserver", action="append", default=[], help="validating resolver")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s tlspolicy: %(message)s")
    host, port = split_host_port(args.listen)
    sts = StsUpstream(*split_host_port(args.sts)) if args.sts else None
    asyncio.run(serve(host, port, PolicyServer(Resolver(args.nameserver or None), sts)))


if __name__ == "__main__":
    main()
