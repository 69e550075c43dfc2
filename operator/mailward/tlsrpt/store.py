"""Where reports are kept: SQLite (one file, WAL) by default, PostgreSQL for larger installations.

Both use the same schema and the same SQL text; only the placeholder style differs (`?` vs
`%s`), and it is translated in one place. Primary keys are content-derived text (a hash of
submitter and report-id), not auto-increment columns, so the schema is identical on both and a
duplicate delivery is simply `ON CONFLICT DO NOTHING`.

`add_report` returns only after the transaction is committed with a synchronous commit (SQLite
`synchronous=FULL`, PostgreSQL's default): the SMTP and HTTPS intakes acknowledge after it, so
an acknowledged report survives a crash of the collector.
"""

from __future__ import annotations

import base64
import hashlib
import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from mailward.tlsrpt.model import Report

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS reports (
        key TEXT PRIMARY KEY,
        report_id TEXT NOT NULL,
        submitter TEXT NOT NULL,
        organization TEXT NOT NULL,
        contact TEXT NOT NULL,
        report_domain TEXT NOT NULL,
        start_ts BIGINT NOT NULL,
        end_ts BIGINT NOT NULL,
        received_ts BIGINT NOT NULL,
        transport TEXT NOT NULL,
        peer TEXT NOT NULL,
        dkim TEXT NOT NULL,
        dkim_domain TEXT NOT NULL,
        notes TEXT NOT NULL,
        document TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS policies (
        report_key TEXT NOT NULL,
        idx INTEGER NOT NULL,
        policy_domain TEXT NOT NULL,
        policy_type TEXT NOT NULL,
        organization TEXT NOT NULL,
        successful BIGINT NOT NULL,
        failed BIGINT NOT NULL,
        end_ts BIGINT NOT NULL,
        received_ts BIGINT NOT NULL,
        PRIMARY KEY (report_key, idx))""",
    """CREATE TABLE IF NOT EXISTS failures (
        report_key TEXT NOT NULL,
        policy_idx INTEGER NOT NULL,
        idx INTEGER NOT NULL,
        policy_domain TEXT NOT NULL,
        policy_type TEXT NOT NULL,
        result_type TEXT NOT NULL,
        sessions BIGINT NOT NULL,
        end_ts BIGINT NOT NULL,
        received_ts BIGINT NOT NULL,
        PRIMARY KEY (report_key, policy_idx, idx))""",
    """CREATE TABLE IF NOT EXISTS parked (
        key TEXT PRIMARY KEY,
        received_ts BIGINT NOT NULL,
        transport TEXT NOT NULL,
        peer TEXT NOT NULL,
        code TEXT NOT NULL,
        reason TEXT NOT NULL,
        size BIGINT NOT NULL,
        sample TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS policies_domain ON policies (policy_domain, end_ts)",
    "CREATE INDEX IF NOT EXISTS failures_domain ON failures (policy_domain, end_ts)",
    "CREATE INDEX IF NOT EXISTS reports_received ON reports (received_ts)",
    "CREATE INDEX IF NOT EXISTS parked_received ON parked (received_ts)",
)

# What is kept of a parked input: enough to see what it was, never the whole hostile thing.
PARKED_SAMPLE_BYTES = 4096


@dataclass(frozen=True)
class Envelope:
    """How a report arrived, recorded next to it."""

    transport: str  # "smtp" or "https"
    peer: str
    submitter: str
    report_domain: str
    dkim: str = "none"
    dkim_domain: str = ""
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class PolicyRow:
    policy_type: str
    organization: str
    successful: int
    failed: int
    end_ts: int


@dataclass(frozen=True)
class FailureRow:
    policy_type: str
    result_type: str
    sessions: int
    end_ts: int


def report_key(submitter: str, report_id: str) -> str:
    # RFC 8460 §4.4: report-id is unique per submitter, so the pair names one report.
    return hashlib.sha256(f"{submitter}\0{report_id}".encode()).hexdigest()


class Store(Protocol):
    def add_report(
        self,
        report: Report,
        envelope: Envelope,
        now: float | None = None,
        stored_as: Sequence[str] | None = None,
    ) -> bool: ...
    def park(
        self,
        *,
        transport: str,
        peer: str,
        code: str,
        reason: str,
        data: bytes,
        now: float | None = None,
    ) -> str: ...
    def policy_rows(self, domain: str, since: int) -> list[PolicyRow]: ...
    def failure_rows(self, domain: str, since: int) -> list[FailureRow]: ...
    def count(self, table: str) -> int: ...
    def parked(self, limit: int = 100) -> list[dict[str, Any]]: ...
    def expire(self, older_than: float) -> int: ...
    def report_ids(self) -> list[tuple[str, str]]: ...
    def close(self) -> None: ...


class _SQLStore:
    """The SQL shared by both databases; subclasses provide a connection and a placeholder."""

    placeholder = "?"

    def __init__(self) -> None:
        self._lock = threading.Lock()

    @contextmanager
    def _transaction(self) -> Iterator[Any]:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def _sql(self, text: str) -> str:
        return text if self.placeholder == "?" else text.replace("?", self.placeholder)

    def _init_schema(self) -> None:
        with self._transaction() as cursor:
            for statement in SCHEMA:
                cursor.execute(statement)

    def add_report(
        self,
        report: Report,
        envelope: Envelope,
        now: float | None = None,
        stored_as: Sequence[str] | None = None,
    ) -> bool:
        """Store `report`; False when the same (submitter, report-id) is stored already.

        `stored_as`: per policy, the domain its rows are kept (and later summarised) under: the
        served domain a DANE policy naming an MX host counts for (tlsrpt/attribution.py). By
        default each policy's own `policy-domain`; the report's document keeps the original.
        """
        received = int(now if now is not None else time.time())
        key = report_key(envelope.submitter, report.report_id)
        start = int(report.date_range.start_datetime.timestamp())
        end = int(report.date_range.end_datetime.timestamp())
        document = report.model_dump_json(by_alias=True)
        policies: list[Sequence[Any]] = []
        failures: list[Sequence[Any]] = []
        for index, result in enumerate(report.policies):
            policy = result.policy
            domain = stored_as[index] if stored_as is not None else policy.policy_domain
            policies.append(
                (
                    key,
                    index,
                    domain,
                    policy.policy_type,
                    report.organization_name,
                    result.summary.total_successful_session_count,
                    result.summary.total_failure_session_count,
                    end,
                    received,
                )
            )
            for detail_index, detail in enumerate(result.failure_details):
                failures.append(
                    (
                        key,
                        index,
                        detail_index,
                        domain,
                        policy.policy_type,
                        detail.result_type,
                        detail.failed_session_count,
                        end,
                        received,
                    )
                )
        with self._transaction() as cursor:
            cursor.execute(
                self._sql(
                    "INSERT INTO reports (key, report_id, submitter, organization, contact, "
                    "report_domain, start_ts, end_ts, received_ts, transport, peer, dkim, "
                    "dkim_domain, notes, document) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, "
                    "?, ?, ?) ON CONFLICT (key) DO NOTHING"
                ),
                (
                    key,
                    report.report_id,
                    envelope.submitter,
                    report.organization_name,
                    report.contact_info,
                    envelope.report_domain,
                    start,
                    end,
                    received,
                    envelope.transport,
                    envelope.peer,
                    envelope.dkim,
                    envelope.dkim_domain,
                    json.dumps(list(envelope.notes)),
                    document,
                ),
            )
            if cursor.rowcount == 0:
                return False
            cursor.executemany(
                self._sql(
                    "INSERT INTO policies (report_key, idx, policy_domain, policy_type, "
                    "organization, successful, failed, end_ts, received_ts) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                ),
                policies,
            )
            if failures:
                cursor.executemany(
                    self._sql(
                        "INSERT INTO failures (report_key, policy_idx, idx, policy_domain, "
                        "policy_type, result_type, sessions, end_ts, received_ts) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                    ),
                    failures,
                )
        return True

    def park(
        self,
        *,
        transport: str,
        peer: str,
        code: str,
        reason: str,
        data: bytes,
        now: float | None = None,
    ) -> str:
        """Keep a refused input aside with the reason (and its first 4 KiB, base64)."""
        key = uuid.uuid4().hex
        sample = base64.b64encode(data[:PARKED_SAMPLE_BYTES]).decode("ascii")
        with self._transaction() as cursor:
            cursor.execute(
                self._sql(
                    "INSERT INTO parked (key, received_ts, transport, peer, code, reason, size, "
                    "sample) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                ),
                (
                    key,
                    int(now if now is not None else time.time()),
                    transport,
                    peer,
                    code,
                    reason[:2000],
                    len(data),
                    sample,
                ),
            )
        return key

    def policy_rows(self, domain: str, since: int) -> list[PolicyRow]:
        with self._transaction() as cursor:
            cursor.execute(
                self._sql(
                    "SELECT policy_type, organization, successful, failed, end_ts FROM policies "
                    "WHERE policy_domain = ? AND end_ts > ?"
                ),
                (domain, since),
            )
            return [
                PolicyRow(str(r[0]), str(r[1]), int(r[2]), int(r[3]), int(r[4]))
                for r in cursor.fetchall()
            ]

    def failure_rows(self, domain: str, since: int) -> list[FailureRow]:
        with self._transaction() as cursor:
            cursor.execute(
                self._sql(
                    "SELECT policy_type, result_type, sessions, end_ts FROM failures "
                    "WHERE policy_domain = ? AND end_ts > ?"
                ),
                (domain, since),
            )
            return [
                FailureRow(str(r[0]), str(r[1]), int(r[2]), int(r[3])) for r in cursor.fetchall()
            ]

    def count(self, table: str) -> int:
        if table not in ("reports", "policies", "failures", "parked"):
            raise ValueError(table)
        with self._transaction() as cursor:
            cursor.execute(f"SELECT COUNT(*) FROM {table}")
            return int(cursor.fetchone()[0])

    def parked(self, limit: int = 100) -> list[dict[str, Any]]:
        with self._transaction() as cursor:
            cursor.execute(
                self._sql(
                    "SELECT key, received_ts, transport, peer, code, reason, size FROM parked "
                    "ORDER BY received_ts DESC, key LIMIT ?"
                ),
                (limit,),
            )
            names = ("key", "received", "transport", "peer", "code", "reason", "size")
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def report_ids(self) -> list[tuple[str, str]]:
        with self._transaction() as cursor:
            cursor.execute("SELECT submitter, report_id FROM reports")
            return [(str(a), str(b)) for a, b in cursor.fetchall()]

    def expire(self, older_than: float) -> int:
        """Retention: drop reports and parked inputs received before `older_than`."""
        cutoff = int(older_than)
        with self._transaction() as cursor:
            removed = 0
            for table in ("failures", "policies", "reports", "parked"):
                cursor.execute(self._sql(f"DELETE FROM {table} WHERE received_ts < ?"), (cutoff,))
                if table in ("reports", "parked"):
                    removed += max(cursor.rowcount, 0)
            return removed


class SQLiteStore(_SQLStore):
    def __init__(self, path: str) -> None:
        super().__init__()
        self._connection = sqlite3.connect(
            path, check_same_thread=False, isolation_level=None, timeout=30
        )
        self._connection.execute("PRAGMA journal_mode=WAL")
        # FULL: the WAL is fsynced at every commit, so an acknowledged report is on disk.
        self._connection.execute("PRAGMA synchronous=FULL")
        self._init_schema()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Cursor]:
        with self._lock:
            cursor = self._connection.cursor()
            cursor.execute("BEGIN IMMEDIATE")
            try:
                yield cursor
            except BaseException:
                cursor.execute("ROLLBACK")
                raise
            cursor.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._connection.close()


class PostgresStore(_SQLStore):
    placeholder = "%s"

    def __init__(self, dsn: str) -> None:
        import psycopg

        super().__init__()
        # autocommit + explicit transaction() blocks: each block is one BEGIN ... COMMIT.
        self._connection = psycopg.connect(dsn, autocommit=True)
        self._init_schema()

    @contextmanager
    def _transaction(self) -> Iterator[Any]:
        with self._lock, self._connection.transaction(), self._connection.cursor() as cursor:
            yield cursor

    def close(self) -> None:
        with self._lock:
            self._connection.close()


def open_store(url: str) -> _SQLStore:
    """`sqlite:///relative.db`, `sqlite:////abs/path.db` or `postgresql://...`."""
    if url.startswith("sqlite:///"):
        return SQLiteStore(url.removeprefix("sqlite:///"))
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresStore(url)
    raise ValueError(f"unknown database URL {url!r}: use sqlite:///PATH or postgresql://...")
