"""`mailward run`'s peering: each replica's priority is its own, the older one wins, and
kopf's rule of who runs, for the work kopf does not pause (mailward/peering.py)."""

from __future__ import annotations

import datetime
from typing import Any
from unittest import mock

from mailward import cli, peering


def test_an_older_process_has_the_higher_priority() -> None:
    older = cli.peering_priority(now=1_800_000_000.000, salt=0xFFFF)
    newer = cli.peering_priority(now=1_800_000_000.001, salt=0)
    assert older > newer


def test_two_processes_of_the_same_millisecond_differ() -> None:
    # Equal priorities pause every replica (kopf): the random low bits keep them apart.
    assert cli.peering_priority(now=1_800_000_000, salt=1) != cli.peering_priority(
        now=1_800_000_000, salt=2
    )
    priorities = {cli.peering_priority(now=1_800_000_000) for _ in range(50)}
    assert len(priorities) > 45


def test_the_priority_fits_the_api_servers_int64_until_far_ahead() -> None:
    assert 0 < cli.peering_priority(now=4_000_000_000, salt=0xFFFF) < 2**63
    assert 0 < cli.peering_priority(now=0, salt=0xFFFF) < 2**63


def test_run_passes_peering_to_kopf() -> None:
    with (
        mock.patch("kopf.run") as run,
        mock.patch.object(cli, "ensure_peering_object") as ensure,
        mock.patch.dict("sys.modules", {"mailward.handlers": mock.MagicMock()}),
    ):
        assert cli.main(["run", "-n", "mail", "--peering", "mw", "--priority", "7"]) == 0
    ensure.assert_called_once_with("mw", ["mail"])
    kwargs = run.call_args.kwargs
    assert kwargs["peering_name"] == "mw"
    assert kwargs["priority"] == 7
    assert kwargs["namespaces"] == ["mail"]
    assert kwargs["settings"].peering.lifetime == cli.PEERING_LIFETIME
    assert "standalone" not in kwargs


def test_run_is_standalone_without_peering() -> None:
    with (
        mock.patch("kopf.run") as run,
        mock.patch.object(cli, "ensure_peering_object") as ensure,
        mock.patch.dict("sys.modules", {"mailward.handlers": mock.MagicMock()}),
    ):
        assert cli.main(["run", "--standalone"]) == 0
        assert cli.main(["run"]) == 0
    ensure.assert_not_called()
    assert all(call.kwargs["standalone"] is True for call in run.call_args_list)


NOW = datetime.datetime(2026, 12, 2, 10, 0, 0, tzinfo=datetime.UTC)


def _record(priority: int, seconds_ago: float, lifetime: int = 20) -> dict[str, Any]:
    seen = NOW - datetime.timedelta(seconds=seconds_ago)
    return {"priority": priority, "lifetime": lifetime, "lastseen": seen.isoformat()}


ME = peering.Peering(name="mailward", namespaces=(), identity="a", priority=5, lifetime=20)


def test_kopfs_rule_the_highest_live_priority_runs() -> None:
    assert peering.is_active({"a": _record(5, 1), "b": _record(3, 1)}, ME, NOW)
    assert not peering.is_active({"a": _record(5, 1), "b": _record(7, 1)}, ME, NOW)
    # Equal priorities: kopf pauses both.
    assert not peering.is_active({"a": _record(5, 1), "b": _record(5, 1)}, ME, NOW)
    # A record that ran out does not count (a SIGKILLed or lost replica).
    assert peering.is_active({"a": _record(5, 1), "b": _record(7, 21)}, ME, NOW)
    # kopf's lastseen without a zone, and a record without lifetime (kopf assumes 60 s).
    naive = {"priority": 7, "lastseen": (NOW - datetime.timedelta(seconds=30)).isoformat()}
    assert not peering.is_active({"a": _record(5, 1), "b": naive}, ME, NOW)
    # Not active until its own record is there.
    assert not peering.is_active({"b": _record(3, 1)}, ME, NOW)
    assert not peering.is_active({}, ME, NOW)


def test_run_records_who_this_process_is_in_the_peering() -> None:
    with (
        mock.patch("kopf.run") as run,
        mock.patch.object(cli, "ensure_peering_object"),
        mock.patch.dict("sys.modules", {"mailward.handlers": mock.MagicMock()}),
        mock.patch.dict("os.environ", {"POD_ID": "mailward-abc"}),
        mock.patch.object(peering, "CURRENT", None),
    ):
        cli.main(["run", "--peering", "mw", "--priority", "9", "--peering-lifetime", "15"])
        recorded = peering.CURRENT
    assert recorded == peering.Peering(
        name="mw", namespaces=(), identity="mailward-abc", priority=9, lifetime=15
    )
    assert run.call_args.kwargs["identity"] == "mailward-abc"
