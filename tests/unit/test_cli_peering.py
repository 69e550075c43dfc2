"""`mailward run`'s peering: each replica's priority is its own, and the older one wins."""

from __future__ import annotations

from unittest import mock

from mailward import cli


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
