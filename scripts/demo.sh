#!/usr/bin/env bash
# `make demo`: a single-node cluster on loopback, mailward installed by its Helm chart, the
# example MailDomain, the pods it becomes, and what kubectl (and an outside probe) shows.
set -euo pipefail
state_dir="${1:-.local/stack}"
env_file="${2:-.local/demo.env}"
cd "$(dirname "$0")/.."

.venv/bin/python -m mailward_localstack up --state-dir "$state_dir" --env-file "$env_file"
# shellcheck disable=SC1090
source "$env_file"

echo
echo "\$ kubectl apply -f examples/maildomain.yaml"
kubectl apply -f examples/maildomain.yaml
echo "\$ kubectl wait --for=condition=Ready maildomain/example"
if ! kubectl wait --for=condition=Ready --timeout=300s maildomain/example; then
  kubectl describe maildomain example
  kubectl get pods -A -o wide
  echo "the example did not become Ready; operator log: kubectl logs -n mailward-system deploy/mailward" >&2
  exit 1
fi
# The operator probes the domain from outside as soon as its MTA answers; give it that time.
echo "\$ kubectl wait --for=condition=Compliant maildomain/example"
kubectl wait --for=condition=Compliant --timeout=180s maildomain/example ||
  echo "(not compliant: see the checks below)"

echo
echo "== One MTA fleet for more domains: a MailServer, and two MailDomains from two namespaces"
.venv/bin/python -m mailward_localstack.demo_fleet prepare --state-dir "$state_dir"
echo "\$ kubectl apply -f examples/mailserver.yaml"
kubectl apply -f examples/mailserver.yaml
echo "\$ kubectl wait --for=condition=Ready mailserver/fleet -n mail-platform"
kubectl wait --for=condition=Ready --timeout=180s mailserver/fleet -n mail-platform ||
  kubectl describe mailserver fleet -n mail-platform
kubectl wait --for=condition=Ready --timeout=180s maildomain/shop -n default || true
kubectl wait --for=condition=Ready --timeout=180s maildomain/lab -n tenants || true
echo "\$ kubectl get mailservers -A"
kubectl get mailservers -A

echo
echo "== Every workload is a pod, from images the project built (kubectl get pods -A -o wide)"
.venv/bin/python -m mailward_localstack.demo_cluster wait-pods --kubeconfig "$KUBECONFIG" || true
kubectl get pods -A -o wide
echo
echo "\$ kubectl get pods -A -o custom-columns=NAMESPACE:.metadata.namespace,POD:.metadata.name,IMAGES:.spec.containers[*].image"
kubectl get pods -A -o 'custom-columns=NAMESPACE:.metadata.namespace,POD:.metadata.name,IMAGES:.spec.containers[*].image'

echo
echo "== DNS: every record of the example through the validating resolver (AD = DNSSEC-validated)"
.venv/bin/python -m mailward_localstack.demo_dns check --state-dir "$state_dir" || true
echo
echo "== MTA-STS policy and autoconfig, fetched over HTTPS from the policy endpoint pod"
.venv/bin/python -m mailward_localstack.demo_policy check || true
echo
echo "== A sample TLS report mailed to the collector pod (tlsrpt@tlsrpt.$DEMO_DOMAIN), then counted"
.venv/bin/python -m mailward_localstack.demo_reports feed --address "$MAILWARD_TLSRPT_COLLECTOR" \
  --domain "$DEMO_DOMAIN" || true
echo
echo "== Compliance: the operator's verdict, then \`mailward check\` as an outsider runs it"
.venv/bin/python -m mailward_localstack.demo_compliance show --kubeconfig "$KUBECONFIG" \
  --domain "$DEMO_DOMAIN" --resolver "$MAILWARD_RESOLVER" --ca-file "$MAILWARD_CA_FILE" || true
echo
echo "== TLS reports received by the collector"
.venv/bin/mailward reports "$DEMO_DOMAIN" --collector "http://$MAILWARD_TLSRPT_COLLECTOR:9108" || true

echo
echo "\$ kubectl get maildomains -A -o wide"
kubectl get maildomains -A -o wide
cat <<EOT

The cluster keeps running in the background; everything is on 127.77.0.0/24. To look around:
  source $env_file
  kubectl get pods -A
  kubectl describe maildomain example
  kubectl exec -n default example-mta-0 -c postfix -- postconf mail_version
  dig @\$MAILWARD_RESOLVER +dnssec TLSA _25._tcp.mx1.\$DEMO_DOMAIN     # 'ad': DNSSEC-validated
  curl --cacert \$MAILWARD_CA_FILE --resolve mta-sts.\$DEMO_DOMAIN:443:\$MAILWARD_POLICY_ENDPOINT \\
       https://mta-sts.\$DEMO_DOMAIN/.well-known/mta-sts.txt
  swaks --server \$MAILWARD_MTA --to postmaster@\$DEMO_DOMAIN --tls --tls-verify --tls-ca-path \$MAILWARD_CA_FILE
  mailward check \$DEMO_DOMAIN --resolver \$MAILWARD_RESOLVER --ca-file \$MAILWARD_CA_FILE
  mailward reports \$DEMO_DOMAIN --collector http://\$MAILWARD_TLSRPT_COLLECTOR:9108
Stop everything with: make down
EOT
