#!/usr/bin/env python3
"""Helper of images/build.sh: input hashing and reproducible one-layer OCI image archives.

Standard library only. Subcommands:

  inputs NAME              the repository files that go into image NAME, one per line
  tag NAME                 the 12-hex tag: sha256 over those files (path, mode, content) and
                           the build settings given as --salt
  stage NAME DEST          copy NAME's input files into DEST (a clean tree to build the wheel in)
  pack ROOTFS ARCHIVE ...  tar ROOTFS into a layer and write the OCI image layout tarball

Determinism of `pack`: entries sorted by (byte-wise) name, numeric owners without names,
mtimes clamped to SOURCE_DATE_EPOCH, PAX format, gzip without name and with mtime 0, and the
outer archive likewise. The same rootfs always gives the same layer, config and manifest digest.
"""

from __future__ import annotations

import argparse
import datetime
import gzip
import hashlib
import io
import json
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IMAGES = "images"
# Where each image's definition files live (the operator image keeps its historic folder).
DEFINITION_DIR = {"pause": "images/pause", "mta": "images/mta", "mailward": "images/operator"}
# Repository files besides the definition folder that end up in an image.
EXTRA_INPUTS = {
    "pause": [],
    "mta": ["operator/mailward/sidecars/tlspolicy.py"],
    "mailward": ["pyproject.toml", "README.md", "operator"],
}
# Never inputs, even when a plain `find` (no git) would list them.
JUNK_PARTS = {"__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache", "build", "dist"}

MT_INDEX = "application/vnd.oci.image.index.v1+json"
MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
CHUNK = 1 << 20


def log(message: str) -> None:
    print(f"oci.py: {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------- input hashing


def _git_files(pathspecs: list[str]) -> list[str] | None:
    try:
        inside = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--is-inside-work-tree"],
            capture_output=True,
            text=True,
            check=False,
        )
    except FileNotFoundError:
        return None
    if inside.returncode != 0 or inside.stdout.strip() != "true":
        return None
    # Tracked files plus untracked ones that are not ignored: a new module that is not yet
    # committed still goes into the wheel, so it must change the tag too.
    out = subprocess.run(
        [
            "git",
            "-C",
            str(ROOT),
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
            "--",
            *pathspecs,
        ],
        capture_output=True,
        check=True,
    ).stdout
    return [p for p in out.decode().split("\0") if p]


def _walk_files(pathspecs: list[str]) -> list[str]:
    found: list[str] = []
    for spec in pathspecs:
        top = ROOT / spec
        if top.is_file() or top.is_symlink():
            found.append(spec)
            continue
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames[:] = [
                d for d in dirnames if d not in JUNK_PARTS and not d.endswith(".egg-info")
            ]
            for f in filenames:
                if f.endswith((".pyc", ".pyo")):
                    continue
                found.append(os.path.relpath(os.path.join(dirpath, f), ROOT))
    return found


def input_files(name: str) -> list[str]:
    """Sorted repository-relative paths of everything that goes into image NAME."""
    # The helpers: every file directly in images/ (build.sh, oci.py), not other images' folders.
    helpers = sorted(p.name for p in (ROOT / IMAGES).iterdir() if p.is_file())
    specs = [f"{IMAGES}/{h}" for h in helpers] + [DEFINITION_DIR[name], *EXTRA_INPUTS[name]]
    listed = _git_files(specs)
    if listed is None:
        listed = _walk_files(specs)
    # Directly-in-images/ only for the helpers (a pathspec "images/x" is exact anyway).
    files = {p for p in listed if (ROOT / p).is_file() or (ROOT / p).is_symlink()}
    return sorted(files, key=lambda p: p.encode())


def compute_tag(name: str, salts: list[str]) -> str:
    digest = hashlib.sha256()
    digest.update(f"mailward-image\0{name}\0".encode())
    for salt in sorted(salts):
        digest.update(f"salt\0{salt}\0".encode())
    for rel in input_files(name):
        path = ROOT / rel
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode):
            kind, content = "l", os.readlink(path).encode()
        else:
            kind = "x" if st.st_mode & 0o111 else "f"
            content = path.read_bytes()
        digest.update(f"{kind}\0{rel}\0{len(content)}\0".encode())
        digest.update(content)
    return digest.hexdigest()[:12]


