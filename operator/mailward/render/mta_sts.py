"""The MTA-STS policy (RFC 8461 §3.2) of a MailDomain, and the id that names it in DNS.

The id is derived from the policy text, so it changes exactly when the policy changes: senders
cache a policy under its id and fetch it again only when the `_mta-sts` TXT record announces a
new one (RFC 8461 §3.1).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from mailward.api.v1alpha1 import MailDomainSpec, mx_pattern_matches

# RFC 8461 §3.1: id is 1*32(ALPHA / DIGIT). 26 base32 characters carry 130 bits of SHA-256.
POLICY_ID_LENGTH = 26


def render_policy(mode: str, mx_patterns: Sequence[str], max_age: int) -> str:
    """The policy text with CRLF line ends; `mx` lines in the order given, duplicates dropped."""
    lines = ["version: STSv1", f"mode: {mode}"]
    seen: set[str] = set()
    for pattern in mx_patterns:
        ascii_pattern = pattern.encode("idna").decode("ascii").lower()
        if ascii_pattern not in seen:
            seen.add(ascii_pattern)
            lines.append(f"mx: {ascii_pattern}")
    lines.append(f"max_age: {max_age}")
    return "".join(f"{line}\r\n" for line in lines)


def policy_patterns(spec: MailDomainSpec) -> list[str]:
    """The `mx` lines the spec asks for: its `mxPatterns` if given, its MX hosts otherwise."""
    return list(spec.mta_sts.mx_patterns) or [mx.host for mx in spec.mx]


def policy_for(
    spec: MailDomainSpec, extra_mx: Sequence[str] = (), *, promoted: bool = False
) -> str:
    """The policy of `spec`, plus the names in `extra_mx` that its lines do not match: MX hosts
    still published, or being replaced, which a policy must keep naming until the MX records
    moved and resolvers forgot them (RFC 8461 §4.1, plan/mtasts_changes.py). `promoted`: mode
    `testing` is served as `enforce` (`spec.mtaSts.promoteAfterSeconds`)."""
    patterns = policy_patterns(spec)
    extras = [n for n in extra_mx if not any(mx_pattern_matches(p, n) for p in patterns)]
    mode = spec.mta_sts.mode
    if promoted and mode == "testing":
        mode = "enforce"
    return render_policy(mode, [*patterns, *extras], spec.mta_sts.max_age)


# RFC 8461 §8.3 suggests "a small max_age (e.g., one day)" for the policy that withdraws one.
WITHDRAWAL_MAX_AGE = 86400


def withdrawal_policy(spec: MailDomainSpec) -> str:
    """What a MailDomain being deleted serves (RFC 8461 §8.3): mode `none`, the same `mx`
    lines, and a short max_age, until every sender's cached copy of the old policy expired
    (plan/mtasts_changes.py decides when that is)."""
    return render_policy(
        "none", policy_patterns(spec), min(WITHDRAWAL_MAX_AGE, spec.mta_sts.max_age)
    )


def served_policy(
    spec: MailDomainSpec,
    kept_mx: Sequence[str],
    published_mx: Sequence[str],
    *,
    deleting: bool,
    promoted: bool = False,
) -> str:
    """What the endpoint serves for a MailDomain: the withdrawal while it is deleted; otherwise
    its policy naming also every MX host the DNS part publishes (`status.mtaSts.mxHosts`) and
    the names an MX change keeps (`status.mtaSts.keptMx`), so that no policy ever served drops
    a name the MX records still give, not even before the operator noticed a spec change;
    `enforce` for `testing` once promoted (`status.mtaSts.promotedTime`). The endpoint and the
    mtasts part both call this, so the part knows the bytes to expect."""
    if deleting:
        return withdrawal_policy(spec)
    return policy_for(spec, [*kept_mx, *published_mx], promoted=promoted)


@dataclass(frozen=True)
class PolicyFacts:
    """The fields of a served policy that decide how senders treat it."""

    mode: str
    max_age: int
    mx: tuple[str, ...]


def parse_policy(text: str) -> PolicyFacts | None:
    """`mode`, `max_age` and the `mx` lines of a policy (RFC 8461 §3.2: the first of a
    repeated key wins, `mx` may repeat); None when it is not a valid STSv1 policy."""
    fields: dict[str, str] = {}
    mx: list[str] = []
    for line in text.replace("\r\n", "\n").split("\n"):
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key, value = key.strip(), value.strip()
        if key == "mx":
            mx.append(value)
        else:
            fields.setdefault(key, value)
    mode = fields.get("mode")
    age = fields.get("max_age", "")
    if fields.get("version") != "STSv1" or mode not in ("enforce", "testing", "none"):
        return None
    if not age.isdigit():
        return None
    return PolicyFacts(mode, int(age), tuple(mx))


def policy_id(policy: str) -> str:
    digest = hashlib.sha256(policy.encode("ascii")).digest()
    return base64.b32encode(digest).decode("ascii")[:POLICY_ID_LENGTH]


def sts_txt_record(policy: str) -> str:
    """The TXT data of `_mta-sts.<domain>` announcing `policy`."""
    return f"v=STSv1; id={policy_id(policy)}"
