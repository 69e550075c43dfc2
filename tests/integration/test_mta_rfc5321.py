"""RFC 5321 §6 (problem handling) shown on the wire, not just configured.

mailward's rendered Postfix (the MTA image's, on loopback) relays to a remote MTA: a small
recording SMTP server on another address of the test net (`RemoteMTA`), the MX of a domain of
its own in the signed test zone. The remote answers RCPT by local part: `unknown-*` gets
550 5.1.1, `busy-*` gets 451 4.3.0, anything else 250. It records every RCPT (time, envelope
sender, reply) and every message it accepted.

- §6.1 DSNs: a 550 from the remote comes back to the sender as a DSN with the null reverse path
  (`Return-Path: <>`, `from=<>`), `multipart/report; report-type=delivery-status`, `Status:
  5.1.1`; an unknown local recipient of mail from outside is refused at RCPT, so nothing is
  bounced to a (possibly forged) sender afterwards (no backscatter).
- §4.5.4.1 retries: the rendered schedule (first retry after 30 min, backoff up to 4 h, give up
  after 5 days) is checked as values; its behaviour is shown on an instance whose clock
  parameters are SHORTENED for the test only (`SHORT_CLOCK`): retries at the remote at
  growing intervals, then a DSN with the null sender.
- §6.3 loops: a message with `hopcount_limit` Received headers is refused in the dialogue,
  never relayed (nor bounced); one fewer is relayed.
"""

from __future__ import annotations

import email
import email.policy
import itertools
import re
import smtplib
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import Message

import pytest

from mailward.render.postfix import DomainConfig, MTAOptions, render_postfix
from mailward_localstack.dns import DNSStack
from tests.fixtures_mta import ACCOUNT, MTAFactory, RunningMTA
from tests.net import addr

pytestmark = pytest.mark.dnsstack

ZONE = "example.test"
REMOTE_ADDRESS = addr(121)
RETRY_MTA_HOST = 120

# The retry clock of the test instance only (the pod's values are checked in
# test_rendered_retry_schedule_and_hop_limit_follow_rfc_5321): seconds instead of minutes/days.
SHORT_CLOCK = {
    "queue_run_delay": "1s",
    "minimal_backoff_time": "4s",
    "maximal_backoff_time": "16s",
    "maximal_queue_lifetime": "40s",
    "bounce_queue_lifetime": "40s",
}


@dataclass(frozen=True)
class RcptAttempt:
    at: float  # time.monotonic()
    mail_from: str
    rcpt: str
    reply: str


