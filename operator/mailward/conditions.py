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
# The two "abnormal-true" conditions kstatus reads (sigs.k8s.io/cli-utils/pkg/kstatus), which
# Flux and `kubectl wait` rely on: work in progress, or no progress without a person.
RECONCILING = "Reconciling"
STALLED = "Stalled"


@dataclass(frozen=True)
class Verdict:
    """What a reconcile concluded about one condition type."""

    type: str
    status: ConditionStatus
    reason: str
    message: str
    # Not True, and retrying will not change that until a person edits something (this spec,
    # another object, a DNS server's key): the resource is Stalled, not merely in progress.
    stalled: bool = False


def ready_from(parts: Iterable[Verdict], ready: Verdict) -> Verdict:
    """`Ready`: `ready` when every part is True, else the part that is not explains why.

    Its reason is carried over, so `kubectl get` and kstatus show the cause, not a generic word.
    A stalled part explains it before any other (it is what a person must act on), and makes
    Ready False, never Unknown; otherwise the first part that is not True does.
    """
    failing = [v for v in parts if v.status != "True"]
    if not failing:
        return ready
    verdict = next((v for v in failing if v.stalled), failing[0])
    status: ConditionStatus = "False" if verdict.status == "False" or verdict.stalled else "Unknown"
    message = f"{verdict.type}: {verdict.message}"
    return Verdict(READY, status, verdict.reason, message, stalled=verdict.stalled)


def progress_verdicts(ready: Verdict, parts: Iterable[Verdict]) -> list[Verdict]:
    """`Reconciling` and `Stalled` from `Ready` and the parts it was derived from.

    Both are always present (True or False), so a tool that waits on either never has to guess
    what an absent condition means.
    """
    stuck = next((v for v in (ready, *parts) if v.stalled and v.status != "True"), None)
    if stuck is not None:
        return [
            Verdict(RECONCILING, "False", stuck.reason, "waiting for a change, see Stalled"),
            Verdict(STALLED, "True", stuck.reason, _prefixed(stuck)),
        ]
    if ready.status != "True":
        return [
            Verdict(RECONCILING, "True", ready.reason, ready.message),
            Verdict(STALLED, "False", ready.reason, "progressing, see Reconciling"),
        ]
    return [
        Verdict(RECONCILING, "False", ready.reason, "reconciled"),
        Verdict(STALLED, "False", ready.reason, "reconciled"),
    ]


def _prefixed(verdict: Verdict) -> str:
    if verdict.type == READY or verdict.message.startswith(f"{verdict.type}: "):
        return verdict.message
    return f"{verdict.type}: {verdict.message}"


def started_verdicts(current: Iterable[Condition], generation: int) -> list[Verdict]:
    """What a resource says the moment work on `generation` starts, before any part has run.

    Without it a new resource has no status for as long as the first pass takes, and kstatus
    reads a resource without conditions or observedGeneration as Current, so a GitOps tool
    would call it done before mailward began. `Ready` keeps what it said (a spec edit does not
    make a serving domain un-Ready), or is Unknown for a new resource.
    """
    message = f"reconciling generation {generation}"
    verdicts = [
        Verdict(RECONCILING, "True", "Progressing", message),
        Verdict(STALLED, "False", "Progressing", message),
    ]
    if find(current, READY) is None:
        verdicts.append(Verdict(READY, "Unknown", "Progressing", message))
    return verdicts


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
