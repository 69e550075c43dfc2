"""The demo's TLSRPT collector: run on loopback from exactly the configuration the operator
applied, read back from the API server, and optionally fed one sample report.

The operator applies the collector's ConfigMap, StatefulSet and Services in the MailDomain's
namespace (parts/tlsrpt.py); the local control plane has no kubelet, so the StatefulSet never
runs. This module plays the kubelet: it reads the ConfigMap, the StatefulSet's volumes and the
TLS Secrets they name back from the API server, and runs `mailward collect-reports` with that
configuration. Only what a pod gets from its environment differs: listening addresses
(127.77.0.26), the paths the Secret volumes would be mounted at, and the database file on the
demo's state directory.
"""

from __future__ import annotations

import base64
import gzip
import json
import smtplib
import ssl
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.mime.application import MIMEApplication
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from pathlib import Path
from typing import Any

from mailward.localstack._process import (
    ManagedProcess,
    StackError,
    http_ok,
    port_is_free,
    wait_until,
)
from mailward.localstack.controlplane import kubectl
from mailward.render.mta_objects import CONFIG_HASH_ANNOTATION
from mailward.render.tlsrpt_objects import CONFIG_KEY, NAME, TLS_DIR
from mailward.tlsrpt.config import CollectorConfig, Listen
from mailward.tlsrpt.rua import MAILBOX_LOCAL_PART

DEMO_ADDRESS = "127.77.0.26"


@dataclass(frozen=True)
class DemoCollector:
    process: ManagedProcess
    api_url: str
    smtp: tuple[str, int]
    https: tuple[str, int]
    config_file: Path

    @property
    def operator_env(self) -> dict[str, str]:
        """What the operator needs to read the collector's evaluation."""
        return {"MAILWARD_TLSRPT_COLLECTOR_URL": self.api_url}


def start_tlsrpt_collector(
    state_dir: Path,
    kubeconfig: Path,
    *,
    namespace: str = "default",
    address: str = DEMO_ADDRESS,
    smtp_port: int = 25,
    https_port: int = 443,
    api_port: int = 9108,
    feed_sample: bool = True,
) -> DemoCollector:
    """Read back the collector's configuration the operator applied; run it; feed a sample."""
    state_dir = state_dir.resolve() / "tlsrpt"
    state_dir.mkdir(parents=True, exist_ok=True)

    def applied() -> bool:
        found = kubectl(
            kubeconfig, "get", "statefulset", NAME, "-n", namespace, "--ignore-not-found", "-o",
            "name",
        )  # fmt: skip
        return bool(found.strip())

    wait_until(
        applied,
        timeout=60,
        interval=0.5,
        what=f"the operator to apply the TLSRPT collector in namespace {namespace}",
    )
    configmap = json.loads(
        kubectl(kubeconfig, "get", "configmap", NAME, "-n", namespace, "-o", "json")
    )
    config = CollectorConfig.model_validate_json(configmap["data"][CONFIG_KEY])
    statefulset = json.loads(
        kubectl(kubeconfig, "get", "statefulset", NAME, "-n", namespace, "-o", "json")
    )
    pod = statefulset["spec"]["template"]["spec"]
    secret_of_volume = {
        v["name"]: v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v
    }
    tls_dir = state_dir / "tls"
    for volume, secret_name in secret_of_volume.items():
        secret = json.loads(
            kubectl(kubeconfig, "get", "secret", secret_name, "-n", namespace, "-o", "json")
        )
        target = tls_dir / volume
        target.mkdir(parents=True, exist_ok=True)
        for key in ("tls.crt", "tls.key"):
            path = target / key
            path.write_bytes(base64.b64decode(secret["data"][key]))
            path.chmod(0o600)
    local = config.model_copy(
        update={
            "smtp": Listen(address=address, port=smtp_port),
            "https": Listen(address=address, port=https_port),
            "api": Listen(address=address, port=api_port),
            "certificates": [
                c.model_copy(
                    update={
                        "cert_file": c.cert_file.replace(TLS_DIR, str(tls_dir)),
                        "key_file": c.key_file.replace(TLS_DIR, str(tls_dir)),
                    }
                )
                for c in config.certificates
            ],
            "database": f"sqlite:///{state_dir / 'reports.db'}",
        }
    )
    config_file = state_dir / "collector.json"
    config_file.write_text(json.dumps(local.model_dump(mode="json", by_alias=True), indent=2))

    for port in (smtp_port, https_port, api_port):
        # Something else answering there would pass the health check in our place.
        if not port_is_free(address, port):
            raise StackError(f"{address}:{port} is in use; is an earlier collector running?")
    process = ManagedProcess(
        "tlsrpt-collector",
        [sys.executable, "-m", "mailward", "collect-reports", "--config", str(config_file)],
        state_dir,
    )
    process.start()
    api_url = f"http://{address}:{api_port}"
    wait_until(
        lambda: http_ok(f"{api_url}/healthz"),
        timeout=30,
        what="the TLSRPT collector",
        process=process,
    )
    # The kubelet's and the StatefulSet controller's part: report the pod that now runs.
    revision = f"{NAME}-{_config_hash(statefulset)[:10]}"
    running = {
        "observedGeneration": statefulset["metadata"]["generation"],
        "replicas": 1,
        "readyReplicas": 1,
        "availableReplicas": 1,
        "currentReplicas": 1,
        "updatedReplicas": 1,
        "currentRevision": revision,
        "updateRevision": revision,
    }
    kubectl(
        kubeconfig, "patch", "statefulset", NAME, "-n", namespace, "--subresource=status",
        "--type=merge", "-p", json.dumps({"status": running}),
    )  # fmt: skip
    collector = DemoCollector(
        process, api_url, (address, smtp_port), (address, https_port), config_file
    )
    if feed_sample:
        try:
            mailbox = f"{MAILBOX_LOCAL_PART}@{config.mailbox_domains[0]}"
            feed_sample_report(collector, config.domains[0], mailbox)
        except BaseException:
            process.stop()
            raise
    return collector


