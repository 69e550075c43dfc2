"""DKIM signing in the MTA's pod (pure): dkimpy-milter's configuration, container and key volume.

The signer is Debian's dkimpy-milter (1.2, on python3-dkim 1.1 and python3-nacl), from the MTA
image: it signs with RSA (RFC 6376) and Ed25519 (RFC 8463), both on one message. OpenDKIM, the
other Debian signer, is a 2.11 beta whose upstream has made no release for years.

It runs as a container of its own beside Postfix (its own liveness and log), listening on the
pod's loopback (the first MX address on the host network); Postfix passes mail submitted by
clients (ports 587/465) and by `sendmail` through it, never mail arriving from other MTAs on
port 25 (render/postfix.py). dkimpy-milter reads its keys once at start: the configuration
(which selectors sign) is in the pod's ConfigMap and thus in the pod template's digest, so a
new Active key rolls the pods; the keys come from the MailDomain's DKIM Secret.

dkimpy-milter logs only to syslog, and a pod has none: the container starts it with Python's
`syslog` calls sent to standard error instead (MILTER_START), so `kubectl logs -c dkim` shows
every signature it adds.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from mailward.api.dkim import KeyType
from mailward.render.pods import NOBODY, ProbeTiming, exec_probe, non_root

Manifest = dict[str, Any]

DKIM_MILTER_PORT = 8891
DKIM_CONFIG_DIR = "/etc/mailward/dkim"
DKIM_KEYS_DIR = "/etc/mailward/dkim-keys"
MILTER_CONF = "dkimpy-milter.conf"
MILTER_PROBE_TIMING = ProbeTiming(period=20, timeout=5, failures=3)
MILTER_STARTUP = ProbeTiming(period=2, timeout=3, failures=30)

# dkimpy-milter with its syslog calls written to standard error (the pod has no syslog).
MILTER_START = """\
import sys, syslog
syslog.openlog = lambda *args, **kwargs: None
syslog.syslog = lambda *args: print(args[-1], file=sys.stderr, flush=True)
import dkimpy_milter
sys.argv = ["dkimpy-milter", sys.argv[1]]
dkimpy_milter.main()
"""

# A TCP connection and a milter option negotiation answered: the milter is up and speaking.
MILTER_PROBE = """\
import socket, struct, sys
host, port, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
with socket.create_connection((host, port), timeout=timeout) as s:
    body = b"O" + struct.pack("!III", 6, 0x1FF, 0x1FFFFF)
    s.sendall(struct.pack("!I", len(body)) + body)
    size = struct.unpack("!I", s.recv(4))[0]
    sys.exit(0 if size and s.recv(1) == b"O" else 1)
"""


@dataclass(frozen=True)
class SigningKey:
    """A key the MTA signs with (an Active key of a domain)."""

    domain: str
    selector: str
    algorithm: KeyType
    # The item of the Secret holding its private key: `<selector>.key` in the MailDomain's own
    # Secret; a fleet's copy of several domains' keys names them `<domain>_<selector>.key`.
    item: str = ""

    @property
    def secret_key(self) -> str:
        return self.item or key_file(self.selector)


@dataclass(frozen=True)
class DKIMSigning:
    """What the MTA's pod needs to sign: the Secret holding the keys, and which sign."""

    secret_name: str
    keys: tuple[SigningKey, ...]

    @property
    def domains(self) -> list[str]:
        return sorted({k.domain for k in self.keys})


def key_file(selector: str) -> str:
    return f"{selector}.key"


def secret_name(maildomain: str) -> str:
    return f"{maildomain}-dkim"


def milter_socket(address: str, port: int = DKIM_MILTER_PORT) -> str:
    """libmilter's socket syntax, as dkimpy-milter's `Socket` takes it."""
    family = "inet6" if ipaddress.ip_address(address).version == 6 else "inet"
    return f"{family}:{port}@{address}"


def render_milter_files(
    signing: DKIMSigning,
    address: str,
    keys_dir: str = DKIM_KEYS_DIR,
    config_dir: str = DKIM_CONFIG_DIR,
) -> dict[str, str]:
    """The signer's configuration files by name: `dkimpy-milter.conf` alone for one domain;
    for several (a MailServer's fleet) with its SigningTable and KeyTables (render_tables)."""
    if len(signing.domains) <= 1:
        return {MILTER_CONF: render_milter_conf(signing, address, keys_dir)}
    return render_tables(signing, address, keys_dir, config_dir)


def milter_file_items(signing: DKIMSigning) -> dict[str, str]:
    """The config volume's items (ConfigMap key → file name): the files render_milter_files
    writes for `signing`."""
    return {name: name for name in render_milter_files(signing, "127.0.0.1")}


SIGNING_TABLE = "signingtable"
KEY_TABLES: dict[KeyType, tuple[str, str]] = {
    "rsa": ("KeyTable", "keytable-rsa"),
    "ed25519": ("KeyTableEd25519", "keytable-ed25519"),
}


