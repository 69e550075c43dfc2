"""TR-TLS-04 on the group offers `tlsprobe.probe_groups` makes, one row per kind of server.

TR-03116-4 §2.2.2: secp256r1 and brainpoolP256r1 MUST be supported, brainpoolP256r1 SHOULD have
the highest priority. In TLS 1.2 the client's groups also bound the curve of an ECDSA
certificate (RFC 8422 §5.1), so with a secp256r1 certificate brainpool can only be offered beside
secp256r1; a server that ranks secp256r1 first then never shows whether it supports brainpool.
The rows with real servers behind them are in test_compliance_recorded.py.
"""

from __future__ import annotations

import pytest

from mailward.compliance.checks.tls import judge_groups
from mailward.compliance.model import Result
from mailward.compliance.observations import GroupOffer

P256, P384, BP = "prime256v1", "secp384r1", "brainpoolP256r1"


def o(*offered: str, chosen: str | None) -> GroupOffer:
    return GroupOffer(offered, chosen)


@pytest.mark.parametrize(
    ("offers", "result", "text"),
    [
        pytest.param(
            [o(P256, chosen=P256), o(BP, P256, chosen=BP), o(P256, BP, chosen=BP)],
            Result.PASS,
            "brainpoolP256r1 supported and preferred",
            id="brainpool-first-in-server-order",
        ),
        pytest.param(
            [o(P256, chosen=P256), o(BP, P256, chosen=BP), o(P256, BP, chosen=P256)],
            Result.PASS,
            "the client's order decides",
            id="client-order-brainpool-supported",
        ),
        pytest.param(
            # secp256r1 certificate, server order secp256r1 first: support cannot be seen.
            [o(P256, chosen=P256), o(BP, P256, chosen=P256), o(P256, BP, chosen=P256),
             o(P384, P256, chosen=P256), o(P256, P384, chosen=P256)],
            Result.WARN,
            "cannot be told apart",
            id="p256-certificate-p256-first",
        ),
        pytest.param(
            # The same server order seen with P-384 above P-256: still the server's order.
            [o(P256, chosen=P256), o(BP, P256, chosen=P256), o(P256, BP, chosen=P256),
             o(P384, P256, chosen=P384), o(P256, P384, chosen=P384)],
            Result.WARN,
            "cannot be told apart",
            id="p256-certificate-server-order-p384-first",
        ),
        pytest.param(
            # The server takes the client's first group, and still not brainpool: absent.
            [o(P256, chosen=P256), o(BP, P256, chosen=P256), o(P256, BP, chosen=P256),
             o(P384, P256, chosen=P384), o(P256, P384, chosen=P256)],
            Result.FAIL,
            "brainpoolP256r1 not accepted: offered first",
            id="p256-certificate-client-order-no-brainpool",
        ),
        pytest.param(
            # RSA certificate: brainpool can be offered alone, and is accepted.
            [o(P256, chosen=P256), o(BP, P256, chosen=P256), o(P256, BP, chosen=P256),
             o(BP, chosen=BP)],
            Result.WARN,
            "brainpoolP256r1 supported, but another group preferred",
            id="rsa-certificate-p256-first",
        ),
        pytest.param(
            [o(P256, chosen=P256), o(BP, P256, chosen=P256), o(P256, BP, chosen=P256),
             o(BP, chosen=None)],
            Result.FAIL,
            "brainpoolP256r1 not accepted when offered alone",
            id="rsa-certificate-no-brainpool",
        ),
        pytest.param(
            [o(P256, chosen=None), o(BP, P256, chosen=BP), o(P256, BP, chosen=BP),
             o(BP, chosen=BP)],
            Result.FAIL,
            "secp256r1 not accepted",
            id="no-p256",
        ),
        pytest.param([], Result.ERROR, "not probed", id="not-probed"),
    ],
)  # fmt: skip
def test_tls04(offers: list[GroupOffer], result: Result, text: str) -> None:
    got, message = judge_groups(offers)
    assert (got, text in message) == (result, True), message
