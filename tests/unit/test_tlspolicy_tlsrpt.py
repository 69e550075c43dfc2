"""The DANE-first socketmap's answers carry what Postfix 3.10's TLSRPT needs for MTA-STS.

Postfix reports policy type `sts` only when the policy answer says `policy_type=sts` with the
policy domain and the policy's MX patterns (TLSRPT_README, "MTA-STS Support via
smtp_tls_policy_maps"); the same attributes on a non-STS answer are an error to Postfix.
"""

from __future__ import annotations

import asyncio

import pytest

from mailward.sidecars.tlspolicy import Lookup, PolicyServer, with_tlsrpt_attributes

# What postfix-mta-sts-resolver 1.5.0 (Debian trixie) answers for an `enforce` policy with
# `mx: mail.example.org` and `mx: *.backup.example.org`, with its default `tlsrpt: false`.
RESOLVER_DEFAULT = b"OK secure match=mail.example.org:.backup.example.org servername=hostname"
# The same with its zone option `tlsrpt: true`: the attributes are there already.
RESOLVER_TLSRPT = (
    b"OK secure match=mail.example.org servername=hostname policy_type=sts "
    b"policy_domain=example.org mx_host_pattern=mail.example.org "
    b"{ policy_string = version: STSv1 } { policy_string = mode: enforce } "
    b"{ policy_string = mx: mail.example.org } { policy_string = max_age: 86400 }"
)


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        pytest.param(
            RESOLVER_DEFAULT,
            b"OK secure match=mail.example.org:.backup.example.org servername=hostname "
            b"policy_type=sts policy_domain=example.org mx_host_pattern=mail.example.org "
            b"mx_host_pattern=*.backup.example.org",
            id="added, with the policy's own *. form of a wildcard",
        ),
        pytest.param(
            RESOLVER_TLSRPT, RESOLVER_TLSRPT, id="the resolver's own ones kept as they are"
        ),
        pytest.param(b"NOTFOUND ", b"NOTFOUND ", id="no policy: nothing to add"),
        pytest.param(b"TEMP DNS lookup failed", b"TEMP DNS lookup failed", id="TEMP unchanged"),
    ],
)
def test_the_answer_text(answer: bytes, expected: bytes) -> None:
    assert with_tlsrpt_attributes("example.org", answer) == expected


class _Resolver:
    """The DNS facts of one destination: a secure MX, TLSA present or not."""

    def __init__(self, tlsa: bool) -> None:
        self.tlsa = tlsa

    async def lookup(self, name: str, rdtype: str) -> Lookup:
        if rdtype == "MX":
            return Lookup(True, ("mail.example.org",))
        return Lookup(True, ("3 1 1 00",) if self.tlsa else ())


class _Upstream:
    def __init__(self) -> None:
        self.asked: list[bytes] = []

    async def ask(self, request: bytes) -> bytes:
        self.asked.append(request)
        return RESOLVER_DEFAULT


def _answer(tlsa: bool) -> tuple[bytes, list[bytes]]:
    upstream = _Upstream()
    server = PolicyServer(_Resolver(tlsa), upstream)  # type: ignore[arg-type]
    return asyncio.run(server.answer(b"postfix example.org")), upstream.asked


def test_an_mta_sts_destination_is_answered_with_the_tlsrpt_attributes() -> None:
    answer, asked = _answer(tlsa=False)
    assert asked == [b"postfix example.org"]
    assert answer.startswith(b"OK secure match=")
    assert b" policy_type=sts policy_domain=example.org " in answer
    assert b"mx_host_pattern=*.backup.example.org" in answer


def test_a_dane_destination_is_answered_as_before() -> None:
    """NOTFOUND: Postfix's own `dane` level applies and reports `tlsa` itself."""
    answer, asked = _answer(tlsa=True)
    assert answer == b"NOTFOUND "
    assert asked == []
