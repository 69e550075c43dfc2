"""MTA-STS changes in a safe order, in the real operator with the real policy endpoint and BIND
(RFC 8461 §8.3 withdrawal, and an MX change under `enforce`).

On a SHORTENED bound: `spec.mtaSts.agingSeconds` (20 s, 15 s) instead of the policies' max_age
(one day), and an MX TTL of 60 s cut to the same bound. Every observation is timestamped
(seconds since the change) and printed as `evidence:`.

It runs on a control plane, a policy endpoint and an operator of its own (module scope), as
test_mtasts_part.py does, beside the session's BIND (`dns_stack`).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from kubernetes import config

from mailward.api.v1alpha1 import API_GROUP, API_VERSION
from mailward.render.mta_sts import parse_policy, policy_id
from mailward_localstack._process import free_port, start_watchdog
from mailward_localstack.controlplane import ControlPlane, wait_established
from mailward_localstack.dns import DNSStack
from mailward_localstack.pki import IssuedCert, LocalCA
from tests.fixtures_dnspublish import (
    ZONE,
    dns_provider_manifest,
    tsig_secret_manifest,
    zone_rrsets,
)
from tests.fixtures_operator import REPO, Kube
from tests.fixtures_policy import POLICY_NAMESPACE, PolicyEndpoint, running_policy_endpoint
from tests.fixtures_tlsrpt import MAILBOX_HOST, CollectorProcess
from tests.manifests import tls_secret_manifest
from tests.net import addr
from tests.processes import mailward_process
from tests.tlsrpt_client import post_report
from tests.tlsrpt_samples import make_report

pytestmark = pytest.mark.controlplane

ENDPOINT_ADDRESS = addr(47)
APISERVER_ADDRESS = addr(48)
COLLECTOR_ADDRESS = addr(49)


class Operator:
    """The operator process, which a test may kill (SIGKILL, as a crash) and start again."""

    def __init__(self, env: dict[str, str], state: Path) -> None:
        self._env = env
        self._state = state
        self._stack = contextlib.ExitStack()
        self.starts = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def log_file(self) -> Path:
        return self._state / f"operator-{self.starts}.log"

    def start(self, **extra_env: str) -> None:
        self.starts += 1
        liveness = f"http://127.0.0.1:{free_port('127.0.0.1')}/healthz"
        self.process = self._stack.enter_context(
            mailward_process(
                ["run", "--all-namespaces", "--liveness", liveness],
                env={**self._env, **extra_env},
                log_file=self.log_file,
                ready_url=liveness,
                what="the operator",
            )
        )

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait()
        self._stack.close()


@dataclass
class Lab:
    kube: Kube
    endpoint: PolicyEndpoint
    dns: DNSStack
    ca: LocalCA
    operator: Operator

    @property
    def operator_log(self) -> Path:
        return self.operator.log_file


@pytest.fixture(scope="module")
def lab(
    tmp_path_factory: pytest.TempPathFactory, local_ca: LocalCA, dns_stack: DNSStack
) -> Iterator[Lab]:
    if os.geteuid() != 0:
        pytest.skip("the policy endpoint listens on port 443 (root)")
    state = tmp_path_factory.mktemp("mtasts-withdrawal")
    plane = ControlPlane(state / "controlplane", host=APISERVER_ADDRESS)
    watchdog = start_watchdog(plane.state_dir)
    try:
        plane.start()
        api = config.new_client_from_config(config_file=str(plane.kubeconfig))
        kube = Kube(plane.kubeconfig, api)
        kube.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
        wait_established(plane.kubeconfig, "maildomains.mailward.io")
        wait_established(plane.kubeconfig, "dnsproviders.mailward.io")
        operator_env = {
            **os.environ,
            "KUBECONFIG": str(plane.kubeconfig),
            "MAILWARD_TLS_SECRET_RETRY_SECONDS": "2",
            "MAILWARD_MTA_RETRY_SECONDS": "1",
            "MAILWARD_DNS_RETRY_SECONDS": "1",
            "MAILWARD_DNS_RETRY_MAX_SECONDS": "4",
            "MAILWARD_RESYNC_SECONDS": "10",
            "MAILWARD_POLICY_ENDPOINT_URL": f"https://{ENDPOINT_ADDRESS}:443",
            "MAILWARD_POLICY_CA_FILE": str(local_ca.ca_file),
            "MAILWARD_POLICY_NAMESPACE": POLICY_NAMESPACE,
            "MAILWARD_POLICY_RETRY_SECONDS": "1",
        }
        operator = Operator(operator_env, state)
        with running_policy_endpoint(
            kube, local_ca, ENDPOINT_ADDRESS, state / "serve.log"
        ) as endpoint:
            operator.start()
            try:
                yield Lab(kube, endpoint, dns_stack, local_ca, operator)
            finally:
                operator.kill()
    finally:
        plane.stop()
        watchdog.terminate()
        watchdog.wait()


@dataclass
class Domain:
    lab: Lab
    namespace: str
    name: str
    domain: str
    manifest: dict[str, Any]

    def body(self) -> dict[str, Any] | None:
        result = self.lab.kube.kubectl(
            "get", "maildomain", self.name, "-n", self.namespace, "-o", "json", check=False
        )
        return json.loads(result.stdout) if result.returncode == 0 else None

    def condition(self, type_: str) -> dict[str, Any]:
        body = self.body() or {}
        for condition in body.get("status", {}).get("conditions", []):
            if condition["type"] == type_:
                return dict(condition)
        return {}

    def served(self) -> str | None:
        """The policy text the endpoint serves now (None: not 200)."""
        status, _, text = self.lab.endpoint.fetch(f"mta-sts.{self.domain}")
        return text.decode("ascii") if status == 200 else None

    def records(self) -> dict[tuple[str, str], tuple[str, ...]]:
        """The domain's RRsets in BIND, by AXFR (name, type) → rdata."""
        return {
            key: rrset.rdata
            for key, rrset in zone_rrsets(self.lab.dns).items()
            if key[0].endswith(f"{self.domain}.")
        }

    def sts_txt(self) -> str | None:
        data = self.records().get((f"_mta-sts.{self.domain}.", "TXT"))
        return data[0].strip('"') if data else None

    def mx(self) -> tuple[str, ...] | None:
        return self.records().get((f"{self.domain}.", "MX"))

    def patch(self, spec: dict[str, Any]) -> None:
        self.lab.kube.kubectl(
            "patch",
            "maildomain",
            self.name,
            "-n",
            self.namespace,
            "--type=merge",
            "-p",
            json.dumps({"spec": spec}),
        )

    def wait(self, what: str, probe: Callable[[], Any], timeout: float = 60) -> Any:
        try:
            return self.lab.kube.wait_for(what, probe, timeout=timeout, interval=0.3)
        except AssertionError as error:
            log = self.lab.operator_log.read_text(errors="replace")[-4000:]
            status = (self.body() or {}).get("status")
            raise AssertionError(f"{error}\nstatus: {status}\n{log}") from None


