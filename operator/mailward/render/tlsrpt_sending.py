"""TLSRPT sending from the MTA (RFC 8460, TR-03108): Postfix's side and the reporter's (pure).

Postfix 3.10 (Debian trixie, linked with libtlsrpt) reports every outbound TLS handshake to a
domain that publishes `_smtp._tls` as one datagram on a local UNIX socket: the policy it
enforced (`tlsa` from DANE, `sts` from the policy socketmap, or `no-policy-found`) and, for a
failure, its result type (e.g. `tlsa-invalid`). sys4's tlsrpt-reporter, installed in the MTA
image from PyPI (images/mta/tlsrpt-reporter.txt), does the rest:

- `tlsrpt-collectd` receives the datagrams into SQLite, one database per UTC day;
- `tlsrpt-reportd`, after each UTC midnight, reads the day just ended through `tlsrpt-fetcher`,
  builds one RFC 8460 §4 report per policy domain and sends it to every `rua` of that
  domain's record: `mailto:` through this MTA (`sendmail`, so the report leaves with the MTA's
  own DANE/MTA-STS and DKIM), `https:` by POST (`mailward-tlsrpt-post`, RFC 8460 §5.4).

Both run as containers of the MTA pod from the MTA image (render/mta_pod.py), not as processes
in Postfix's container: that one runs as root with capabilities for Postfix's master, the
reporter needs none and runs as nobody; each gets its own restart, resources and log. The
collector is a native sidecar started before Postfix (its socket exists before the first
delivery, and it outlives Postfix at shutdown); the report daemon runs beside Postfix.

What they share is one pod volume (`TLSRPT_DIR`, an emptyDir): the socket, Postfix's
`smtp` processes (user postfix) write to, and the databases. The report daemon also mounts
the queue volume and Postfix's configuration and runs in the group postdrop, which is exactly
what `sendmail`'s postdrop needs to drop a message into the maildrop (with
`allowPrivilegeEscalation: false` postdrop's set-gid bit does not apply).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mailward.api.tlsrpt_sending import TLSReportSending
from mailward.render.pods import NOBODY, ProbeTiming, non_root

Manifest = dict[str, Any]

# The pod volume shared by Postfix and the reporter; the socket's name in it.
TLSRPT_DIR = "/var/lib/tlsrpt"
TLSRPT_VOLUME = "tlsrpt"
SOCKET_NAME = "collectd.sock"
# The reporter's configuration file, a key of the group's ConfigMap.
REPORTER_CONF = "tlsrpt-reporter.cfg"
REPORTER_CONF_DIR = "/etc/mailward/tlsrpt"
# Debian's postdrop group in the MTA image (images/mta/customize.sh fails the build if it moves).
POSTDROP_GID = 103
# RFC 8460 §4.1 reports cover one UTC day; tlsrpt-reportd spreads the deliveries of the
# day's reports over this many seconds after midnight (its default, 10 h), so that not every
# sender's reports reach a receiver at 00:00.
SPREAD_OUT_DELIVERY_SECONDS = 36000


@dataclass(frozen=True)
class TLSRPTSending:
    """Who the reports say they come from (RFC 8460 §4.3); None: derived from the MTA's domain."""

    organization_name: str | None = None
    contact_info: str | None = None


@dataclass(frozen=True)
class ReporterPaths:
    """Where the reporter's files are: the pod's, or a loopback test's (the only difference)."""

    state_dir: str = TLSRPT_DIR
    # This file itself: the report daemon runs the fetcher with it.
    config_file: str = f"{REPORTER_CONF_DIR}/{REPORTER_CONF}"
    # Postfix's configuration directory, for `sendmail`.
    postfix_config_dir: str = "/etc/mailward/postfix"

    @property
    def socket(self) -> str:
        return socket_path(self.state_dir)


def socket_path(state_dir: str) -> str:
    return f"{state_dir}/{SOCKET_NAME}"


def from_spec(spec: TLSReportSending) -> TLSRPTSending | None:
    """`spec.mta.tlsReports` (MailDomain) or `spec.tlsReports` (MailServer); None: disabled."""
    if not spec.enabled:
        return None
    return TLSRPTSending(spec.organization_name, spec.contact_info)


def sender_identity(sending: TLSRPTSending, origin: str) -> tuple[str, str]:
    """(organization-name, contact-info): as set, else the MTA's domain and its postmaster,
    the one mailbox every served domain has (RFC 5321 §4.5.1)."""
    organization = sending.organization_name or origin
    contact = sending.contact_info or f"postmaster@{origin}"
    return organization, contact


def postfix_parameters(socket: str) -> list[tuple[str, str]]:
    """main.cf: the SMTP client reports each TLS handshake to the collector's socket."""
    return [
        ("smtp_tlsrpt_enable", "yes"),
        ("smtp_tlsrpt_socket_name", socket),
        # A reused TLS session (smtp_tls_session_cache) is the same handshake again: counted
        # once, as RFC 8460 §4.4 counts sessions that negotiated TLS (Postfix's default).
        ("smtp_tlsrpt_skip_reused_handshakes", "yes"),
    ]


