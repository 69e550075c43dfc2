"""The project's images as root file systems on this machine, and commands run inside them.

The local stack runs the MTA image's own binaries (Debian trixie: Postfix 3.10, Cyrus SASL,
Python 3.13 with dnspython, postfix-mta-sts-resolver, and the copies of mailward's scripts the
image installs), not the machine's, so that what the tests prove is what the image ships. There
is no container engine for that: the image's one layer (`images/build.sh`, format in
`images/oci.py`) is unpacked once per image tag into the per-machine cache, and every command
runs chrooted into that tree inside a private mount namespace of its own:

    unshare --mount --propagation private sh -c '
      mount --bind ROOT ROOT; mount -o remount,bind,ro ROOT   # this namespace's read-only copy
      mount -t tmpfs tmpfs ROOT/tmp                           # scratch, as the pod's emptyDir
      mount --rbind /dev ROOT/dev; mount -t proc proc ROOT/proc
      mount --bind RESOLV_CONF ROOT/etc/resolv.conf           # the stack's validating resolver
      mkdir -p ROOT/STATE; mount --bind STATE ROOT/STATE      # same absolute path in and out
      exec chroot [--userspec=UID:GID] ROOT env -i PATH=... LANG=C.UTF-8 COMMAND...'

All mounts live in that namespace only; it disappears with its last process (for Postfix, the
master daemon and its children, which stay in the namespace they were started in). Nothing is
ever mounted in the machine's namespace, and the shared tree is never written to: the root is
read-only as in the pod (`readOnlyRootFilesystem`), and a bind target that the image lacks is
created on a tmpfs laid over its closest empty ancestor directory in the image (`/tmp` for
pytest's and `tempfile`'s directories). There is no PID or network namespace: pid files hold
the machine's pids, and servers listen on the machine's loopback addresses.

The unpacked tree differs from the layer in one file: an empty `/etc/resolv.conf` (the build
removes it), the mount point for the resolver, as a container runtime provides one too.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path, PurePosixPath
from typing import IO

from mailward_localstack._process import StackError
from mailward_localstack.images import ImageArchive, build_image

# The image's environment (images/build.sh: `--env` of the mta image).
IMAGE_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
}
MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
CHUNK = 1 << 20


def cache_dir() -> Path:
    """`$MAILWARD_CACHE`, else `${XDG_CACHE_HOME:-$HOME/.cache}/mailward` (as images/build.sh)."""
    if os.environ.get("MAILWARD_CACHE"):
        return Path(os.environ["MAILWARD_CACHE"])
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "mailward"


@dataclass(frozen=True)
class Account:
    uid: int
    gid: int


@dataclass(frozen=True)
class ImageRoot:
    """An unpacked image: a shared, cached tree that is only ever used read-only."""

    ref: str
    path: Path

    def user(self, name: str) -> Account:
        """uid and primary gid of `name` in the image's /etc/passwd (not the machine's)."""
        for line in (self.path / "etc" / "passwd").read_text().splitlines():
            fields = line.split(":")
            if len(fields) >= 4 and fields[0] == name:
                return Account(int(fields[2]), int(fields[3]))
        raise StackError(f"no user {name} in {self.ref}")

    def group(self, name: str) -> int:
        """gid of `name` in the image's /etc/group."""
        for line in (self.path / "etc" / "group").read_text().splitlines():
            fields = line.split(":")
            if len(fields) >= 3 and fields[0] == name:
                return int(fields[2])
        raise StackError(f"no group {name} in {self.ref}")

    def command(
        self,
        argv: Sequence[str],
        *,
        binds: Sequence[Path] = (),
        resolv_conf: Path | None = None,
        user: Account | None = None,
        env: Mapping[str, str] | None = None,
    ) -> list[str]:
        """The machine's argv that runs `argv` inside the image (see the module docstring).

        `binds`: directories of the machine made visible at the same absolute path inside.
        `user`: run as this uid/gid (no supplementary groups) instead of root.
        """
        root = str(self.path)
        q = shlex.quote
        lines = [
            "set -eu",
            f"mount --bind {q(root)} {q(root)}",
            f"mount -o remount,bind,ro {q(root)}",
            f"mount -t tmpfs -o mode=1777,nosuid,nodev mailward-tmp {q(root + '/tmp')}",
            f"mount --rbind /dev {q(root + '/dev')}",
            f"mount -t proc -o nosuid,nodev,noexec proc {q(root + '/proc')}",
        ]
        if resolv_conf is not None:
            lines.append(f"mount --bind {q(str(resolv_conf))} {q(root + '/etc/resolv.conf')}")
        scratch: set[PurePosixPath] = {PurePosixPath("/tmp")}
        for directory in binds:
            target = PurePosixPath(os.path.abspath(directory))
            inside = root + str(target)
            if not self._is_real_dir(target):
                base = self._scratch_for(target)
                if base not in scratch:
                    lines.append(f"mount -t tmpfs -o mode=0755 mailward-mnt {q(root + str(base))}")
                    scratch.add(base)
                lines.append(f"mkdir -p {q(inside)}")
            lines.append(f"mount --bind {q(str(target))} {q(inside)}")
        chroot = ["chroot"]
        if user is not None:
            chroot += [f"--userspec={user.uid}:{user.gid}", f"--groups={user.gid}"]
        variables = [f"{k}={v}" for k, v in {**IMAGE_ENV, **(env or {})}.items()]
        lines.append(
            " ".join(["exec", *chroot, q(root), "/usr/bin/env", "-i", *map(q, variables), '"$@"'])
        )
        script = "\n".join(lines)
        return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", *argv]

    def _is_real_dir(self, target: PurePosixPath) -> bool:
        """Whether `target` exists in the image as a directory, reached without symlinks."""
        path = self.path
        for part in target.parts[1:]:
            path = path / part
            if path.is_symlink() or not path.is_dir():
                return False
        return True

    def _scratch_for(self, target: PurePosixPath) -> PurePosixPath:
        """The closest ancestor of `target` that is an empty directory in the image.

        A tmpfs over it takes the mount point that `mkdir -p` creates; the image loses nothing.
        """
        for ancestor in reversed(target.parents[:-1]):  # shallowest first, without "/"
            path = self.path / ancestor.relative_to("/")
            if path.is_symlink() or not path.is_dir():
                break
            if not any(path.iterdir()):
                return ancestor
        raise StackError(
            f"{target} cannot be mounted into {self.ref} without writing to the image: "
            "no empty directory of the image above it (use a directory under /tmp)"
        )


