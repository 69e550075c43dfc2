"""The project's images, built by `images/build.sh` without a registry or a container engine.

Each is a one-layer OCI archive in the per-machine cache whose tag is derived from what went in,
so an unchanged tree reuses it at once; the node imports it into containerd.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from mailward_localstack._process import StackError
from mailward_localstack.controlplane import repo_root

IMAGES = ("pause", "mta", "mailward")


@dataclass(frozen=True)
class ImageArchive:
    ref: str
    """The name pods use, e.g. `mailward.local/mta:3f9a1c2e4b5d`."""
    archive: Path


def build_image(name: str) -> ImageArchive:
    """Build (or find in the cache) one of `IMAGES`; progress goes to our stderr."""
    script = repo_root() / "images" / "build.sh"
    result = subprocess.run(
        ["bash", str(script), name], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True
    )
    lines = result.stdout.split()
    if result.returncode != 0 or len(lines) != 2:
        raise StackError(f"{script} {name} failed (exit code {result.returncode})")
    return ImageArchive(lines[0], Path(lines[1]))
