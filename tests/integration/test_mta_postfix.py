"""The rendered Postfix configuration, run by a real Postfix on loopback and probed by a client.

What RFC 5321 §7, RFC 3207 and the TR-03116-4 profile ask of an MX, checked on the wire.
"""

from __future__ import annotations

import os
import smtplib
import socket
import ssl
import subprocess
import time
import uuid
from email.message import EmailMessage
from pathlib import Path

import pytest

from mailward.render.postfix import TLS12_CIPHERS, TLS13_CIPHERSUITES
from tests.fixtures_mta import ACCOUNT, RunningMTA

pytestmark = pytest.mark.dnsstack

HELO = "client.example.test"


def _smtp(mta: RunningMTA, port: int = 25) -> smtplib.SMTP:
    return smtplib.SMTP(mta.address, port, local_hostname=HELO, timeout=20)


def _any_cert_context() -> ssl.SSLContext:
    # The certificate chain is checked in the DANE test; here only the TLS parameters matter.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _read_reply(sock: socket.socket | ssl.SSLSocket) -> bytes:
    data = b""
    while not data.endswith(b"\r\n") or data.splitlines()[-1][3:4] == b"-":
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def _starttls_socket(mta: RunningMTA, context: ssl.SSLContext) -> ssl.SSLSocket:
    raw = socket.create_connection((mta.address, 25), timeout=20)
    _read_reply(raw)
    raw.sendall(f"EHLO {HELO}\r\n".encode())
    _read_reply(raw)
    raw.sendall(b"STARTTLS\r\n")
    assert _read_reply(raw).startswith(b"220 ")
    return context.wrap_socket(raw, server_hostname="mx1.example.test")


def test_postfix_check_is_clean_and_no_warnings_at_start(mta: RunningMTA) -> None:
    assert mta.postfix.startup_check == ""
    start = [line for line in mta.log().splitlines() if "daemon started" in line]
    assert start, mta.log()
    startup = mta.log().split(start[0])[0]
    assert not [line for line in startup.splitlines() if "warning" in line or "fatal" in line]


def test_the_running_postfix_is_the_mta_images(mta: RunningMTA) -> None:
    """The Postfix under test is the one the MTA image ships (trixie: 3.10), not the machine's."""
    image = mta.postfix.image
    pid = mta.postfix.master_pid()
    assert pid is not None
    assert mta.postfix.master_root() == image.path
    assert Path(os.readlink(f"/proc/{pid}/exe")).is_relative_to(image.path)
    version = mta.postfix.postconf("-h", "mail_version")
    assert version.startswith("3.10."), version
    assert f"postfix/master[{pid}]: daemon started -- version {version}," in mta.log()
    print(f"\nevidence: master {pid} runs {os.readlink(f'/proc/{pid}/exe')}, Postfix {version}")


def test_banner_names_host_and_protocol_only_and_starttls_is_offered(mta: RunningMTA) -> None:
    with socket.create_connection((mta.address, 25), timeout=20) as sock:
        banner = _read_reply(sock)
        sock.sendall(f"EHLO {HELO}\r\n".encode())
        ehlo = _read_reply(sock).decode()
    assert banner == b"220 mx1.example.test ESMTP\r\n"
    keywords = [line[4:] for line in ehlo.splitlines()]
    assert "STARTTLS" in keywords
    # No authentication on the MX port: submission is 465/587 only.
    assert not [k for k in keywords if k.startswith("AUTH")]


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1])
def test_tls_1_0_and_1_1_are_refused(mta: RunningMTA, version: ssl.TLSVersion) -> None:
    context = _any_cert_context()
    # Let the client really offer the old version (modern OpenSSL hides it at level 1+).
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    context.minimum_version = version
    context.maximum_version = version
    refusals_before = mta.log().count("unsupported protocol")
    with pytest.raises(ssl.SSLError):
        _starttls_socket(mta, context)
    # The refusal is the server's, not a client that never sent its hello.
    time.sleep(0.5)
    assert mta.log().count("unsupported protocol") > refusals_before


def test_negotiated_suites_are_in_the_allow_list(mta: RunningMTA) -> None:
    seen = {}
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        context = _any_cert_context()
        context.minimum_version = context.maximum_version = version
        with _starttls_socket(mta, context) as tls:
            name, protocol, _ = tls.cipher()  # type: ignore[misc]
            seen[protocol] = name
    assert seen["TLSv1.2"] in TLS12_CIPHERS
    assert seen["TLSv1.2"].startswith("ECDHE-")
    assert "GCM" in seen["TLSv1.2"]
    assert seen["TLSv1.3"] in TLS13_CIPHERSUITES