def make_domain(
    lab: Lab, mx_hosts: list[str], mta_sts: dict[str, Any], domain: str | None = None
) -> Domain:
    kube = lab.kube
    namespace = f"t-{uuid.uuid4().hex[:10]}"
    kube.kubectl("create", "namespace", namespace)
    domain = domain or f"w{uuid.uuid4().hex[:10]}.{ZONE}"
    lab.endpoint.add_certificate(domain)
    names = [f"{h}.{domain}" for h in ("mx1", "mx2")]
    kube.apply(tls_secret_manifest(namespace, lab.ca.issue_server_cert(names), "mx-tls"))
    kube.apply(tsig_secret_manifest(namespace, lab.dns.tsig.secret))
    kube.apply(dns_provider_manifest(lab.dns, namespace))
    manifest = {
        "apiVersion": f"{API_GROUP}/{API_VERSION}",
        "kind": "MailDomain",
        "metadata": {"name": "sts", "namespace": namespace},
        "spec": {
            "domain": domain,
            "mx": [
                {"host": f"{h}.{domain}", "priority": 10, "addresses": [addr(25)]} for h in mx_hosts
            ],
            "tls": {"secretName": "mx-tls"},
            "dns": {
                "providerRef": {"kind": "DNSProvider", "name": "local-bind"},
                "ttl": {"default": 60},
            },
            "dane": {"enabled": False},
            "mtaSts": mta_sts,
            "tlsRpt": {"rua": [f"mailto:tlsrpt@{domain}"]},
        },
    }
    kube.apply(manifest)
    handle = Domain(lab, namespace, "sts", domain, manifest)
    enforced = handle.wait(
        "the enforced policy served and announced",
        lambda: (
            (text := handle.served())
            and handle.sts_txt() == f"v=STSv1; id={policy_id(text)}"
            and text
        ),
    )
    assert f"mode: {mta_sts['mode']}" in enforced
    return handle


