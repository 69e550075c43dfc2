"""Run by tests/bench/tlsrpt_ingest.py in parsedmarc's own virtualenv (no mailward imports):
parse every file of a directory with parsedmarc and print figures as JSON."""

import json
import sys
import time
from pathlib import Path

import parsedmarc


def peak_rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def main() -> None:
    files = sorted(Path(sys.argv[1]).iterdir())
    datas = [f.read_bytes() for f in files]
    ok = failed = 0
    first_error = ""
    start = time.perf_counter()
    for data in datas:
        try:
            parsed = parsedmarc.parse_report_file(data, offline=True)
            ok += parsed["report_type"] == "smtp_tls"
        except Exception as error:
            failed += 1
            first_error = first_error or f"{type(error).__name__}: {error}"[:300]
    seconds = time.perf_counter() - start
    print(
        json.dumps(
            {
                "reports": len(datas),
                "ok": ok,
                "failed": failed,
                "seconds": seconds,
                "peak_rss": peak_rss(),
                "first_error": first_error,
            }
        )
    )


main()
