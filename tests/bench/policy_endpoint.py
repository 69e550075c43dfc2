"""Benchmark: MTA-STS policy fetches over HTTPS on loopback, `mailward serve-policies` side by
side with nginx serving the same bytes as a static file, both driven by the same wrk runs.

    .venv/bin/python -m tests.bench.policy_endpoint [--seconds 8] [--connections 50]

Both servers get the same certificate (local CA, ECDSA P-256), the same TLS settings (TLS 1.2+,
ECDHE with AES-GCM), one process each (nginx `worker_processes 1`; the endpoint is one asyncio
process), and the same host name: wrk runs in a private mount namespace whose /etc/hosts points
`mta-sts.<domain>` at the server under test, so SNI and Host are what a sender would send. Two
loads: keep-alive connections (wrk's default; the endpoint cuts a connection at its 10 s
deadline, so runs stay shorter than that), and one request per TLS connection (`Connection:
close`), which is how senders fetch a policy. The figures are requests/s and latency
percentiles from wrk's own histogram (Lua `done` hook). Everything stops by itself.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from mailward.reconcile import parse_spec
from mailward.render.mta_sts import policy_for
from mailward.render.policy_objects import EndpointSettings, policy_server_args, tls_secret_name
from mailward_localstack._process import free_port, http_ok, start_watchdog
from mailward_localstack.controlplane import ControlPlane, kubectl_path, repo_root, wait_established
from mailward_localstack.pki import LocalCA
from tests.net import addr

DOMAIN = "bench.example.test"
HOST = f"mta-sts.{DOMAIN}"
PATH = "/.well-known/mta-sts.txt"
NAMESPACE = "mailward-system"

LUA = textwrap.dedent(
    """
    done = function(summary, latency, requests)
      io.write(string.format("LAT p50=%d p90=%d p99=%d max=%d\\n",
        latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
      io.write(string.format("SUM requests=%d errors=%d non2xx=%d\\n", summary.requests,
        summary.errors.connect + summary.errors.read + summary.errors.write +
        summary.errors.timeout, summary.errors.status))
    end
    """
)


def _kubectl(kubeconfig: Path, *args: str, input: str | None = None) -> str:
    result = subprocess.run(
        [str(kubectl_path()), "--kubeconfig", str(kubeconfig), *args],
        input=input,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stdout


def _maildomain(index: int) -> dict[str, object]:
    domain = DOMAIN if index == 0 else f"d{index}.example.test"
    return {
        "apiVersion": "mailward.io/v1alpha1",
        "kind": "MailDomain",
        "metadata": {"name": f"d{index}", "namespace": "default"},
        "spec": {
            "domain": domain,
            "mx": [{"host": f"mx1.{domain}"}, {"host": f"mx2.{domain}"}],
            "tls": {"secretName": "mx-tls"},
        },
    }


def _nginx_conf(work: Path, address: str, chain: Path, key: Path, root: Path) -> Path:
    conf = work / "nginx.conf"
    conf.write_text(
        textwrap.dedent(
            f"""
            worker_processes 1;
            pid {work}/nginx.pid;
            error_log {work}/error.log warn;
            daemon off;
            events {{ worker_connections 4096; }}
            http {{
              access_log off;
              client_body_temp_path {work}/body;
              proxy_temp_path {work}/proxy;
              fastcgi_temp_path {work}/fastcgi;
              uwsgi_temp_path {work}/uwsgi;
              scgi_temp_path {work}/scgi;
              default_type text/plain;
              server {{
                listen {address}:443 ssl;
                server_name {HOST};
                ssl_certificate {chain};
                ssl_certificate_key {key};
                ssl_protocols TLSv1.2 TLSv1.3;
                ssl_ciphers ECDHE+AESGCM;
                ssl_prefer_server_ciphers on;
                ssl_session_cache off;
                ssl_session_tickets off;
                keepalive_timeout 5s;
                root {root};
                add_header Cache-Control no-store;
              }}
            }}
            """
        )
    )
    return conf


def _wrk(address: str, work: Path, seconds: int, connections: int, close: bool) -> dict[str, float]:
    hosts = work / f"hosts-{address}"
    hosts.write_text(f"127.0.0.1 localhost\n{address} {HOST}\n")
    script = work / "report.lua"
    script.write_text(LUA)
    argv = [
        "wrk",
        "-t2",
        f"-c{connections}",
        f"-d{seconds}s",
        "--timeout",
        "5s",
        "-s",
        str(script),
    ]
    if close:
        argv += ["-H", "Connection: close"]
    argv.append(f"https://{HOST}{PATH}")
    result = subprocess.run(
        [
            "unshare",
            "-m",
            "sh",
            "-c",
            'mount --bind "$0" /etc/hosts && exec "$@"',
            str(hosts),
            *argv,
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 30,
        check=True,
    )
    out = result.stdout
    rps = re.search(r"Requests/sec:\s+([0-9.]+)", out)
    lat = re.search(r"LAT p50=(\d+) p90=(\d+) p99=(\d+) max=(\d+)", out)
    summary = re.search(r"SUM requests=(\d+) errors=(\d+) non2xx=(\d+)", out)
    if not (rps and lat and summary):
        raise RuntimeError(f"unexpected wrk output:\n{out}\n{result.stderr}")
    return {
        "rps": float(rps.group(1)),
        "p50_ms": int(lat.group(1)) / 1000,
        "p90_ms": int(lat.group(2)) / 1000,
        "p99_ms": int(lat.group(3)) / 1000,
        "max_ms": int(lat.group(4)) / 1000,
        "requests": int(summary.group(1)),
        "errors": int(summary.group(2)),
        "non2xx": int(summary.group(3)),
    }


def _fetch(address: str, ca_file: Path) -> bytes:
    from mailward_localstack.demo_policy import fetch

    return fetch(address, HOST, PATH, str(ca_file))[2]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--domains", type=int, default=200, help="MailDomains in the catalog")
    args = parser.parse_args(argv)
    if os.geteuid() != 0 or not shutil.which("wrk") or not shutil.which("nginx"):
        print("needs root, wrk and nginx (scripts/install-system-deps.sh)", file=sys.stderr)
        return 2

    work = Path(tempfile.mkdtemp(prefix="mailward-bench-policy-"))
    # nginx's worker runs as an unprivileged user and must read the static root.
    work.chmod(0o755)
    plane = ControlPlane(work / "controlplane", host=addr(60))
    watchdog = start_watchdog(plane.state_dir)
    processes: list[subprocess.Popen[bytes]] = []
    ours, theirs = addr(61), addr(62)
    try:
        plane.start()
        kubeconfig = plane.kubeconfig
        _kubectl(kubeconfig, "apply", "--server-side", "-f", str(repo_root() / "crds"))
        wait_established(kubeconfig, "maildomains.mailward.io")
        _kubectl(kubeconfig, "create", "namespace", NAMESPACE)
        ca = LocalCA.create(work / "ca")
        cert = ca.issue_server_cert([HOST, f"autoconfig.{DOMAIN}"], out_dir=work / "certs")
        secret = _kubectl(
            kubeconfig,
            "create",
            "secret",
            "tls",
            tls_secret_name(DOMAIN),
            "-n",
            NAMESPACE,
            f"--cert={cert.chain_file}",
            f"--key={cert.key_file}",
            "--dry-run=client",
            "-o",
            "json",
        )
        _kubectl(kubeconfig, "apply", "-f", "-", input=secret)
        items = [_maildomain(i) for i in range(args.domains)]
        _kubectl(
            kubeconfig,
            "apply",
            "-f",
            "-",
            input=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}),
        )
        policy = policy_for(parse_spec(items[0]["spec"])).encode("ascii")  # type: ignore[arg-type]

        admin = f"{ours}:{free_port(ours)}"
        server_args = policy_server_args(
            EndpointSettings(namespace=NAMESPACE),
            https=f"{ours}:443",
            http=f"{ours}:{free_port(ours)}",
            admin=admin,
        )
        env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
        with (work / "serve-policies.log").open("wb") as log:
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "mailward", *server_args],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                )
            )
        root = work / "www"
        (root / ".well-known").mkdir(parents=True)
        (root / ".well-known" / "mta-sts.txt").write_bytes(policy)
        conf = _nginx_conf(work, theirs, cert.chain_file, cert.key_file, root)
        processes.append(
            subprocess.Popen(
                ["nginx", "-c", str(conf), "-p", str(work)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.STDOUT,
            )
        )
        deadline = time.monotonic() + 60
        while not http_ok(f"http://{admin}/readyz"):
            if time.monotonic() > deadline:
                raise RuntimeError("serve-policies did not become ready")
            time.sleep(0.2)
        while True:
            try:
                if _fetch(ours, ca.ca_file) == policy and _fetch(theirs, ca.ca_file) == policy:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                log = (work / "error.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"the servers do not serve the same policy; nginx: {log}")
            time.sleep(0.2)

        print(
            f"policy fetch https://{HOST}{PATH} ({len(policy)} bytes), {args.domains} "
            f"MailDomains in the catalog, wrk -t2 -c{args.connections} -d{args.seconds}s, "
            f"{os.cpu_count()} CPUs"
        )
        header = (
            f"{'load':<22}{'server':<26}{'req/s':>10}{'p50 ms':>9}{'p90 ms':>9}"
            f"{'p99 ms':>9}{'max ms':>9}{'errors':>8}{'non-2xx':>9}"
        )
        print(header)
        print("-" * len(header))
        for close in (False, True):
            load = "new TLS conn/request" if close else "keep-alive"
            for name, address in (
                ("mailward serve-policies", ours),
                ("nginx (static file)", theirs),
            ):
                r = _wrk(address, work, args.seconds, args.connections, close)
                print(
                    f"{load:<22}{name:<26}{r['rps']:>10.0f}{r['p50_ms']:>9.2f}"
                    f"{r['p90_ms']:>9.2f}{r['p99_ms']:>9.2f}{r['max_ms']:>9.1f}"
                    f"{r['errors']:>8}{r['non2xx']:>9}",
                    flush=True,
                )
        return 0
    finally:
        for process in processes:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        plane.stop()
        watchdog.terminate()
        watchdog.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