@dataclass
class RemoteMTA:
    """A plain-SMTP remote MX (no STARTTLS, no PIPELINING) that records what it is sent."""

    address: str
    hostname: str
    attempts: list[RcptAttempt] = field(default_factory=list)
    messages: list[tuple[str, list[str], str]] = field(default_factory=list)
    _sock: socket.socket | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @staticmethod
    def reply_to(rcpt: str) -> str:
        local = rcpt.partition("@")[0]
        if local.startswith("unknown-"):
            return f"550 5.1.1 <{rcpt}>: Recipient address rejected: User unknown"
        if local.startswith("busy-"):
            return f"451 4.3.0 <{rcpt}>: try again later"
        return "250 2.1.5 Ok"

    def start(self) -> RemoteMTA:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.address, 25))
        sock.listen(16)
        sock.settimeout(0.5)
        self._sock = sock
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._sock is not None:
            self._sock.close()

    def attempts_for(self, rcpt: str) -> list[RcptAttempt]:
        with self._lock:
            return [a for a in self.attempts if a.rcpt == rcpt]

    def received(self, token: str) -> list[tuple[str, list[str], str]]:
        with self._lock:
            return [m for m in self.messages if token in m[2]]

    def _accept(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._session, args=(conn,), daemon=True).start()

    def _session(self, conn: socket.socket) -> None:
        conn.settimeout(30)
        stream = conn.makefile("rwb")

        def say(line: str) -> None:
            stream.write(line.encode() + b"\r\n")
            stream.flush()

        mail_from: str | None = None
        rcpts: list[str] = []
        try:
            say(f"220 {self.hostname} ESMTP")
            while line := stream.readline():
                text = line.decode(errors="replace").rstrip("\r\n")
                verb = text.split(" ", 1)[0].upper()
                if verb == "EHLO":
                    say(f"250-{self.hostname}")
                    say("250 8BITMIME")
                elif verb == "HELO":
                    say(f"250 {self.hostname}")
                elif verb == "MAIL":
                    mail_from = _angle(text)
                    rcpts = []
                    say("250 2.1.0 Ok")
                elif verb == "RCPT" and mail_from is not None:
                    rcpt = _angle(text)
                    reply = self.reply_to(rcpt)
                    with self._lock:
                        self.attempts.append(RcptAttempt(time.monotonic(), mail_from, rcpt, reply))
                    if reply.startswith("2"):
                        rcpts.append(rcpt)
                    say(reply)
                elif verb == "DATA" and mail_from is not None and rcpts:
                    say("354 End data with <CR><LF>.<CR><LF>")
                    body: list[bytes] = []
                    while (data := stream.readline()) not in (b".\r\n", b""):
                        body.append(data[1:] if data.startswith(b"..") else data)
                    with self._lock:
                        self.messages.append((mail_from, rcpts, b"".join(body).decode()))
                    say("250 2.0.0 Ok: queued")
                    mail_from, rcpts = None, []
                elif verb == "DATA":
                    say("554 5.5.1 Error: no valid recipients")
                elif verb == "RSET":
                    mail_from, rcpts = None, []
                    say("250 2.0.0 Ok")
                elif verb == "NOOP":
                    say("250 2.0.0 Ok")
                elif verb == "QUIT":
                    say("221 2.0.0 Bye")
                    return
                else:
                    say("502 5.5.2 Error: command not recognized")
        except OSError:
            return
        finally:
            conn.close()


def _angle(command: str) -> str:
    match = re.search(r"<([^>]*)>", command)
    assert match, command
    return match.group(1)


def _publish(dns_stack: DNSStack, records: list[tuple[str, str, str]]) -> None:
    update = dns_stack.authoritative.new_update(ZONE)
    for name, rdtype, data in records:
        update.replace(name.removesuffix(f".{ZONE}"), 60, rdtype, data)
    dns_stack.authoritative.send_update(update)


@pytest.fixture(scope="module")
def remote(dns_stack: DNSStack) -> Iterator[tuple[RemoteMTA, str]]:
    """The remote MX and its domain (MX and A in the signed zone, no TLSA: opportunistic)."""
    domain = f"remote-{uuid.uuid4().hex[:6]}.{ZONE}"
    server = RemoteMTA(REMOTE_ADDRESS, f"mx.{domain}").start()
    try:
        _publish(
            dns_stack,
            [(domain, "MX", f"10 mx.{domain}."), (f"mx.{domain}", "A", REMOTE_ADDRESS)],
        )
        deadline = time.monotonic() + 30
        while not (
            dns_stack.resolver.is_secure(domain, "MX")
            and dns_stack.resolver.is_secure(f"mx.{domain}", "A")
        ):
            assert time.monotonic() < deadline, f"{domain} MX never became secure"
            time.sleep(0.5)
        yield server, domain
    finally:
        server.stop()


@pytest.fixture(scope="module")
def short_clock_mta(mta_factory: MTAFactory) -> RunningMTA:
    """mailward's rendered MTA with the retry clock SHORTENED (SHORT_CLOCK), this test only."""
    domain = DomainConfig("clock.example.test", ("mx.clock.example.test",), (ACCOUNT[0],))
    return mta_factory(
        RETRY_MTA_HOST,
        [domain],
        accounts={"clock.example.test": {ACCOUNT[0]: ACCOUNT[1]}},
        overrides=SHORT_CLOCK,
    )


