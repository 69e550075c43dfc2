"""Observations as JSON: record a real probe run, judge it again later.

`mailward check DOMAIN --record FILE` writes what the probes saw; the table tests
(`tests/unit/test_compliance_recorded.py`) load such files from `tests/data/compliance/` and run
the checks on them. Bytes (certificate chains, policy bodies) are base64; the document carries a
format number so that an old recording is refused rather than misread.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mailward.compliance.observations import DomainObservations

FORMAT = 1


class RecordingError(ValueError):
    """Not a recording this version of mailward can read."""


class _Recording(BaseModel):
    model_config = ConfigDict(
        ser_json_bytes="base64", val_json_bytes="base64", populate_by_name=True
    )

    format: Literal[1] = Field(1, alias="mailwardObservations")
    observations: DomainObservations


def dumps(obs: DomainObservations) -> str:
    return _Recording(observations=obs).model_dump_json(by_alias=True, indent=1) + "\n"


def loads(text: str) -> DomainObservations:
    try:
        return _Recording.model_validate_json(text).observations
    except ValidationError as e:
        raise RecordingError(f"not a mailward observation recording of format {FORMAT}: {e}") from e


def save(obs: DomainObservations, path: Path) -> None:
    path.write_text(dumps(obs))


def load(path: Path) -> DomainObservations:
    return loads(path.read_text())