@pytest.mark.parametrize(
    "client_ciphers",
    [
        "AES128-GCM-SHA256",  # RSA key exchange
        "ECDHE-ECDSA-AES128-SHA:ECDHE-RSA-AES128-SHA",  # CBC with SHA-1
        "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305",
        "AES256-SHA",  # RSA key exchange and CBC with SHA-1
    ],
)
def test_suites_outside_the_profile_are_refused(mta: RunningMTA, client_ciphers: str) -> None:
    context = _any_cert_context()
    context.minimum_version = context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(f"{client_ciphers}:@SECLEVEL=0")
    with pytest.raises(ssl.SSLError):
        _starttls_socket(mta, context)


def test_tls_server_prefers_its_own_order(mta: RunningMTA) -> None:
    context = _any_cert_context()
    context.minimum_version = context.maximum_version = ssl.TLSVersion.TLSv1_2
    # The client asks for AES-256 first; the server's order (AES-128 first) wins.
    context.set_ciphers("ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES128-GCM-SHA256")
    with _starttls_socket(mta, context) as tls:
        assert tls.cipher()[0] == "ECDHE-ECDSA-AES128-GCM-SHA256"  # type: ignore[index]
        assert tls.compression() is None


def test_vrfy_and_expn_answer_252_without_verifying(mta: RunningMTA) -> None:
    """RFC 5321 §7.3: disabled VRFY/EXPN answer 252; a known and an unknown name look alike."""
    with _smtp(mta) as client:
        client.ehlo()
        known = client.docmd("VRFY", "alice@example.test")
        unknown = client.docmd("VRFY", f"nobody-{uuid.uuid4().hex[:8]}@example.test")
        expn = client.docmd("EXPN", "staff")
    assert known == unknown == expn
    assert known[0] == 252


def test_unknown_recipient_is_refused_at_rcpt(mta: RunningMTA) -> None:
    with _smtp(mta) as client:
        client.ehlo()
        assert client.mail("sender@client.example.test")[0] == 250
        code, text = client.rcpt("nobody@example.test")
    assert code == 550
    assert b"5.1.1" in text


RELAY_ATTEMPTS = [
    "victim@foreign.test",
    "alice@foreign.test",
    "victim%foreign.test@example.test",
    "victim%foreign.test@mx1.example.test",
    "foreign.test!victim@example.test",
    "foreign.test!victim",
    "@example.test:victim@foreign.test",
    "@mx1.example.test,@example.test:victim@foreign.test",
    '"victim@foreign.test"@example.test',
    '"victim%foreign.test"@example.test',
    "victim@foreign.test@example.test",
    "victim@[192.0.2.1]",
    "victim@[IPv6:2001:db8::1]",
    "victim@192.0.2.1",
    "root@[{own}]",
    "postmaster@[{own}]",
    "victim%foreign.test@[{own}]",
    "victim@example.test.foreign.test",
    "victim@foreign.test.",
    "victim@localhost",
    "victim@mx1.example.test",
    "alice@EXAMPLE.TEST.foreign.test",
    "victim",
]


def test_relay_attempts_are_refused_and_local_delivery_is_accepted(mta: RunningMTA) -> None:
    attempts = [a.replace("{own}", mta.address) for a in RELAY_ATTEMPTS]
    assert len(attempts) >= 15
    answers: dict[str, tuple[int, bytes]] = {}
    # Two attempts per connection: below the soft error limit, so the tarpit does not slow the
    # test down; also with a sender in our own domain, which must not help.
    for i in range(0, len(attempts), 2):
        with _smtp(mta) as client:
            client.ehlo()
            for attempt in attempts[i : i + 2]:
                client.rset()
                client.docmd("MAIL", "FROM:<alice@example.test>")
                answers[attempt] = client.docmd("RCPT", f"TO:<{attempt}>")
    accepted = {a: r for a, r in answers.items() if not 500 <= r[0] < 600}
    assert not accepted, accepted
    for attempt, (code, text) in answers.items():
        print(f"evidence: RCPT TO:<{attempt}> -> {code} {text.decode()[:70]}")

    token = uuid.uuid4().hex
    message = EmailMessage()
    message["From"] = "sender@client.example.test"
    message["To"] = "alice@example.test"
    message["Subject"] = token
    message.set_content("local delivery")
    with _smtp(mta) as client:
        client.ehlo()
        assert client.send_message(message) == {}
    delivered = _wait_for_mail(mta, "alice@example.test", token)
    assert f"Subject: {token}" in delivered


