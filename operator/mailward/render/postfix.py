"""The Postfix configuration of one MTA serving one or more MailDomains, rendered purely.

main.cf and master.cf are built as data first (ordered parameters, master.cf entries), then
written as text, so tests can ask "what is `smtpd_tls_protocols`?" without parsing, and the text
is stable (golden files). Every choice cites the rule it implements:

- RFC 5321 §6 (problem handling) and §7 (security considerations), seeds in ../shared/seeds/;
- BSI TR-03108 v2.0 and the TLS profile of TR-03116-4 (tr03108-requirements.md §3, §8).

Only `MTALayout` (paths, listening addresses, the account database) differs between the pod and
a test that runs the same configuration on loopback; everything else comes from the specs.
All auxiliary tables are named relative to `$config_directory`, so they move with it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from mailward.render import tlsrpt_sending
from mailward.render.dkim import (
    DKIM_MILTER,
    DKIMSigning,
    inbound_milter_options,
    milter_parameters,
)

# TR-03116-4 §2.2.1.2 and TR-02102-2 Table 1: ECDHE with AES-GCM only, ECDSA before RSA and
# AES-128 before AES-256 (Table 2 makes the AES-128-GCM suites the mandatory ones). No RSA key
# exchange, no CBC with SHA-1, no 3DES/RC4, no CHACHA20 (not in TR-02102-2).
TLS12_CIPHERS: tuple[str, ...] = (
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
)
# TR-03116-4 §2.3: TLS_AES_128_GCM_SHA256 SHOULD; AES_256_GCM allowed. Postfix 3.7 has no
# parameter for TLS 1.3 suites: they are set in an OpenSSL configuration file (`openssl.cnf`).
TLS13_CIPHERSUITES: tuple[str, ...] = ("TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384")
# TR-03116-4 §2.2.2 Table 5: secp256r1 and brainpoolP256r1 MUST, brainpool SHOULD come first;
# P-384/P-521 and the larger brainpool curves allowed. X25519/X448 are not listed. Postfix drops
# (with a warning) a group its OpenSSL does not know, so the list is safe on older builds.
TLS_GROUPS: tuple[str, ...] = (
    "brainpoolP256r1",
    "prime256v1",
    "brainpoolP384r1",
    "secp384r1",
    "brainpoolP512r1",
    "secp521r1",
)
TLS_PROTOCOLS = ">=TLSv1.2"  # TR-03116-4 §2.1.1: TLS 1.2 required, 1.3 recommended

# Ports of the master.cf listeners; in the pod and the Service.
SMTP_PORT = 25
SUBMISSION_PORT = 587
SUBMISSIONS_PORT = 465
# postfix-mta-sts-resolver's socketmap, behind the DANE-first policy proxy (docs/mta.md).
TLS_POLICY_PORT = 8461
TLS_POLICY_SOCKETMAP = f"inet:127.0.0.1:{TLS_POLICY_PORT}"
# The uid/gid owning mailboxes (virtual(8) refuses ids below 100).
MAILBOX_UID = 5000

# RFC 5321 §4.5.1: every domain accepts mail for postmaster; RFC 2142 adds abuse.
ROLE_MAILBOXES: tuple[str, ...] = ("postmaster", "abuse")


@dataclass(frozen=True)
class DomainConfig:
    """What the MTA needs to know about one MailDomain it serves."""

    domain: str
    mx_hosts: tuple[str, ...]
    # Local parts of the accounts (one SASL login and one mailbox each): `alice` for
    # alice@<domain>. Passwords never reach the rendered configuration.
    accounts: tuple[str, ...] = ()

    def mailboxes(self) -> list[str]:
        locals_ = sorted({*self.accounts, *ROLE_MAILBOXES})
        return [f"{local}@{self.domain}" for local in locals_]


@dataclass(frozen=True)
class MTAOptions:
    """The tunable behaviour of the MTA, from `spec.mta` of the first MailDomain."""

    message_size_limit: int = 25 * 1024 * 1024
    # RFC 5321 §7.6-7.7: a submitting client's address is not carried across the trust
    # boundary in the Received header of mail it submits.
    hide_submission_client: bool = True
    # Consult MTA-STS (RFC 8461) for destinations without DANE (see docs/mta.md for the order).
    mta_sts_fallback: bool = True
    # DKIM signing of submitted mail by the milter beside Postfix (render/dkim.py); None: none.
    dkim: DKIMSigning | None = None
    # TLSRPT reports about outbound TLS (RFC 8460, render/tlsrpt_sending.py); None: not sent.
    tlsrpt: tlsrpt_sending.TLSRPTSending | None = None


@dataclass(frozen=True)
class MTALayout:
    """Where things are: the only inputs that differ between the pod and a loopback test."""

    queue_directory: str = "/var/spool/postfix"
    data_directory: str = "/var/lib/postfix"
    mailbox_base: str = "/var/spool/postfix/mailboxes"
    tls_key_file: str = "/etc/mailward/tls/tls.key"
    tls_cert_file: str = "/etc/mailward/tls/tls.crt"
    sasldb_path: str = "/var/lib/mailward/sasldb2"
    maillog_file: str = "/dev/stdout"
    maillog_file_prefixes: str = "/var, /dev/stdout"
    inet_interfaces: str = "all"
    inet_protocols: str = "all"
    # Source addresses of outbound SMTP; empty: the kernel's choice. A host-network MTA sends
    # from its published MX address, which is what `v=spf1 mx` allows.
    smtp_bind_address: str = ""
    smtp_bind_address6: str = ""
    tls_policy_socketmap: str = TLS_POLICY_SOCKETMAP
    dkim_milter: str = DKIM_MILTER
    tlsrpt_socket: str = tlsrpt_sending.socket_path(tlsrpt_sending.TLSRPT_DIR)
    # The domain tables (`domains`, `mailboxes`, `sender_logins`): a directory of their own in
    # the pod, so that a change of the served domains is a reload, not a new configuration.
    domains_directory: str = "${config_directory}"
    # Where the pod's own health probe connects from (its EHLO probe to itself): exempt from
    # the per-client limits, or a busy rate window fails the probe and restarts a healthy MTA.
    probe_source: str = ""
    # Postfix drops root privileges to this user; the image's Debian package creates it.
    mail_owner: str = "postfix"
    setgid_group: str = "postdrop"


@dataclass(frozen=True)
class MasterEntry:
    """One master.cf service line (master(5)); `-` means the built-in default."""

    service: str
    type: str
    private: str = "-"
    unpriv: str = "-"
    # Every service runs unchrooted: the pod's filesystem is the isolation, and a chroot would
    # need CAP_SYS_CHROOT and copies of resolv.conf and the TLS files.
    chroot: str = "n"
    wakeup: str = "-"
    maxproc: str = "-"
    command: str = ""
    options: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class PostfixConfig:
    """The rendered files, by name: what the ConfigMap holds and `postfix -c` reads.

    `tables` are the files that change with the set of served domains; they live in
    `MTALayout.domains_directory` and are picked up by `postfix reload`.
    """

    main: list[tuple[str, str]]
    master: list[MasterEntry]
    files: dict[str, str] = field(default_factory=dict)
    tables: dict[str, str] = field(default_factory=dict)

    def parameter(self, name: str) -> str:
        for key, value in self.main:
            if key == name:
                return value
        raise KeyError(name)

    def service(self, name: str, type_: str = "inet") -> MasterEntry:
        for entry in self.master:
            if (entry.service, entry.type) == (name, type_):
                return entry
        raise KeyError(name)

    def rendered_files(self) -> dict[str, str]:
        """Every file of the configuration directory, by name, as text (tables excluded)."""
        return {
            "main.cf": render_main_cf(self.main),
            "master.cf": render_master_cf(self.master),
            **self.files,
        }

    def all_files(self) -> dict[str, str]:
        """Configuration and tables in one directory (a layout with the default
        `domains_directory`, as the loopback tests run it)."""
        return {**self.rendered_files(), **self.tables}

    def digest(self) -> str:
        return files_digest(self.rendered_files())


def files_digest(files: dict[str, str]) -> str:
    """SHA-256 over named files: it goes into a pod template so a change rolls the pods."""
    h = hashlib.sha256()
    for name, text in sorted(files.items()):
        h.update(name.encode() + b"\0" + text.encode() + b"\0")
    return h.hexdigest()


def render_main_cf(parameters: Iterable[tuple[str, str]]) -> str:
    lines = ["# Rendered by mailward; edits are overwritten. See docs/mta.md."]
    seen: set[str] = set()
    for name, value in parameters:
        if name in seen:
            raise ValueError(f"main.cf parameter {name} set twice")
        seen.add(name)
        lines.append(f"{name} = {value}" if value else f"{name} =")
    return "\n".join(lines) + "\n"


def render_master_cf(entries: Iterable[MasterEntry]) -> str:
    lines = [
        "# Rendered by mailward; edits are overwritten. See docs/mta.md.",
        "# service type  private unpriv  chroot  wakeup  maxproc command + args",
    ]
    for e in entries:
        columns = [e.service, e.type, e.private, e.unpriv, e.chroot, e.wakeup, e.maxproc]
        lines.append(" ".join(f"{c:<8}" for c in columns) + e.command)
        for key, value in e.options:
            if any(ch.isspace() for ch in value):
                raise ValueError(f"master.cf option {key}={value!r} contains white space")
            lines.append(f"  -o {key}={value}")
    return "\n".join(lines) + "\n"


def render_postfix(
    domains: Sequence[DomainConfig],
    options: MTAOptions = MTAOptions(),
    layout: MTALayout = MTALayout(),
    *,
    hostname: str | None = None,
    origin: str | None = None,
) -> PostfixConfig:
    """The configuration of one MTA for `domains`.

    `hostname` (the greeting and HELO name) and `origin` (`mydomain`) default to the first
    domain's first MX and the first domain; a fleet passes its own, so that neither depends on
    which domains are attached.
    """
    hostname = hostname or (domains[0].mx_hosts[0] if domains else None)
    origin = origin or (domains[0].domain if domains else None)
    if hostname is None or origin is None:
        raise ValueError("an MTA without domains needs a hostname and an origin")
    main = _main_cf(hostname, origin, options, layout)
    master = _master_cf(options)
    files = {
        "command_filter": COMMAND_FILTER,
        # Postfix reads the Cyrus SASL configuration from $cyrus_sasl_config_path.
        "sasl/smtpd.conf": _sasl_conf(layout),
        "openssl.cnf": OPENSSL_CNF,
    }
    if options.hide_submission_client:
        files["submission_header_checks"] = SUBMISSION_HEADER_CHECKS
    return PostfixConfig(main, master, files, render_domain_tables(domains))


def render_domain_tables(domains: Sequence[DomainConfig]) -> dict[str, str]:
    """The lookup tables that change with the served domains (texthash: read by each daemon
    when it starts, so `postfix reload` brings a new set in without a restart)."""
    names = [d.domain for d in domains]
    if len(set(names)) != len(names):
        raise ValueError("a domain is listed twice")
    ordered = sorted(domains, key=lambda d: d.domain)
    return {
        "domains": _table((d.domain, "OK") for d in ordered),
        # Maildir paths (trailing slash) under virtual_mailbox_base: <domain>/<local>/.
        "mailboxes": _table(
            (m, f"{d.domain}/{m.partition('@')[0]}/") for d in ordered for m in d.mailboxes()
        ),
        # The SASL login of an account is its address; it may send only as itself.
        "sender_logins": _table(
            (f"{a}@{d.domain}", f"{a}@{d.domain}") for d in ordered for a in sorted(d.accounts)
        ),
    }


def _table(rows: Iterable[tuple[str, str]]) -> str:
    lines = [f"{key} {value}" for key, value in rows]
    return "".join(f"{line}\n" for line in lines)


# RFC 5321 §7.3: a server that disables VRFY/EXPN MUST answer 252, a code that cannot be taken
# for a verification (Postfix's own `disable_vrfy_command` answers 502, and EXPN is unknown to
# it). Every VRFY/EXPN is rewritten into the same harmless VRFY, which Postfix answers with
# 252 without looking at what the client asked: nothing about the directory leaks.
COMMAND_FILTER = """\
# RFC 5321 7.3: VRFY and EXPN are disabled and answered 252 whatever they ask for.
/^[Vv][Rr][Ff][Yy]([[:space:]].*)?$/ VRFY postmaster
/^[Ee][Xx][Pp][Nn]([[:space:]].*)?$/ VRFY postmaster
"""

# The Received header smtpd adds for an authenticated submission begins
# `from helo (reverse-name [client-ip])`; the parenthesised TCP-info, which names the client's
# (often internal) address, is dropped; the rest (TLS, `by`, `with ESMTPSA`, id, date) stays.
SUBMISSION_HEADER_CHECKS = """\
# RFC 5321 7.6-7.7: the submitting client's address does not cross the trust boundary.
/^Received: from ([^ ]+) \\([^)]*\\)(.*with ESMTPSA.*)$/ REPLACE Received: from $1$2
"""

# Read by OpenSSL inside each Postfix daemon (through OPENSSL_CONF in import_environment):
# what Postfix 3.7 cannot set itself, the TLS 1.3 suites of TR-03116-4 §2.3.
OPENSSL_CNF = """\
openssl_conf = mailward_init

