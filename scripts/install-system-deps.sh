#!/usr/bin/env bash
# Installs the Debian packages mailward's local stack, tests and demo need.
# Idempotent: does nothing when every package is already installed.
set -euo pipefail
packages=(
  bind9 bind9-utils bind9-dnsutils unbound
  postfix postfix-pcre swaks sasl2-bin
  openssl ca-certificates iproute2 procps psmisc util-linux
  nginx wrk
  postgresql
  # The single-node cluster: container runtime, and what images/build.sh builds images with.
  containerd runc mmdebstrap gcc libc6-dev
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
  exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
  sudo=sudo
else
  sudo=
fi
echo "installing Debian packages: ${missing[*]}" >&2
echo "postfix postfix/main_mailer_type select No configuration" | $sudo debconf-set-selections
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# The packaged services are not ours: the stack starts its own instances on loopback.
for svc in named bind9 unbound postfix postgresql nginx containerd; do
  $sudo systemctl disable --now "$svc" >/dev/null 2>&1 || true
  $sudo service "$svc" stop >/dev/null 2>&1 || true
done
