"""The MTA's pod (pure): where it listens, its files, its containers.

Postfix runs with the rendered configuration, after a validating resolver that the whole pod
asks (render/resolver.py) and two sidecars for outbound TLS policy (docs/mta.md), all from the
MTA image. On the host network (`spec.mta.hostNetwork` of a MailDomain, `spec.hostNetwork`
of a MailServer) Postfix binds exactly its group's addresses and every other listener the first
of them (a wildcard or 127.0.0.1 would collide with the next pod on the node); without it,
everything listens inside the pod's own network namespace.

The domain tables are a volume of their own (`DOMAINS_DIR`): the start script watches it and
runs `postfix reload` when the kubelet swaps its contents, so attaching a domain to a running
fleet restarts nothing.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mailward.render import dkim, tlsrpt_sending
from mailward.render.mta_server import MTAServer, ServerGroup
from mailward.render.pods import (
    DNS_PROBE,
    NOBODY,
    RUNTIME_DEFAULT_SECCOMP,
    SMTP_EHLO_PROBE,
    SOCKETMAP_PROBE,
    Listener,
    ProbeTiming,
    container_ports,
    exec_probe,
    host_address,
    host_port,
    non_root,
    required_node_anti_affinity,
    root_with,
)
from mailward.render.postfix import (
    SMTP_PORT,
    SUBMISSION_PORT,
    SUBMISSIONS_PORT,
    TLS_POLICY_PORT,
    DomainConfig,
    MTALayout,
    PostfixConfig,
    files_digest,
    render_domain_tables,
    render_postfix,
)
from mailward.render.resolver import RESOLVER_PORT, ResolverSettings, render_unbound_conf

Manifest = dict[str, Any]

CONFIG_DIR = "/etc/mailward/postfix"
DOMAINS_DIR = "/etc/mailward/domains"
RESOLVER_DIR = "/etc/mailward/resolver"
MTA_STS_DIR = "/etc/mailward/mta-sts"
TLS_DIR = "/etc/mailward/tls"
ACCOUNTS_DIR = "/etc/mailward/accounts"
MTA_STS_RESOLVER_PORT = 8462
UNBOUND_CONF = "unbound.conf"
MTA_STS_DAEMON_CONF = "mta-sts-daemon.yml"
LOOPBACK = "127.0.0.1"
# Postfix's master process starts as root and drops to `postfix` per daemon; these are the
# capabilities it needs for that: CHOWN, FOWNER and DAC_OVERRIDE for `postfix check` and the
# queue and mailbox files owned by postfix and vmail, SETUID/SETGID to become them, KILL to
# signal its children (other users), NET_BIND_SERVICE for 25/465/587. No chroot: no SYS_CHROOT.
POSTFIX_CAPABILITIES = [
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "KILL",
    "NET_BIND_SERVICE",
    "SETGID",
    "SETUID",
]


@dataclass(frozen=True)
class PodAddresses:
    """Where the pod's listeners bind."""

    host_network: bool
    # Postfix's addresses on the host network; empty: every address of the pod's namespace.
    mx: tuple[str, ...] = ()
    # The resolver, the policy socketmap and the MTA-STS resolver: the first MX address on the
    # host network, loopback in the pod's namespace.
    local: str = LOOPBACK

    def public_listeners(self) -> list[Listener]:
        return [
            Listener("smtp", SMTP_PORT, self.mx),
            Listener("submissions", SUBMISSIONS_PORT, self.mx),
            Listener("submission", SUBMISSION_PORT, self.mx),
        ]

    def local_listeners(self, *listeners: Listener) -> list[Listener]:
        """Host ports to declare for the pod's own listeners (none in its own namespace)."""
        return list(listeners) if self.host_network else []


def pod_addresses(server: MTAServer, group: ServerGroup) -> PodAddresses:
    if not server.host_network:
        return PodAddresses(False)
    return PodAddresses(True, group.addresses, group.addresses[0])