def _submit(mta: RunningMTA, sender: str, recipient: str, message: str) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with smtplib.SMTP(mta.address, 587, local_hostname="laptop.example.test", timeout=20) as c:
        c.starttls(context=context)
        c.login(sender, ACCOUNT[1])
        c.sendmail(sender, [recipient], message)


def _wait(what: str, predicate: object, timeout: float, log: RunningMTA) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; log:\n{log.log()[-4000:]}")
        time.sleep(0.2)


def _dsn_for(mta: RunningMTA, mailbox: str, token: str, timeout: float) -> tuple[str, Message]:
    found: list[str] = []

    def arrived() -> bool:
        found[:] = [
            m for m in mta.postfix.mailbox(mailbox) if token in m and "delivery-status" in m
        ]
        return bool(found)

    _wait(f"a DSN about {token} for {mailbox}", arrived, timeout, mta)
    (text,) = found
    return text, email.message_from_string(text, policy=email.policy.compat32)


def _delivery_status(dsn: Message) -> str:
    """The message/delivery-status part as text (per-message and per-recipient fields)."""
    (part,) = [p for p in dsn.walk() if p.get_content_type() == "message/delivery-status"]
    payload = part.get_payload()
    assert isinstance(payload, list)
    return "\n".join(str(block).strip() for block in payload)


def _bounce_envelope_lines(log: str, queue_id: str) -> tuple[str, str]:
    """The bounce daemon's line for `queue_id` and the `from=` line of the DSN it queued."""
    notice = re.search(
        rf"postfix/bounce\[\d+\]: {queue_id}: sender (?:non-delivery|delivery status) "
        rf"notification: (\w+)",
        log,
    )
    assert notice, f"no DSN for {queue_id} in:\n{log[-3000:]}"
    dsn_id = notice.group(1)
    from_line = re.search(rf"^.*: {dsn_id}: from=<[^>]*>.*$", log, re.M)
    assert from_line, log[-3000:]
    return notice.group(0), from_line.group(0)


def _queue_id(log: str, rcpt: str, status: str) -> str:
    match = re.search(rf"(\w+): to=<{re.escape(rcpt)}>.*status={status}", log)
    assert match, f"no status={status} for {rcpt} in:\n{log[-3000:]}"
    return match.group(1)


# --------------------------------------------------------------------------------------------
# The rendered values (the pod's configuration, unshortened)


def _seconds(value: str) -> int:
    """A Postfix time value (`300s`, `4h`, `5d`; a bare number is seconds for these)."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    match = re.fullmatch(r"(\d+)([smhdw]?)", value)
    assert match, value
    return int(match.group(1)) * units[match.group(2) or "s"]


def test_rendered_retry_schedule_and_hop_limit_follow_rfc_5321() -> None:
    config = render_postfix([DomainConfig(ZONE, (f"mx1.{ZONE}",))], MTAOptions())
    value = config.parameter
    # §4.5.4.1: "the retry interval SHOULD be at least 30 minutes"
    assert _seconds(value("minimal_backoff_time")) >= 30 * 60
    # Backing off: later retries wait longer, capped (4 h) well inside the give-up time.
    assert _seconds(value("minimal_backoff_time")) < _seconds(value("maximal_backoff_time"))
    assert _seconds(value("maximal_backoff_time")) <= 24 * 3600
    # The deferred queue is scanned often enough for the backoff to be what decides.
    assert _seconds(value("queue_run_delay")) <= _seconds(value("minimal_backoff_time"))
    # "the give-up time generally needs to be at least 4-5 days"; DSNs are mail too.
    for name in ("maximal_queue_lifetime", "bounce_queue_lifetime"):
        assert 4 * 86400 <= _seconds(value(name)) <= 5 * 86400, name
    # §6.3: "a large rejection threshold, normally at least 100 Received entries".
    assert int(value("hopcount_limit")) >= 100
    print(
        "\nevidence: "
        + ", ".join(
            f"{n}={value(n)}"
            for n in (
                "queue_run_delay",
                "minimal_backoff_time",
                "maximal_backoff_time",
                "maximal_queue_lifetime",
                "bounce_queue_lifetime",
                "hopcount_limit",
            )
        )
    )


def test_running_postfix_reads_the_rendered_schedule(mta: RunningMTA) -> None:
    """`postconf` of the image's Postfix on the rendered main.cf: the values are in force."""
    for name in ("minimal_backoff_time", "maximal_queue_lifetime", "hopcount_limit"):
        assert mta.postfix.postconf("-h", name) == mta.config.parameter(name)


