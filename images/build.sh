#!/usr/bin/env bash
# Builds one of mailward's container images without a registry or a container engine, as a
# reproducible one-layer OCI image archive, or reuses it from the cache.
#
# Usage: images/build.sh pause|mta|mailward
# Prints exactly one line on stdout, "REF ARCHIVE", e.g.
#   mailward.local/mta:3f9a1c2e4b5d /root/.cache/mailward/images/mta-3f9a1c2e4b5d.oci.tar
# Progress goes to stderr. Import with:
#   ctr -n k8s.io images import --base-name mailward.local/NAME ARCHIVE
#
# The tag is the first 12 hex of a sha256 over everything that goes in (images/oci.py tag):
# images/build.sh, images/oci.py, the image's folder (images/pause, images/mta,
# images/operator for `mailward`), the repository files it copies (tlspolicy.py for mta;
# pyproject.toml, README.md and operator/ for mailward) and the build settings below. An
# unchanged tree reuses the cached archive without running anything else.
#
# Root file systems come from mmdebstrap (root mode, needs root); `pause` only needs gcc and
# the static libc. Debian packages are whatever the mirror serves at build time: the tag pins
# our inputs, not the archive's state.
#
# Environment:
#   MAILWARD_CACHE      cache root (default ${XDG_CACHE_HOME:-$HOME/.cache}/mailward);
#                       archives go to $MAILWARD_CACHE/images/
#   SOURCE_DATE_EPOCH   timestamp clamp for reproducible output (default below; part of the tag)
#   DEBIAN_MIRROR       default http://deb.debian.org/debian (part of the tag)
#   DEBIAN_SECURITY_MIRROR  default http://deb.debian.org/debian-security (part of the tag)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
name=${1:-}
case "$name" in
  pause | mta | mailward) ;;
  *)
    echo "usage: $0 pause|mta|mailward" >&2
    exit 2
    ;;
esac

# 2025-01-01T00:00:00Z. Files newer than this get this mtime in the layer.
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-1735689600}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
security_mirror=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
cache=${MAILWARD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mailward}
images=$cache/images
oci=(python3 "$here/oci.py")

log() { printf 'build.sh[%s]: %s\n' "$name" "$*" >&2; }

mkdir -p "$images"
tag=$("${oci[@]}" tag "$name" --salt "SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH" \
  --salt "mirror=$mirror" --salt "security_mirror=$security_mirror")
ref=mailward.local/$name:$tag
archive=$images/$name-$tag.oci.tar

if [[ -f $archive ]]; then
  log "cached: $archive"
  printf '%s %s\n' "$ref" "$archive"
  exit 0
fi

# One build per image at a time; a second caller waits, then finds the archive.
exec 9>"$images/.$name.lock"
if ! flock -n 9; then
  log "waiting for another build of $name"
  flock 9
fi
if [[ -f $archive ]]; then
  log "cached: $archive"
  printf '%s %s\n' "$ref" "$archive"
  exit 0
fi

if [[ $name != pause && $(id -u) != 0 ]]; then
  log "needs root (mmdebstrap --mode=root)"
  exit 1
fi

