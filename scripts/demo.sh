#!/usr/bin/env bash
# `make demo`: the local stack, the operator, the example MailDomain, and what kubectl shows.
set -euo pipefail
state_dir="${1:-.local/stack}"
env_file="${2:-.local/demo.env}"
cd "$(dirname "$0")/.."

.venv/bin/mailward stack up --state-dir "$state_dir" --env-file "$env_file"
# shellcheck disable=SC1090
source "$env_file"

echo
echo "\$ kubectl apply -f examples/maildomain.yaml"
kubectl apply -f examples/maildomain.yaml
echo "\$ kubectl wait --for=condition=Ready maildomain/example"
if ! kubectl wait --for=condition=Ready --timeout=90s maildomain/example; then
  kubectl describe maildomain example
  echo "the example did not become Ready; operator log: $state_dir/operator/operator.log" >&2
  exit 1
fi
echo
echo "\$ kubectl get maildomains -o wide"
kubectl get maildomains -o wide
cat <<EOT

The stack keeps running in the background. To look around:
  source $env_file
  kubectl describe maildomain example
  dig @\$MAILWARD_RESOLVER +dnssec SOA \$DEMO_DOMAIN      # validated: flags include 'ad'
Stop everything with: make down
EOT
