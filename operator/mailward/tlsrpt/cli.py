"""`mailward collect-reports` and `mailward reports DOMAIN`."""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from mailward.tlsrpt.evaluate import DomainSummary, format_table, summary_for


def collect_reports(config: Path) -> int:
    from mailward.tlsrpt.server import run

    return run(config)


def reports(domain: str, collector: str | None, database: str | None, as_json: bool) -> int:
    """Print the domain's evaluation, asked from the collector's API or read from its database."""
    domain = domain.lower().rstrip(".")
    if database:
        from mailward.tlsrpt.store import open_store

        store = open_store(database)
        try:
            summary = summary_for(store, domain, int(time.time()))
        finally:
            store.close()
    else:
        url = (
            f"{(collector or 'http://127.0.0.1:9108').rstrip('/')}/api/v1/domains/{domain}/summary"
        )
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                summary = DomainSummary.model_validate(json.load(response))
        except urllib.error.HTTPError as error:
            print(f"mailward reports: {url}: {error.code} {error.reason}", file=sys.stderr)
            return 1
        except OSError as error:
            print(f"mailward reports: {url}: {error}", file=sys.stderr)
            return 2
    if as_json:
        print(json.dumps(summary.model_dump(mode="json", by_alias=True), indent=2))
    else:
        print(format_table(summary))
    return 0