def stage(name: str, dest: Path) -> None:
    for rel in input_files(name):
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, target, follow_symlinks=False)


# ---------------------------------------------------------------------------- layer


def _walk_rootfs(rootfs: Path) -> Iterator[tuple[str, Path]]:
    """(archive name, path) of every entry below rootfs, depth first, sorted byte-wise."""

    def walk(rel: bytes) -> Iterator[tuple[str, Path]]:
        directory = os.path.join(os.fsencode(rootfs), rel) if rel else os.fsencode(rootfs)
        for entry in sorted(os.listdir(directory)):
            sub = os.path.join(rel, entry) if rel else entry
            yield os.fsdecode(sub), Path(os.fsdecode(os.path.join(os.fsencode(rootfs), sub)))
            full = os.path.join(os.fsencode(rootfs), sub)
            if os.path.isdir(full) and not os.path.islink(full) and not _prune_below(sub):
                yield from walk(sub)

    yield from walk(b"")


def _prune_below(rel: bytes) -> bool:
    # API file systems and runtime state: the directories stay (as mount points), their
    # content never belongs in an image (device nodes, mmdebstrap's leftovers).
    return rel in (b"dev", b"proc", b"sys", b"run", b"tmp", b"var/tmp")


def write_layer(rootfs: Path, out_tar: Path, epoch: int) -> None:
    """Write the uncompressed layer tar."""
    count = 0
    with tarfile.open(out_tar, "w", format=tarfile.PAX_FORMAT) as tar:
        for arcname, path in _walk_rootfs(rootfs):
            info = tar.gettarinfo(str(path), arcname=arcname)
            if info.type not in (
                tarfile.REGTYPE,
                tarfile.DIRTYPE,
                tarfile.SYMTYPE,
                tarfile.LNKTYPE,
            ):
                log(f"skipping {arcname} (not a file, directory or link)")
                continue
            info.mtime = min(int(info.mtime), epoch)
            info.uname = info.gname = ""
            caps = _file_capabilities(path) if info.type == tarfile.REGTYPE else None
            if caps is not None:
                info.pax_headers = {
                    "SCHILY.xattr.security.capability": caps.decode("utf-8", "surrogateescape")
                }
            if info.type == tarfile.REGTYPE:
                with open(path, "rb") as f:
                    tar.addfile(info, f)
            else:
                tar.addfile(info)
            count += 1
    log(f"layer: {count} entries")