def pod_layout(addresses: PodAddresses) -> MTALayout:
    """The pod's `MTALayout`: its file system, and on the host network its addresses."""
    if not addresses.host_network:
        return MTALayout(domains_directory=DOMAINS_DIR, probe_source=LOOPBACK)
    ips = [ipaddress.ip_address(a) for a in addresses.mx]
    v4 = [str(ip) for ip in ips if ip.version == 4]
    v6 = [str(ip) for ip in ips if ip.version == 6]
    # Only the families the domain publishes: mail sent from an address outside `spec.mx`
    # would fail `v=spf1 mx`.
    protocols = "all" if v4 and v6 else ("ipv4" if v4 else "ipv6")
    return MTALayout(
        inet_interfaces=", ".join(host_address(a) for a in addresses.mx),
        inet_protocols=protocols,
        smtp_bind_address=v4[0] if v4 else "",
        smtp_bind_address6=v6[0] if v6 else "",
        tls_policy_socketmap=f"inet:{host_port(addresses.local, TLS_POLICY_PORT)}",
        dkim_milter=f"inet:{host_port(addresses.local, dkim.DKIM_MILTER_PORT)}",
        domains_directory=DOMAINS_DIR,
        # The probe connects to the first address, and a connection to a local address comes
        # from that address.
        probe_source=addresses.local,
    )


def render_mta_config(
    server: MTAServer, group: ServerGroup, domains: Sequence[DomainConfig]
) -> PostfixConfig:
    """The Postfix configuration of the group's pods serving `domains`."""
    layout = pod_layout(pod_addresses(server, group))
    return render_postfix(
        domains, server.options, layout, hostname=group.hostname, origin=server.origin
    )


def render_mta_sts_daemon_conf(address: str) -> str:
    """postfix-mta-sts-resolver's configuration, asked only by the DANE-first policy proxy."""
    return "\n".join(
        [
            "# Rendered by mailward; edits are overwritten. See docs/mta.md.",
            f"host: {address}",
            f"port: {MTA_STS_RESOLVER_PORT}",
            "reuse_port: true",
            # Less than the pod's termination grace period: running lookups end first.
            "shutdown_timeout: 20",
            "cache:",
            "  type: internal",
            "  options:",
            "    cache_size: 10000",
            "default_zone:",
            "  strict_testing: false",
            "  timeout: 4",
            # TLSRPT (RFC 8460): the answer names the policy (policy_type=sts, the domain, its
            # mx patterns and policy strings), so Postfix reports `sts`, not `no-policy-found`.
            "  tlsrpt: true",
            "",
        ]
    )


@dataclass(frozen=True)
class MTAFiles:
    """What one group's configuration ConfigMap holds: Postfix's directory and the sidecars'
    files, by key. The domain tables are not here: they have a ConfigMap of their own."""

    postfix: dict[str, str]
    sidecars: dict[str, str]

    def data(self) -> dict[str, str]:
        files = {configmap_key(f): text for f, text in self.postfix.items()}
        return dict(sorted({**files, **self.sidecars}.items()))

    def digest(self) -> str:
        return files_digest({**self.postfix, **self.sidecars})


def render_mta_files(server: MTAServer, group: ServerGroup, resolver: ResolverSettings) -> MTAFiles:
    """The group's configuration, which does not depend on the domains it serves."""
    addresses = pod_addresses(server, group)
    unbound = render_unbound_conf(
        resolver, addresses.local, RESOLVER_DIR, host_network=addresses.host_network
    )
    sidecars = {UNBOUND_CONF: unbound}
    if server.options.mta_sts_fallback:
        sidecars[MTA_STS_DAEMON_CONF] = render_mta_sts_daemon_conf(addresses.local)
    if server.options.dkim is not None:
        sidecars.update(dkim.render_milter_files(server.options.dkim, addresses.local))
    if server.options.tlsrpt is not None:
        reporter = tlsrpt_sending.render_reporter_conf(server.options.tlsrpt, server.origin)
        sidecars[tlsrpt_sending.REPORTER_CONF] = reporter
    return MTAFiles(render_mta_config(server, group, ()).rendered_files(), sidecars)