# --------------------------------------------------------------------------------------------
# §6.1: DSNs with the null reverse path, and no backscatter


def test_remote_550_comes_back_as_dsn_with_null_reverse_path(
    mta: RunningMTA, remote: tuple[RemoteMTA, str]
) -> None:
    server, domain = remote
    token = uuid.uuid4().hex
    sender = f"{ACCOUNT[0]}@{ZONE}"
    rcpt = f"unknown-{token[:8]}@{domain}"
    _submit(mta, sender, rcpt, f"Subject: {token}\r\n\r\nfor a user the remote does not know\r\n")

    text, dsn = _dsn_for(mta, sender, token, timeout=60)
    # The remote really was asked and said 550, with the sender's own reverse path.
    (attempt,) = server.attempts_for(rcpt)
    assert attempt.mail_from == sender
    assert attempt.reply.startswith("550 5.1.1")
    # The DSN's envelope: the null reverse path (§4.5.5, §6.1), recorded by the delivery.
    assert dsn["Return-Path"] == "<>"
    assert dsn.get_content_type() == "multipart/report"
    assert dsn.get_param("report-type") == "delivery-status"
    assert dsn["To"] == sender
    status = _delivery_status(dsn)
    assert re.search(r"^Status: 5\.1\.1$", status, re.M), status
    assert re.search(r"^Action: failed$", status, re.M), status
    assert f"Final-Recipient: rfc822; {rcpt}" in status
    assert f"Remote-MTA: dns; mx.{domain}" in status
    assert "Diagnostic-Code: smtp; 550 5.1.1" in status
    # The queue manager's view: the bounce daemon queued the DSN with from=<>.
    log = mta.log()
    queue_id = _queue_id(log, rcpt, "bounced")
    notice, from_line = _bounce_envelope_lines(log, queue_id)
    assert "from=<>" in from_line, from_line
    headers = text.split("\n\n", 1)[0]
    print(f"\nevidence: {attempt}\nevidence: {notice}\nevidence: {from_line}")
    print("evidence: DSN headers:\n" + headers + "\nevidence: delivery-status:\n" + status)


def test_unknown_local_recipient_is_refused_at_rcpt_so_nothing_bounces(
    mta: RunningMTA, remote: tuple[RemoteMTA, str]
) -> None:
    """No backscatter: the refusal is part of the dialogue; the forged sender gets no DSN."""
    server, domain = remote
    token = uuid.uuid4().hex
    # A sender whose MX is the remote: any bounce to it would arrive there.
    forged = f"victim-{token[:8]}@{domain}"
    nobody = f"nobody-{token[:8]}@{ZONE}"
    before = len(mta.log())
    with smtplib.SMTP(mta.address, 25, local_hostname=f"mx.{domain}", timeout=20) as c:
        c.ehlo()
        assert c.mail(forged)[0] == 250
        code, reply = c.rcpt(nobody)
        assert (code, reply[:5]) == (550, b"5.1.1"), reply
        # With one good recipient too, only the good one gets the message.
        assert c.rcpt(f"{ACCOUNT[0]}@{ZONE}")[0] == 250
        assert c.data(f"Subject: {token}\r\n\r\nhello\r\n")[0] == 250
    _wait(
        "the delivery to alice",
        lambda: any(token in m for m in mta.postfix.mailbox(f"{ACCOUNT[0]}@{ZONE}")),
        30,
        mta,
    )
    time.sleep(5)  # a bounce, if there were one, would be queued within a second or two
    log = mta.log()[before:]
    assert re.search(rf"NOQUEUE: reject: RCPT from .*: 550 5\.1\.1 <{nobody}>", log), log
    assert "from=<>" not in log, log
    assert "postfix/bounce" not in log, log
    assert not [a for a in server.attempts if a.rcpt == forged]
    print(f"\nevidence: {next(line for line in log.splitlines() if 'reject' in line)}")


