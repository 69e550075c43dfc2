#!/usr/bin/env bash
# `make demo`: the local stack, the operator, the example MailDomain, its workloads, and what
# kubectl (and an outside probe) shows.
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
# No kubelet here: run the MTA and the TLSRPT collector the operator rendered, as local processes.
.venv/bin/mailward stack workloads --state-dir "$state_dir"
echo "\$ kubectl wait --for=condition=Ready maildomain/example"
if ! kubectl wait --for=condition=Ready --timeout=120s maildomain/example; then
  kubectl describe maildomain example
  echo "the example did not become Ready; operator log: $state_dir/operator/operator.log" >&2
  exit 1
fi
# The operator probes the domain from outside as soon as its MTA answers; give it that time.
echo "\$ kubectl wait --for=condition=Compliant maildomain/example"
kubectl wait --for=condition=Compliant --timeout=90s maildomain/example ||
  echo "(not compliant: see the checks below)"

echo
echo "== DNS: every record of the example through the validating resolver (AD = DNSSEC-validated)"
.venv/bin/python -m mailward.localstack.demo_dns check --state-dir "$state_dir" || true
echo
echo "== MTA-STS policy and autoconfig, fetched over HTTPS from the policy endpoint"
.venv/bin/python -m mailward.localstack.demo_policy check || true
echo
echo "== Compliance: the operator's verdict, then \`mailward check\` as an outsider runs it"
.venv/bin/python -m mailward.localstack.demo_compliance show --kubeconfig "$KUBECONFIG" \
  --domain "$DEMO_DOMAIN" --resolver "$MAILWARD_RESOLVER" --ca-file "$MAILWARD_CA_FILE" || true
echo
echo "== The TLSRPT collector the operator deployed for the namespace (run here as a local process)"
echo "\$ kubectl get statefulsets,services,configmaps,networkpolicies -l app.kubernetes.io/name=mailward-tlsrpt"
kubectl get statefulsets,services,configmaps,networkpolicies -l app.kubernetes.io/name=mailward-tlsrpt
echo
echo "== TLS reports received by the collector"
.venv/bin/mailward reports "$DEMO_DOMAIN" --collector "http://$MAILWARD_TLSRPT_COLLECTOR:9108" || true

echo
echo "\$ kubectl get maildomains -o wide"
kubectl get maildomains -o wide
cat <<EOT

The stack keeps running in the background; everything is on 127.77.0.0/24. To look around:
  source $env_file
  kubectl describe maildomain example
  dig @\$MAILWARD_RESOLVER +dnssec TLSA _25._tcp.mx1.\$DEMO_DOMAIN     # 'ad': DNSSEC-validated
  curl --cacert \$MAILWARD_CA_FILE --resolve mta-sts.\$DEMO_DOMAIN:443:\$MAILWARD_POLICY_ENDPOINT \\
       https://mta-sts.\$DEMO_DOMAIN/.well-known/mta-sts.txt
  swaks --server \$MAILWARD_MTA --to postmaster@\$DEMO_DOMAIN --tls --tls-verify --tls-ca-path \$MAILWARD_CA_FILE
  mailward check \$DEMO_DOMAIN --resolver \$MAILWARD_RESOLVER --ca-file \$MAILWARD_CA_FILE
  mailward reports \$DEMO_DOMAIN --collector http://\$MAILWARD_TLSRPT_COLLECTOR:9108
Stop everything with: make down
EOT