work=$(mktemp -d "$images/.build-$name-$tag.XXXXXX")
cleanup() {
  # --one-file-system: never follow into a /dev, /proc or /sys that an interrupted
  # mmdebstrap may have left mounted in the chroot.
  if grep -qF " $work/" /proc/self/mountinfo 2>/dev/null; then
    log "mounts left under $work, not removing it"
  else
    rm -rf --one-file-system "$work"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
start=$(date +%s)
log "building $ref in $work"

# Common mmdebstrap arguments: minimal, no docs/man/locales (copyright files kept), cleaned.
mmdebstrap_common=(
  --mode=root --format=directory
  --dpkgopt='path-exclude=/usr/share/doc/*'
  --dpkgopt='path-include=/usr/share/doc/*/copyright'
  --dpkgopt='path-exclude=/usr/share/man/*'
  --dpkgopt='path-exclude=/usr/share/locale/*'
  --dpkgopt='path-exclude=/usr/share/info/*'
  --dpkgopt='path-exclude=/usr/share/lintian/*'
  --aptopt='APT::Install-Recommends "false"'
  --aptopt='Acquire::Languages "none"'
  # Files that differ between build hosts (mmdebstrap copies them in for the build).
  --customize-hook='rm -f "$1/etc/resolv.conf" "$1/etc/hostname"'
  # Keep apt usable for debugging, but nothing it downloaded.
  --customize-hook='rm -rf "$1"/var/cache/apt/*.bin "$1"/var/lib/apt/lists/* "$1"/var/cache/debconf/*-old "$1"/var/lib/dpkg/*-old'
)
export MAILWARD_SRC=$repo

case "$name" in
  pause)
    mkdir -p "$work/rootfs"
    gcc -static -Os -s -Wall -Wextra -Werror -o "$work/rootfs/pause" "$here/pause/pause.c"
    chmod 0755 "$work/rootfs/pause"
    "$work/rootfs/pause" -v >&2
    pack_args=(--entrypoint '["/pause"]' --user 65535:65535)
    ;;

  mta)
    # The TLSRPT reporting daemons (not in Debian trixie): the one wheel pinned with its hash
    # in images/mta/tlsrpt-reporter.txt, fetched by pip on the host (no dependencies), then
    # installed by customize.sh with the image's Python.
    mkdir -p "$work/wheels"
    py=python3
    [[ -x $repo/.venv/bin/python ]] && py=$repo/.venv/bin/python
    "$py" -m pip download --quiet --no-deps --only-binary=:all: --require-hashes \
      -r "$here/mta/tlsrpt-reporter.txt" -d "$work/wheels" >&2
    export MAILWARD_TLSRPT_WHEEL
    MAILWARD_TLSRPT_WHEEL=$(ls "$work"/wheels/tlsrpt_reporter-*.whl)
    # Debian trixie: Postfix 3.10 (TLSRPT), postfix-mta-sts-resolver, unbound, dkimpy-milter
    # (DKIM signing, RSA and Ed25519).
    mmdebstrap "${mmdebstrap_common[@]}" \
      --variant=minbase \
      --include=postfix,postfix-pcre,libsasl2-modules,libsasl2-modules-db,sasl2-bin \
      --include=ca-certificates,unbound,dns-root-data,postfix-mta-sts-resolver,python3-dnspython \
      --include=dkimpy-milter \
      --essential-hook='echo "postfix postfix/main_mailer_type select No configuration" | chroot "$1" debconf-set-selections' \
      --customize-hook="$here/mta/customize.sh" \
      trixie "$work/rootfs" \
      "deb $mirror trixie main" \
      "deb $mirror trixie-updates main" \
      "deb $security_mirror trixie-security main" >&2
    pack_args=(
      --entrypoint '["/usr/local/bin/mailward-mta-start"]'
      --user 0:0
      --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
      --env LANG=C.UTF-8
      --expose 25/tcp --expose 465/tcp --expose 587/tcp
    )
    ;;

  mailward)
    # The project wheel, built on the host from exactly the hashed files.
    mkdir -p "$work/src" "$work/wheels"
    "${oci[@]}" stage mailward "$work/src"
    py=python3
    [[ -x $repo/.venv/bin/python ]] && py=$repo/.venv/bin/python
    log "building the project wheel with $py"
    "$py" -m pip wheel --no-deps --quiet -w "$work/wheels" "$work/src" >&2
    wheel=$(ls "$work/wheels"/mailward-*.whl)

    # The dependencies as wheels for the image's CPython 3.11 on glibc 2.36 (bookworm), cached
    # by the content of pyproject.toml (the only place that names them). Binary wheels only,
    # resolved for the image's tags rather than the host's; a dependency that publishes only an
    # sdist (dkimpy) is built into a wheel on the host (pure Python) and offered to the next
    # resolution through --find-links.
    pyproject_hash=$(sha256sum "$repo/pyproject.toml" | cut -c1-12)
    wheelhouse=$cache/wheelhouse/cp311-manylinux_2_36-$pyproject_hash
    if [[ ! -d $wheelhouse ]]; then
      log "collecting the dependency wheels into $wheelhouse"
      mkdir -p "$cache/wheelhouse" "$work/wheelhouse"
      wh_tmp=$work/wheelhouse # same file system as the cache: the final mv is a rename
      platforms=()
      for minor in $(seq 36 -1 17); do platforms+=(--platform "manylinux_2_${minor}_x86_64"); done
      platforms+=(--platform manylinux2014_x86_64 --platform manylinux2010_x86_64 --platform manylinux1_x86_64)
      built=()
      until "$py" -m pip download --quiet --only-binary=:all: --implementation cp \
        --python-version 3.11 --abi cp311 "${platforms[@]}" --find-links "$wh_tmp" \
        -d "$wh_tmp" "$wheel" 2>"$work/pip.err"; do
        missing=$(sed -n 's/^ERROR: No matching distribution found for \(.*\)$/\1/p' "$work/pip.err" | head -n 1)
        missing=${missing%% (from *}
        if [[ -z $missing || " ${built[*]-} " == *" $missing "* ]]; then
          cat "$work/pip.err" >&2
          log "cannot collect the dependency wheels${missing:+ ($missing has no usable wheel)}"
          exit 1
        fi
        log "no wheel for $missing on PyPI: building it on the host"
        "$py" -m pip wheel --quiet --no-deps --no-binary="${missing%%[<>=!~ ;[]*}" -w "$wh_tmp" "$missing" >&2
        built+=("$missing")
      done
      rm -f "$wh_tmp"/mailward-*.whl
      mv -T "$wh_tmp" "$wheelhouse" 2>/dev/null || true # else a racing build won
    fi
    cp "$wheelhouse"/*.whl "$work/wheels/"
    export MAILWARD_WHEELS=$work/wheels

    # Debian bookworm: python3 3.11, openssl (the compliance probes run `openssl s_client`).
    mmdebstrap "${mmdebstrap_common[@]}" \
      --variant=apt \
      --include=python3,python3-venv,ca-certificates,openssl \
      --customize-hook="$here/operator/customize.sh" \
      bookworm "$work/rootfs" \
      "deb $mirror bookworm main" \
      "deb $mirror bookworm-updates main" \
      "deb $security_mirror bookworm-security main" >&2
    pack_args=(
      --entrypoint '["/opt/mailward/bin/mailward"]'
      --cmd '["run","--all-namespaces"]'
      --user 65532:65532
      --env PATH=/opt/mailward/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
      --env PYTHONDONTWRITEBYTECODE=1
      --env PYTHONUNBUFFERED=1
      --env LANG=C.UTF-8
    )
    ;;
esac

log "packing"
"${oci[@]}" pack "$work/rootfs" "$work/image.oci.tar" --name "$name" --tag "$tag" --ref "$ref" \
  "${pack_args[@]}"
mv -f "$work/image.oci.tar" "$archive"
log "built $archive ($(du -h "$archive" | cut -f1), $(($(date +%s) - start))s)"
printf '%s %s\n' "$ref" "$archive"
