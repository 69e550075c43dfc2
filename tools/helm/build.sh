#!/usr/bin/env bash
# Builds helm (pinned in go.mod) once per machine; prints its dir.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
exec "$here/../gobuild.sh" "$here" helm.sh/helm/v3 helm=helm.sh/helm/v3/cmd/helm