[mailward_init]
ssl_conf = mailward_ssl

[mailward_ssl]
system_default = mailward_tls

[mailward_tls]
Ciphersuites = {suites}
""".format(suites=":".join(TLS13_CIPHERSUITES))


def _sasl_conf(layout: MTALayout) -> str:
    # Cyrus SASL with the sasldb auxprop: no daemon (no saslauthd, no Dovecot) in the pod; the
    # database is built at start from the accounts Secret (docs/mta.md). PLAIN/LOGIN only, and
    # smtpd offers them only after TLS (smtpd_tls_auth_only).
    return (
        "pwcheck_method: auxprop\n"
        "auxprop_plugin: sasldb\n"
        "mech_list: PLAIN LOGIN\n"
        f"sasldb_path: {layout.sasldb_path}\n"
    )


def _set_only(*parameters: tuple[str, str]) -> list[tuple[str, str]]:
    """The parameters that have a value; the others keep Postfix's default by being absent."""
    return [(name, value) for name, value in parameters if value]


def _main_cf(
    hostname: str, origin: str, options: MTAOptions, layout: MTALayout
) -> list[tuple[str, str]]:
    tls_key_pair = f"{layout.tls_key_file}, {layout.tls_cert_file}"
    tables = _table_parameters(layout)
    p: list[tuple[str, str]] = [
        ("compatibility_level", "3.6"),
        # --- identity and places
        ("myhostname", hostname),
        ("mydomain", origin),
        ("myorigin", "$mydomain"),
        ("mail_owner", layout.mail_owner),
        ("setgid_group", layout.setgid_group),
        ("queue_directory", layout.queue_directory),
        ("data_directory", layout.data_directory),
        ("inet_interfaces", layout.inet_interfaces),
        ("inet_protocols", layout.inet_protocols),
        *_set_only(
            ("smtp_bind_address", layout.smtp_bind_address),
            ("smtp_bind_address6", layout.smtp_bind_address6),
        ),
        # Logs go to the container's stdout through postlogd: one line per event, the classic
        # `time host postfix/service[pid]: queue-id: key=value, ...` form that log parsers read.
        ("maillog_file", layout.maillog_file),
        ("maillog_file_prefixes", layout.maillog_file_prefixes),
        (
            "import_environment",
            "MAIL_CONFIG MAIL_DEBUG MAIL_LOGTAG TZ LANG=C "
            "OPENSSL_CONF=${config_directory}/openssl.cnf",
        ),
        # RFC 5321 §7.5 allows naming the software; we keep the banner to name and protocol.
        ("smtpd_banner", "$myhostname ESMTP"),
        ("biff", "no"),
        # --- what is local: nothing but the virtual mailboxes of the served domains
        ("mydestination", ""),
        ("mynetworks", ""),
        ("mynetworks_style", "host"),
        ("local_transport", "error:5.1.1 local delivery is disabled"),
        # A map that holds no local name (an empty value would accept every local name), so
        # `root@[our-address]` is refused at RCPT rather than bounced later.
        ("local_recipient_maps", tables["local_recipient_maps"]),
        ("alias_maps", ""),
        ("alias_database", ""),
        ("virtual_mailbox_domains", tables["virtual_mailbox_domains"]),
        ("virtual_mailbox_maps", tables["virtual_mailbox_maps"]),
        ("virtual_mailbox_base", layout.mailbox_base),
        ("virtual_uid_maps", f"static:{MAILBOX_UID}"),
        ("virtual_gid_maps", f"static:{MAILBOX_UID}"),
        ("virtual_mailbox_limit", str(options.message_size_limit * 40)),
        # --- address syntax tricks that could turn an MX into a relay (RFC 5321 §7.9, §3.6)
        ("allow_percent_hack", "no"),
        ("swap_bangpath", "no"),
        ("allow_untrusted_routing", "no"),
        ("resolve_dequoted_address", "no"),
        ("resolve_null_domain", "no"),
        ("resolve_numeric_domain", "no"),
        ("strict_rfc821_envelopes", "yes"),
        # --- inbound SMTP (port 25): STARTTLS offered, never required (RFC 3207 §4)
        ("smtpd_tls_security_level", "may"),
        ("smtpd_tls_chain_files", tls_key_pair),
        ("smtpd_tls_protocols", TLS_PROTOCOLS),
        ("smtpd_tls_mandatory_protocols", TLS_PROTOCOLS),
        ("smtpd_tls_ciphers", "high"),
        ("smtpd_tls_mandatory_ciphers", "high"),
        ("tls_high_cipherlist", ":".join(TLS12_CIPHERS)),
        ("tls_preempt_cipherlist", "yes"),
        # No smtpd_tls_eecdh_grade: `auto` is the default since Postfix 3.6, and 3.10 warns
        # that the parameter will be removed.
        ("tls_eecdh_auto_curves", " ".join(TLS_GROUPS)),
        # TR-03116-4 §2.2.3 / TR-02102-2 §3.3.4: no compression, no client renegotiation.
        ("tls_ssl_options", "NO_COMPRESSION NO_RENEGOTIATION"),
        ("smtpd_tls_received_header", "yes"),
        ("smtpd_tls_loglevel", "1"),
        ("smtpd_tls_session_cache_database", "btree:${data_directory}/smtpd_scache"),
        ("smtpd_tls_auth_only", "yes"),
        # --- SASL: off on 25, switched on per submission service in master.cf
        ("smtpd_sasl_auth_enable", "no"),
        ("smtpd_sasl_type", "cyrus"),
        ("smtpd_sasl_path", "smtpd"),
        # Said explicitly: Debian's trixie build no longer looks in $config_directory/sasl
        # by itself and would fall back to its compiled-in default (other mechanisms, no db).
        ("cyrus_sasl_config_path", "${config_directory}/sasl"),
        ("smtpd_sasl_security_options", "noanonymous, noplaintext"),
        ("smtpd_sasl_tls_security_options", "noanonymous"),
        ("smtpd_sasl_authenticated_header", "no"),
        ("broken_sasl_auth_clients", "no"),
        ("smtpd_sender_login_maps", tables["smtpd_sender_login_maps"]),
        # --- who may do what
        ("smtpd_helo_required", "yes"),
        ("smtpd_helo_restrictions", "reject_invalid_helo_hostname"),
        ("smtpd_sender_restrictions", "reject_non_fqdn_sender"),
        # Relaying only for authenticated submission (mynetworks is empty unless configured).
        ("smtpd_relay_restrictions", "permit_mynetworks, reject_unauth_destination"),
        # Unknown recipients are refused at RCPT, so no bounce is ever sent to a forged sender.
        (
            "smtpd_recipient_restrictions",
            "reject_non_fqdn_recipient, reject_unlisted_recipient",
        ),
        ("smtpd_reject_unlisted_recipient", "yes"),
        ("smtpd_data_restrictions", "reject_unauth_pipelining, reject_multi_recipient_bounce"),
        ("smtpd_etrn_restrictions", "reject"),
        ("smtpd_command_filter", "regexp:${config_directory}/command_filter"),
        ("disable_vrfy_command", "no"),
        ("unknown_local_recipient_reject_code", "550"),
        ("unknown_virtual_mailbox_reject_code", "550"),
        ("relay_domains_reject_code", "554"),
        # SMTP smuggling (CVE-2023-51764) and pipelining before the greeting.
        ("smtpd_forbid_bare_newline", "yes"),
        ("smtpd_forbid_unauth_pipelining", "yes"),
        # --- resistance to abuse (RFC 5321 §7.8): limits per client, timeouts, a tarpit
        ("smtpd_client_connection_count_limit", "10"),
        ("smtpd_client_connection_rate_limit", "60"),
        ("smtpd_client_message_rate_limit", "100"),
        ("smtpd_client_recipient_rate_limit", "300"),
        ("smtpd_client_new_tls_session_rate_limit", "60"),
        ("smtpd_client_auth_rate_limit", "30"),
        ("smtpd_client_event_limit_exceptions", _event_limit_exceptions(layout)),
        ("anvil_rate_time_unit", "60s"),
        # RFC 5321 §4.5.3.2.7: the server waits at least 5 minutes for the next command.
        ("smtpd_timeout", "300s"),
        ("smtpd_starttls_timeout", "300s"),
        ("smtpd_proxy_timeout", "100s"),
        # After 3 errors each reply is delayed (directory-harvest tarpit); after 10, good-bye.
        ("smtpd_soft_error_limit", "3"),
        ("smtpd_error_sleep_time", "2s"),
        ("smtpd_hard_error_limit", "10"),
        ("smtpd_junk_command_limit", "20"),
        # RFC 5321 §4.5.3.1.8 asks for at least 100 recipients per transaction.
        ("smtpd_recipient_limit", "100"),
        ("smtpd_recipient_overshoot_limit", "100"),
        # RFC 5321 §4.5.3.1.6: text lines of 1000 octets; longer ones are folded, not lost.
        ("line_length_limit", "2048"),
        ("header_size_limit", "102400"),
        ("message_size_limit", str(options.message_size_limit)),
        ("smtpd_peername_lookup", "yes"),
        # --- problem handling (RFC 5321 §6)
        # §6.1: DSNs are sent with the null reverse path (Postfix's bounce daemon does so).
        ("bounce_notice_recipient", "postmaster"),
        ("notify_classes", "resource, software"),
        # §4.5.4.1: first retry after at least 30 minutes, then backoff; give up after 5 days.
        ("queue_run_delay", "300s"),
        ("minimal_backoff_time", "1800s"),
        ("maximal_backoff_time", "14400s"),
        ("maximal_queue_lifetime", "5d"),
        ("bounce_queue_lifetime", "5d"),
        ("delay_warning_time", "4h"),
        # §6.3: loop detection by counting Received headers. The RFC asks for "a large
        # rejection threshold, normally at least 100 Received entries"; Postfix's default (50)
        # is below that and would refuse legitimate mail on long forwarding paths.
        ("hopcount_limit", "100"),
        # --- outbound: DNSSEC-validated lookups, DANE (RFC 7672), TR-03108-04-M / 06-M
        ("smtp_dns_support_level", "dnssec"),
        ("smtp_tls_security_level", "dane"),
        ("smtp_tls_protocols", TLS_PROTOCOLS),
        ("smtp_tls_mandatory_protocols", TLS_PROTOCOLS),
        ("smtp_tls_ciphers", "medium"),
        ("smtp_tls_mandatory_ciphers", "high"),
        ("smtp_tls_loglevel", "1"),
        ("smtp_tls_note_starttls_offer", "yes"),
        ("smtp_tls_session_cache_database", "btree:${data_directory}/smtp_scache"),
        ("smtp_tls_CApath", "/etc/ssl/certs"),
        ("smtp_helo_name", "$myhostname"),
        ("smtp_connect_timeout", "30s"),
        ("smtp_helo_timeout", "300s"),
    ]
    if options.mta_sts_fallback:
        # Asked only after DANE came up empty: the policy proxy answers NOTFOUND for a
        # destination with secure TLSA (so `dane` stays in force), MTA-STS otherwise.
        p.append(("smtp_tls_policy_maps", f"socketmap:{layout.tls_policy_socketmap}:postfix"))
    if options.dkim is not None:
        p += milter_parameters(layout.dkim_milter)
    if options.tlsrpt is not None:
        p += tlsrpt_sending.postfix_parameters(layout.tlsrpt_socket)
    return p


