#!/usr/bin/env bash
# Builds etcd, kube-apiserver and kubectl (pinned in go.mod) once per machine; prints their dir.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
exec "$here/../gobuild.sh" "$here" k8s.io/kubernetes \
  kube-apiserver=k8s.io/kubernetes/cmd/kube-apiserver \
  kubectl=k8s.io/kubernetes/cmd/kubectl \
  etcd=go.etcd.io/etcd/server/v3