def _wait_for_mail(mta: RunningMTA, address: str, token: str, timeout: float = 20) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for text in mta.postfix.mailbox(address):
            if token in text:
                return text
        time.sleep(0.2)
    raise AssertionError(f"no message {token} for {address}; log:\n{mta.log()[-3000:]}")


def test_starttls_command_injection_gets_no_answer(mta: RunningMTA) -> None:
    """RFC 3207 §4.2 / CVE-2011-0411: commands sent with STARTTLS are discarded."""
    raw = socket.create_connection((mta.address, 25), timeout=20)
    _read_reply(raw)
    raw.sendall(f"EHLO {HELO}\r\n".encode())
    _read_reply(raw)
    raw.sendall(b"STARTTLS\r\nNOOP\r\nMAIL FROM:<injected@client.example.test>\r\n")
    first = raw.recv(4096)
    assert first.startswith(b"220 "), first
    assert b"\r\n" in first
    assert first.endswith(b"\r\n")
    assert first.count(b"\r\n") == 1
    tls = _any_cert_context().wrap_socket(raw, server_hostname="mx1.example.test")
    tls.settimeout(3)
    answered = b""
    try:
        answered = tls.recv(4096)
    except TimeoutError:
        pass
    except ssl.SSLError:
        answered = b""
    assert not answered.startswith(b"250"), answered
    # A pipelined answer would have been a 250 to the NOOP; nothing (or a disconnect) came.
    assert answered in (b"",) or answered.startswith(b"421") or answered.startswith(b"5")
    tls.close()


def test_submission_requires_tls_then_auth_and_hides_the_client_address(
    mta: RunningMTA,
) -> None:
    user = f"{ACCOUNT[0]}@example.test"
    with smtplib.SMTP(mta.address, 587, local_hostname="laptop.corp.internal", timeout=20) as c:
        c.ehlo()
        assert "auth" not in c.esmtp_features
        assert c.docmd("MAIL", f"FROM:<{user}>")[0] == 530  # STARTTLS first
        c.starttls(context=_any_cert_context())
        c.ehlo()
        assert c.esmtp_features["auth"].split() == ["PLAIN", "LOGIN"]
        # Without authentication nothing is relayed, not even from our own domain.
        c.docmd("MAIL", f"FROM:<{user}>")
        assert c.docmd("RCPT", "TO:<victim@foreign.test>")[0] >= 500
        c.rset()
        c.login(user, ACCOUNT[1])
        # An account sends only as itself.
        c.docmd("MAIL", "FROM:<postmaster@example.test>")
        assert c.docmd("RCPT", "TO:<alice@example.test>")[0] >= 500
        c.rset()
        token = uuid.uuid4().hex
        c.sendmail(user, ["postmaster@example.test"], f"Subject: {token}\r\n\r\nhi\r\n")
    delivered = _wait_for_mail(mta, "postmaster@example.test", token)
    received = delivered.split("\nReceived: ", 1)[1].split("\n", 1)[0]
    assert received.startswith("from laptop.corp.internal")
    assert mta.address not in delivered.split(f"Subject: {token}")[0]
    assert "with ESMTPSA" in delivered

    with smtplib.SMTP_SSL(
        mta.address, 465, local_hostname="laptop", timeout=20, context=_any_cert_context()
    ) as c:
        c.ehlo()
        with pytest.raises(smtplib.SMTPAuthenticationError):
            c.login(user, "wrong password")


def test_client_renegotiation_is_refused(mta: RunningMTA) -> None:
    """TR-02102-2 §3.3.4: no client-initiated renegotiation (TLS 1.2; 1.3 has none)."""
    command = [
        "openssl",
        "s_client",
        "-connect",
        f"{mta.address}:25",
        "-starttls",
        "smtp",
        "-tls1_2",
    ]
    # `R` on a line of its own asks s_client to renegotiate; then the session is used again.
    result = subprocess.run(
        ["sh", "-c", '(sleep 1; echo R; sleep 1; echo "NOOP"; sleep 1) | "$@"', "sh", *command],
        capture_output=True,
        text=True,
        timeout=30,
    )
    output = result.stdout + result.stderr
    assert "RENEGOTIATING" in output
    after = output.split("RENEGOTIATING", 1)[1]
    assert "no renegotiation" in after, output
    assert "250 2.0.0 Ok" not in after, output
