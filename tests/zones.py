"""A zone as BIND serves it, compared with what mailward's DNS part wants for a MailDomain:
nothing missing, nothing extra, no RRset holding two values where one belongs.

Used by the disturbance tests (tests/integration/test_operator_crash.py) and bench-scale's
`--disturb` runs, which must show that an interruption loses and duplicates nothing.
"""

from __future__ import annotations

from typing import Any

import dns.rdatatype

from mailward.api.v1alpha1 import MailDomainSpec
from mailward.parts import Findings
from mailward.parts.dns import desired_for
from mailward.plan.records import REGISTRY_LABEL

RRsets = dict[tuple[str, str], tuple[str, ...]]


def rrsets_below(zone: Any, domain: str) -> RRsets:
    """Every RRset at or below `domain` but DNSSEC's own, as `(name, type) -> sorted rdata`."""
    suffix = f"{domain}."
    found: RRsets = {}
    for name, node in zone.nodes.items():
        text = name.to_text().lower()
        if not (text == suffix or text.endswith("." + suffix)):
            continue
        for rdataset in node.rdatasets:
            if rdataset.rdtype in (dns.rdatatype.RRSIG, dns.rdatatype.NSEC, dns.rdatatype.NSEC3):
                continue
            key = (text, dns.rdatatype.to_text(rdataset.rdtype))
            found[key] = tuple(sorted(r.to_text() for r in rdataset))
    return found


def served_policy_id(zone: Any, domain: str) -> str | None:
    """The id of the `_mta-sts` TXT record the zone holds for `domain`."""
    node = zone.get_node(f"_mta-sts.{domain}.")
    if node is None:
        return None
    for rdataset in node.rdatasets:
        for rdata in rdataset:
            text = b"".join(getattr(rdata, "strings", ())).decode()
            if text.startswith("v=STSv1;") and "id=" in text:
                return text.split("id=", 1)[1].strip().rstrip(";")
    return None


def zone_differences(zone: Any, spec: MailDomainSpec, found: Findings) -> list[str]:
    """What differs between the zone and the records mailward wants for `spec`; [] if none.

    The ownership registry's TXT record (plan/records.py) is not a desired record but must be
    there exactly once."""
    held = rrsets_below(zone, spec.domain)
    wanted = {(r.name, r.type): tuple(sorted(r.rdata)) for r in desired_for(spec, found)}
    registry = f"{REGISTRY_LABEL}.{spec.domain}."
    records = {key: value for key, value in held.items() if key[0] != registry}
    differences = [
        f"{spec.domain}: {name} {kind} missing" for name, kind in sorted(wanted.keys() - records)
    ]
    differences += [
        f"{spec.domain}: {name} {kind} extra: {records[(name, kind)]}"
        for name, kind in sorted(records.keys() - wanted)
    ]
    differences += [
        f"{spec.domain}: {key[0]} {key[1]} holds {records[key]}, wanted {value}"
        for key, value in sorted(wanted.items())
        if key in records and records[key] != value
    ]
    registered = held.get((registry, "TXT"), ())
    if len(registered) != 1:
        differences.append(f"{spec.domain}: {len(registered)} ownership records, wanted 1")
    return differences