def render_domain_files(domains: Sequence[DomainConfig]) -> dict[str, str]:
    """The domain tables' ConfigMap data: reloaded by the pods, never rolled."""
    return render_domain_tables(domains)


def configmap_key(file_name: str) -> str:
    # ConfigMap keys cannot contain "/"; the volume's `items` put the file back in its place.
    return file_name.replace("/", "_")


def _config_volume(configmap: str, volume: str, keys: dict[str, str]) -> Manifest:
    """A volume of the ConfigMap with only `keys` (ConfigMap key → path in the volume)."""
    items = [{"key": key, "path": path} for key, path in sorted(keys.items())]
    return {"name": volume, "configMap": {"name": configmap, "items": items}}


# Readiness decides whether the Service sends mail to the pod: quick to drop a broken MTA.
# Liveness restarts it: tolerant (2 minutes of failures) so a busy MTA is not killed mid-queue.
SMTP_READINESS = ProbeTiming(period=15, timeout=5, failures=2)
SMTP_LIVENESS = ProbeTiming(period=20, timeout=10, failures=6, initial_delay=30)
# Native sidecars start in order: the next one (and Postfix last) only once this one answers.
SIDECAR_STARTUP = ProbeTiming(period=2, timeout=3, failures=30)
SIDECAR_LIVENESS = ProbeTiming(period=20, timeout=5, failures=3)
RESOLVER_READINESS = ProbeTiming(period=15, timeout=3, failures=2)