def render_tables(
    signing: DKIMSigning, address: str, keys_dir: str, config_dir: str
) -> dict[str, str]:
    """Several domains, one signer: the SigningTable maps `*@<domain>` to the domain's entry
    in each KeyTable (`<domain>:<selector>:<key file>`), one table per key type.

    dkimpy-milter looks a matching domain up in every KeyTable it has (a missing entry fails
    the message), so a domain is listed only if it has a key of every type in use; the others
    are left out, unsigned (`unsigned_domains`), rather than failing their mail."""
    types = sorted({k.algorithm for k in signing.keys})
    listed = [d for d in signing.domains if d not in unsigned_domains(signing)]
    conf = [
        "# Rendered by mailward; edits are overwritten. See docs/dkim.md.",
        "Syslog yes",
        "SyslogSuccess yes",
        "Mode s",
        f"Socket {milter_socket(address)}",
        "Canonicalization relaxed/simple",
        f"SigningTable {config_dir}/{SIGNING_TABLE}",
    ]
    files = {SIGNING_TABLE: "".join(f"*@{d} {d}\n" for d in listed)}
    for algorithm in types:
        parameter, name = KEY_TABLES[algorithm]
        conf.append(f"{parameter} {config_dir}/{name}")
        keys = sorted((k for k in signing.keys if k.algorithm == algorithm), key=lambda k: k.domain)
        files[name] = "".join(
            f"{k.domain} {k.domain}:{k.selector}:{_path(k, keys_dir)}\n"
            for k in keys
            if k.domain in listed
        )
    return {MILTER_CONF: "\n".join(conf) + "\n", **files}


def unsigned_domains(signing: DKIMSigning) -> list[str]:
    """Domains the fleet's signer leaves out: they lack a key of a type another domain uses,
    or have two of one type."""
    types = {k.algorithm for k in signing.keys}
    out = []
    for domain in signing.domains:
        mine = [k.algorithm for k in signing.keys if k.domain == domain]
        if set(mine) != types or len(mine) != len(set(mine)):
            out.append(domain)
    return out


def render_milter_conf(signing: DKIMSigning, address: str, keys_dir: str = DKIM_KEYS_DIR) -> str:
    """dkimpy-milter.conf(5) for one domain: at most one Active key per type signs, so each
    message carries one signature per type (a verifier without Ed25519 uses the RSA one)."""
    by_type = {k.algorithm: k for k in signing.keys}
    if len(signing.domains) != 1 or len(by_type) != len(signing.keys):
        raise ValueError("one domain, and at most one signing key per type")
    lines = [
        "# Rendered by mailward; edits are overwritten. See docs/dkim.md.",
        "Syslog yes",
        "SyslogSuccess yes",
        # Signing only: verifying inbound mail is the receiving side's business.
        "Mode s",
        f"Socket {milter_socket(address)}",
        f"Domain {signing.domains[0]}",
        # Whether a message is signed is decided by Postfix, which passes only submitted
        # mail through the milter (dkimpy-milter signs whatever has a From: in `Domain`).
        "Canonicalization relaxed/simple",
    ]
    if "rsa" in by_type:
        lines += [
            f"Selector {by_type['rsa'].selector}",
            f"KeyFile {_path(by_type['rsa'], keys_dir)}",
        ]
    if "ed25519" in by_type:
        key = by_type["ed25519"]
        lines += [f"SelectorEd25519 {key.selector}", f"KeyFileEd25519 {_path(key, keys_dir)}"]
    return "\n".join(lines) + "\n"


def _path(key: SigningKey, keys_dir: str) -> str:
    return f"{keys_dir}/{key.secret_key}"


def milter_argv(conf_path: str) -> list[str]:
    return ["python3", "-c", MILTER_START, conf_path]


def milter_container(image: str, local: str, config_volume: str) -> Manifest:
    """The signer, as a native sidecar started before Postfix (restartPolicy Always)."""
    probe_args = [local, str(DKIM_MILTER_PORT), "3"]
    return {
        "name": "dkim",
        "image": image,
        "command": milter_argv(f"{DKIM_CONFIG_DIR}/{MILTER_CONF}"),
        "restartPolicy": "Always",
        "startupProbe": exec_probe(MILTER_PROBE, probe_args, MILTER_STARTUP),
        "livenessProbe": exec_probe(MILTER_PROBE, probe_args, MILTER_PROBE_TIMING),
        "resources": {"requests": {"cpu": "10m", "memory": "48Mi"}, "limits": {"memory": "128Mi"}},
        "securityContext": non_root(NOBODY),
        "volumeMounts": [
            {"name": config_volume, "mountPath": DKIM_CONFIG_DIR, "readOnly": True},
            {"name": "dkim-keys", "mountPath": DKIM_KEYS_DIR, "readOnly": True},
        ],
    }


def keys_volume(signing: DKIMSigning) -> Manifest:
    """Only the signing keys' items of the Secret (neither the rotation record nor any other
    key). Mode 0444: the files are root's and the signer runs as nobody; only the `dkim`
    container mounts the volume."""
    items = [{"key": k.secret_key, "path": k.secret_key} for k in sorted(signing.keys, key=_order)]
    return {
        "name": "dkim-keys",
        "secret": {"secretName": signing.secret_name, "defaultMode": 0o444, "items": items},
    }


def _order(key: SigningKey) -> tuple[str, str]:
    return (key.domain, key.selector)


# Postfix's side (render/postfix.py): where the milter listens in the pod.
DKIM_MILTER = f"inet:127.0.0.1:{DKIM_MILTER_PORT}"


def milter_parameters(milter: str) -> list[tuple[str, str]]:
    """main.cf: submitted mail (smtpd on 587/465) and `sendmail` mail pass through the signer."""
    return [
        ("smtpd_milters", milter),
        ("non_smtpd_milters", "$smtpd_milters"),
        # The signer down or failing: the client is told to try again (4xx) rather than mail
        # leaving unsigned, which DMARC (adkim=s) receivers may refuse once forwarded and which
        # nobody would notice. Submission clients retry; the milter container restarts.
        ("milter_default_action", "tempfail"),
        ("milter_connect_timeout", "10s"),
        ("milter_command_timeout", "30s"),
        ("milter_content_timeout", "60s"),
    ]


def inbound_milter_options(signing: DKIMSigning | None) -> tuple[tuple[str, str], ...]:
    """master.cf options of the port-25 smtpd: mail from other MTAs bypasses the signer."""
    return (("smtpd_milters", ""),) if signing is not None else ()
