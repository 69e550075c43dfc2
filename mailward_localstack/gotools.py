"""Go tools pinned in tools/<name>/go.mod, built once per machine by their build.sh."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

from mailward_localstack._process import StackError
from mailward_localstack.controlplane import repo_root


@functools.cache
def tool_path(module: str, binary: str) -> Path:
    """The path of `binary` built from tools/`module` (built now if this machine lacks it)."""
    script = repo_root() / "tools" / module / "build.sh"
    result = subprocess.run(
        ["bash", str(script)], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True
    )
    lines = result.stdout.split()
    if result.returncode != 0 or not lines:
        raise StackError(f"{script} failed (exit code {result.returncode})")
    return Path(lines[-1]) / binary