def _postfix_container(server: MTAServer, addresses: PodAddresses) -> Manifest:
    layout = MTALayout()
    smtp_host = addresses.local  # the first MX address, or loopback in the pod's namespace
    container: Manifest = {
        "name": "postfix",
        "image": server.image,
        "command": ["/usr/local/bin/mailward-mta-start"],
        "env": [
            {"name": "MAILWARD_CONFIG_DIR", "value": CONFIG_DIR},
            {"name": "MAILWARD_DOMAINS_DIR", "value": DOMAINS_DIR},
            {"name": "MAILWARD_ACCOUNTS_DIR", "value": ACCOUNTS_DIR},
            {"name": "MAILWARD_SASLDB", "value": layout.sasldb_path},
        ],
        "ports": container_ports(addresses.public_listeners()),
        "readinessProbe": exec_probe(
            SMTP_EHLO_PROBE, [smtp_host, str(SMTP_PORT), "4"], SMTP_READINESS
        ),
        "livenessProbe": exec_probe(
            SMTP_EHLO_PROBE, [smtp_host, str(SMTP_PORT), "8"], SMTP_LIVENESS
        ),
        "resources": {
            "requests": {"cpu": server.cpu, "memory": server.memory},
            "limits": {"memory": server.memory},
        },
        # Postfix's master must start as root (it binds port 25 and runs each daemon as
        # `postfix`); everything a root process could do beyond that is taken away.
        "securityContext": root_with(POSTFIX_CAPABILITIES),
        "volumeMounts": [
            {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
            {"name": "domains", "mountPath": DOMAINS_DIR, "readOnly": True},
            {"name": "tls", "mountPath": TLS_DIR, "readOnly": True},
            {"name": "queue", "mountPath": layout.queue_directory},
            {"name": "data", "mountPath": layout.data_directory},
            {"name": "state", "mountPath": "/var/lib/mailward"},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    if server.accounts_secret:
        mount = f"{ACCOUNTS_DIR}/{server.accounts_mount()}".rstrip("/")
        container["volumeMounts"].append({"name": "accounts", "mountPath": mount, "readOnly": True})
    return container


def _resolver_container(server: MTAServer, addresses: PodAddresses) -> Manifest:
    dns_args = [addresses.local, "2"]
    return {
        "name": "resolver",
        "image": server.image,
        "command": ["unbound", "-d", "-c", f"{RESOLVER_DIR}/{UNBOUND_CONF}"],
        "restartPolicy": "Always",
        "ports": container_ports(
            addresses.local_listeners(
                Listener("dns", RESOLVER_PORT, (addresses.local,), "UDP"),
                Listener("dns-tcp", RESOLVER_PORT, (addresses.local,)),
            )
        ),
        "startupProbe": exec_probe(DNS_PROBE, dns_args, SIDECAR_STARTUP),
        "readinessProbe": exec_probe(DNS_PROBE, dns_args, RESOLVER_READINESS),
        "livenessProbe": exec_probe(DNS_PROBE, dns_args, SIDECAR_LIVENESS),
        "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "128Mi"}},
        # Port 53 is privileged in any network namespace; Unbound needs nothing else (it does
        # not switch users: `username: ""`).
        "securityContext": root_with(["NET_BIND_SERVICE"]),
        "volumeMounts": [{"name": "resolver-config", "mountPath": RESOLVER_DIR, "readOnly": True}],
    }


def _policy_containers(server: MTAServer, addresses: PodAddresses) -> list[Manifest]:
    """The MTA-STS resolver, then the DANE-first socketmap in front of it (docs/mta.md)."""
    local = addresses.local
    socketmap = host_port(local, TLS_POLICY_PORT)
    return [
        {
            "name": "mta-sts-resolver",
            "image": server.image,
            "command": ["mta-sts-daemon", "-c", f"{MTA_STS_DIR}/{MTA_STS_DAEMON_CONF}"],
            "restartPolicy": "Always",
            "ports": container_ports(
                addresses.local_listeners(Listener("mta-sts", MTA_STS_RESOLVER_PORT, (local,)))
            ),
            "resources": {
                "requests": {"cpu": "10m", "memory": "64Mi"},
                "limits": {"memory": "128Mi"},
            },
            "securityContext": non_root(NOBODY),
            "volumeMounts": [
                {"name": "mta-sts-config", "mountPath": MTA_STS_DIR, "readOnly": True}
            ],
        },
        {
            "name": "tls-policy",
            "image": server.image,
            "command": [
                "python3",
                "/usr/local/lib/mailward/tlspolicy.py",
                "--listen",
                socketmap,
                "--sts",
                host_port(local, MTA_STS_RESOLVER_PORT),
                "--nameserver",
                local,
            ],
            "restartPolicy": "Always",
            "ports": container_ports(
                addresses.local_listeners(Listener("socketmap", TLS_POLICY_PORT, (local,)))
            ),
            "startupProbe": exec_probe(
                SOCKETMAP_PROBE, [local, str(TLS_POLICY_PORT), "2"], SIDECAR_STARTUP
            ),
            "livenessProbe": exec_probe(
                SOCKETMAP_PROBE, [local, str(TLS_POLICY_PORT), "4"], SIDECAR_LIVENESS
            ),
            "resources": {
                "requests": {"cpu": "10m", "memory": "48Mi"},
                "limits": {"memory": "96Mi"},
            },
            "securityContext": non_root(NOBODY),
        },
    ]


def render_pod_spec(
    server: MTAServer,
    group: ServerGroup,
    files: MTAFiles,
    configmap: str,
    selector: Mapping[str, str],
) -> Manifest:
    """The pod template's spec; `selector` matches the pods of this group (anti-affinity)."""
    addresses = pod_addresses(server, group)
    volumes: list[Manifest] = [
        _config_volume(configmap, "config", {configmap_key(f): f for f in files.postfix}),
        _config_volume(configmap, "resolver-config", {UNBOUND_CONF: UNBOUND_CONF}),
        # All keys, no `items` and no subPath: the kubelet replaces the directory's contents
        # when the ConfigMap changes, and the start script reloads Postfix (docs/mta.md).
        {"name": "domains", "configMap": {"name": server.domains_configmap()}},
        {
            "name": "tls",
            "secret": {
                "secretName": server.tls_secret,
                "defaultMode": 0o400,
                "items": [
                    {"key": "tls.key", "path": "tls.key"},
                    {"key": "tls.crt", "path": "tls.crt"},
                ],
            },
        },
        {"name": "data", "emptyDir": {}},
        {"name": "state", "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}},
        {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
    ]
    if server.accounts_secret:
        volumes.append(
            {
                "name": "accounts",
                "secret": {
                    "secretName": server.accounts_secret,
                    "defaultMode": 0o400,
                    # A fleet's copy exists once a domain with accounts attached; until then
                    # the pods start without it, and a later copy arrives without a restart.
                    **({"optional": True} if server.is_fleet else {}),
                },
            }
        )
    # Native sidecars (restartable init containers), in this order: each starts once the one
    # before answers, Postfix last, so its first delivery finds DNS and the policy socketmap;
    # at shutdown they stop only after Postfix has, so deliveries still running can end.
    sidecars = [_resolver_container(server, addresses)]
    if server.options.mta_sts_fallback:
        sidecars += _policy_containers(server, addresses)
        volumes.append(
            _config_volume(configmap, "mta-sts-config", {MTA_STS_DAEMON_CONF: MTA_STS_DAEMON_CONF})
        )
    if server.options.dkim is not None:
        sidecars.append(dkim.milter_container(server.image, addresses.local, "dkim-config"))
        volumes += [
            _config_volume(configmap, "dkim-config", dkim.milter_file_items(server.options.dkim)),
            dkim.keys_volume(server.options.dkim),
        ]
    postfix = _postfix_container(server, addresses)
    containers = [postfix]
    if server.options.tlsrpt is not None:
        # The collector before Postfix, the report daemon beside it (render/tlsrpt_sending.py).
        conf = tlsrpt_sending.REPORTER_CONF
        sidecars.append(tlsrpt_sending.collector_container(server.image, "tlsrpt-config"))
        containers.append(
            tlsrpt_sending.report_container(
                server.image, "tlsrpt-config", "config", MTALayout().queue_directory
            )
        )
        postfix["volumeMounts"].append(tlsrpt_sending.postfix_mount())
        volumes += [
            _config_volume(configmap, "tlsrpt-config", {conf: conf}),
            tlsrpt_sending.state_volume(),
        ]
    pod: Manifest = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        # `postfix start-fg` stops at SIGTERM (the master passes it to its daemons). Nothing
        # is lost: mail is acknowledged only once it is on the queue volume, and a session or
        # delivery cut short is retried (RFC 5321 §4.5.4.1). The time is for the sidecars,
        # which stop after Postfix; the MTA-STS resolver's own shutdown_timeout is 20 s.
        "terminationGracePeriodSeconds": 30,
        # No fsGroup: no non-root container writes a volume, and a recursive group change
        # would break the ownership Postfix insists on in its queue.
        "securityContext": {"seccompProfile": RUNTIME_DEFAULT_SECCOMP},
        # Every process of the pod (Postfix, the socketmap, the MTA-STS resolver) asks the
        # validating resolver of the pod, and glibc passes its AD bit on only with trust-ad.
        "dnsPolicy": "None",
        "dnsConfig": {
            "nameservers": [addresses.local],
            "options": [{"name": "edns0"}, {"name": "trust-ad"}],
        },
        "initContainers": sidecars,
        "containers": containers,
        "volumes": volumes,
    }
    if addresses.host_network:
        pod = {"hostNetwork": True, **pod, "affinity": required_node_anti_affinity(selector)}
    return pod