# --------------------------------------------------------------------------------------------
# §4.5.4.1: retries on a schedule, then a DSN (clock SHORTENED for this instance only)


def test_4xx_is_retried_with_backoff_then_bounced_on_a_shortened_clock(
    short_clock_mta: RunningMTA, remote: tuple[RemoteMTA, str]
) -> None:
    """SHORTENED CLOCK (SHORT_CLOCK: backoff 4s..16s, lifetime 40s instead of 30min..4h, 5d).

    The remote answers 451 every time: Postfix retries no sooner than minimal_backoff_time,
    the intervals grow (Postfix waits about the message's age, between the minimal and the
    maximal backoff time), and after maximal_queue_lifetime the sender gets a DSN with the
    null reverse path. Bounds are generous: the test asserts ordering, not exact times.
    """
    mta = short_clock_mta
    for name, value in SHORT_CLOCK.items():
        assert mta.postfix.postconf("-h", name) == value
    server, domain = remote
    token = uuid.uuid4().hex
    sender = f"{ACCOUNT[0]}@clock.example.test"
    rcpt = f"busy-{token[:8]}@{domain}"
    started = time.monotonic()
    _submit(mta, sender, rcpt, f"Subject: {token}\r\n\r\nthe remote is busy\r\n")

    text, dsn = _dsn_for(mta, sender, token, timeout=95)
    finished = time.monotonic()
    attempts = server.attempts_for(rcpt)
    times = [round(a.at - started, 1) for a in attempts]
    intervals = [round(b - a, 1) for a, b in itertools.pairwise(times)]
    print(f"\nevidence: attempts at {times} s after submission; intervals {intervals} s")
    minimal = _seconds(SHORT_CLOCK["minimal_backoff_time"])
    maximal = _seconds(SHORT_CLOCK["maximal_backoff_time"])
    lifetime = _seconds(SHORT_CLOCK["maximal_queue_lifetime"])
    assert all(a.reply.startswith("451") and a.mail_from == sender for a in attempts)
    assert len(attempts) >= 4, times
    # Never sooner than the minimal backoff, less Postfix's whole-second clock (the next
    # attempt is due at the whole second, so up to 1 s early) and a margin.
    assert min(intervals) >= minimal - 1.5, intervals
    # Backing off: a later wait is clearly longer than the first (about 4x here).
    assert max(intervals) >= intervals[0] + minimal, intervals
    assert intervals.index(max(intervals)) > 0, intervals
    # Capped: never much more than the maximal backoff plus queue scans and a margin for load.
    assert max(intervals) <= maximal + 10, intervals
    # Given up only after the lifetime, then not retried any more.
    assert times[-1] <= lifetime + maximal + 10
    # Postfix keeps the arrival time in whole seconds (the queue file's mtime), so the message
    # can expire up to 1 s before `lifetime` measured from just before submission.
    assert finished - started >= lifetime - 1.5, (finished - started, times)
    assert times[-1] >= lifetime - maximal - 1.5, times
    assert len(server.attempts_for(rcpt)) == len(attempts)
    # The DSN: null reverse path, the last temporary reason, Action: failed.
    assert dsn["Return-Path"] == "<>"
    assert dsn.get_param("report-type") == "delivery-status"
    status = _delivery_status(dsn)
    assert re.search(r"^Action: failed$", status, re.M), status
    assert re.search(r"^Status: 4\.3\.0$", status, re.M), status
    assert "Diagnostic-Code: smtp; 451 4.3.0" in status
    log = mta.log()
    queue_id = _queue_id(log, rcpt, "deferred")
    expired = re.search(rf"^.*{queue_id}: from=<{sender}>, status=expired.*$", log, re.M)
    assert expired, log[-3000:]
    notice, from_line = _bounce_envelope_lines(log, queue_id)
    assert "from=<>" in from_line
    print(f"evidence: DSN after {finished - started:.1f} s\nevidence: {expired.group(0)}")
    print(f"evidence: {notice}")
    print(f"evidence: {from_line}\nevidence: delivery-status:\n{status}")
    assert text