class Timeline:
    """Observations, each with the seconds since the change, printed as evidence."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.start = time.monotonic()
        self.wall = datetime.now().astimezone()
        self.rows: list[tuple[float, dict[str, Any]]] = []

    def see(self, **observed: Any) -> float:
        now = time.monotonic() - self.start
        if not self.rows or self.rows[-1][1] != observed:
            print(f"evidence: {self.what} t={now:6.2f}s {observed}")
        self.rows.append((now, observed))
        return now

    def first(self, predicate: Callable[[dict[str, Any]], bool]) -> float:
        return next(t for t, o in self.rows if predicate(o))

    def last(self, predicate: Callable[[dict[str, Any]], bool]) -> float:
        return max(t for t, o in self.rows if predicate(o))


def _id_of(text: str | None) -> str | None:
    return policy_id(text) if text else None


def test_mode_none_serves_the_withdrawal_for_the_bound_then_the_record_goes(lab: Lab) -> None:
    bound = 20
    md = make_domain(lab, ["mx1"], {"mode": "enforce", "maxAge": 86400, "agingSeconds": bound})
    enforced_id = _id_of(md.served())
    timeline = Timeline("withdrawal (mode none, agingSeconds 20)")
    md.patch({"mtaSts": {"mode": "none", "maxAge": 86400, "agingSeconds": bound}})
    deadline = time.monotonic() + bound + 40
    while time.monotonic() < deadline:
        text = md.served()
        facts = parse_policy(text or "")
        txt = md.sts_txt()
        reason = md.condition("MTASTSReady").get("reason")
        timeline.see(
            served=_id_of(text), mode=facts.mode if facts else None, txt=txt, reason=reason
        )
        if txt is None and reason == "Withdrawn":
            break
        time.sleep(0.3)
    status = (md.body() or {})["status"]["mtaSts"]
    none_id = status["policyId"]
    assert none_id != enforced_id
    served_none = timeline.first(lambda o: o["mode"] == "none")
    announced = timeline.first(lambda o: o["txt"] == f"v=STSv1; id={none_id}")
    gone = timeline.first(lambda o: o["txt"] is None)
    # The id changes at the start: announced within seconds of the endpoint serving mode none,
    # and never before it (the TXT names the enforced id until then).
    assert served_none <= announced < served_none + 10
    assert all(
        o["txt"] == f"v=STSv1; id={enforced_id}" for t, o in timeline.rows if t < served_none
    )
    # The record stays for the bound and goes only at its end (counted from the moment the
    # operator saw mode none served, at or after the endpoint served it).
    assert gone >= served_none + bound - 1.0, (served_none, gone)
    assert gone < served_none + bound + 15
    assert all(o["mode"] == "none" for t, o in timeline.rows if t >= served_none)
    events = lab.kube.kubectl(
        "get", "events", "-n", md.namespace, "-o", "jsonpath={.items[*].reason}"
    ).stdout.split()
    assert "Withdrawing" in events
    assert "Withdrawn" in events
    print(
        f"evidence: mode none served at {served_none:.2f}s, `_mta-sts` id {none_id} announced "
        f"at {announced:.2f}s, record removed at {gone:.2f}s (bound {bound} s); events {events}"
    )


def test_deletion_holds_the_object_and_records_for_the_bound(lab: Lab) -> None:
    bound = 15
    md = make_domain(lab, ["mx1"], {"mode": "enforce", "maxAge": 86400, "agingSeconds": bound})
    enforced_id = _id_of(md.served())
    timeline = Timeline("deletion (agingSeconds 15)")
    lab.kube.kubectl("delete", "maildomain", md.name, "-n", md.namespace, "--wait=false")
    deadline = time.monotonic() + bound + 60
    condition: dict[str, Any] = {}
    while time.monotonic() < deadline:
        body = md.body()
        text = md.served()
        facts = parse_policy(text or "")
        if body is not None:
            condition = md.condition("MTASTSReady")
        mx = md.mx()
        timeline.see(
            exists=body is not None,
            served=_id_of(text),
            mode=facts.mode if facts else None,
            txt=md.sts_txt(),
            mx=mx,
            reason=condition.get("reason"),
        )
        if body is None and mx is None:
            break
        time.sleep(0.3)
    served_none = timeline.first(lambda o: o["mode"] == "none")
    withdrawal_id = timeline.rows[-1][1]["served"] or next(
        o["served"] for _, o in timeline.rows if o["mode"] == "none"
    )
    announced = timeline.first(lambda o: o["txt"] == f"v=STSv1; id={withdrawal_id}")
    deleted = timeline.first(lambda o: not o["exists"])
    records_gone = timeline.first(lambda o: o["txt"] is None and o["mx"] is None)
    assert withdrawal_id != enforced_id
    assert served_none < 5  # the endpoint serves mode none from deletionTimestamp on
    assert served_none <= announced < served_none + 10  # the id changes at the start
    # The object and its records stay for the bound, and go only at its end.
    assert deleted >= bound - 1.0, deleted
    assert records_gone >= bound - 1.0, records_gone
    assert all(o["mx"] is not None for t, o in timeline.rows if t < bound - 1.0)
    assert any(o["reason"] == "Withdrawing" for _, o in timeline.rows)
    assert deleted < bound + 30
    events = lab.kube.kubectl(
        "get", "events", "-n", md.namespace, "-o", "jsonpath={.items[*].reason}"
    ).stdout.split()
    assert "Withdrawing" in events  # at the start
    assert "Withdrawn" in events  # at the end
    print(
        f"evidence: deletion: mode none served at {served_none:.2f}s, id {withdrawal_id} "
        f"announced at {announced:.2f}s, MailDomain gone at {deleted:.2f}s, MX and `_mta-sts` "
        f"gone at {records_gone:.2f}s (bound {bound} s)"
    )


def test_mx_change_under_enforce_lists_both_names_before_the_mx_moves(lab: Lab) -> None:
    bound = 20
    md = make_domain(lab, ["mx1"], {"mode": "enforce", "maxAge": 86400, "agingSeconds": bound})
    old, new = f"mx1.{md.domain}", f"mx2.{md.domain}"
    assert md.mx() == (f"10 {old}.",)
    timeline = Timeline("MX change under enforce (agingSeconds 20)")
    spec = md.manifest["spec"]
    md.patch({"mx": [{"host": new, "priority": 10, "addresses": [addr(26)]}]})
    deadline = time.monotonic() + 3 * bound + 60
    while time.monotonic() < deadline:
        facts = parse_policy(md.served() or "")
        timeline.see(
            policy_mx=facts.mx if facts else None,
            mx=md.mx(),
            reason=md.condition("MTASTSReady").get("reason"),
        )
        if facts is not None and facts.mx == (new,) and md.mx() == (f"10 {new}.",):
            break
        time.sleep(0.3)
    assert spec["mx"][0]["host"] == old
    both = timeline.first(lambda o: o["policy_mx"] and set(o["policy_mx"]) == {old, new})
    moved = timeline.first(lambda o: o["mx"] == (f"10 {new}.",))
    dropped = timeline.first(lambda o: o["policy_mx"] == (new,))
    # Never a policy that leaves out a name the MX records give.
    for _, o in timeline.rows:
        names = {r.split()[1].rstrip(".") for r in o["mx"] or ()}
        assert names <= set(o["policy_mx"] or ()), o
    assert both < moved, (both, moved)
    assert moved >= both + bound - 1.0  # aged for the bound before the MX RRset moved
    assert dropped > moved  # the old name leaves the policy only after the move
    assert dropped >= moved + bound - 2.0  # ... and the TTL wait (60 s cut to the bound)
    assert dropped < moved + bound + 15
    print(
        f"evidence: MX change: policy names {old} and {new} from {both:.2f}s, MX RRset moves "
        f"at {moved:.2f}s, {old} leaves the policy at {dropped:.2f}s (bound {bound} s)"
    )


def test_a_restarted_operator_ends_the_withdrawal_at_the_same_time(lab: Lab) -> None:
    """The state lives in status.mtaSts: an operator killed (SIGKILL) mid-withdrawal and started
    again ends it when the first one would have, not a bound after its own start."""
    bound = 20
    md = make_domain(lab, ["mx1"], {"mode": "enforce", "maxAge": 86400, "agingSeconds": bound})
    timeline = Timeline("withdrawal across an operator restart (agingSeconds 20)")
    md.patch({"mtaSts": {"mode": "none", "maxAge": 86400, "agingSeconds": bound}})
    md.wait("Withdrawing", lambda: md.condition("MTASTSReady").get("reason") == "Withdrawing")
    until = md.body()["status"]["mtaSts"]["until"]  # type: ignore[index]
    served_none = timeline.see(event="withdrawing", until=until)
    time.sleep(4)
    lab.operator.kill()
    killed = timeline.see(event="operator killed (SIGKILL)")
    time.sleep(4)
    lab.operator.start()
    restarted = timeline.see(event="operator started again")
    deadline = time.monotonic() + bound + 40
    while time.monotonic() < deadline:
        if md.sts_txt() is None:
            break
        time.sleep(0.3)
    gone_at = datetime.now(UTC)
    gone = timeline.see(event="`_mta-sts` removed", reason=md.condition("MTASTSReady")["reason"])
    end = datetime.fromisoformat(until)
    late = (gone_at - end).total_seconds()
    assert md.body()["status"]["mtaSts"].get("until") is None  # type: ignore[index]
    assert killed < restarted < served_none + bound
    # At the end the first operator set (status.mtaSts.until), not `bound` after the restart.
    assert -0.5 <= late < 8.0, (end, gone_at)
    assert gone < restarted + bound - 3.0, (restarted, gone)
    print(
        f"evidence: restart: withdrawing seen at {served_none:.2f}s (until {until}), killed at "
        f"{killed:.2f}s, restarted at {restarted:.2f}s, record removed at {gone:.2f}s, "
        f"{late:.2f}s after `until` (a clock restarted with the operator: "
        f"{restarted + bound:.2f}s)"
    )


def test_testing_is_promoted_to_enforce_after_clean_reports(
    lab: Lab, tlsrpt_cert: IssuedCert, tmp_path: Path
) -> None:
    """`spec.mtaSts.promoteAfterSeconds` (15 s here): a real collector receives an RFC 8460
    report for the domain counting MTA-STS sessions and no failure; once the testing policy has
    been served that long, the endpoint serves `enforce` and the TXT announces its id."""
    after = 15
    domain = f"p{uuid.uuid4().hex[:10]}.{ZONE}"
    collector = CollectorProcess(
        tmp_path / "collector.json",
        tmp_path / "collector.log",
        {
            "hostname": MAILBOX_HOST,
            "domains": [domain],
            "mailboxDomains": [MAILBOX_HOST],
            "smtp": {"address": COLLECTOR_ADDRESS, "port": free_port(COLLECTOR_ADDRESS)},
            "https": {"address": COLLECTOR_ADDRESS, "port": free_port(COLLECTOR_ADDRESS)},
            "api": {"address": COLLECTOR_ADDRESS, "port": free_port(COLLECTOR_ADDRESS)},
            "certificates": [
                {"certFile": str(tlsrpt_cert.chain_file), "keyFile": str(tlsrpt_cert.key_file)}
            ],
            "database": f"sqlite:///{tmp_path / 'reports.db'}",
            "limits": {},
        },
    )
    collector.start()
    try:
        lab.operator.kill()
        lab.operator.start(MAILWARD_TLSRPT_COLLECTOR_URL=collector.api_url)
        mta_sts = {"mode": "testing", "maxAge": 86400, "promoteAfterSeconds": after}
        md = make_domain(lab, ["mx1"], mta_sts, domain=domain)
        timeline = Timeline("testing -> enforce (promoteAfterSeconds 15)")
        testing_since = md.body()["status"]["mtaSts"]["servedSince"]  # type: ignore[index]
        report = make_report(
            "rfc8460",
            domain=domain,
            index=1,
            end=datetime.now(UTC),
            policy_type="sts",
            successful=42,
            failures=[],
        )
        reply = post_report(
            collector.host,
            collector.https_port,
            server_name=MAILBOX_HOST,
            ca_file=str(lab.ca.ca_file),
            body=json.dumps(report).encode(),
            content_type="application/tlsrpt+json",
        )
        assert reply.code in (200, 201, 202), reply
        timeline.see(event="report posted", status=reply.code)
        deadline = time.monotonic() + after + 60
        while time.monotonic() < deadline:
            body = md.body() or {}
            counts = {
                p["policyType"]: p["last7d"]
                for p in (body.get("status", {}).get("tlsRpt") or {}).get("policies", [])
            }
            text = md.served()
            facts = parse_policy(text or "")
            txt = md.sts_txt()
            timeline.see(
                sts_reports=counts.get("sts"),
                served=facts.mode if facts else None,
                served_id=_id_of(text),
                txt=txt,
                promoted=body.get("status", {}).get("mtaSts", {}).get("promotedTime"),
            )
            # Stop on what was recorded, not on a second read: the timeline must hold the row
            # that ends the wait (the CI rehearsal saw the second read move ahead of it).
            if facts and facts.mode == "enforce" and txt == f"v=STSv1; id={_id_of(text)}":
                break
            time.sleep(0.5)
        counted = timeline.first(lambda o: o.get("sts_reports") == {"successful": 42, "failed": 0})
        enforced = timeline.first(lambda o: o.get("served") == "enforce")
        announced = timeline.first(
            lambda o: (
                o.get("served") == "enforce" and o.get("txt") == f"v=STSv1; id={o['served_id']}"
            )
        )
        body = md.body() or {}
        promoted = datetime.fromisoformat(body["status"]["mtaSts"]["promotedTime"])
        waited = (promoted - datetime.fromisoformat(testing_since)).total_seconds()
        assert waited >= after - 1.0, (testing_since, promoted)
        assert counted <= enforced <= announced
        assert body["spec"]["mtaSts"]["mode"] == "testing"  # the spec is the user's
        events = lab.kube.kubectl(
            "get", "events", "-n", md.namespace, "-o", "jsonpath={.items[*].reason}"
        ).stdout.split()
        assert "PromotedToEnforce" in events
        print(
            f"evidence: promotion: testing served since {testing_since}, the collector's 42 sts "
            f"sessions / 0 failed in status at {counted:.2f}s, promoted at "
            f"{body['status']['mtaSts']['promotedTime']} ({waited:.1f} s after testing began), "
            f"enforce served at {enforced:.2f}s and its id announced by {announced:.2f}s"
        )
    finally:
        collector.stop()
        lab.operator.kill()
        lab.operator.start()
