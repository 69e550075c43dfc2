"""What the rollover's adapters conclude from what they read (no server needed)."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest

from mailward.adapters.certificate_requests import outcome_of, request_body
from mailward.adapters.nameservers import NameserverView, agreement
from mailward.adapters.serving_secret import (
    RECORD_ANNOTATION,
    REQUEST_ANNOTATION,
    KeyMaterial,
    ServingState,
    secret_body,
    state_from_secret,
)
from mailward.api.certificates import IssuerReference
from mailward.rollover import keys
from mailward.rollover.machine import KeyEntry, RolloverRecord

OWNERS = ["_25._tcp.mx1.example.test.", "_25._tcp.mx2.example.test."]
A, B = "a" * 64, "b" * 64


def view(name: str, *digests: str, serial: int = 7, problem: str | None = None) -> NameserverView:
    found = frozenset(digests)
    return NameserverView(name, "127.0.0.1", serial, dict.fromkeys(OWNERS, found), 60, problem)


def test_servers_that_agree_give_the_digests_and_the_largest_ttl() -> None:
    result = agreement([view("ns1", A, B), view("ns2", A, B)], OWNERS)
    assert result.agreed == {A, B}
    assert result.ttl_max == 60
    assert result.problem is None


def test_a_lagging_server_is_named_with_its_serial() -> None:
    result = agreement([view("ns1", A, B, serial=8), view("ns2", A, serial=7)], OWNERS)
    assert result.agreed is None
    assert result.problem is not None
    assert "ns2" in result.problem
    assert "serial 7" in result.problem


def test_a_failing_server_blocks_agreement() -> None:
    result = agreement([view("ns1", A), view("ns2", problem="TLSA has no RRSIG yet")], OWNERS)
    assert result.agreed is None
    assert result.problem == "ns2 (127.0.0.1): TLSA has no RRSIG yet"


def test_hosts_with_different_records_do_not_agree() -> None:
    uneven = NameserverView(
        "ns1", "127.0.0.1", 1, {OWNERS[0]: frozenset({A}), OWNERS[1]: frozenset()}
    )
    assert agreement([uneven], OWNERS).agreed is None


def test_no_server_is_a_problem() -> None:
    assert agreement([], OWNERS).problem == "no authoritative server found"


def _request(*conditions: dict[str, str], **status: str) -> dict[str, Any]:
    return {"status": {"conditions": list(conditions), **status}}


@pytest.mark.parametrize(
    ("body", "state"),
    [
        (_request(), "Pending"),
        (_request({"type": "Approved", "status": "True"}), "Pending"),
        (
            _request(
                {"type": "Denied", "status": "True", "reason": "Policy", "message": "no"},
            ),
            "Denied",
        ),
        (
            _request(
                {"type": "Approved", "status": "True"},
                {"type": "Ready", "status": "False", "reason": "Failed", "message": "bad CSR"},
            ),
            "Failed",
        ),
        (_request({"type": "InvalidRequest", "status": "True", "message": "x"}), "Failed"),
        (
            _request(
                {"type": "Ready", "status": "True", "reason": "Issued"},
                certificate=base64.b64encode(b"PEM").decode(),
                ca=base64.b64encode(b"CA").decode(),
            ),
            "Issued",
        ),
    ],
)
def test_a_certificate_requests_conditions_say_how_it_went(
    body: dict[str, Any], state: str
) -> None:
    outcome = outcome_of(body)
    assert outcome.state == state
    if state == "Issued":
        assert (outcome.chain_pem, outcome.ca_pem) == (b"PEM", b"CA")
    if state == "Failed" and "bad CSR" in str(body):
        assert outcome.message == "bad CSR"


def test_a_request_carries_the_csr_the_issuer_and_server_usages() -> None:
    key = keys.generate_key("ECDSA")
    csr = keys.csr_pem(key, ["mx1.example.test", "mx2.example.test"])
    body = request_body(
        "mail", "example-abc", {"kind": "MailDomain"}, csr, IssuerReference(name="ca"), "2160h"
    )
    assert base64.b64decode(body["spec"]["request"]) == csr
    assert body["spec"]["issuerRef"] == {"name": "ca", "kind": "Issuer", "group": "cert-manager.io"}
    assert "server auth" in body["spec"]["usages"]
    assert body["metadata"]["ownerReferences"] == [{"kind": "MailDomain"}]


def test_the_serving_secret_round_trips_keys_record_and_request() -> None:
    served = KeyMaterial(b"KEY1", b"CRT1")
    upcoming = KeyMaterial(b"KEY2")
    record = RolloverRecord(
        current=KeyEntry(spki_sha256=A, served_since=datetime(2026, 12, 1, tzinfo=UTC)),
        next=KeyEntry(spki_sha256=B),
    )
    state = ServingState(record=record, served=served, next=upcoming, pending_request=("req-1", B))
    body = secret_body("mail", "example-mailward-tls", {"kind": "MailDomain"}, state)
    assert body["type"] == "kubernetes.io/tls"
    assert set(body["data"]) == {"tls.key", "tls.crt", "next.key", "next.crt"}
    secret = SimpleNamespace(
        data=body["data"],
        metadata=SimpleNamespace(annotations=body["metadata"]["annotations"], resource_version="9"),
    )
    read = state_from_secret(secret)
    assert (read.record, read.served, read.next, read.previous) == (record, served, upcoming, None)
    assert read.pending_request == ("req-1", B)
    assert read.resource_version == "9"
    assert RECORD_ANNOTATION in body["metadata"]["annotations"]
    assert REQUEST_ANNOTATION in body["metadata"]["annotations"]


def test_an_unreadable_record_is_reported_not_fatal() -> None:
    secret = SimpleNamespace(
        data={},
        metadata=SimpleNamespace(
            annotations={RECORD_ANNOTATION: "{not json"}, resource_version="1"
        ),
    )
    read = state_from_secret(secret)
    assert read.damaged
    assert "unreadable" in read.damaged
    assert read.record == RolloverRecord()


def test_a_csr_names_every_host_and_is_signed_by_the_key() -> None:
    from cryptography import x509

    key = keys.generate_key("RSA")
    request = x509.load_pem_x509_csr(keys.csr_pem(key, ["mx.example.test", "tlsrpt.example.test"]))
    assert request.is_signature_valid
    san = request.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["mx.example.test", "tlsrpt.example.test"]
    assert keys.algorithm_of(key) == "RSA"


def test_the_expiry_alert_series_is_set_only_without_a_safe_rollover() -> None:
    from prometheus_client import REGISTRY

    from mailward.rollover import metrics

    labels = {"namespace": "mail", "name": "example", "domain": "example.test"}
    metrics.record("mail", "example", "example.test", not_after=1.0e9, safe=False, expiring=True)
    alert = "mailward_certificate_expiring_without_safe_rollover"
    assert REGISTRY.get_sample_value(alert, labels) == 1
    metrics.record("mail", "example", "example.test", not_after=1.0e9, safe=True, expiring=True)
    assert REGISTRY.get_sample_value(alert, labels) == 0
    assert REGISTRY.get_sample_value("mailward_certificate_rotation_safe", labels) == 1
    metrics.forget("mail", "example", "example.test")
    assert REGISTRY.get_sample_value(alert, labels) is None


def test_a_nameserver_that_serves_what_is_desired_shows_no_serial() -> None:
    """Its serial moves with every write of anyone in the zone: shown, it would rewrite the
    status of every domain of the zone at each pass. A lagging one shows where it stands."""
    from mailward.adapters.nameservers import NameserverView
    from mailward.parts.certificate import _nameserver_status

    owner = "_25._tcp.mx.example.test."
    fine = NameserverView("ns1", "127.0.0.53", 41, {owner: frozenset({"aa"})})
    lagging = NameserverView("ns2", "127.0.0.55", 8, {owner: frozenset()})
    assert _nameserver_status(fine, ["aa"]).serial is None
    status = _nameserver_status(lagging, ["aa"])
    assert (status.serial, status.matches) == (8, False)
