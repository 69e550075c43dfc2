"""A real Postfix on loopback, started from a rendered configuration: for tests and the demo.

The configuration files are written exactly as rendered (`PostfixConfig.rendered_files()`);
what differs from the pod is only what `MTALayout` holds (paths under the state directory, the
listening address) and it is chosen by `local_layout`. The account database is built by the
same script the image runs (`images/mta/mailward-mta-accounts`).

Postfix gets the stack's validating resolver as its system resolver through a private mount
namespace in which a resolv.conf naming it is bind-mounted over /etc/resolv.conf; `trust-ad`
makes glibc pass the resolver's AD bit on, which `smtp_dns_support_level = dnssec` relies on.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from mailward.render.postfix import MAILBOX_UID, MTALayout, PostfixConfig
from mailward_localstack._process import StackError
from mailward_localstack.dns import ensure_loopback_address, remove_loopback_address

ACCOUNTS_SCRIPT = Path(__file__).resolve().parents[1] / "images" / "mta" / "mailward-mta-accounts"


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
    )


@dataclass
class LocalPostfix:
    """One Postfix instance with its own config, queue and data directories."""

    state_dir: Path
    layout: MTALayout
    resolver: str | None = None
    # What `postfix check` said right before the start, on the configuration as rendered and
    # before any mail moved: a later check can race the queue manager creating directories.
    startup_check: str = ""

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
            config.rendered_files(),
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
        postfix = pwd.getpwnam(self.layout.mail_owner)
        data = Path(self.layout.data_directory)
        data.mkdir(parents=True, exist_ok=True)
        os.chown(data, postfix.pw_uid, postfix.pw_gid)
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
        self._build_accounts(accounts or {})
        if self.resolver:
            (self.state_dir / "resolv.conf").write_text(
                f"nameserver {self.resolver}\noptions trust-ad attempts:2 timeout:2\n"
            )

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
        self._run(["sh", str(ACCOUNTS_SCRIPT), str(db), str(root)])

    def _postfix(self, *args: str) -> list[str]:
        return ["/usr/sbin/postfix", "-c", str(self.config_dir), *args]

    def _run(
        self, argv: list[str], *, namespaced: bool = False, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        if namespaced and self.resolver:
            # A private mount namespace: the bind mount is seen by Postfix and its children only.
            script = 'mount --bind "$0" /etc/resolv.conf && exec "$@"'
            argv = ["unshare", "-m", "sh", "-c", script, str(self.state_dir / "resolv.conf"), *argv]
        # Postfix's commands print their errors to syslog only; `script` gives them a tty, on
        # which they print them too (research note local-test-stack.md).
        command = " ".join(_quote(a) for a in argv)
        return subprocess.run(
            ["script", "-qec", command, "/dev/null"],
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
        result = self._run(self._postfix("start"), namespaced=True)
        if result.returncode != 0:
            raise StackError(f"postfix start failed:\n{result.stdout}{result.stderr}\n{self.log()}")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.is_running() and "daemon started" in self.log():
                return
            time.sleep(0.1)
        raise StackError(f"postfix did not start:\n{self.log()[-3000:]}")

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
                os.kill(pid, 9)
        added = self.state_dir / "added-address"
        if added.exists():
            remove_loopback_address(added.read_text().strip())
            added.unlink()

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


def _quote(arg: str) -> str:
    import shlex

    return shlex.quote(arg)
