"""The MTA image's Postfix on loopback, started from a rendered configuration: tests, demo.

What runs is the Postfix build the MTA image ships (Debian trixie, Postfix 3.10), not the
machine's: every command (`postfix check/start/stop/flush`, `postconf`, the image's own
`/usr/local/bin/mailward-mta-accounts` with its `saslpasswd2`) runs chrooted into the image's
unpacked root file system in a private mount namespace (`mailward_localstack.rootfs`). So the
MTA integration tests prove the image's binaries, libraries (OpenSSL, Cyrus SASL) and users
(the image's `postfix` and `vmail`, whose ids differ from the machine's).

The configuration files are written exactly as rendered (`PostfixConfig.all_files()`);
what differs from the pod is only what `MTALayout` holds (paths under the state directory, the
listening address) and it is chosen by `local_layout`. The state directory is bind-mounted at
its own absolute path inside the image's tree, so every path of the layout is valid both on
the machine (where the tests read logs and mailboxes) and inside (where Postfix runs).

Postfix's master daemonizes and stays in the mount namespace of `postfix start`, which vanishes
with the master and its children; `stop` waits for that. There is no PID or network namespace:
master.pid holds the machine's pid and the listeners are on the machine's loopback address.

Postfix gets the stack's validating resolver as its system resolver: a resolv.conf naming it is
bind-mounted over the image's /etc/resolv.conf in that namespace; `trust-ad` makes glibc pass
the resolver's AD bit on, which `smtp_dns_support_level = dnssec` relies on.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from mailward.render.postfix import MAILBOX_UID, MTALayout, PostfixConfig
from mailward_localstack._process import StackError
from mailward_localstack.dns import ensure_loopback_address, remove_loopback_address
from mailward_localstack.rootfs import ImageRoot, mta_root

# Inside the image (images/mta/customize.sh installs it from images/mta/).
ACCOUNTS_SCRIPT = "/usr/local/bin/mailward-mta-accounts"


def local_layout(
    state_dir: Path, address: str, *, policy_socketmap: str | None = None
) -> MTALayout:
    """Paths under `state_dir` and one listening address: the test/demo side of MTALayout."""
    state_dir = state_dir.resolve()
    return MTALayout(
        queue_directory=str(state_dir / "queue"),
        data_directory=str(state_dir / "data"),
        mailbox_base=str(state_dir / "mailboxes"),
        tls_key_file=str(state_dir / "tls" / "tls.key"),
        tls_cert_file=str(state_dir / "tls" / "tls.crt"),
        sasldb_path=str(state_dir / "sasl" / "sasldb2"),
        maillog_file=str(state_dir / "maillog"),
        maillog_file_prefixes=str(state_dir),
        inet_interfaces=address,
        inet_protocols="ipv4",
        tls_policy_socketmap=policy_socketmap or f"inet:{address}:8461",
        # The TLSRPT collector's socket (render/tlsrpt_sending.py), where the test starts it.
        tlsrpt_socket=str(state_dir / "tlsrpt" / "collectd.sock"),
    )


@dataclass
class LocalPostfix:
    """One Postfix instance of the MTA image with its own config, queue and data directories.

    `state_dir` must lie where the image has an empty directory above it (e.g. under /tmp).
    """

    state_dir: Path
    layout: MTALayout
    resolver: str | None = None
    image: ImageRoot = field(default_factory=mta_root)
    # What `postfix check` said right before the start, on the configuration as rendered and
    # before any mail moved: a later check can race the queue manager creating directories.
    startup_check: str = ""
    # The mount namespace the master runs in ("mnt:[inode]"): stop() waits until it is gone.
    mount_namespace: str = ""

    @property
    def config_dir(self) -> Path:
        return self.state_dir / "config"

    @property
    def maillog(self) -> Path:
        return Path(self.layout.maillog_file)

    def log(self) -> str:
        try:
            return self.maillog.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def install(
        self,
        config: PostfixConfig,
        *,
        tls_chain_pem: bytes,
        tls_key_pem: bytes,
        accounts: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        """Write the rendered files, the TLS key pair and the account database."""
        self.install_files(
            config.all_files(),
            tls_chain_pem=tls_chain_pem,
            tls_key_pem=tls_key_pem,
            accounts=accounts,
        )

    def install_files(
        self,
        files: Mapping[str, str],
        *,
        tls_chain_pem: bytes,
        tls_key_pem: bytes,
        accounts: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        """As `install`, from the configuration files by name (e.g. read from a ConfigMap)."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.config_dir.mkdir(exist_ok=True)
        for name, text in files.items():
            (self.config_dir / name).parent.mkdir(parents=True, exist_ok=True)
            (self.config_dir / name).write_text(text)
        # The image's users: Postfix reads the image's /etc/passwd, not the machine's.
        postfix = self.image.user(self.layout.mail_owner)
        data = Path(self.layout.data_directory)
        data.mkdir(parents=True, exist_ok=True)
        os.chown(data, postfix.uid, postfix.gid)
        mailboxes = Path(self.layout.mailbox_base)
        mailboxes.mkdir(parents=True, exist_ok=True)
        os.chown(mailboxes, MAILBOX_UID, MAILBOX_UID)
        Path(self.layout.queue_directory).mkdir(parents=True, exist_ok=True)
        key_file, cert_file = Path(self.layout.tls_key_file), Path(self.layout.tls_cert_file)
        key_file.parent.mkdir(parents=True, exist_ok=True)
        cert_file.write_bytes(tls_chain_pem)
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(tls_key_pem)
        if self.resolver:
            (self.state_dir / "resolv.conf").write_text(
                f"nameserver {self.resolver}\noptions trust-ad attempts:2 timeout:2\n"
            )
        self._build_accounts(accounts or {})

    def _build_accounts(self, accounts: Mapping[str, Mapping[str, str]]) -> None:
        """Lay the accounts out as the Secret volumes are in the pod; run the image's script."""
        root = self.state_dir / "accounts"
        shutil.rmtree(root, ignore_errors=True)
        for domain, users in accounts.items():
            for user, password in users.items():
                path = root / domain / user
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(password)
        db = Path(self.layout.sasldb_path)
        db.parent.mkdir(parents=True, exist_ok=True)
        result = self._run([ACCOUNTS_SCRIPT, str(db), str(root)])
        if result.returncode != 0:
            raise StackError(f"{ACCOUNTS_SCRIPT} failed:\n{result.stdout}{result.stderr}")

    def _postfix(self, *args: str) -> list[str]:
        return ["/usr/sbin/postfix", "-c", str(self.config_dir), *args]

    def in_image(self, argv: list[str]) -> list[str]:
        """The machine's argv that runs `argv` inside the image, with this instance's mounts."""
        resolv_conf = self.state_dir / "resolv.conf" if self.resolver else None
        return self.image.command(argv, binds=[self.state_dir.resolve()], resolv_conf=resolv_conf)

    def _run(
        self, argv: list[str], *, timeout: float = 60, tty: bool = True
    ) -> subprocess.CompletedProcess[str]:
        command = self.in_image(argv)
        if tty:
            # Postfix's commands print their errors to syslog only; `script` gives them a tty,
            # on which they print them too (research note local-test-stack.md); stdout and
            # stderr are one stream then.
            command = ["script", "-qec", shlex.join(command), "/dev/null"]
        return subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )

    def check(self) -> str:
        """`postfix check`; returns its output (warnings), raises if it fails."""
        result = self._run(self._postfix("check"))
        output = (result.stdout + result.stderr).strip()
        if result.returncode != 0:
            raise StackError(f"postfix check failed:\n{output}\n{self.log()[-3000:]}")
        return output

    def start(self, timeout: float = 30) -> None:
        # Postfix refuses an inet_interfaces address that no interface carries.
        if ensure_loopback_address(self.layout.inet_interfaces):
            (self.state_dir / "added-address").write_text(self.layout.inet_interfaces)
        self.startup_check = self.check()
        result = self._run(self._postfix("start"))
        if result.returncode != 0:
            raise StackError(f"postfix start failed:\n{result.stdout}{result.stderr}\n{self.log()}")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid = self.master_pid()
            if pid is not None and "daemon started" in self.log():
                self.mount_namespace = os.readlink(f"/proc/{pid}/ns/mnt")
                if self.master_root() != self.image.path:
                    raise StackError(f"master {pid} does not run in {self.image.path}")
                return
            time.sleep(0.1)
        raise StackError(f"postfix did not start:\n{self.log()[-3000:]}")

    def master_root(self) -> Path | None:
        """The root directory of the running master: the image's tree, seen from the machine."""
        pid = self.master_pid()
        if pid is None:
            return None
        return Path(os.readlink(f"/proc/{pid}/root"))

    def postconf(self, *args: str) -> str:
        """`postconf -c CONFIG ARGS...` of the image, e.g. `postconf("-h", "mail_version")`."""
        result = self._run(["/usr/sbin/postconf", "-c", str(self.config_dir), *args], tty=False)
        if result.returncode != 0:
            raise StackError(f"postconf {' '.join(args)} failed:\n{result.stderr}")
        return result.stdout.strip()

    def master_pid(self) -> int | None:
        pid_file = Path(self.layout.queue_directory) / "pid" / "master.pid"
        try:
            pid = int(pid_file.read_text().strip())
            os.kill(pid, 0)
        except (FileNotFoundError, ValueError, ProcessLookupError):
            return None
        return pid

    def is_running(self) -> bool:
        return self.master_pid() is not None

    def stop(self) -> None:
        if self.is_running():
            self._run(self._postfix("stop"))
            deadline = time.monotonic() + 15
            while self.is_running() and time.monotonic() < deadline:
                time.sleep(0.1)
            pid = self.master_pid()
            if pid is not None:
                os.kill(pid, signal.SIGKILL)
        self._wait_namespace_gone()
        added = self.state_dir / "added-address"
        if added.exists():
            remove_loopback_address(added.read_text().strip())
            added.unlink()

    def _wait_namespace_gone(self, timeout: float = 15) -> None:
        """Wait until no process is left in the master's mount namespace, so its mounts are gone.

        The master's children (and `postfix start`'s helpers) end with it; a straggler is killed.
        """
        if not self.mount_namespace:
            return
        deadline = time.monotonic() + timeout
        while pids := _processes_in(self.mount_namespace):
            if time.monotonic() > deadline:
                for pid in pids:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                deadline = time.monotonic() + 5
                if not _wait_gone(self.mount_namespace, deadline):
                    raise StackError(f"processes {pids} of {self.mount_namespace} do not end")
                break
            time.sleep(0.1)
        self.mount_namespace = ""

    def flush(self) -> None:
        """Ask for an immediate delivery attempt of everything in the queue."""
        self._run(self._postfix("flush"))

    def mailbox(self, address: str) -> list[str]:
        """The messages delivered to `address` (Maildir), oldest first."""
        local, _, domain = address.partition("@")
        new = Path(self.layout.mailbox_base) / domain / local / "new"
        if not new.is_dir():
            return []
        files = sorted(new.iterdir(), key=lambda p: p.stat().st_mtime)
        return [p.read_text(errors="replace") for p in files]


def _processes_in(namespace: str) -> list[int]:
    """The pids whose mount namespace is `namespace` ("mnt:[inode]")."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.readlink(f"/proc/{entry}/ns/mnt") == namespace:
                    found.append(int(entry))
            except OSError:
                continue  # gone meanwhile
    return found


def _wait_gone(namespace: str, deadline: float) -> bool:
    while _processes_in(namespace):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True
