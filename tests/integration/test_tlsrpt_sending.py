"""TLSRPT sending (RFC 8460) from mailward's MTA, end to end on loopback.

The sender is mailward's rendered Postfix from the MTA image with `MTAOptions(tlsrpt=...)`
(`smtp_tlsrpt_enable`), and beside it the image's tlsrpt-collectd and tlsrpt-reportd with the
rendered `tlsrpt-reporter.cfg`, run as the pod runs them: nobody, the report daemon in the
group postdrop and with no_new_privs (`allowPrivilegeEscalation: false`). The receiver is a
second rendered Postfix serving two domains of the signed test zone, one with a TLSA record
that matches its key, one with a TLSA record that does not; both publish `_smtp._tls`. Their
`rua` is mailward's own TLSRPT collector (`mailward collect-reports`): `mailto:` for the good
domain (the report travels as mail through the sender MTA itself, to the collector's SMTP on
port 25), `https:` for the bad one (POSTed by `mailward-tlsrpt-post`).

SHORTENED CLOCK, this test only: a report covers one UTC day and is sent after midnight. The
test ends the day at once with tlsrpt-collectd's own development switch (SIGUSR2: today's
counts are relabelled as yesterday's and the day's database is closed, as at midnight), and
starts tlsrpt-reportd afterwards with `spread_out_delivery` 1 s instead of 10 h and a 2 s main
loop instead of 5 min (environment variables, which the daemon ranks above its file).
Everything else is the rendered configuration.

MTA-STS: a fourth domain publishes no TLSA but an MTA-STS policy in `enforce` mode, served over
HTTPS with a certificate of the local test CA by a small server in this test; its MX is a third
rendered Postfix whose certificate is from the same CA. TEST TRUST ONLY: the sender's MTA-STS
resolver is restarted with `SSL_CERT_FILE` naming that CA, and the sender's
`smtp_tls_CApath` names a directory with that CA alone (the image trusts the system's CAs).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import smtplib
import sqlite3
import ssl
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mailward.render.pods import NOBODY
from mailward.render.postfix import DomainConfig, MTAOptions
from mailward.render.tlsrpt_sending import (
    POSTDROP_GID,
    ReporterPaths,
    TLSRPTSending,
    render_reporter_conf,
)
from mailward.tlsrpt.store import open_store
from mailward_localstack.controlplane import kubectl
from mailward_localstack.dns import DNSStack
from mailward_localstack.pki import LocalCA
from mailward_localstack.rootfs import Account
from mailward_localstack.stack import Stack as ClusterStack
from tests.fixtures_cluster import NAMESPACE, WORKLOADS, ready_pods, wait_for
from tests.fixtures_mta import MTAFactory, RunningMTA
from tests.fixtures_tlsrpt import CollectorProcess
from tests.mtasts_remote import serve_policy, trust_test_ca_for_mta_sts
from tests.net import addr

pytestmark = pytest.mark.dnsstack

ZONE = "example.test"
SENDER_HOST, RECEIVER_HOST, COLLECTOR_HOST = 110, 111, 112
STS_RECEIVER_HOST, STS_POLICY_HOST = 113, 114
ORGANIZATION = "mailward test sender"
# The shortened clock (module docstring): the variables tlsrpt-reportd reads before its file.
SHORT_REPORT_CLOCK = {
    "TLSRPT_REPORTD_SPREAD_OUT_DELIVERY": "1",
    "TLSRPT_REPORTD_INTERVAL_MAIN_LOOP": "2",
}


@dataclass
class Stack:
    sender: RunningMTA
    sender_domain: str
    good: str
    bad: str
    unusable: str
    sts: str
    collector: CollectorProcess
    database: str
    reporter_dir: Path
    config_file: Path
    collectd: subprocess.Popen[bytes]
    ca_file: Path


def _publish(dns_stack: DNSStack, records: list[tuple[str, str, str]]) -> None:
    update = dns_stack.authoritative.new_update(ZONE)
    for name, rdtype, data in records:
        update.replace(name.removesuffix(f".{ZONE}"), 60, rdtype, data)
    dns_stack.authoritative.send_update(update)


def _wait_secure(dns_stack: DNSStack, name: str, rdtype: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not dns_stack.resolver.is_secure(name, rdtype):
        assert time.monotonic() < deadline, f"{name} {rdtype} never became secure"
        time.sleep(0.5)


def _wait_for(what: str, check: object, timeout: float, log: object = None) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s\n{log() if log else ''}")  # type: ignore[operator]
        time.sleep(0.5)


def _start_in_image(
    sender: RunningMTA,
    name: str,
    argv: list[str],
    user: Account,
    env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    postfix = sender.postfix
    log = (postfix.state_dir / f"{name}.log").open("wb")
    command = postfix.image.command(
        argv,
        binds=[postfix.state_dir.resolve()],
        resolv_conf=postfix.state_dir / "resolv.conf",
        user=user,
        env=env,
    )
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def _submit(sender: RunningMTA, user: str, password: str, recipient: str, token: str) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with smtplib.SMTP(sender.address, 587, local_hostname="laptop.example.test", timeout=20) as c:
        c.starttls(context=context)
        c.login(user, password)
        c.sendmail(user, [recipient], f"Subject: {token}\r\n\r\nTLSRPT test\r\n")


@pytest.fixture(scope="module")
def stack(
    mta_factory: MTAFactory,
    dns_stack: DNSStack,
    local_ca: LocalCA,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    tag = uuid.uuid4().hex[:6]
    sender_domain = f"rpt-sender-{tag}.{ZONE}"
    good, bad = f"rpt-ok-{tag}.{ZONE}", f"rpt-bad-{tag}.{ZONE}"
    unusable = f"rpt-unusable-{tag}.{ZONE}"
    sts = f"rpt-sts-{tag}.{ZONE}"
    receiving = (good, bad, unusable, sts)
    mailbox_host = f"rpt-collector-{tag}.{ZONE}"
    collector_address = addr(COLLECTOR_HOST)

    # The collector: SMTP on 25 (where the sender MTA delivers the mailto: report), HTTPS.
    work = tmp_path_factory.mktemp("tlsrpt-sending")
    cert = local_ca.issue_server_cert([mailbox_host], out_dir=work / "cert")
    database = f"sqlite:///{work / 'reports.db'}"
    config = {
        "hostname": mailbox_host,
        # Only the served domains and their MX hosts, as collector_config renders them: a DANE
        # report names the MX host as policy-domain and counts for its domain (attribution.py).
        "domains": list(receiving),
        "mxHosts": {d: [f"mx.{d}"] for d in receiving},
        "mailboxDomains": [mailbox_host],
        "smtp": {"address": collector_address, "port": 25},
        "https": {"address": collector_address, "port": 8443},
        "api": {"address": collector_address, "port": 8080},
        "certificates": [{"certFile": str(cert.chain_file), "keyFile": str(cert.key_file)}],
        "database": database,
        "limits": {},
    }
    collector = CollectorProcess(work / "collector.json", work / "collector.log", config)
    collector.start()

    receiver = mta_factory(
        RECEIVER_HOST,
        [DomainConfig(d, (f"mx.{d}",), ("bob",)) for d in (good, bad, unusable)],
        accounts={d: {"bob": "unused"} for d in (good, bad, unusable)},
    )
    # The MTA-STS destination: its own MX (a certificate for mx.<sts> from the test CA), no
    # TLSA, and its policy over HTTPS.
    sts_receiver = mta_factory(
        STS_RECEIVER_HOST,
        [DomainConfig(sts, (f"mx.{sts}",), ("bob",))],
        options=MTAOptions(mta_sts_fallback=False),
        accounts={sts: {"bob": "unused"}},
    )
    policy_cert = local_ca.issue_server_cert([f"mta-sts.{sts}"], out_dir=work / "policy-cert")
    policy_server = serve_policy(
        addr(STS_POLICY_HOST),
        f"version: STSv1\r\nmode: enforce\r\nmx: mx.{sts}\r\nmax_age: 86400\r\n",
        policy_cert.chain_file,
        policy_cert.key_file,
    )
    matching = receiver.cert.spki_sha256()
    wrong = hashlib.sha256(b"not the receiver's key").hexdigest()
    https_rua = f"https://{mailbox_host}:8443/v1/tlsrpt"
    _publish(
        dns_stack,
        [
            (good, "MX", f"10 mx.{good}."),
            (f"mx.{good}", "A", receiver.address),
            (f"_25._tcp.mx.{good}", "TLSA", f"3 1 1 {matching}"),
            (f"_smtp._tls.{good}", "TXT", f'"v=TLSRPTv1; rua=mailto:tlsrpt@{mailbox_host}"'),
            (bad, "MX", f"10 mx.{bad}."),
            (f"mx.{bad}", "A", receiver.address),
            (f"_25._tcp.mx.{bad}", "TLSA", f"3 1 1 {wrong}"),
            (f"_smtp._tls.{bad}", "TXT", f'"v=TLSRPTv1; rua={https_rua}"'),
            (unusable, "MX", f"10 mx.{unusable}."),
            (f"mx.{unusable}", "A", receiver.address),
            # Matching type 7 is unassigned (RFC 6698 §7.4): the RRset has no usable record.
            (f"_25._tcp.mx.{unusable}", "TLSA", f"3 1 7 {matching}"),
            (f"_smtp._tls.{unusable}", "TXT", f'"v=TLSRPTv1; rua={https_rua}"'),
            (sts, "MX", f"10 mx.{sts}."),
            (f"mx.{sts}", "A", sts_receiver.address),
            (f"_mta-sts.{sts}", "TXT", '"v=STSv1; id=1"'),
            (f"mta-sts.{sts}", "A", addr(STS_POLICY_HOST)),
            (f"_smtp._tls.{sts}", "TXT", f'"v=TLSRPTv1; rua={https_rua}"'),
            (mailbox_host, "MX", f"10 {mailbox_host}."),
            (mailbox_host, "A", collector_address),
        ],
    )
    for name, rdtype in [
        (f"_25._tcp.mx.{good}", "TLSA"),
        (f"_25._tcp.mx.{bad}", "TLSA"),
        (f"_smtp._tls.{good}", "TXT"),
        (f"_smtp._tls.{bad}", "TXT"),
        (f"_25._tcp.mx.{unusable}", "TLSA"),
        (f"_smtp._tls.{unusable}", "TXT"),
        (unusable, "MX"),
        (mailbox_host, "A"),
        (good, "MX"),
        (bad, "MX"),
        (sts, "MX"),
        (f"_mta-sts.{sts}", "TXT"),
        (f"mta-sts.{sts}", "A"),
        (f"_smtp._tls.{sts}", "TXT"),
    ]:
        _wait_secure(dns_stack, name, rdtype)

    # The sender: rendered with TLSRPT sending, its collector started before any delivery.
    sender = mta_factory(
        SENDER_HOST,
        [DomainConfig(sender_domain, (f"mx.{sender_domain}",), ("alice",))],
        options=MTAOptions(tlsrpt=TLSRPTSending(organization_name=ORGANIZATION)),
        accounts={sender_domain: {"alice": "secret alice"}},
    )
    state = sender.postfix.state_dir
    reporter_dir = state / "tlsrpt"
    reporter_dir.mkdir(exist_ok=True)
    reporter_dir.chmod(0o777)  # an emptyDir, as in the pod
    paths = ReporterPaths(
        state_dir=str(reporter_dir),
        config_file=str(state / "tlsrpt-reporter.cfg"),
        postfix_config_dir=str(sender.postfix.config_dir),
    )
    assert sender.config.parameter("smtp_tlsrpt_socket_name") == paths.socket
    # Inside the image only the state directory is visible: the test CA goes there.
    ca_file = state / "test-ca.pem"
    ca_file.write_bytes(local_ca.ca_file.read_bytes())
    sts_resolver = trust_test_ca_for_mta_sts(sender, ca_file, _start_in_image)
    config_file = Path(paths.config_file)
    config_file.write_text(render_reporter_conf(TLSRPTSending(ORGANIZATION), sender_domain, paths))
    collectd = _start_in_image(
        sender,
        "tlsrpt-collectd",
        ["tlsrpt-collectd", "--config_file", str(config_file)],
        Account(NOBODY, NOBODY),
    )
    _wait_for("collectd socket", lambda: Path(paths.socket).is_socket(), 30, sender.log)
    try:
        yield Stack(
            sender,
            sender_domain,
            good,
            bad,
            unusable,
            sts,
            collector,
            database,
            reporter_dir,
            config_file,
            collectd,
            ca_file,
        )
    finally:
        _stop(collectd)
        _stop(sts_resolver)
        policy_server.shutdown()
        collector.stop()
        print(f"\ncollectd log:\n{(state / 'tlsrpt-collectd.log').read_text()[-3000:]}")


def test_reports_reach_the_collector_with_policy_types_and_result_types(stack: Stack) -> None:
    sender = stack.sender
    user = f"alice@{stack.sender_domain}"
    _submit(sender, user, "secret alice", f"bob@{stack.good}", "good-0")
    _submit(sender, user, "secret alice", f"bob@{stack.bad}", "bad-0")
    _submit(sender, user, "secret alice", f"bob@{stack.unusable}", "unusable-0")
    _submit(sender, user, "secret alice", f"bob@{stack.sts}", "sts-0")

    good, bad = re.escape(stack.good), re.escape(stack.bad)
    _wait_for(
        "the delivery to the TLSA-matching domain",
        lambda: re.search(rf"to=<bob@{good}>.*status=sent", sender.log()),
        90,
        sender.log,
    )
    _wait_for(
        "a deferral at the mismatching TLSA",
        lambda: re.search(rf"to=<bob@{bad}>.*status=deferred", sender.log()),
        90,
        sender.log,
    )
    _wait_for(
        "the delivery to the MTA-STS domain",
        lambda: re.search(rf"to=<bob@{re.escape(stack.sts)}>.*status=sent", sender.log()),
        90,
        lambda: sender.log() + _read(stack.reporter_dir.parent / "tlspolicy.log"),
    )
    _wait_for(
        "a TLSRPT event for the unusable TLSA RRset",
        lambda: re.search(rf"TLSRPT: .*domain={re.escape(stack.unusable)}", sender.log()),
        90,
        sender.log,
    )
    # The collector commits every 5 s (its socket timeout); the datagrams are in the day's DB.
    collectd_db = stack.reporter_dir / "collectd.sqlite"

    def counted() -> bool:
        with sqlite3.connect(f"file:{collectd_db}?mode=ro", uri=True) as db:
            rows = db.execute("SELECT domain, cntrtotal, cntrfailure FROM finalresults").fetchall()
        totals: dict[str, list[int]] = {}
        for domain, total, failed in rows:
            entry = totals.setdefault(domain, [0, 0])
            entry[0] += total
            entry[1] += failed
        return (
            totals.get(stack.good, [0, 0])[0] >= 1
            and totals.get(stack.bad, [0, 0])[1] >= 1
            and totals.get(stack.unusable, [0, 0])[1] >= 1
            and totals.get(stack.sts, [0, 0])[0] >= 1
        )

    _wait_for("the datagrams in collectd's database", counted, 30, sender.log)

    # The shortened clock: end the UTC day now (module docstring), then start the reporter.
    # `unshare`, `sh`, `chroot` and `env` exec the daemon: the pid is tlsrpt-collectd's.
    os.kill(stack.collectd.pid, signal.SIGUSR2)
    _wait_for(
        "the day's database closed",
        lambda: "FOR DEVELOPMENT" in _read(stack.reporter_dir.parent / "tlsrpt-collectd.log"),
        30,
    )
    reportd = _start_in_image(
        sender,
        "tlsrpt-reportd",
        # no_new_privs as in the pod (allowPrivilegeEscalation: false): postdrop works through
        # the group postdrop the daemon runs in, not through its set-gid bit.
        ["setpriv", "--no-new-privs", "tlsrpt-reportd", "--config_file", str(stack.config_file)],
        Account(NOBODY, POSTDROP_GID),
        # The collector's certificate is from the test CA, which the POST must trust.
        env={**SHORT_REPORT_CLOCK, "SSL_CERT_FILE": str(stack.ca_file)},
    )
    # DANE's policy-domain is the TLSA base domain, the MX host (Postfix, RFC 7672 §2.2.3);
    # the collector keeps the rows under the served domain whose MX host it is.
    mx = {d: f"mx.{d}" for d in (stack.good, stack.bad, stack.unusable)}
    reported = [*mx, stack.sts]
    try:
        store = open_store(stack.database)
        try:

            def arrived() -> bool:
                return all(store.policy_rows(domain, 0) for domain in reported)

            _wait_for(
                "the four reports at the collector",
                arrived,
                120,
                lambda: (
                    _read(stack.reporter_dir.parent / "tlsrpt-reportd.log")[-4000:]
                    + stack.collector.log()[-3000:]
                    + sender.log()[-3000:]
                ),
            )
            policies = {d: store.policy_rows(d, 0) for d in reported}
            failures = {d: store.failure_rows(d, 0) for d in reported}
            under_mx_names = [store.policy_rows(host, 0) for host in mx.values()]
        finally:
            store.close()
    finally:
        _stop(reportd)

    for report in _sent_reports(stack):
        print(f"\nevidence: report as sent by tlsrpt-reportd:\n{json.dumps(report, indent=2)}")
    for domain in reported:
        print(f"evidence: collector rows for {domain}: {policies[domain]} {failures[domain]}")
    delivered = [line for line in sender.log().splitlines() if "tlsrpt@" in line]
    print("evidence: the mailto: report through the sender MTA:\n" + "\n".join(delivered))
    events = [line for line in sender.log().splitlines() if "TLSRPT:" in line]
    print("evidence: Postfix's TLSRPT events:\n" + "\n".join(events))

    # The reports as sent name the MX hosts; nothing is kept under those names.
    sent_domains = {
        policy["policy"]["policy-domain"]
        for sent in _sent_reports(stack)
        for policy in sent["report"]["policies"]  # type: ignore[index]
    }
    print(f"evidence: policy-domains as sent: {sorted(sent_domains)}")
    assert set(mx.values()) <= sent_domains
    assert under_mx_names == [[], [], []]
    # (a) DANE delivery: policy type tlsa, the session counted as successful.
    (good_policy,) = policies[stack.good]
    assert good_policy.policy_type == "tlsa"
    assert good_policy.successful >= 1
    assert good_policy.failed == 0
    assert good_policy.organization == ORGANIZATION
    assert failures[stack.good] == []
    # (b) A TLSA RRset without a usable record: failed sessions, result type tlsa-invalid
    # (RFC 8460 §4.3.2.2: "None of the records in the RRset were found to be valid").
    (unusable_policy,) = policies[stack.unusable]
    assert unusable_policy.failed >= 1
    assert {f.result_type for f in failures[stack.unusable]} == {"tlsa-invalid"}
    assert sum(f.sessions for f in failures[stack.unusable]) >= 1
    # A valid TLSA record that does not match the server's key is a certificate the DANE
    # policy does not trust: Postfix 3.10 reports it as certificate-not-trusted (§4.3.2.1).
    (bad_policy,) = policies[stack.bad]
    assert bad_policy.policy_type == "tlsa"
    assert bad_policy.failed >= 1
    assert bad_policy.successful == 0
    assert {f.result_type for f in failures[stack.bad]} == {"certificate-not-trusted"}
    # (d) MTA-STS only (no TLSA): policy type sts, named by the DANE-first socketmap's answer.
    (sts_policy,) = policies[stack.sts]
    assert sts_policy.policy_type == "sts"
    assert sts_policy.successful >= 1
    assert sts_policy.failed == 0
    assert stack.sts in sent_domains
    (sts_sent,) = [
        policy["policy"]
        for sent in _sent_reports(stack)
        for policy in sent["report"]["policies"]  # type: ignore[index]
        if policy["policy"]["policy-domain"] == stack.sts
    ]
    # The policy as the resolver fetched it (RFC 8460 §4.4 policy-string, RFC 8461 §3.2).
    assert "mode: enforce" in sts_sent.get("policy-string", []), sts_sent
    assert sts_sent["mx-host"] == [f"mx.{stack.sts}"], sts_sent
    policy_answers = [
        line
        for line in _read(stack.reporter_dir.parent / "tlspolicy.log").splitlines()
        if f"domain={stack.sts}" in line
    ]
    print("evidence: the socketmap's answers for the MTA-STS domain:\n" + "\n".join(policy_answers))
    # The mailto: report left through the sender MTA itself.
    assert any("status=sent" in line for line in delivered), delivered


def _read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def _sent_reports(stack: Stack) -> list[dict[str, object]]:
    db = stack.reporter_dir / "reportd.sqlite"
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as connection:
        rows = connection.execute(
            "SELECT r.report, d.destination, d.status FROM reports r "
            "JOIN destinations d ON d.d_r_id = r.r_id ORDER BY r.r_id"
        ).fetchall()
    reports = []
    for report, destination, status in rows:
        assert status == "sent", (destination, status)
        reports.append({"destination": destination, "report": json.loads(report)})
    return reports


@pytest.mark.controlplane
@pytest.mark.node
def test_in_the_mta_pod_the_reporter_runs_as_nobody_and_its_sendmail_reaches_postfix(
    cluster: ClusterStack, example: dict[str, object]
) -> None:
    """The example's MTA pod on the real node (kubelet, containerd, runc, the chart's operator):
    the two reporter containers run, the socket is there, and the report daemon's `sendmail`
    (nobody in postdrop, no_new_privs) hands a message to Postfix, which delivers it."""
    (pod,) = ready_pods(cluster, NAMESPACE, WORKLOADS["mta"][3])
    name = pod["metadata"]["name"]
    statuses = {
        s["name"]: s
        for s in [*pod["status"]["containerStatuses"], *pod["status"]["initContainerStatuses"]]
    }
    for container in ("tlsrpt-collectd", "tlsrpt-reportd"):
        assert "running" in statuses[container]["state"], statuses[container]

    def run(container: str, script: str) -> str:
        command = ["exec", "-n", NAMESPACE, name, "-c", container, "--", "sh", "-c", script]
        return kubectl(cluster.kubeconfig, *command)

    identity = run("tlsrpt-reportd", "id -u; id -G; grep NoNewPrivs /proc/self/status")
    assert identity.split() == ["65534", "103", "NoNewPrivs:", "1"], identity
    socket = run("tlsrpt-collectd", "ls -l /var/lib/tlsrpt/collectd.sock")
    assert socket.startswith("srw-rw-rw-"), socket
    token = uuid.uuid4().hex
    run(
        "tlsrpt-reportd",
        # What tlsrpt-reportd runs for a mailto: rua (sendmail_script of the rendered file).
        "printf 'To: postmaster@example.test\\nSubject: %s\\n\\nfrom the reporter\\n' "
        f"{token} | MAIL_CONFIG=/etc/mailward/postfix sendmail -i -t -f postmaster@example.test",
    )

    def delivered() -> str | None:
        log = kubectl(cluster.kubeconfig, "logs", "-n", NAMESPACE, name, "-c", "postfix")
        lines = log.splitlines()
        queue_ids = {
            line.split(": ")[1]
            for line in lines
            if "postfix/pickup" in line and "uid=65534" in line
        }
        sent = [
            line
            for line in lines
            if any(f"{q}: to=<postmaster@example.test>" in line for q in queue_ids)
            and "status=sent" in line
        ]
        return "\n".join([*(x for x in lines if "uid=65534" in x), *sent]) if sent else None

    evidence = wait_for("the reporter's message delivered by Postfix", delivered, timeout=60)
    reportd_log = kubectl(cluster.kubeconfig, "logs", "-n", NAMESPACE, name, "-c", "tlsrpt-reportd")
    print(f"\nevidence: reportd container: uid, groups, no_new_privs: {identity.split()}")
    print(f"evidence: collector socket: {socket.strip()}")
    print(f"evidence: sendmail from tlsrpt-reportd through Postfix:\n{evidence}")
    print("evidence: tlsrpt-reportd log:\n" + "\n".join(reportd_log.splitlines()[-5:]))