def _master_cf(options: MTAOptions) -> list[MasterEntry]:
    submission_common: tuple[tuple[str, str], ...] = (
        ("smtpd_sasl_auth_enable", "yes"),
        ("smtpd_tls_auth_only", "yes"),
        ("smtpd_reject_unlisted_recipient", "no"),
        ("smtpd_client_restrictions", "permit_sasl_authenticated,reject"),
        ("smtpd_helo_restrictions", ""),
        (
            "smtpd_sender_restrictions",
            "reject_non_fqdn_sender,reject_sender_login_mismatch,permit_sasl_authenticated,reject",
        ),
        ("smtpd_relay_restrictions", "permit_sasl_authenticated,reject"),
        (
            "smtpd_recipient_restrictions",
            "reject_non_fqdn_recipient,permit_sasl_authenticated,reject",
        ),
        ("milter_macro_daemon_name", "ORIGINATING"),
    )
    if options.hide_submission_client:
        submission_common += (("cleanup_service_name", "subcleanup"),)
    entries = [
        # Mail from other MTAs is not signed (nor held up by the signer).
        MasterEntry(
            "smtp", "inet", "n", command="smtpd", options=inbound_milter_options(options.dkim)
        ),
        MasterEntry(
            "submission",
            "inet",
            "n",
            command="smtpd",
            options=(
                ("syslog_name", "postfix/submission"),
                # TR-03108-02-R: STARTTLS on 587, and required before anything else.
                ("smtpd_tls_security_level", "encrypt"),
                *submission_common,
            ),
        ),
        MasterEntry(
            "submissions",
            "inet",
            "n",
            command="smtpd",
            options=(
                ("syslog_name", "postfix/submissions"),
                # TR-03108-01-M: implicit TLS for mail clients (RFC 8314).
                ("smtpd_tls_wrappermode", "yes"),
                ("smtpd_tls_security_level", "encrypt"),
                *submission_common,
            ),
        ),
        MasterEntry("pickup", "unix", "n", wakeup="60", maxproc="1", command="pickup"),
        MasterEntry("cleanup", "unix", "n", maxproc="0", command="cleanup"),
    ]
    if options.hide_submission_client:
        entries.append(
            MasterEntry(
                "subcleanup",
                "unix",
                "n",
                maxproc="0",
                command="cleanup",
                options=(("header_checks", "regexp:${config_directory}/submission_header_checks"),),
            )
        )
    entries += [
        # Unprivileged, as in Postfix's own master.cf: run as root, the queue manager would
        # create root-owned deferred/ directories that showq (postqueue -p) cannot read.
        MasterEntry("qmgr", "unix", "n", wakeup="300", maxproc="1", command="qmgr"),
        MasterEntry("tlsmgr", "unix", wakeup="1000?", maxproc="1", command="tlsmgr"),
        MasterEntry("rewrite", "unix", command="trivial-rewrite"),
        MasterEntry("bounce", "unix", maxproc="0", command="bounce"),
        MasterEntry("defer", "unix", maxproc="0", command="bounce"),
        MasterEntry("trace", "unix", maxproc="0", command="bounce"),
        MasterEntry("verify", "unix", maxproc="1", command="verify"),
        MasterEntry("flush", "unix", "n", wakeup="1000?", maxproc="0", command="flush"),
        MasterEntry("proxymap", "unix", command="proxymap"),
        MasterEntry("proxywrite", "unix", maxproc="1", command="proxymap"),
        MasterEntry("smtp", "unix", command="smtp"),
        MasterEntry("relay", "unix", command="smtp"),
        MasterEntry("showq", "unix", "n", command="showq"),
        MasterEntry("error", "unix", command="error"),
        MasterEntry("retry", "unix", command="error"),
        MasterEntry("discard", "unix", command="discard"),
        MasterEntry("local", "unix", "-", "n", command="local"),
        MasterEntry("virtual", "unix", "-", "n", command="virtual"),
        MasterEntry("lmtp", "unix", command="lmtp"),
        MasterEntry("anvil", "unix", maxproc="1", command="anvil"),
        MasterEntry("scache", "unix", maxproc="1", command="scache"),
        MasterEntry("postlog", "unix-dgram", "n", maxproc="1", command="postlogd"),
    ]
    return entries


