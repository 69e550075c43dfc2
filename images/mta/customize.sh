#!/bin/sh
# mmdebstrap --customize-hook of the mta image (images/build.sh mta): $1 is the chroot.
# Runs on the host as root; commands inside the image go through `chroot` with a clean
# environment (no host PATH, no host pip settings).
set -eu
root=$1
src=${MAILWARD_SRC:?set by images/build.sh}
in_root() {
  env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 \
    HOME=/root SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-0}" chroot "$root" "$@"
}

# The DANE-first TLS policy socketmap, the MTA-STS resolver's configuration, the start scripts.
install -D -m 0644 "$src/operator/mailward/sidecars/tlspolicy.py" "$root/usr/local/lib/mailward/tlspolicy.py"
install -D -m 0644 "$src/images/mta/mta-sts-daemon.yml" "$root/etc/mta-sts-daemon.yml"
install -m 0755 "$src/images/mta/mailward-mta-start" "$src/images/mta/mailward-mta-accounts" "$root/usr/local/bin/"

# TLSRPT sending (RFC 8460): tlsrpt-collectd/-fetcher/-reportd from the wheel build.sh fetched
# (hash checked again by the installer), and the https: uploader reportd runs instead of curl.
wheel=${MAILWARD_TLSRPT_WHEEL:?set by images/build.sh}
sha=$(sed -n 's/.*--hash=sha256:\([0-9a-f]*\).*/\1/p' "$src/images/mta/tlsrpt-reporter.txt")
install -D -m 0644 "$wheel" "$root/tmp/tlsrpt-reporter/$(basename "$wheel")"
install -m 0755 "$src/images/mta/install-tlsrpt-reporter" "$root/tmp/tlsrpt-reporter/"
in_root /tmp/tlsrpt-reporter/install-tlsrpt-reporter "/tmp/tlsrpt-reporter/$(basename "$wheel")" "$sha"
rm -rf "$root/tmp/tlsrpt-reporter"
install -m 0755 "$src/images/mta/mailward-tlsrpt-post" "$root/usr/local/bin/"

# The owner of the virtual mailboxes (useradd warns that 5000 is above SYS_UID_MAX: harmless).
in_root groupadd --system --gid 5000 vmail
in_root useradd --system --no-create-home --uid 5000 --gid 5000 --home-dir /nonexistent --shell /usr/sbin/nologin vmail

# Debian's `postfix check` copies /etc/{hosts,resolv.conf,...} into the queue directory for
# chrooted services (configure-instance.sh); no service is chrooted (render/postfix.py), and in
# the pod that copy would land on the queue volume.
printf 'SYNC_CHROOT=""\n' > "$root/etc/default/postfix"

# The package's own configuration is never used: the pod reads the rendered one.
rm -f "$root/etc/postfix/main.cf" "$root/etc/postfix/main.cf.proto.dpkg-new"
# Key material generated at install time must not ship in an image (and is not reproducible).
rm -f "$root/etc/ssl/private/ssl-cert-snakeoil.key" "$root/etc/ssl/certs/ssl-cert-snakeoil.pem"
rm -f "$root"/etc/unbound/unbound_control.* "$root"/etc/unbound/unbound_server.*
# sasl2-bin's empty /etc/sasldb2 (a Berkeley DB with random bytes): unused, the pod's database
# is $MAILWARD_SASLDB (/var/lib/mailward/sasldb2), rebuilt at every start.
rm -f "$root/etc/sasldb2"
in_root dpkg-statoverride --remove /etc/sasldb2 2>/dev/null || true

# unbound's DNSSEC root trust anchor: the copy dns-root-data ships, no unbound-anchor (network)
# at build time. A sidecar config can use it read-only (trust-anchor-file:
# /usr/share/dns/root.key) or, with a writable /var/lib/unbound, as auto-trust-anchor-file.
test -s "$root/usr/share/dns/root.key"
test -s "$root/usr/share/dns/root.ds"  # the resolver sidecar's static anchor (render/resolver.py)
if [ ! -s "$root/var/lib/unbound/root.key" ]; then
  in_root install -o unbound -g unbound -m 0644 /usr/share/dns/root.key /var/lib/unbound/root.key
fi

# What the build log should show.
echo "postconf -d mail_version: $(in_root postconf -d -h mail_version)" >&2
in_root python3 -c 'import dns.version, sys; print("python", sys.version.split()[0], "dnspython", dns.version.version)' >&2
in_root dpkg-query -W -f '${Package} ${Version}\n' postfix postfix-mta-sts-resolver unbound dns-root-data sasl2-bin >&2
in_root mta-sts-daemon --help >/dev/null
in_root python3 /usr/local/lib/mailward/tlspolicy.py --help >/dev/null
in_root python3 -c 'from importlib.metadata import version; print("tlsrpt-reporter", version("tlsrpt_reporter"))' >&2
for tool in tlsrpt-collectd tlsrpt-fetcher tlsrpt-reportd; do in_root "$tool" --help >/dev/null; done
# The reporter container writes the maildrop as a member of postdrop (runAsGroup): the pod
# names that group by number (render/tlsrpt_sending.py POSTDROP_GID), so it must not move.
postdrop_gid=$(in_root getent group postdrop | cut -d: -f3)
if [ "$postdrop_gid" != 103 ]; then
  echo "customize.sh: postdrop is gid $postdrop_gid, render/tlsrpt_sending.py says 103" >&2
  exit 1
fi
