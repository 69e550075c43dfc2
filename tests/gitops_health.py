"""What GitOps tools conclude from mailward's objects: kstatus (Flux, kubectl) and Argo CD's
Lua health, both computed by their own code (tools/gitops, built once per machine)."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mailward_localstack.gotools import tool_path

REPO = Path(__file__).resolve().parents[1]
ARGOCD_HEALTH_SCRIPT = REPO / "charts" / "mailward" / "files" / "argocd-health.lua"


@dataclass(frozen=True)
class Health:
    kstatus: str
    kstatus_message: str
    argo: str
    argo_message: str

    @property
    def pair(self) -> tuple[str, str]:
        return (self.kstatus, self.argo)


def health_of(objects: list[dict[str, Any]]) -> list[Health]:
    """kstatus and Argo CD health of each object, in order."""
    result = subprocess.run(
        [str(tool_path("gitops", "health")), "-lua", str(ARGOCD_HEALTH_SCRIPT)],
        input=json.dumps({"items": objects}),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if result.returncode != 0:
        raise AssertionError(f"health failed: {result.stderr}")
    found = [json.loads(line) for line in result.stdout.splitlines()]
    return [
        Health(f["kstatus"], f["kstatusMessage"], f.get("argo", ""), f.get("argoMessage", ""))
        for f in found
    ]
