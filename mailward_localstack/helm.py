"""The pinned helm (tools/helm), built once per machine like the control plane."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

from mailward_localstack._process import StackError
from mailward_localstack.controlplane import repo_root


@functools.cache
def helm_path() -> Path:
    script = repo_root() / "tools" / "helm" / "build.sh"
    result = subprocess.run(
        ["bash", str(script)], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True
    )
    lines = result.stdout.split()
    if result.returncode != 0 or not lines:
        raise StackError(f"{script} failed (exit code {result.returncode})")
    return Path(lines[-1]) / "helm"


def helm(kubeconfig: Path | None, *args: str, timeout: float = 600) -> str:
    """Run helm as a person would; its standard output, or StackError with its message."""
    command = [str(helm_path()), *args]
    if kubeconfig is not None:
        command += ["--kubeconfig", str(kubeconfig)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise StackError(f"helm {' '.join(args[:2])} failed: {result.stderr.strip()}")
    return result.stdout