def _file_capabilities(path: Path) -> bytes | None:
    try:
        return os.getxattr(path, "security.capability", follow_symlinks=False)
    except OSError:
        return None


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _gzip(src: Path, dst: Path) -> None:
    # Equivalent of `gzip -n`: no file name, mtime 0.
    with (
        open(src, "rb") as fin,
        open(dst, "wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6) as gz,
    ):
        shutil.copyfileobj(fin, gz, CHUNK)


# ---------------------------------------------------------------------------- pack


def _json_bytes(obj: object) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def pack(args: argparse.Namespace) -> None:
    rootfs, archive = Path(args.rootfs), Path(args.archive)
    epoch = int(os.environ.get("SOURCE_DATE_EPOCH", "0"))
    created = datetime.datetime.fromtimestamp(epoch, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    with tempfile.TemporaryDirectory(dir=archive.parent, prefix=".pack.") as tmpname:
        tmp = Path(tmpname)
        layer_tar, layer_gz = tmp / "layer.tar", tmp / "layer.tar.gz"
        write_layer(rootfs, layer_tar, epoch)
        diff_id = "sha256:" + _sha256_file(layer_tar)
        _gzip(layer_tar, layer_gz)
        layer_tar.unlink()
        layer_digest = "sha256:" + _sha256_file(layer_gz)
        layer_size = layer_gz.stat().st_size

        container_config: dict[str, object] = {}
        if args.entrypoint:
            container_config["Entrypoint"] = json.loads(args.entrypoint)
        if args.cmd:
            container_config["Cmd"] = json.loads(args.cmd)
        if args.env:
            container_config["Env"] = list(args.env)
        if args.user:
            container_config["User"] = args.user
        container_config["WorkingDir"] = args.workdir
        if args.expose:
            container_config["ExposedPorts"] = {p: {} for p in args.expose}
        container_config["Labels"] = {
            "org.opencontainers.image.title": args.name,
            "org.opencontainers.image.version": args.tag,
            "org.opencontainers.image.source": "images/build.sh",
        }
        config = {
            "architecture": "amd64",
            "os": "linux",
            "created": created,
            "config": container_config,
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            "history": [{"created": created, "created_by": f"images/build.sh {args.name}"}],
        }
        config_bytes = _json_bytes(config)
        config_digest = "sha256:" + hashlib.sha256(config_bytes).hexdigest()
        manifest = {
            "schemaVersion": 2,
            "mediaType": MT_MANIFEST,
            "config": {"mediaType": MT_CONFIG, "digest": config_digest, "size": len(config_bytes)},
            "layers": [{"mediaType": MT_LAYER, "digest": layer_digest, "size": layer_size}],
            "annotations": {"org.opencontainers.image.created": created},
        }
        manifest_bytes = _json_bytes(manifest)
        manifest_digest = "sha256:" + hashlib.sha256(manifest_bytes).hexdigest()
        index = {
            "schemaVersion": 2,
            "mediaType": MT_INDEX,
            "manifests": [
                {
                    "mediaType": MT_MANIFEST,
                    "digest": manifest_digest,
                    "size": len(manifest_bytes),
                    "platform": {"architecture": "amd64", "os": "linux"},
                    "annotations": {
                        "org.opencontainers.image.ref.name": args.tag,
                        "io.containerd.image.name": args.ref,
                    },
                }
            ],
        }
        members: list[tuple[str, bytes | Path | None]] = [
            ("blobs/", None),
            ("blobs/sha256/", None),
            (f"blobs/sha256/{config_digest[7:]}", config_bytes),
            (f"blobs/sha256/{layer_digest[7:]}", layer_gz),
            (f"blobs/sha256/{manifest_digest[7:]}", manifest_bytes),
            ("index.json", _json_bytes(index)),
            ("oci-layout", _json_bytes({"imageLayoutVersion": "1.0.0"})),
        ]
        out = tmp / "image.oci.tar"
        with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
            for arcname, content in sorted(members, key=lambda m: m[0]):
                info = tarfile.TarInfo(arcname.rstrip("/"))
                info.mtime, info.uid, info.gid, info.uname, info.gname = epoch, 0, 0, "", ""
                if content is None:
                    info.type, info.mode = tarfile.DIRTYPE, 0o755
                    tar.addfile(info)
                elif isinstance(content, Path):
                    info.size, info.mode = content.stat().st_size, 0o644
                    with open(content, "rb") as f:
                        tar.addfile(info, f)
                else:
                    info.size, info.mode = len(content), 0o644
                    tar.addfile(info, io.BytesIO(content))
        os.replace(out, archive)
    log(f"layer {layer_digest} ({layer_size} bytes), diff_id {diff_id}")
    log(f"manifest {manifest_digest}")


# ---------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="oci.py", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("inputs")
    p.add_argument("name", choices=sorted(DEFINITION_DIR))
    p = sub.add_parser("tag")
    p.add_argument("name", choices=sorted(DEFINITION_DIR))
    p.add_argument("--salt", action="append", default=[], help="a build setting (KEY=VALUE)")
    p = sub.add_parser("stage")
    p.add_argument("name", choices=sorted(DEFINITION_DIR))
    p.add_argument("dest")
    p = sub.add_parser("pack")
    p.add_argument("rootfs")
    p.add_argument("archive", help="written atomically (temp file in the same directory)")
    p.add_argument("--name", required=True)
    p.add_argument("--tag", required=True)
    p.add_argument("--ref", required=True)
    p.add_argument("--entrypoint", help="JSON list")
    p.add_argument("--cmd", help="JSON list")
    p.add_argument("--env", action="append", default=[])
    p.add_argument("--user", default="")
    p.add_argument("--workdir", default="/")
    p.add_argument("--expose", action="append", default=[], help="e.g. 25/tcp")
    args = parser.parse_args(argv)

    if args.command == "inputs":
        print("\n".join(input_files(args.name)))
    elif args.command == "tag":
        print(compute_tag(args.name, args.salt))
    elif args.command == "stage":
        stage(args.name, Path(args.dest))
    else:
        pack(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
