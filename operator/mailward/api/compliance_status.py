"""`status.compliance`: the verdict of the last compliance check (written by the compliance part).

Only id, level, result and a short message per check are stored: the status is read by every
`kubectl get` and watched by every controller, so the evidence stays in the operator's log and in
`mailward check -v`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

CHECK_ID_PATTERN = r"^TR-[A-Z]+-[0-9]{2}$"
MAX_CHECKS = 64


class _Status(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True, strict=False
    )


class ComplianceCheckStatus(_Status):
    """The outcome of one catalog check."""

    id: str = Field(
        max_length=16,
        pattern=CHECK_ID_PATTERN,
        description="Stable check ID from the catalog, e.g. `TR-DANE-02`.",
    )
    level: Literal["MUST", "SHOULD", "INFO"] = Field(description="Level in the profile used.")
    result: Literal["pass", "fail", "warn", "skip", "error"] = Field(
        description="`error`: the probe itself failed; never counted as a pass."
    )
    message: str = Field(default="", max_length=300, description="What was seen, in short.")


class ComplianceStatus(_Status):
    """The last compliance check of the domain, probed from outside."""

    profile: Literal["tr-03108", "baseline"] = Field(description="The profile checked against.")
    score: int = Field(
        ge=0, le=100, description="0-100: MUST weighs 3, SHOULD 1; warn counts half, skip not."
    )
    failing_must: list[Annotated[str, Field(max_length=16, pattern=CHECK_ID_PATTERN)]] = Field(
        default_factory=list,
        max_length=MAX_CHECKS,
        description="IDs of the MUST checks that failed or could not be evaluated.",
    )
    checks: list[ComplianceCheckStatus] = Field(
        default_factory=list,
        max_length=MAX_CHECKS,
        description="One entry per catalog check.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["id"]},
    )
    last_checked: datetime = Field(
        description=(
            "When the domain was last probed. Refreshed on a result change, otherwise at most "
            "once per heartbeat, so that the status is not rewritten on every run."
        )
    )
