"""Mail clients (TR-03108-01-M, RFC 8314): implicit TLS where client access is offered
(TR-GEN-01), and clients steered to it by SRV records or autoconfig (TR-GEN-02).

Both apply where a domain offers client access. A receive-only domain (an MX and nothing else:
no client SRV target, no client port open on its MX hosts) offers none, so both are not
applicable. Access offered without implicit TLS (only 587, 143 or 110), an SRV record naming a
port where nothing listens, or an implicit-TLS port without a TLS handshake fails TR-GEN-01.
"""

from __future__ import annotations

from mailward.compliance.checks.findings import BOGUS_SKIP, Findings
from mailward.compliance.observations import (
    CLIENT_PORTS,
    IMPLICIT_TLS_PORTS,
    DomainObservations,
)

STEERING_SRV = ("_submissions._tcp", "_imaps._tcp", "_pop3s._tcp")


def srv_targets(obs: DomainObservations) -> list[tuple[str, str, int]]:
    """(service, target, port) of every SRV record that names a service (target not `.`)."""
    out = []
    for lookup in obs.srv:
        for record in lookup.answer.records if lookup.answer.ok else ():
            _prio, _weight, port, target = record.split()
            target = target.rstrip(".").lower()
            if target:
                out.append((lookup.label, target, int(port)))
    return out


def judge(f: Findings, obs: DomainObservations) -> None:
    if any(lookup.answer.bogus for lookup in obs.srv):
        f.skip("TR-GEN-02", BOGUS_SKIP, obs.domain)
        f.skip("TR-GEN-01", BOGUS_SKIP, obs.domain)
        return
    advertised = srv_targets(obs)
    open_ports = [p for p in obs.client_ports if p.open]
    offered = bool(advertised or open_ports)
    nothing = _nothing_offered(obs)

    steering = [(lk.label, lk.answer.records) for lk in obs.srv
                if lk.label in STEERING_SRV and lk.answer.records]  # fmt: skip
    auto = obs.autoconfig
    auto_ok = auto is not None and auto.status == 200 and b"SSL" in auto.body
    if steering:
        listing = "; ".join(f"{label}: {', '.join(records)}" for label, records in steering)
        f.ok("TR-GEN-02", f"SRV {listing}" + (", autoconfig" if auto_ok else ""), obs.domain)
    elif auto_ok:
        assert auto is not None
        f.ok("TR-GEN-02", f"autoconfig at {auto.url}", obs.domain)
    elif not offered:
        f.skip("TR-GEN-02", f"not applicable: {nothing}", obs.domain)
    else:
        f.unmet("TR-GEN-02", "no _submissions/_imaps/_pop3s SRV record and no autoconfig",
                obs.domain)  # fmt: skip

    if not offered:
        f.skip("TR-GEN-01", f"not applicable: {nothing}; TR-03108-01-M applies where client "
               "access is offered", obs.domain)  # fmt: skip
        return
    for service, target, port in advertised:
        if not any(p.endpoint.host == target and p.endpoint.port == port for p in open_ports):
            f.unmet("TR-GEN-01", f"{service} SRV names {target}:{port}, but nothing answers "
                    "there (no address or port closed)", f"{target}:{port}")  # fmt: skip
    implicit = [p for p in open_ports if p.endpoint.port in IMPLICIT_TLS_PORTS]
    if not implicit:
        listing = ", ".join(str(p.endpoint) for p in open_ports) or "by SRV only"
        f.unmet("TR-GEN-01", f"client access offered ({listing}) without implicit TLS "
                "(465/993/995)", obs.domain)  # fmt: skip
        return
    for p in implicit:
        tls = obs.tls_for(p.endpoint.host, p.endpoint.port, p.endpoint.address)
        if tls is None or tls.negotiated is None:
            f.unmet("TR-GEN-01", f"no TLS handshake: {tls.error if tls else 'not probed'}",
                    str(p.endpoint))  # fmt: skip
        else:
            f.ok("TR-GEN-01", f"implicit TLS: {tls.negotiated.version}", str(p.endpoint))


def _nothing_offered(obs: DomainObservations) -> str:
    hosts = sorted({p.endpoint.host for p in obs.client_ports})
    closed = ", ".join(str(port) for port in CLIENT_PORTS)
    where = f"ports {closed} closed on {', '.join(hosts)}" if hosts else "no MX host to try"
    return f"no mail client service offered (no client SRV target; {where})"
