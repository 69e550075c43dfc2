#!/usr/bin/env bash
# Builds the test image of cert-manager's controller without a registry or a container engine,
# as a reproducible one-layer OCI image archive, or reuses it from the cache. Not a product
# image: the tests and the demo issue certificates with it (mailward_localstack/certmanager.py).
#
# Usage: images/cert-manager/build.sh
# Prints exactly one line on stdout, "REF ARCHIVE", like images/build.sh, e.g.
#   mailward.local/cert-manager:3f9a1c2e4b5d /root/.cache/mailward/images/cert-manager-3f9a1c2e4b5d.oci.tar
#
# The controller is a static Go binary (tools/cert-manager/build.sh, pinned in
# tools/cert-manager/go.mod): the image holds it, a /tmp and nothing else, and runs as 65534
# (nobody); it talks only to the API server, with the ServiceAccount's CA, so it needs no CA
# bundle. The tag is the first 12 hex of a sha256 over this folder, the binary and
# SOURCE_DATE_EPOCH. It is packed by images/oci.py (`pack`), and deliberately not a case of
# images/build.sh: every file directly in images/ is an input of the product images.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-1735689600}
cache=${MAILWARD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mailward}
images=$cache/images
binary=cert-manager-controller

log() { printf 'images/cert-manager/build.sh: %s\n' "$*" >&2; }

bin=$("$repo/tools/cert-manager/build.sh" | tail -n 1)
[[ -x $bin/$binary ]] || { log "missing $bin/$binary"; exit 1; }

mkdir -p "$images"
tag=$(
  {
    printf 'mailward-image\0cert-manager\0SOURCE_DATE_EPOCH=%s\0' "$SOURCE_DATE_EPOCH"
    (cd "$here" && find . -type f | LC_ALL=C sort | xargs sha256sum)
    (cd "$bin" && sha256sum "$binary")
  } | sha256sum | cut -c1-12
)
ref=mailward.local/cert-manager:$tag
archive=$images/cert-manager-$tag.oci.tar
if [[ -f $archive ]]; then
  log "cached: $archive"
  printf '%s %s\n' "$ref" "$archive"
  exit 0
fi

exec 9>"$images/.cert-manager.lock"
flock 9
if [[ -f $archive ]]; then
  printf '%s %s\n' "$ref" "$archive"
  exit 0
fi
work=$(mktemp -d "$images/.build-cert-manager-$tag.XXXXXX")
trap 'rm -rf "$work"' EXIT
start=$(date +%s)
rootfs=$work/rootfs
mkdir -p "$rootfs/usr/local/bin" "$rootfs/etc" "$rootfs/tmp"
install -m 0755 "$bin/$binary" "$rootfs/usr/local/bin/$binary"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n' >"$rootfs/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$rootfs/etc/group"
chmod 1777 "$rootfs/tmp"
python3 "$repo/images/oci.py" pack "$rootfs" "$work/image.oci.tar" --name cert-manager --tag "$tag" \
  --ref "$ref" --entrypoint "[\"/usr/local/bin/$binary\"]" --user 65534:65534 \
  --env PATH=/usr/local/bin:/usr/bin:/bin
mv -f "$work/image.oci.tar" "$archive"
log "built $archive ($(du -h "$archive" | cut -f1), $(($(date +%s) - start))s)"
printf '%s %s\n' "$ref" "$archive"
