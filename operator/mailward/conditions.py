"""Status conditions by the Kubernetes API conventions, as pure functions.

Two rules keep `kubectl get` honest and the API server quiet: `observedGeneration` is always the
generation the verdict was computed for, and `lastTransitionTime` moves only when `status` flips
(a new reason or message alone is not a transition). Callers compare the whole status before
writing, so an unchanged verdict costs no write at all.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from mailward.api.v1alpha1 import Condition, ConditionStatus, MailDomainStatus

READY = "Ready"


@dataclass(frozen=True)
class Verdict:
    """What a reconcile concluded about one condition type."""

    type: str
    status: ConditionStatus
    reason: str
    message: str


def utcnow() -> datetime:
    # The API server stores RFC 3339 times with second precision; keeping the same precision
    # here means a condition read back compares equal to the one written.
    return datetime.now(UTC).replace(microsecond=0)


def apply_verdicts(
    current: Iterable[Condition],
    verdicts: Iterable[Verdict],
    *,
    generation: int,
    now: datetime,
) -> list[Condition]:
    """The conditions after `verdicts`; types without a verdict are kept as they are."""
    by_type = {c.type: c for c in current}
    for verdict in verdicts:
        previous = by_type.get(verdict.type)
        if previous is not None and previous.status == verdict.status:
            transition = previous.last_transition_time
        else:
            transition = now
        by_type[verdict.type] = Condition(
            type=verdict.type,
            status=verdict.status,
            reason=verdict.reason,
            message=verdict.message,
            observed_generation=generation,
            last_transition_time=transition,
        )
    # Ready first, then alphabetical: a stable order, so equal sets compare equal.
    return sorted(by_type.values(), key=lambda c: (c.type != READY, c.type))


def parse_status(raw: Mapping[str, Any] | None) -> MailDomainStatus:
    """The operator's view of a stored status; fields it does not know are ignored."""
    return MailDomainStatus.model_validate(dict(raw or {}))


def status_document(status: MailDomainStatus) -> dict[str, Any]:
    """The status as it is written to (and read back from) the API server."""
    return status.model_dump(mode="json", by_alias=True, exclude_none=True)


def find(conditions: Iterable[Condition], type_: str) -> Condition | None:
    return next((c for c in conditions if c.type == type_), None)


# What the compliance daemon writes (with its own field manager, see adapters/status_writer.py);
# everything else in the status is the reconcile handler's.
COMPLIANT = "Compliant"
COMPLIANCE_FIELD = "compliance"


def reconciler_view(document: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a status document the reconcile handler writes."""
    view = {k: v for k, v in document.items() if k != COMPLIANCE_FIELD}
    view["conditions"] = [c for c in document.get("conditions", []) if c["type"] != COMPLIANT]
    return view


def compliance_view(document: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a status document the compliance daemon writes."""
    view: dict[str, Any] = {
        "conditions": [c for c in document.get("conditions", []) if c["type"] == COMPLIANT]
    }
    if COMPLIANCE_FIELD in document:
        view[COMPLIANCE_FIELD] = document[COMPLIANCE_FIELD]
    return view
