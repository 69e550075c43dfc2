#!/usr/bin/env bash
# Builds cert-manager's controller (github.com/cert-manager/cert-manager, pinned in go.mod;
# controller/main.go wires its controllers, see go.mod) once per machine; prints its dir. The
# image images/cert-manager/build.sh packs it.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
exec "$here/../gobuild.sh" "$here" github.com/cert-manager/cert-manager \
  cert-manager-controller=mailward.io/tools/cert-manager/controller