def render_reporter_conf(
    sending: TLSRPTSending,
    origin: str,
    paths: ReporterPaths = ReporterPaths(),
    *,
    spread_out_delivery: int = SPREAD_OUT_DELIVERY_SECONDS,
) -> str:
    """The one configuration file of tlsrpt-collectd, -fetcher and -reportd (one section each).

    `spread_out_delivery` is the only timing a test shortens (tests/integration/
    test_tlsrpt_sending.py says so); the day itself is the UTC day, fixed in tlsrpt-reporter.
    """
    organization, contact = sender_identity(sending, origin)
    for value in (organization, contact):
        if any(c in value for c in "\r\n%"):
            raise ValueError(f"TLSRPT sender identity {value!r}: no line breaks or %")
    storage = f"sqlite://{paths.state_dir}/collectd.sqlite"
    lines = [
        "# Rendered by mailward; edits are overwritten. See docs/tlsrpt-sending.md.",
        "[tlsrpt_collectd]",
        f"storage = {storage}",
        f"socketname = {paths.socket}",
        # Postfix's smtp processes run as postfix, the collector as nobody: the socket is
        # writable for all, and only the pod's containers see the volume it lies in.
        "socketmode = 0666",
        "log_level = info",
        "",
        "[tlsrpt_fetcher]",
        f"storage = {storage}",
        "log_level = warning",
        "",
        "[tlsrpt_reportd]",
        f"dbname = {paths.state_dir}/reportd.sqlite",
        f"fetchers = tlsrpt-fetcher --config_file {paths.config_file}",
        f"organization_name = {organization}",
        f"contact_info = {contact}",
        f"sender_address = {contact}",
        # MAIL_CONFIG, not `sendmail -C`: for a user other than root, -C accepts only a
        # directory that /etc/postfix/main.cf lists, and the image has no such file. The
        # envelope sender is the contact too: a report that bounces goes to someone.
        f"sendmail_script = MAIL_CONFIG={paths.postfix_config_dir} sendmail -i -t -f {contact}",
        "sendmail_timeout = 60",
        "http_script = mailward-tlsrpt-post",
        "http_timeout = 60",
        f"spread_out_delivery = {spread_out_delivery}",
        "log_level = info",
        "",
    ]
    return "\n".join(lines)


# The collector answers nothing over the network: its socket existing is what "up" means.
SOCKET_STARTUP = ProbeTiming(period=2, timeout=3, failures=30)
SOCKET_LIVENESS = ProbeTiming(period=30, timeout=5, failures=3)


def _socket_probe(paths: ReporterPaths, timing: ProbeTiming) -> Manifest:
    return {"exec": {"command": ["test", "-S", paths.socket]}, **timing.fields()}


def collector_container(image: str, config_volume: str) -> Manifest:
    """tlsrpt-collectd as a native sidecar (restartPolicy Always), started before Postfix."""
    paths = ReporterPaths()
    return {
        "name": "tlsrpt-collectd",
        "image": image,
        "command": ["tlsrpt-collectd", "--config_file", paths.config_file],
        "restartPolicy": "Always",
        "ports": [],  # none: a UNIX socket on the pod's volume
        "startupProbe": _socket_probe(paths, SOCKET_STARTUP),
        "livenessProbe": _socket_probe(paths, SOCKET_LIVENESS),
        "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "96Mi"}},
        "securityContext": non_root(NOBODY),
        "volumeMounts": [
            {"name": config_volume, "mountPath": REPORTER_CONF_DIR, "readOnly": True},
            {"name": TLSRPT_VOLUME, "mountPath": paths.state_dir},
        ],
    }


def report_container(
    image: str, config_volume: str, postfix_config_volume: str, queue_directory: str
) -> Manifest:
    """tlsrpt-reportd beside Postfix: nobody in the group postdrop, Postfix's configuration
    (read-only) and queue volume for `sendmail`, nothing else."""
    paths = ReporterPaths()
    return {
        "name": "tlsrpt-reportd",
        "image": image,
        "command": ["tlsrpt-reportd", "--config_file", paths.config_file],
        "ports": [],  # none: it only sends (sendmail, https POST)
        "resources": {"requests": {"cpu": "10m", "memory": "48Mi"}, "limits": {"memory": "128Mi"}},
        "securityContext": {**non_root(NOBODY), "runAsGroup": POSTDROP_GID},
        "volumeMounts": [
            {"name": config_volume, "mountPath": REPORTER_CONF_DIR, "readOnly": True},
            {"name": TLSRPT_VOLUME, "mountPath": paths.state_dir},
            {
                "name": postfix_config_volume,
                "mountPath": paths.postfix_config_dir,
                "readOnly": True,
            },
            {"name": "queue", "mountPath": queue_directory},
        ],
    }


def state_volume() -> Manifest:
    """The socket and the databases: they live as long as the pod (docs/tlsrpt-sending.md)."""
    return {"name": TLSRPT_VOLUME, "emptyDir": {"sizeLimit": "64Mi"}}


def postfix_mount() -> Manifest:
    """Postfix's view of the volume: only the socket is used, and connecting to a socket
    needs no write access to the file system it lies on."""
    return {"name": TLSRPT_VOLUME, "mountPath": TLSRPT_DIR, "readOnly": True}