def _table_parameters(layout: MTALayout) -> dict[str, str]:
    tables = layout.domains_directory
    return {
        "local_recipient_maps": f"texthash:{tables}/mailboxes",
        "virtual_mailbox_domains": f"texthash:{tables}/domains",
        "virtual_mailbox_maps": f"texthash:{tables}/mailboxes",
        "smtpd_sender_login_maps": f"texthash:{tables}/sender_logins",
    }


def layout_parameters(layout: MTALayout) -> dict[str, str]:
    """The main.cf parameters whose values come from `layout` alone."""
    return {
        **_table_parameters(layout),
        "queue_directory": layout.queue_directory,
        "data_directory": layout.data_directory,
        "inet_interfaces": layout.inet_interfaces,
        "inet_protocols": layout.inet_protocols,
        "smtp_bind_address": layout.smtp_bind_address,
        "smtp_bind_address6": layout.smtp_bind_address6,
        "maillog_file": layout.maillog_file,
        "maillog_file_prefixes": layout.maillog_file_prefixes,
        "smtpd_tls_chain_files": f"{layout.tls_key_file}, {layout.tls_cert_file}",
        "virtual_mailbox_base": layout.mailbox_base,
        "smtp_tls_policy_maps": f"socketmap:{layout.tls_policy_socketmap}:postfix",
        "smtpd_milters": layout.dkim_milter,
        "smtp_tlsrpt_socket_name": layout.tlsrpt_socket,
        "mail_owner": layout.mail_owner,
        "setgid_group": layout.setgid_group,
        "smtpd_client_event_limit_exceptions": _event_limit_exceptions(layout),
    }


def _event_limit_exceptions(layout: MTALayout) -> str:
    return ", ".join(["$mynetworks", *([layout.probe_source] if layout.probe_source else [])])


def apply_layout(files: dict[str, str], layout: MTALayout) -> dict[str, str]:
    """Rendered files (e.g. read back from a ConfigMap) moved to another `layout`.

    Only the values of `layout_parameters` in main.cf and the SASL database path change; a
    parameter that is absent stays absent. This is how the demo runs a pod's configuration on
    loopback without re-rendering it.
    """
    replacements = layout_parameters(layout)
    moved = dict(files)
    lines = []
    for line in files["main.cf"].splitlines():
        name, sep, _ = line.partition(" =")
        if sep and name in replacements:
            value = replacements[name]
            line = f"{name} = {value}" if value else f"{name} ="
        lines.append(line)
    moved["main.cf"] = "\n".join(lines) + "\n"
    sasl = "sasl/smtpd.conf"
    if sasl in files:
        moved[sasl] = "".join(
            f"sasldb_path: {layout.sasldb_path}\n" if line.startswith("sasldb_path:") else line
            for line in files[sasl].splitlines(keepends=True)
        )
    return moved
