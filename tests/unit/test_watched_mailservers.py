"""What an attaching pass reads of MailServers and namespaces: the watches' last view, and the
API server only for what the watches have not shown (or no longer show)."""

from __future__ import annotations

import asyncio
from typing import Any

from mailward.adapters.mailservers import MailServerObservation, WatchedMailServers


class Fallback:
    def __init__(self) -> None:
        self.asked: list[str] = []

    async def mail_server(self, namespace: str, name: str) -> MailServerObservation:
        self.asked.append(f"mailserver {namespace}/{name}")
        return MailServerObservation(found=False)

    async def namespace_labels(self, name: str) -> dict[str, str] | None:
        self.asked.append(f"namespace {name}")
        return None

    async def accounts(self, namespace: str, name: str) -> dict[str, str] | None:
        self.asked.append(f"secret {namespace}/{name}")
        return None


def _server(generation: int = 1) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "mail", "name": "fleet", "generation": generation},
        "spec": {"hosts": [{"host": "mx.example.test"}], "tls": {"secretName": "fleet-tls"}},
        "status": {
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "Ready",
                    "message": "serving",
                    "lastTransitionTime": "2026-12-01T00:00:00Z",
                    "observedGeneration": generation,
                }
            ]
        },
    }


def test_a_watched_mail_server_and_namespace_are_read_from_memory() -> None:
    fallback = Fallback()
    watched = WatchedMailServers(fallback)
    watched.observe_mail_server("ADDED", _server())
    watched.observe_namespace("ADDED", {"metadata": {"name": "team", "labels": {"mail": "yes"}}})

    async def read() -> tuple[MailServerObservation, dict[str, str] | None]:
        return (
            await watched.mail_server("mail", "fleet"),
            await watched.namespace_labels("team"),
        )

    server, labels = asyncio.run(read())
    assert server.spec is not None
    assert server.ready
    assert [h.host for h in server.spec.hosts] == ["mx.example.test"]
    assert labels == {"mail": "yes"}
    assert fallback.asked == []


def test_what_the_watch_has_not_shown_or_deleted_is_asked_for() -> None:
    fallback = Fallback()
    watched = WatchedMailServers(fallback)
    watched.observe_mail_server("ADDED", _server())
    watched.observe_mail_server("DELETED", _server())
    watched.observe_namespace("ADDED", {"metadata": {"name": "team"}})
    watched.observe_namespace("DELETED", {"metadata": {"name": "team"}})

    async def read() -> None:
        assert not (await watched.mail_server("mail", "fleet")).found
        assert await watched.namespace_labels("team") is None
        assert await watched.namespace_labels("other") is None
        assert await watched.accounts("mail", "accounts") is None

    asyncio.run(read())
    assert fallback.asked == [
        "mailserver mail/fleet",
        "namespace team",
        "namespace other",
        "secret mail/accounts",
    ]


def test_a_newer_generation_replaces_what_was_seen() -> None:
    watched = WatchedMailServers(Fallback())
    watched.observe_mail_server("ADDED", _server(1))
    newer = _server(2)
    newer["status"]["conditions"][0]["observedGeneration"] = 1  # not reconciled yet
    watched.observe_mail_server("MODIFIED", newer)
    server = asyncio.run(watched.mail_server("mail", "fleet"))
    assert server.found
    assert not server.ready
