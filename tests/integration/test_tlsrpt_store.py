"""The store on both databases: the same schema and queries, duplicates, parking, retention."""

from __future__ import annotations

import time

from mailward.tlsrpt.evaluate import summary_for
from mailward.tlsrpt.parse import parse_report
from mailward.tlsrpt.store import Envelope, open_store
from tests.tlsrpt_samples import corpus


def test_store_round_trip_duplicates_parking_and_retention(tlsrpt_database: str) -> None:
    store = open_store(tlsrpt_database)
    try:
        samples = corpus("example.test", 12)
        now = time.time()
        for number, sample in enumerate(samples):
            report = parse_report(sample.payload())
            envelope = Envelope(
                "smtp",
                "192.0.2.1",
                f"submitter-{sample.shape}",
                "example.test",
                dkim="pass",
                dkim_domain="sender.example",
                notes=("a note",),
            )
            # Half of them arrived 500 days ago (by the collector's clock), for retention.
            received = now - 500 * 86400 if number % 2 else now
            assert store.add_report(report, envelope, now=received) is True
            assert store.add_report(report, envelope, now=received) is False
        assert store.count("reports") == 12
        key = store.park(
            transport="https",
            peer="192.0.2.9",
            code="not-json",
            reason="the report is not valid JSON",
            data=b"{" * 10_000,
        )
        parked = store.parked()
        assert parked[0]["key"] == key
        assert parked[0]["size"] == 10_000
        assert parked[0]["reason"] == "the report is not valid JSON"

        summary = summary_for(store, "example.test", int(now))
        assert summary.reports_7d == 12  # placed by the period they cover, not by arrival

        removed = store.expire(now - 400 * 86400)
        assert removed == 6
        assert store.count("reports") == 6
        assert summary_for(store, "example.test", int(now)).reports_7d == 6
    finally:
        store.close()
