"""DNSSEC: the zones of the domain and of its MX hosts signed and validated (TR-DANE-01), with
an algorithm RFC 8624 recommends (TR-DANE-08)."""

from __future__ import annotations

from mailward.compliance.checks.findings import Findings
from mailward.compliance.observations import DomainObservations

RFC8624_ALGORITHMS = {8: "RSASHA256", 13: "ECDSAP256SHA256", 14: "ECDSAP384SHA384",
                      15: "ED25519", 16: "ED448"}  # fmt: skip


def judge(f: Findings, obs: DomainObservations) -> None:
    ans = obs.mx_answer
    if ans.bogus:
        f.unmet("TR-DANE-01", f"bogus: {ans.describe()}", obs.domain)
    for z in obs.zones:
        zone, soa, ds = z.zone, z.soa, z.ds
        if soa.bogus or ds.bogus:
            bad = soa if soa.bogus else ds
            f.unmet("TR-DANE-01", f"zone {zone} is bogus: {bad.describe()}", zone)
        elif soa.timed_out or ds.timed_out:
            f.error("TR-DANE-01", f"no answer: {soa.describe()}", zone)
        elif not soa.secure:
            f.unmet("TR-DANE-01", f"zone {zone} is not validated (no AD bit): {soa.describe()}",
                    zone)  # fmt: skip
        elif not ds.records:
            f.unmet("TR-DANE-01", f"no DS for {zone} in its parent", zone)
        else:
            f.ok("TR-DANE-01", f"zone {zone} validated (AD), DS present", zone)
    for mx in obs.mx:
        for a in (mx.a, mx.aaaa):
            if a is None:
                continue
            if a.bogus:
                f.unmet("TR-DANE-01", f"bogus: {a.describe()}", mx.name)
            elif a.ok and not a.secure:
                f.unmet("TR-DANE-01", f"address not validated: {a.describe()}", mx.name)
    key = obs.dnskey
    if not f.answer_problem("TR-DANE-08", key) and key.records:
        algorithms = sorted({int(r.split()[2]) for r in key.records})
        weak = [a for a in algorithms if a not in RFC8624_ALGORITHMS]
        names = ", ".join(RFC8624_ALGORITHMS.get(a, str(a)) for a in algorithms)
        if weak:
            f.unmet("TR-DANE-08", f"algorithms {names}", obs.domain)
        else:
            f.ok("TR-DANE-08", f"algorithms {names}", obs.domain)
