#!/usr/bin/env bash
# Builds Flux's source-controller and kustomize-controller (pinned in go.mod) and `gitserver`
# once per machine; prints their dir. The image images/flux/build.sh packs them.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
exec "$here/../gobuild.sh" "$here" github.com/fluxcd/source-controller \
  source-controller=github.com/fluxcd/source-controller \
  kustomize-controller=github.com/fluxcd/kustomize-controller \
  gitserver=mailward.io/tools/flux/gitserver
