"""What a MailDomain's status should say, decided from the spec and what was observed.

Pure functions only: the handlers gather observations through the adapters and hand them here,
so every verdict can be tested with plain values and no cluster.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from mailward.api.v1alpha1 import MailDomainSpec
from mailward.conditions import READY, Verdict, progress_verdicts, ready_from

CERTIFICATE_READY = "CertificateReady"
# The reason of a part's condition when the part raised (domains.run_parts).
PART_FAILED = "PartFailed"
# Conditions about the outside world or the future, not about whether mailward's work is done:
# they never make a resource un-Ready (a rollover that may not switch yet still serves).
OBSERVATIONS = frozenset({"Compliant", "TLSReportsHealthy", "RotationSafe"})

TLS_SECRET_TYPE = "kubernetes.io/tls"


class InvalidSpec(ValueError):
    """The spec passed the CRD schema but not the operator's model."""


@dataclass(frozen=True)
class TLSSecretObservation:
    """What the API server holds under the name given in `spec.tls.secretName`."""

    name: str
    found: bool
    type: str | None = None
    keys: frozenset[str] = frozenset()
    # The PEM chain in `tls.crt` (public data; the key is never read).
    certificate_pem: bytes = b""


def parse_spec(raw: Mapping[str, Any]) -> MailDomainSpec:
    """The typed spec, or InvalidSpec with a message that names every offending field."""
    try:
        return MailDomainSpec.model_validate(dict(raw))
    except ValidationError as error:
        raise InvalidSpec(describe_validation_error(error, prefix="spec")) from None


def describe_validation_error(error: ValidationError, *, prefix: str) -> str:
    problems = []
    for item in error.errors(include_url=False):
        path = prefix
        for part in item["loc"]:
            path += f"[{part}]" if isinstance(part, int) else f".{part}"
        message = item["msg"].removeprefix("Value error, ")
        problems.append(f"{path}: {message}")
    return "; ".join(problems)


def invalid_spec_verdicts(message: str) -> list[Verdict]:
    ready = Verdict(READY, "False", "InvalidSpec", message, stalled=True)
    return [ready, *progress_verdicts(ready, [])]


def certificate_verdict(tls: TLSSecretObservation) -> Verdict:
    """Whether the Secret named in `spec.tls.secretName` can be served."""
    secret = f"Secret {tls.name!r} (spec.tls.secretName)"
    if not tls.found:
        return Verdict(CERTIFICATE_READY, "False", "TLSSecretNotFound", f"{secret} does not exist")
    if tls.type != TLS_SECRET_TYPE:
        return Verdict(
            CERTIFICATE_READY,
            "False",
            "TLSSecretInvalid",
            f"{secret} has type {tls.type!r}; it must be {TLS_SECRET_TYPE!r}",
            stalled=True,
        )
    missing = sorted({"tls.crt", "tls.key"} - tls.keys)
    if missing:
        lacking = ", ".join(missing)
        message = f"{secret} lacks {lacking}"
        return Verdict(CERTIFICATE_READY, "False", "TLSSecretInvalid", message, stalled=True)
    return Verdict(CERTIFICATE_READY, "True", "SecretPresent", f"{secret} is present")


def ready_verdict(spec: MailDomainSpec, parts: list[Verdict]) -> Verdict:
    """`Ready` from the parts' conditions (conditions.ready_from).

    Observations of the outside world (`OBSERVATIONS`) have their own conditions and columns and
    do not make the resource un-Ready: a sender's failure reports or a failed probe say nothing
    about whether mailward finished its work, and kstatus would otherwise keep a GitOps sync
    waiting on the internet. A part that failed (`PART_FAILED`) did not finish mailward's work,
    whatever its condition: that one counts.
    """
    reconciled = _counted(parts)
    hosts = ", ".join(mx.host for mx in spec.mx)
    checked = ", ".join(v.type for v in reconciled)
    done = Verdict(READY, "True", "Reconciled", f"{spec.domain} (MX {hosts}): {checked} True")
    return ready_from(reconciled, done)


def settled_verdicts(spec: MailDomainSpec, parts: list[Verdict]) -> list[Verdict]:
    """Ready, Reconciling and Stalled, then the parts' own conditions."""
    ready = ready_verdict(spec, parts)
    return [ready, *progress_verdicts(ready, _counted(parts)), *parts]


def _counted(parts: list[Verdict]) -> list[Verdict]:
    return [v for v in parts if v.type not in OBSERVATIONS or v.reason == PART_FAILED]
