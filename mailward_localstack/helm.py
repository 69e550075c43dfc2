"""The pinned helm (tools/helm), built once per machine like the control plane."""

from __future__ import annotations

import subprocess
from pathlib import Path

from mailward_localstack._process import StackError
from mailward_localstack.gotools import tool_path


def helm_path() -> Path:
    return tool_path("helm", "helm")


def helm(kubeconfig: Path | None, *args: str, timeout: float = 600) -> str:
    """Run helm as a person would; its standard output, or StackError with its message."""
    command = [str(helm_path()), *args]
    if kubeconfig is not None:
        command += ["--kubeconfig", str(kubeconfig)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise StackError(f"helm {' '.join(args[:2])} failed: {result.stderr.strip()}")
    return result.stdout
