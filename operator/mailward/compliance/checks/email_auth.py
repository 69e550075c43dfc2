"""Email authentication (TR-03182): SPF ending in ~all or -all (TR-AUTH-01), DKIM keys for
rsa-sha256 and ed25519-sha256 at the selectors tried (TR-AUTH-02), DMARC with p=quarantine or
reject and rua (TR-AUTH-03)."""

from __future__ import annotations

import re

from mailward.compliance.checks.findings import BOGUS_SKIP, Findings
from mailward.compliance.observations import DomainObservations
from mailward.compliance.records import txt_strings


def judge_spf(records: list[str]) -> tuple[bool, str]:
    spf = [r for r in records if r.lower().startswith("v=spf1") and r[6:7] in ("", " ")]
    if not spf:
        return False, "no v=spf1 record"
    if len(spf) > 1:
        return False, f"{len(spf)} v=spf1 records (RFC 7208 §3.2 permits one)"
    terms = spf[0].split()[1:]
    lookups = [
        t
        for t in terms
        if re.match(r"[+~?-]?(include:|a\b|a:|a/|mx\b|mx:|mx/|ptr|exists:|redirect=)", t)
    ]
    if len(lookups) > 10:
        return False, f"{len(lookups)} DNS-querying terms (limit 10): {spf[0]}"
    all_terms = [t for t in terms if re.fullmatch(r"[+~?-]?all", t)]
    if not all_terms:
        if any(t.startswith("redirect=") for t in terms):
            return True, f"ends in redirect: {spf[0]}"
        return False, f"no terminating all: {spf[0]}"
    qualifier = all_terms[-1][0] if all_terms[-1][0] in "+~?-" else "+"
    if qualifier not in "~-":
        return False, f"ends in {all_terms[-1]} (TR-03182 requires ~all or -all): {spf[0]}"
    return True, spf[0]


def judge_dmarc(records: list[str]) -> tuple[bool, str]:
    dmarc = [r for r in records if r.startswith("v=DMARC1")]
    if not dmarc:
        return False, "no v=DMARC1 record"
    if len(dmarc) > 1:
        return False, f"{len(dmarc)} v=DMARC1 records"
    tags = [p.strip() for p in dmarc[0].split(";") if p.strip()]
    values: dict[str, str] = {}
    for tag in tags:
        key, _, val = tag.partition("=")
        values.setdefault(key.strip(), val.strip())
    if len(tags) < 2 or not tags[1].startswith("p="):
        return False, f"p= must follow v=DMARC1 directly: {dmarc[0]}"
    if values.get("p") not in ("quarantine", "reject"):
        return False, f"p={values.get('p')} (TR-03182 requires quarantine or reject): {dmarc[0]}"
    if "rua" not in values:
        return False, f"no rua= (TR-03182 requires aggregate reports): {dmarc[0]}"
    return True, dmarc[0]


def dkim_key_kind(value: str) -> str | None:
    """'rsa' or 'ed25519' for a usable DKIM key record, None otherwise."""
    tags = {}
    for part in value.split(";"):
        key, sep, val = part.strip().partition("=")
        if sep:
            tags[key.strip()] = val.strip().replace(" ", "")
    if tags.get("v", "DKIM1") != "DKIM1" or not tags.get("p"):
        return None
    return tags.get("k", "rsa")


def judge(f: Findings, obs: DomainObservations) -> None:
    if not f.answer_problem("TR-AUTH-01", obs.spf, obs.domain):
        ok, message = judge_spf([txt_strings(r) for r in obs.spf.records])
        (f.ok if ok else f.unmet)("TR-AUTH-01", message, obs.domain)
    subject = f"_dmarc.{obs.domain}"
    if not f.answer_problem("TR-AUTH-03", obs.dmarc, subject):
        ok, message = judge_dmarc([txt_strings(r) for r in obs.dmarc.records])
        (f.ok if ok else f.unmet)("TR-AUTH-03", message, subject)
    kinds: dict[str, str] = {}
    for lookup in obs.dkim:
        if lookup.answer.bogus:
            f.skip("TR-AUTH-02", BOGUS_SKIP, f"{lookup.label}._domainkey")
            return
        for record in lookup.answer.records:
            kind = dkim_key_kind(txt_strings(record))
            if kind:
                kinds.setdefault(kind, lookup.label)
    found = ", ".join(f"{k} ({s})" for k, s in kinds.items())
    if {"rsa", "ed25519"} <= set(kinds):
        f.ok("TR-AUTH-02", f"keys: {found}", obs.domain)
    elif kinds:
        f.unmet("TR-AUTH-02", f"only {found}; TR-03182 wants rsa-sha256 and ed25519-sha256",
                obs.domain)  # fmt: skip
    else:
        tried = ", ".join(lookup.label for lookup in obs.dkim)
        f.unmet("TR-AUTH-02", f"no DKIM key at the selectors tried ({tried})", obs.domain)
