"""Observations as JSON: record a real probe run, judge it again later.

`mailward check DOMAIN --record FILE` writes what the probes saw; the table tests
(`tests/unit/test_compliance_recorded.py`) load such files from `tests/data/compliance/` and run
the checks on them. Bytes (certificate chains, policy bodies) are base64; the document carries a
format number so that an unknown recording is refused rather than misread.

Format 2 keeps port 25's observations per address of an MX host (`probes`: every A and AAAA
address, bounded); format 1 kept them on the host, for its first A address only, and is read
as format 2 with that one address.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mailward.compliance.observations import DomainObservations

FORMAT = 2
_PER_ADDRESS = ("smtp", "smtp_error", "injection", "injection_error")


class RecordingError(ValueError):
    """Not a recording this version of mailward can read."""


class _Recording(BaseModel):
    model_config = ConfigDict(
        ser_json_bytes="base64", val_json_bytes="base64", populate_by_name=True
    )

    format: Literal[1, 2] = Field(2, alias="mailwardObservations")
    observations: DomainObservations


def dumps(obs: DomainObservations) -> str:
    return _Recording(observations=obs).model_dump_json(by_alias=True, indent=1) + "\n"


def loads(text: str) -> DomainObservations:
    try:
        document = json.loads(text)
    except ValueError as e:
        raise RecordingError(f"not a mailward observation recording (JSON: {e})") from e
    if isinstance(document, dict) and document.get("mailwardObservations") == 1:
        _upgrade_from_format_1(document)
        text = json.dumps(document)
    try:
        # From JSON text: bytes are base64 only there (`val_json_bytes`).
        return _Recording.model_validate_json(text).observations
    except ValidationError as e:
        raise RecordingError(f"not a mailward observation recording of format {FORMAT}: {e}") from e


def _upgrade_from_format_1(document: dict[str, Any]) -> None:
    """Format 1 kept port 25's observations on the MX host: they are of its first A address."""
    observations = document.get("observations")
    hosts = observations.get("mx") if isinstance(observations, dict) else None
    for mx in hosts if isinstance(hosts, list) else ():
        if not isinstance(mx, dict) or "probes" in mx:
            continue
        seen = {key: mx.pop(key) for key in _PER_ADDRESS if key in mx}
        a = mx.get("a") or {}
        records = a.get("records") if a.get("rcode") == "NOERROR" else None
        mx["probes"] = [{"address": records[0], **seen}] if records else []
    document["mailwardObservations"] = FORMAT


def save(obs: DomainObservations, path: Path) -> None:
    path.write_text(dumps(obs))


def load(path: Path) -> DomainObservations:
    return loads(path.read_text())