def _config_hash(statefulset: dict[str, Any]) -> str:
    annotations = statefulset["spec"]["template"]["metadata"].get("annotations") or {}
    return str(annotations.get(CONFIG_HASH_ANNOTATION, ""))


def sample_report(domain: str, now: datetime | None = None) -> dict[str, Any]:
    """A report in the shape Google sends, with DANE and MTA-STS failures to look at."""
    now = now or datetime.now(UTC).replace(microsecond=0)
    end = now - timedelta(hours=1)
    start = end - timedelta(days=1) + timedelta(seconds=1)
    stamp = "%Y-%m-%dT%H:%M:%SZ"
    return {
        "organization-name": "Demo Sender Inc.",
        "date-range": {
            "start-datetime": start.strftime(stamp),
            "end-datetime": end.strftime(stamp),
        },
        "contact-info": "smtp-tls-reporting@sender.example",
        "report-id": f"{start.strftime(stamp)}_{domain}_demo",
        "policies": [
            {
                "policy": {
                    "policy-type": "tlsa",
                    "policy-domain": domain,
                    "policy-string": ["3 1 1 0000"],
                    "mx-host": [f"mx1.{domain}"],
                },
                "summary": {
                    "total-successful-session-count": 970,
                    "total-failure-session-count": 30,
                },
                "failure-details": [
                    {
                        "result-type": "tlsa-invalid",
                        "sending-mta-ip": "192.0.2.10",
                        "receiving-mx-hostname": f"mx1.{domain}",
                        "failed-session-count": 30,
                    },
                ],
            },
            {
                "policy": {
                    "policy-type": "sts",
                    "policy-domain": domain,
                    "policy-string": [
                        "version: STSv1",
                        "mode: enforce",
                        f"mx: mx1.{domain}",
                        "max_age: 604800",
                    ],
                },
                "summary": {
                    "total-successful-session-count": 1200,
                    "total-failure-session-count": 0,
                },
            },
        ],
    }


def feed_sample_report(collector: DemoCollector, domain: str, mailbox: str) -> str:
    """Mail one report as a sending MTA would (opportunistic STARTTLS); the server's answer."""
    report = sample_report(domain)
    message = MIMEMultipart("report")
    message.set_param("report-type", "tlsrpt")
    message["From"] = "noreply-smtp-tls-reporting@sender.example"
    message["To"] = mailbox
    message["Subject"] = f"Report Domain: {domain} Submitter: sender.example"
    message["TLS-Report-Domain"] = domain
    message["TLS-Report-Submitter"] = "sender.example"
    message.attach(MIMEText("This is an aggregate TLS report from sender.example.\n"))
    part = MIMEApplication(gzip.compress(json.dumps(report).encode()), _subtype="tlsrpt+gzip")
    part.add_header(
        "Content-Disposition",
        "attachment",
        filename=f"sender.example!{domain}!{int(time.time()) - 86400}!"
        f"{int(time.time())}!demo.json.gz",
    )
    message.attach(part)
    # Like a sending MTA to a rua host: encrypt, but do not insist on a verified certificate.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with smtplib.SMTP(*collector.smtp, timeout=30) as smtp:
        smtp.starttls(context=context)
        # SMTP lines end in CRLF (RFC 5321 §2.3.8); smtplib converts only str messages.
        data = message.as_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        refused = smtp.sendmail("noreply@sender.example", [mailbox], data)
        if refused:
            raise StackError(f"the collector refused the sample report: {refused}")
        code, text = smtp.noop()
    return f"{code} {text.decode(errors='replace')}"


def main(argv: list[str] | None = None) -> int:
    """`python -m mailward.localstack.demo_tlsrpt --state-dir .local/stack --kubeconfig K`:
    for scripts/demo.sh, after the example MailDomain is applied."""
    import argparse

    parser = argparse.ArgumentParser(description="start the demo's TLSRPT collector")
    parser.add_argument("--state-dir", type=Path, default=Path(".local/stack"))
    parser.add_argument("--kubeconfig", type=Path, required=True)
    parser.add_argument("--namespace", default="default")
    parser.add_argument("--no-sample", action="store_true", help="do not feed a sample report")
    args = parser.parse_args(argv)
    try:
        collector = start_tlsrpt_collector(
            args.state_dir,
            args.kubeconfig,
            namespace=args.namespace,
            feed_sample=not args.no_sample,
        )
    except StackError as error:
        print(f"[stack] TLSRPT collector: {error}", file=sys.stderr)
        return 2
    print(
        f"[stack] TLSRPT collector: SMTP {collector.smtp[0]}:{collector.smtp[1]}, HTTPS "
        f"{collector.https[0]}:{collector.https[1]}, API {collector.api_url} "
        f"(pid {collector.process.pid()}, log {collector.process.log_file})",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
