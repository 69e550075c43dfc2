"""`mailward` commands run by the tests as real processes, the way a pod would run them."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from mailward_localstack._process import http_ok


@contextmanager
def mailward_process(
    args: list[str],
    *,
    env: Mapping[str, str],
    log_file: Path,
    ready_url: str,
    what: str,
    timeout: float = 60,
    module: str = "mailward",
) -> Iterator[subprocess.Popen[bytes]]:
    """Run `python -m MODULE ARGS` until the block ends; ready once `ready_url` answers 200.

    The process is stopped whatever happens in the block, and an exit during start-up fails
    with its log.
    """
    with log_file.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env),
        )
    try:
        deadline = time.monotonic() + timeout
        while process.poll() is None and not http_ok(ready_url):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}")
            time.sleep(0.25)
        if process.poll() is not None:
            log_text = log_file.read_text(errors="replace")
            raise AssertionError(f"{what} exited during start-up:\n{log_text}")
        yield process
    finally:
        stop(process)


def stop(process: subprocess.Popen[bytes], timeout: float = 15) -> None:
    """Terminate (continuing it first if a test paused it), then kill if it does not go."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGCONT)
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
