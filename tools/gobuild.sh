#!/usr/bin/env bash
# Builds Go commands of a pinned tool module once per machine into a cache outside the repo,
# keyed by the module's main version and its go.sum, and prints the directory of the binaries.
#   gobuild.sh MODULE_DIR KEY_MODULE NAME=PACKAGE [NAME=PACKAGE ...]
# KEY_MODULE names the requirement whose version keys the cache (e.g. k8s.io/kubernetes).
set -euo pipefail
module_dir="$(cd "$1" && pwd)"
key_module="$2"
shift 2
version="$(awk -v m="$key_module" '$1==m {print $2; exit} $1=="require" && $2==m {print $3; exit}' "$module_dir/go.mod")"
[[ -n "$version" ]] || { echo "gobuild.sh: $key_module not required in $module_dir/go.mod" >&2; exit 1; }
# go.sum and the module's own Go files: a tool with code of its own is rebuilt when it changes.
sum_key="$(cd "$module_dir" && cat go.sum $(find . -name '*.go' ! -name tools.go | LC_ALL=C sort) | sha256sum | cut -c1-12)"
cache_root="${MAILWARD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mailward}"
out="$cache_root/$(basename "$module_dir")/$version-$sum_key"
missing=0
for spec in "$@"; do
  [[ -x "$out/bin/${spec%%=*}" ]] || missing=1
done
if ((missing == 0)); then
  echo "$out/bin"
  exit 0
fi
mkdir -p "$out"
tmp="$(mktemp -d "$out/.build.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
cd "$module_dir"
echo "building $(basename "$module_dir") $version into $out (once per machine)" >&2
export CGO_ENABLED=0 GOFLAGS=-mod=mod
minor="$(echo "$version" | cut -d. -f2)"
for spec in "$@"; do
  name="${spec%%=*}" package="${spec#*=}"
  ldflags="-s -w"
  if [[ "$key_module" == k8s.io/kubernetes && "$package" == k8s.io/kubernetes/* ]]; then
    # What `kubectl version` reports; a plain `go build` would say v0.0.0.
    ldflags+=" -X k8s.io/component-base/version.gitVersion=$version"
    ldflags+=" -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"
  fi
  if [[ "$key_module" == helm.sh/helm/v3 ]]; then
    ldflags+=" -X helm.sh/helm/v3/internal/version.version=$version"
  fi
  if [[ "$key_module" == github.com/cert-manager/cert-manager ]]; then
    # What the controller logs as its version; a plain `go build` would say "canary".
    ldflags+=" -X github.com/cert-manager/cert-manager/pkg/util.AppVersion=$version"
  fi
  go build -trimpath -ldflags "$ldflags" -o "$tmp/$name" "$package"
done
mkdir -p "$out/bin"
for spec in "$@"; do
  mv "$tmp/${spec%%=*}" "$out/bin/"
done
echo "$out/bin"