def unpack_image(image: ImageArchive) -> ImageRoot:
    """The image's root file system, unpacked into the cache on first use (atomically)."""
    name, _, tag = image.ref.rpartition("/")[2].partition(":")
    parent = cache_dir() / "rootfs"
    parent.mkdir(parents=True, exist_ok=True)
    # Resolved: the path is compared with what /proc/PID/root of a process inside says.
    parent = parent.resolve()
    final = parent / f"{name}-{tag}"
    if final.is_dir():
        return ImageRoot(image.ref, final)
    with _locked(parent / f".{name}-{tag}.lock"):
        if final.is_dir():
            return ImageRoot(image.ref, final)
        # Left behind by an interrupted unpack (which held this lock, so it is gone).
        for stale in parent.glob(f".{name}-{tag}.tmp*"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(dir=parent, prefix=f".{name}-{tag}.tmp"))
        try:
            tmp.chmod(0o755)  # the root directory: Postfix's unprivileged daemons pass through
            _extract_layer(image.archive, tmp)
            resolv = tmp / "etc" / "resolv.conf"
            if not resolv.exists() and not resolv.is_symlink():
                resolv.touch(mode=0o644)
            tmp.rename(final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return ImageRoot(image.ref, final)


@cache
def mta_root() -> ImageRoot:
    """The MTA image (built or found by images/build.sh), unpacked; once per process."""
    return unpack_image(build_image("mta"))


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _extract_layer(archive: Path, dest: Path) -> None:
    """Unpack the single gzipped layer of an OCI image layout tarball into `dest`.

    `tar` as root keeps numeric owners, modes (setgid postdrop), hard links and file
    capabilities; the layer's digest is checked on the way.
    """
    with tarfile.open(archive) as outer:

        def member(name: str) -> IO[bytes]:
            found = outer.extractfile(name)
            if found is None:
                raise StackError(f"{archive}: no {name}")
            return found

        def blob(digest: str) -> IO[bytes]:
            algorithm, _, hexdigest = digest.partition(":")
            return member(f"blobs/{algorithm}/{hexdigest}")

        index = json.load(member("index.json"))
        (entry,) = [m for m in index["manifests"] if m["mediaType"] == MT_MANIFEST]
        manifest = json.load(blob(entry["digest"]))
        layers = manifest["layers"]
        if len(layers) != 1 or layers[0]["mediaType"] != MT_LAYER:
            raise StackError(f"{archive}: expected one gzipped layer, found {layers}")
        digest = layers[0]["digest"]
        untar = subprocess.Popen(
            [
                "tar",
                "--extract",
                "--gzip",
                "--numeric-owner",
                "--same-permissions",
                "--xattrs",
                "--xattrs-include=security.capability",
                "--directory",
                str(dest),
                "--file",
                "-",
            ],
            stdin=subprocess.PIPE,
        )
        assert untar.stdin is not None
        sha = hashlib.sha256()
        source = blob(digest)
        try:
            while chunk := source.read(CHUNK):
                sha.update(chunk)
                untar.stdin.write(chunk)
        finally:
            untar.stdin.close()
            code = untar.wait()
    if code != 0:
        raise StackError(f"unpacking {archive} failed (tar exit code {code})")
    if f"sha256:{sha.hexdigest()}" != digest:
        raise StackError(f"{archive}: layer does not match its digest {digest}")
