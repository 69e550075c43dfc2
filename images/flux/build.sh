#!/usr/bin/env bash
# Builds the test image of Flux's source-controller and kustomize-controller without a registry
# or a container engine, as a reproducible one-layer OCI image archive, or reuses it from the
# cache. Not a product image: the tests' GitOps pipeline (tests/fixtures_flux.py) runs it.
#
# Usage: images/flux/build.sh
# Prints exactly one line on stdout, "REF ARCHIVE", like images/build.sh, e.g.
#   mailward.local/flux:3f9a1c2e4b5d /root/.cache/mailward/images/flux-3f9a1c2e4b5d.oci.tar
#
# The controllers are static Go binaries (tools/flux/build.sh, pinned in tools/flux/go.mod):
# the image holds them, Debian's CA bundle of the build host, a /tmp and nothing else, and
# runs as 65534 (nobody), as Flux's own images do. The tag is the first 12 hex of a sha256
# over this folder, the binaries, the CA bundle and SOURCE_DATE_EPOCH. It is packed by
# images/oci.py (`pack`), and deliberately not a case of images/build.sh: every file directly
# in images/ is an input of the product images, so a change there would change their tags.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-1735689600}
cache=${MAILWARD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mailward}
images=$cache/images
ca_bundle=/etc/ssl/certs/ca-certificates.crt

log() { printf 'images/flux/build.sh: %s\n' "$*" >&2; }

bin=$("$repo/tools/flux/build.sh" | tail -n 1)
binaries=(source-controller kustomize-controller)
for b in "${binaries[@]}"; do
  [[ -x $bin/$b ]] || { log "missing $bin/$b"; exit 1; }
done

mkdir -p "$images"
tag=$(
  {
    printf 'mailward-image\0flux\0SOURCE_DATE_EPOCH=%s\0' "$SOURCE_DATE_EPOCH"
    (cd "$here" && find . -type f | LC_ALL=C sort | xargs sha256sum)
    (cd "$bin" && sha256sum "${binaries[@]}")
    [[ -f $ca_bundle ]] && sha256sum <"$ca_bundle"
  } | sha256sum | cut -c1-12
)
ref=mailward.local/flux:$tag
archive=$images/flux-$tag.oci.tar
if [[ -f $archive ]]; then
  log "cached: $archive"
  printf '%s %s\n' "$ref" "$archive"
  exit 0
fi

exec 9>"$images/.flux.lock"
flock 9
if [[ -f $archive ]]; then
  printf '%s %s\n' "$ref" "$archive"
  exit 0
fi
work=$(mktemp -d "$images/.build-flux-$tag.XXXXXX")
trap 'rm -rf "$work"' EXIT
start=$(date +%s)
rootfs=$work/rootfs
mkdir -p "$rootfs/usr/local/bin" "$rootfs/etc/ssl/certs" "$rootfs/tmp" "$rootfs/data"
for b in "${binaries[@]}"; do
  install -m 0755 "$bin/$b" "$rootfs/usr/local/bin/$b"
done
[[ -f $ca_bundle ]] && install -m 0644 "$ca_bundle" "$rootfs/etc/ssl/certs/ca-certificates.crt"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n' >"$rootfs/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$rootfs/etc/group"
chmod 1777 "$rootfs/tmp"
chown 65534:65534 "$rootfs/data" 2>/dev/null || true
python3 "$repo/images/oci.py" pack "$rootfs" "$work/image.oci.tar" --name flux --tag "$tag" \
  --ref "$ref" --entrypoint '["/usr/local/bin/source-controller"]' --user 65534:65534 \
  --env PATH=/usr/local/bin:/usr/bin:/bin --env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
mv -f "$work/image.oci.tar" "$archive"
log "built $archive ($(du -h "$archive" | cut -f1), $(($(date +%s) - start))s)"
printf '%s %s\n' "$ref" "$archive"
