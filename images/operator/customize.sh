#!/bin/sh
# mmdebstrap --customize-hook of the mailward (operator) image (images/build.sh mailward):
# $1 is the chroot, $MAILWARD_WHEELS the host directory with the project wheel and the wheels
# of its dependencies. Installs them into the venv /opt/mailward with the image's python3,
# offline. Commands inside the image run through `chroot` with a clean environment (the host's
# PIP_* settings must not leak in).
set -eu
root=$1
wheels=${MAILWARD_WHEELS:?set by images/build.sh}
in_root() {
  env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 \
    HOME=/root SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-0}" PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 chroot "$root" "$@"
}

# The user the pods run as (65532, as the chart's securityContext says): programs that ask who
# they are (kopf names its peering identity after the user) need it in /etc/passwd.
in_root groupadd --system --gid 65532 mailward
in_root useradd --system --no-create-home --uid 65532 --gid 65532 --home-dir /nonexistent \
  --shell /usr/sbin/nologin mailward

mkdir -p "$root/tmp/wheels"
cp "$wheels"/*.whl "$root/tmp/wheels/"
in_root python3 -m venv /opt/mailward
in_root /opt/mailward/bin/python -m pip install --no-index --find-links /tmp/wheels mailward >&2
# pip and setuptools were only needed to install; the venv keeps nothing that downloads.
in_root /opt/mailward/bin/python -m pip uninstall --yes pip setuptools >&2
rm -rf "$root/tmp/wheels" "$root/root/.cache"

# The program must start in the image (imports resolve, entry point exists).
in_root env PYTHONDONTWRITEBYTECODE=1 /opt/mailward/bin/mailward --help >/dev/null
in_root env PYTHONDONTWRITEBYTECODE=1 /opt/mailward/bin/python -c 'import importlib.metadata as m; print("mailward", m.version("mailward"))' >&2
in_root openssl version >&2
