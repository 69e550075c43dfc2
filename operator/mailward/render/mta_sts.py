"""The MTA-STS policy (RFC 8461 §3.2) of a MailDomain, and the id that names it in DNS.

The id is derived from the policy text, so it changes exactly when the policy changes: senders
cache a policy under its id and fetch it again only when the `_mta-sts` TXT record announces a
new one (RFC 8461 §3.1).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence

from mailward.api.v1alpha1 import MailDomainSpec

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


def policy_for(spec: MailDomainSpec) -> str:
    """The policy of `spec`: its `mxPatterns` if given, one line per MX host otherwise."""
    patterns = spec.mta_sts.mx_patterns or [mx.host for mx in spec.mx]
    return render_policy(spec.mta_sts.mode, patterns, spec.mta_sts.max_age)


# RFC 8461 §8.3 suggests "a small max_age (e.g., one day)" for the policy that withdraws one.
WITHDRAWAL_MAX_AGE = 86400


def withdrawal_policy(spec: MailDomainSpec) -> str:
    """What a MailDomain being deleted serves (RFC 8461 §8.3): mode `none`, the same `mx`
    lines, and a short max_age, until every sender's cached copy of the old policy expired.

    How long that is comes from `withdrawal_seconds`: the old policy's max_age, counted from
    the moment the withdrawal is first served.
    """
    patterns = spec.mta_sts.mx_patterns or [mx.host for mx in spec.mx]
    return render_policy("none", patterns, min(WITHDRAWAL_MAX_AGE, spec.mta_sts.max_age))


def withdrawal_seconds(spec: MailDomainSpec) -> int:
    """How long the withdrawal must be served before the `_mta-sts` record and the policy go:
    senders may hold the old policy for its max_age (0 when the old mode was already `none`)."""
    return 0 if spec.mta_sts.mode == "none" else spec.mta_sts.max_age


def policy_id(policy: str) -> str:
    digest = hashlib.sha256(policy.encode("ascii")).digest()
    return base64.b32encode(digest).decode("ascii")[:POLICY_ID_LENGTH]


def sts_txt_record(policy: str) -> str:
    """The TXT data of `_mta-sts.<domain>` announcing `policy`."""
    return f"v=STSv1; id={policy_id(policy)}"
