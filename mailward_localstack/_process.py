"""Background processes of the local stack, tracked by pid files.

The demo must outlive the `make demo` command that started it, and `make down` must be able to
stop everything later from nothing but the state directory. So every server is started in its own
session (immune to the terminal's signals), writes a pid file next to its log, and is stopped by
signalling its whole process group. A pid file is only trusted while the process it names still
runs the same executable: pids are reused.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path


class StackError(RuntimeError):
    """A part of the local stack could not be started or did not become ready."""


@dataclass
class ManagedProcess:
    """One long-running server of the local stack."""

    name: str
    argv: Sequence[str]
    state_dir: Path
    env: Mapping[str, str] | None = None
    cwd: Path | None = None
    extra_env: Mapping[str, str] = field(default_factory=dict)

    @property
    def pid_file(self) -> Path:
        return self.state_dir / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.state_dir / f"{self.name}.log"

    def start(self) -> None:
        if self.is_running():
            raise StackError(f"{self.name} is already running (pid file {self.pid_file})")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        env = dict(self.env if self.env is not None else os.environ)
        env.update(self.extra_env)
        with self.log_file.open("ab") as log:
            proc = subprocess.Popen(
                list(self.argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.cwd,
                env=env,
                start_new_session=True,
            )
        self.pid_file.write_text(f"{proc.pid}\n{self.argv[0]}\n")

    def pid(self) -> int | None:
        return read_live_pid(self.pid_file)

    def is_running(self) -> bool:
        return self.pid() is not None

    def stop(self, timeout: float = 10.0) -> None:
        stop_pid_file(self.pid_file, timeout)

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_file.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def ensure_alive(self) -> None:
        """Fail early, with the log, when the server exited during start-up."""
        if not self.is_running():
            raise StackError(
                f"{self.name} exited during start-up; last log lines:\n{self.log_tail()}"
            )


def read_live_pid(pid_file: Path) -> int | None:
    """The pid in `pid_file` if that process still runs the recorded executable.

    Only our own pid files count (pid, newline, executable): the state directory also holds the
    pods' volumes, whose pid files (Postfix's master.pid) name pids of another PID namespace.
    """
    try:
        pid_text, _, executable = pid_file.read_text().partition("\n")
        pid = int(pid_text)
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    if not executable.strip() or pid <= 1 or pid == os.getpid():
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None
    if state == "Z":
        return None
    expected = os.path.basename(executable.strip())
    running = os.path.basename(cmdline[0].decode(errors="replace"))
    # An empty command line is a process in the middle of exec: the kernel lets a vfork parent
    # (subprocess.Popen) go on before the new program's arguments are in place.
    if running and running != expected:
        return None
    return pid


def stop_pid_file(pid_file: Path, timeout: float = 10.0) -> bool:
    """Stop the process group behind `pid_file`; True if something was running."""
    pid = read_live_pid(pid_file)
    if pid is None:
        pid_file.unlink(missing_ok=True)
        return False
    _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _reap(pid)
        if read_live_pid(pid_file) is None:
            break
        time.sleep(0.05)
    else:
        _signal_group(pid, signal.SIGKILL)
        for _ in range(100):
            _reap(pid)
            if read_live_pid(pid_file) is None:
                break
            time.sleep(0.05)
    pid_file.unlink(missing_ok=True)
    return True


def managed_pid_files(state_dir: Path) -> list[Path]:
    """The pid files ManagedProcess wrote under `state_dir` (pid and executable)."""
    found = []
    for pid_file in sorted(state_dir.rglob("*.pid")):
        try:
            lines = pid_file.read_text().splitlines()
        except (OSError, UnicodeDecodeError):
            continue
        if len(lines) == 2 and lines[0].strip().isdigit() and lines[1].strip():
            found.append(pid_file)
    return found


def stop_all(state_dir: Path, timeout: float = 10.0) -> list[str]:
    """Stop every process with a pid file under `state_dir`; returns the names stopped."""
    stopped = []
    for pid_file in managed_pid_files(state_dir):
        if stop_pid_file(pid_file, timeout):
            stopped.append(str(pid_file.relative_to(state_dir).with_suffix("")))
    return stopped


# Runs in a separate interpreter: waits until the process that started it is gone, then stops
# every server of the state directory. Arguments: watched pid, state dir, import path.
_WATCHDOG = """
import os, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[3])
from mailward_localstack._process import stop_all
from mailward_localstack.node import teardown_below
while os.getppid() == int(sys.argv[1]):
    time.sleep(0.5)
teardown_below(Path(sys.argv[2]))
stop_all(Path(sys.argv[2]))
"""


def start_watchdog(state_dir: Path) -> subprocess.Popen[bytes]:
    """Stop everything under `state_dir` once this process is gone, however it ended.

    Teardown code does not run when the process is killed (SIGKILL, SIGTERM, a hard timeout),
    which would leave the servers running. The watchdog is our child in its own session, so it
    survives our death and the terminal's signals and notices it by being re-parented. Terminate
    the returned process after a normal clean-up.
    """
    import_path = str(Path(__file__).resolve().parents[1])
    return subprocess.Popen(
        [sys.executable, "-c", _WATCHDOG, str(os.getpid()), str(state_dir), import_path],
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )


def wait_until(
    predicate: Callable[[], bool],
    *,
    timeout: float,
    what: str,
    interval: float = 0.1,
    process: ManagedProcess | None = None,
) -> None:
    """Poll `predicate` until it holds; raise StackError naming `what` otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(Exception):
            if predicate():
                return
        if process is not None:
            process.ensure_alive()
        if time.monotonic() >= deadline:
            detail = f"; last log lines of {process.name}:\n{process.log_tail()}" if process else ""
            raise StackError(f"timed out after {timeout:.0f}s waiting for {what}{detail}")
        time.sleep(interval)


def free_port(host: str) -> int:
    """A TCP port on `host` that nothing listens on right now.

    The kernel picks it from the ephemeral range, so two stacks on one machine get different
    ports. Another program can still take it before our server binds it: callers that start a
    server on it should retry with a new port when the server reports "address already in use".
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def port_is_free(host: str, port: int) -> bool:
    """True if a server could bind `host:port` now (nothing listens there)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Like the Go servers we start: a port whose old connections linger in TIME_WAIT is free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _reap(pid: int) -> None:
    """Collect the exit status if the process is our child, so it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_ok(url: str, timeout: float = 1.0) -> bool:
    """True when a plain-HTTP health endpoint answers 200.

    Every such endpoint of the stack is on loopback: a proxy from the environment is never asked.
    """
    try:
        with _NO_PROXY.open(url, timeout=timeout) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def write_private(path: Path, content: bytes | str) -> None:
    """Write a file only its owner can read (keys, kubeconfigs), replacing an older one atomically.

    The temporary file is created 0600, so the content is never readable by others, not even
    briefly, and a reader never sees a half-written file.
    """
    data = content.encode() if isinstance(content, str) else content
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(data)
    os.replace(tmp, path)
