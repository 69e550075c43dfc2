"""Benchmark: ingest 10,000 TLS reports; reports per second and peak RSS, side by side with
parsedmarc's SMTP TLS report parser on the same files in the same run.

    .venv/bin/python -m tests.bench.tlsrpt_ingest [--reports 10000] [--smtp-reports 10000]

Rows (each in its own process, so peak RSS is that of the row's work alone):
- parsedmarc `parse_report_file(..., offline=True)`: gzip or JSON file → parsed report;
- mailward `parse_report`: the same files → validated Report (limits checked, gzip bounded);
- mailward parse + SQLite store (WAL, synchronous=FULL: one fsync per report, as the collector);
- mailward collector end to end: the same reports as RFC 8460 mails over SMTP with STARTTLS,
  4 connections, each acknowledged only after the commit (peak RSS of the collector process).

parsedmarc is installed into its own virtualenv (.local/bench-parsedmarc) on first use, because
its dependency tree (Elasticsearch, OpenSearch, Kafka, Google and Microsoft Graph clients) is not
something the operator should carry.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
PARSEDMARC_VENV = REPO / ".local" / "bench-parsedmarc"
DOMAIN = "example.test"


def peak_rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def write_corpus(directory: Path, count: int) -> None:
    from tests.tlsrpt_samples import corpus

    for index, sample in enumerate(corpus(DOMAIN, count)):
        suffix = ".json.gz" if sample.gzipped else ".json"
        (directory / f"{sample.shape}!{DOMAIN}!{index:05d}{suffix}").write_bytes(sample.payload())


def worker(kind: str, directory: Path) -> None:
    from mailward.tlsrpt.parse import parse_report

    datas = [f.read_bytes() for f in sorted(directory.iterdir())]
    store = None
    if kind == "store":
        from mailward.tlsrpt.store import Envelope, SQLiteStore

        store = SQLiteStore(str(directory.parent / "bench.db"))
    ok = 0
    start = time.perf_counter()
    for data in datas:
        report = parse_report(data)
        if store is not None:
            envelope = Envelope("bench", "127.0.0.1", report.organization_name.lower(), DOMAIN)
            store.add_report(report, envelope)
        ok += 1
    seconds = time.perf_counter() - start
    print(
        json.dumps(
            {
                "reports": len(datas),
                "ok": ok,
                "failed": len(datas) - ok,
                "seconds": seconds,
                "peak_rss": peak_rss(),
            }
        )
    )


def ensure_parsedmarc() -> Path | None:
    python = PARSEDMARC_VENV / "bin" / "python"
    check = [str(python), "-c", "import parsedmarc"]
    if python.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return python
    print("installing parsedmarc into", PARSEDMARC_VENV, "(once) ...", file=sys.stderr)
    try:
        subprocess.run([sys.executable, "-m", "venv", str(PARSEDMARC_VENV)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "parsedmarc>=8"], check=True, timeout=1200
        )
    except (subprocess.SubprocessError, OSError) as error:
        print(f"parsedmarc could not be installed: {error}", file=sys.stderr)
        return None
    return python


def run_row(argv: list[str]) -> dict[str, Any]:
    result = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=3600,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    if result.returncode != 0:
        raise RuntimeError(f"{argv[:4]} failed:\n{result.stderr[-2000:]}")
    figures: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return figures


def smtp_row(base: Path, count: int) -> dict[str, Any]:
    from mailward_localstack._process import free_port
    from mailward_localstack.pki import LocalCA
    from tests.fixtures_tlsrpt import MAILBOX, MAILBOX_HOST, CollectorProcess
    from tests.net import addr
    from tests.tlsrpt_client import SMTPSender
    from tests.tlsrpt_samples import corpus, report_mail

    ca = LocalCA.create(base / "ca")
    cert = ca.issue_server_cert([MAILBOX_HOST], out_dir=base / "cert")
    host = addr(90)
    config = {
        "hostname": MAILBOX_HOST,
        "domains": [DOMAIN],
        "mailboxDomains": [MAILBOX_HOST],
        "smtp": {"address": host, "port": free_port(host)},
        "https": {"address": host, "port": free_port(host)},
        "api": {"address": host, "port": free_port(host)},
        "certificates": [{"certFile": str(cert.chain_file), "keyFile": str(cert.key_file)}],
        "database": f"sqlite:///{base / 'collector.db'}",
        "limits": {"reportsPerMinute": 1e9, "burst": 10**9},
    }
    collector = CollectorProcess(base / "collector.json", base / "collector.log", config)
    samples = corpus(DOMAIN, count)
    messages = [report_mail(s, domain=DOMAIN, mailbox=MAILBOX) for s in samples]
    codes: list[int] = []
    collector.start()
    try:

        def send(part: list[bytes], source: str) -> None:
            smtp = SMTPSender(
                host,
                collector.smtp_port,
                server_name=MAILBOX_HOST,
                ca_file=str(ca.ca_file),
                source=source,
            )
            for message in part:
                codes.append(smtp.send(message, mail_from="r@sender.example", rcpt=MAILBOX).code)
            smtp.close()

        threads = [
            threading.Thread(target=send, args=(messages[n::4], addr(91 + n))) for n in range(4)
        ]
        start = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        seconds = time.perf_counter() - start
        rss = collector.peak_rss_bytes()
    finally:
        collector.stop()
    return {
        "reports": count,
        "ok": codes.count(250),
        "failed": count - codes.count(250),
        "seconds": seconds,
        "peak_rss": rss,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reports", type=int, default=10_000)
    parser.add_argument("--smtp-reports", type=int, default=10_000)
    parser.add_argument("--worker", choices=["parse", "store"])
    parser.add_argument("directory", nargs="?", type=Path)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.directory)
        return 0

    rows: list[tuple[str, dict[str, Any] | str]] = []
    with tempfile.TemporaryDirectory(prefix="tlsrpt-bench-") as tmp:
        base = Path(tmp)
        files = base / "reports"
        files.mkdir()
        write_corpus(files, args.reports)
        size = sum(f.stat().st_size for f in files.iterdir())
        print(
            f"{args.reports} report files ({size / 2**20:.1f} MiB, half gzip), 4 sender "
            "shapes, every RFC 8460 result type",
            flush=True,
        )
        python = ensure_parsedmarc()
        if python is None:
            rows.append(("parsedmarc parse_report_file", "not installed (see stderr)"))
        else:
            version = subprocess.run(
                [
                    str(python),
                    "-c",
                    "import importlib.metadata as m; print(m.version('parsedmarc'))",
                ],
                capture_output=True,
                text=True,
            ).stdout.strip()
            rows.append(
                (
                    f"parsedmarc {version} parse_report_file",
                    run_row(
                        [str(python), str(REPO / "tests/bench/_parsedmarc_worker.py"), str(files)]
                    ),
                )
            )
        me = [sys.executable, "-m", "tests.bench.tlsrpt_ingest", "--worker"]
        rows.append(("mailward parse_report", run_row([*me, "parse", str(files)])))
        rows.append(("mailward parse + SQLite store", run_row([*me, "store", str(files)])))
        if args.smtp_reports:
            smtp_dir = base / "smtp"
            smtp_dir.mkdir()
            rows.append(
                (
                    f"mailward collector, SMTP+STARTTLS x4 ({args.smtp_reports})",
                    smtp_row(smtp_dir, args.smtp_reports),
                )
            )

    print(f"\n{'':48}{'reports':>9}{'ok':>8}{'seconds':>10}{'reports/s':>11}{'peak RSS':>12}")
    for name, figures in rows:
        if isinstance(figures, str):
            print(f"{name:48}{figures}")
            continue
        rate = figures["reports"] / figures["seconds"]
        print(
            f"{name:48}{figures['reports']:>9}{figures['ok']:>8}{figures['seconds']:>10.2f}"
            f"{rate:>11.0f}{figures['peak_rss'] / 2**20:>9.1f} MiB"
        )
        if figures.get("first_error"):
            print(f"    {figures['failed']} refused; the first: {figures['first_error']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