# --------------------------------------------------------------------------------------------
# §6.3: loop detection


def _with_received(count: int, token: str) -> str:
    hops = "".join(
        f"Received: from hop{i}.loop.test (hop{i}.loop.test [192.0.2.{i % 250 + 1}])\r\n"
        f"\tby hop{i + 1}.loop.test with ESMTP id {token[:6]}{i};"
        " Mon, 1 Dec 2026 10:00:00 +0000\r\n"
        for i in range(count)
    )
    return f"{hops}Subject: {token}\r\n\r\nloop test with {count} Received headers\r\n"


def test_too_many_received_headers_are_refused_not_relayed(
    mta: RunningMTA, remote: tuple[RemoteMTA, str]
) -> None:
    """hopcount_limit, to the header: with the submission's own Received header, a message
    with `limit` Received headers in all is refused at the end of DATA (cleanup counts them:
    "too many hops"), so the submitter is told in the dialogue and nothing is queued, relayed
    or bounced; one with limit - 1 in all is relayed."""
    server, domain = remote
    limit = int(mta.config.parameter("hopcount_limit"))
    sender = f"{ACCOUNT[0]}@{ZONE}"
    below, loop = uuid.uuid4().hex, uuid.uuid4().hex
    below_rcpt, loop_rcpt = f"fine-{below[:8]}@{domain}", f"loop-{loop[:8]}@{domain}"
    before = len(mta.log())
    _submit(mta, sender, below_rcpt, _with_received(limit - 2, below))
    with pytest.raises(smtplib.SMTPDataError) as refused:
        _submit(mta, sender, loop_rcpt, _with_received(limit - 1, loop))
    code, error = refused.value.smtp_code, refused.value.smtp_error
    reply = error.decode() if isinstance(error, bytes) else error
    assert code == 554, (code, reply)
    assert "too many hops" in reply.lower(), reply

    _wait("the relayed control message", lambda: bool(server.received(below)), 30, mta)
    time.sleep(3)  # time enough for a (wrong) relay or bounce of the looping message
    # Never relayed: the remote saw neither a RCPT for it nor its text.
    assert not server.attempts_for(loop_rcpt)
    assert not server.received(loop)
    assert not [m for m in mta.postfix.mailbox(sender) if loop in m]
    log = mta.log()[before:]
    # Not queued: cleanup refused it and dropped it; no delivery attempt, no DSN.
    assert not re.search(rf"to=<{re.escape(loop_rcpt)}>.*status=", log), log
    rejected = re.search(r"^.*: (\w+): message rejected: hopcount exceeded$", log, re.M)
    assert rejected, log
    assert f"{rejected.group(1)}: removed (canceled)" in log
    assert "postfix/bounce" not in log
    hops = rejected.group(0)
    relayed = re.search(rf".*to=<{re.escape(below_rcpt)}>.*status=sent.*", log)
    assert relayed, log
    print(f"\nevidence: hopcount_limit={limit}; {limit} Received in all -> {code} {reply}")
    print(f"evidence: {hops}\nevidence: {limit - 1} Received in all -> {relayed.group(0)}")
