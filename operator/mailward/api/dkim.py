"""`spec.dkim` and `status.dkim`: DKIM keys that mailward generates, publishes, signs with and
rotates (RFC 6376, RFC 8463). Keys pasted into `spec.dns.dkim` are still only published."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, ConfigDict, Field
from pydantic.alias_generators import to_camel

from mailward.api.base import _LIST_SET, _Model, _unique, bounded_duration

KeyType = Literal["ed25519", "rsa"]
SelectorPhase = Literal["Published", "Active", "Retiring", "Withdrawn"]
BOTH_KEY_TYPES: tuple[KeyType, ...] = ("ed25519", "rsa")
RotationPeriod = bounded_duration("1m", "87600h")
DeliveryBound = bounded_duration("0s", "8760h")
# Postfix's maximal_queue_lifetime (render/postfix.py): the longest a message signed now can
# wait in a queue before a receiver verifies it.
MAXIMAL_QUEUE_LIFETIME_SECONDS = 5 * 86400


class DKIMSpec(_Model):
    """DKIM signing of outbound mail by the domain's MTA, with keys mailward generates, keeps in
    a Secret owned by the MailDomain, publishes and rotates in stages (docs/dkim.md)."""

    managed: bool = Field(
        default=False,
        description=(
            "Generate keys, publish them at `<selector>._domainkey.<domain>`, sign mail submitted "
            "to the MTA with them and rotate them. Default false: only the keys in "
            "`spec.dns.dkim` are published, and nothing is signed."
        ),
    )
    key_types: Annotated[list[KeyType], AfterValidator(_unique)] = Field(
        default_factory=lambda: list(BOTH_KEY_TYPES),
        min_length=1,
        max_length=2,
        json_schema_extra=_LIST_SET,
        description=(
            "Key types to sign with, each message once per type: `ed25519` (RFC 8463) and `rsa` "
            "(2048 bits, RFC 6376). BSI TR-03108 asks for both; a verifier that does not know "
            "Ed25519 uses the RSA signature. Default both."
        ),
    )
    rotate_after: RotationPeriod = Field(  # type: ignore[valid-type]
        default="4320h",
        description=(
            "How long a key signs before a new one replaces it. 1m to 87600h. Default 4320h "
            "(180 days)."
        ),
    )
    retire_after: DeliveryBound | None = Field(  # type: ignore[valid-type]
        default=None,
        description=(
            "How long a replaced key stays published after it stopped signing: the longest "
            "time a message signed with it can take to reach its verifier. 0s to 8760h. "
            "Default: Postfix's maximal_queue_lifetime (5 days) plus the record's TTL "
            "(`spec.dns.ttl.default`)."
        ),
    )


class DKIMSelectorStatus(_Model):
    """One managed key, by its selector."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True, strict=False
    )

    selector: str = Field(max_length=63, description="`s=` of its signatures.")
    algorithm: KeyType = Field(description="`k=` of its record.")
    phase: SelectorPhase = Field(
        description=(
            "`Published`: in DNS, not signing yet (waiting until the validating resolver returns "
            "it). `Active`: signing. `Retiring`: replaced, still published for `retireAfter`. "
            "`Withdrawn`: its record is being removed; forgotten once the resolver no longer "
            "returns it."
        )
    )
    since: datetime = Field(description="When the key entered its phase.")


class DKIMStatus(_Model):
    """The managed DKIM keys (written by the dkim part)."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True, strict=False
    )

    selectors: list[DKIMSelectorStatus] = Field(
        default_factory=list, max_length=16, description="Every managed key that is in DNS."
    )
