#!/usr/bin/env bash
# Builds `health` (kstatus and gopher-lua, pinned in go.mod) once per machine; prints its dir.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
exec "$here/../gobuild.sh" "$here" sigs.k8s.io/cli-utils health=mailward.io/tools/gitops/health
