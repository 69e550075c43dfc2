"""The zone transfer reader of the RFC 2136 provider on messages built by dnspython: names with
compression, TSIG verified on every signed message, IXFR sequences, the AXFR-style answer to an
IXFR, and what the kept copy makes of them (DNSSEC data skipped)."""

from __future__ import annotations

import struct

import dns.exception
import dns.message
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.tsig
import dns.xfr
import pytest

from mailward.adapters.dns_rfc2136 import _Inbound, _read_name, _read_xfr_message, _ZoneCopy
from mailward.render.dns_records import RRset

ORIGIN = dns.name.from_text("zone.test")
KEY = dns.tsig.Key("xfr-key.", "c2VjcmV0IG9mIHRoZSB0ZXN0cywgMzIgYnl0ZXMgbG9uZyE=", "hmac-sha256")
RRSIG = (
    "A 13 3 300 20300101000000 20200101000000 12345 zone.test. "
    "c2lnbmF0dXJlIG9mIHRoZSB0ZXN0cywgMzIgYnl0ZXMgbG9uZyE="
)


def _soa(serial: int) -> tuple[str, str, str]:
    return ("zone.test.", "SOA", f"ns.zone.test. admin.zone.test. {serial} 3600 600 86400 60")


def _query(kind: str, serial: int | None = None) -> dns.message.Message:
    query = dns.message.make_query(ORIGIN, kind)
    if serial is not None:
        soa = dns.rdata.from_text("IN", "SOA", f". . {serial} 0 0 0 0")
        query.find_rrset(
            query.authority, ORIGIN, dns.rdataclass.IN, dns.rdatatype.SOA, create=True
        ).add(soa, 0)
    query.use_tsig(KEY)
    query.to_wire()  # sets query.mac
    return query


def _response(
    query: dns.message.Message, records: list[tuple[str, str, str]], *, signed: bool = True
) -> bytes:
    return _transfer(query, [records], signed=[signed])[0]


def _transfer(
    query: dns.message.Message,
    messages: list[list[tuple[str, str, str]]],
    *,
    signed: list[bool] | None = None,
) -> list[bytes]:
    """The messages of one transfer as a server sends them: each signed one carries a TSIG
    that covers it and every unsigned message since the last (RFC 8945 §5.3.1)."""
    wires: list[bytes] = []
    ctx: object = None
    for index, records in enumerate(messages):
        response = dns.message.make_response(query)
        for name, rdtype, text in records:
            response.answer.append(dns.rrset.from_text(name, 300, "IN", rdtype, text))
        if signed is None or signed[index]:
            wire = response.to_wire(multi=True, tsig_ctx=ctx)
            ctx = response.tsig_ctx
        else:
            response.keyring = None
            response.tsig = None
            wire = response.to_wire()
            if ctx is not None:
                ctx.update(wire)  # type: ignore[attr-defined]
        wires.append(wire)
    return wires


def _feed(query: dns.message.Message, serial: int | None, *messages: bytes) -> _Inbound:
    inbound = _Inbound("zone.test.", serial)
    ctx: object = None
    for wire in messages:
        ctx, _ = _read_xfr_message(wire, query, KEY, ctx, inbound)
    return inbound


def test_names_are_read_through_compression_pointers_in_lower_case() -> None:
    # "Mail.Zone.Test." at 0, then "WWW" + a pointer to offset 5 ("Zone.Test.").
    wire = b"\x04Mail\x04Zone\x04Test\x00" + b"\x03WWW\xc0\x05"
    memo: dict[int, str] = {}
    assert _read_name(wire, 0, memo) == ("mail.zone.test.", 16)
    assert _read_name(wire, 16, memo) == ("www.zone.test.", 22)
    assert _read_name(b"\x03a.b\x00", 0, {}) == ("a\\.b.", 5)


def test_a_compression_loop_is_refused() -> None:
    with pytest.raises(dns.exception.FormError):
        _read_name(b"\x01a\xc0\x00", 0, {})


def test_an_axfr_fills_the_copy_without_the_signer_records() -> None:
    query = _query("AXFR")
    records = [
        _soa(7),
        ("zone.test.", "NS", "ns.zone.test."),
        ("ns.zone.test.", "A", "192.0.2.1"),
        ("ns.zone.test.", "RRSIG", RRSIG),
        ("ns.zone.test.", "NSEC", "zone.test. A RRSIG NSEC"),
        ("Mail.zone.test.", "MX", "10 ns.zone.test."),
        _soa(7),
    ]
    # Over three messages: the first and the last signed (they must be), the middle one not.
    wires = _transfer(query, [records[:3], records[3:5], records[5:]], signed=[True, False, True])
    inbound = _feed(query, None, *wires)
    assert inbound.done
    copy = _ZoneCopy(ORIGIN)
    inbound.commit(copy)
    assert copy.serial == 7
    rrsets = copy.rrsets()
    assert set(rrsets) == {
        ("zone.test.", "SOA"),
        ("zone.test.", "NS"),
        ("ns.zone.test.", "A"),
        ("mail.zone.test.", "MX"),
    }
    assert copy.rrsets_at("MAIL.zone.test.") == {
        ("MAIL.zone.test.", "MX"): RRset("MAIL.zone.test.", "MX", 300, ("10 ns.zone.test.",))
    }


def _copy_at_7() -> _ZoneCopy:
    query = _query("AXFR")
    records = [_soa(7), ("a.zone.test.", "TXT", '"one"'), ("b.zone.test.", "A", "192.0.2.2")]
    copy = _ZoneCopy(ORIGIN)
    _feed(query, None, _response(query, [*records, _soa(7)])).commit(copy)
    return copy


def test_an_ixfr_applies_each_sequence_in_order() -> None:
    copy = _copy_at_7()
    query = _query("IXFR", 7)
    records = [
        _soa(9),
        _soa(7),  # 7 -> 8: a's TXT replaced, an RRSIG that is skipped
        ("a.zone.test.", "TXT", '"one"'),
        _soa(8),
        ("a.zone.test.", "TXT", '"two"'),
        ("a.zone.test.", "RRSIG", RRSIG),
        _soa(8),  # 8 -> 9: b removed, c added
        ("b.zone.test.", "A", "192.0.2.2"),
        _soa(9),
        ("c.zone.test.", "AAAA", "2001:db8::1"),
        _soa(9),
    ]
    inbound = _feed(query, 7, _response(query, records))
    inbound.commit(copy)
    assert copy.serial == 9
    assert {k: v.rdata for k, v in copy.rrsets().items() if k[1] != "SOA"} == {
        ("a.zone.test.", "TXT"): ('"two"',),
        ("c.zone.test.", "AAAA"): ("2001:db8::1",),
    }


def test_an_ixfr_that_deletes_what_the_copy_lacks_is_refused() -> None:
    copy = _copy_at_7()
    query = _query("IXFR", 7)
    records = [_soa(8), _soa(7), ("x.zone.test.", "A", "192.0.2.9"), _soa(8), _soa(8)]
    inbound = _feed(query, 7, _response(query, records))
    with pytest.raises(dns.exception.FormError):
        inbound.commit(copy)


def test_an_up_to_date_ixfr_and_an_axfr_style_answer() -> None:
    copy = _copy_at_7()
    query = _query("IXFR", 7)
    up_to_date = _feed(query, 7, _response(query, [_soa(7)]))
    assert up_to_date.done
    up_to_date.commit(copy)
    assert copy.serial == 7
    whole = [_soa(8), ("d.zone.test.", "A", "192.0.2.4"), _soa(8)]
    inbound = _feed(query, 7, _response(query, whole))
    inbound.commit(copy)
    assert copy.serial == 8
    assert {k for k in copy.rrsets() if k[1] != "SOA"} == {("d.zone.test.", "A")}


def test_a_serial_gone_backwards_is_refused() -> None:
    query = _query("IXFR", 7)
    with pytest.raises(dns.xfr.SerialWentBackwards):
        _feed(query, 7, _response(query, [_soa(6)]))


def test_unsigned_or_tampered_messages_are_refused() -> None:
    query = _query("AXFR")
    records = [_soa(7), ("a.zone.test.", "TXT", '"one"'), _soa(7)]
    with pytest.raises(dns.exception.FormError):
        _feed(query, None, _response(query, records, signed=False))
    tampered = bytearray(_response(query, records))
    at = tampered.index(b"one")
    tampered[at : at + 3] = b"two"
    with pytest.raises(dns.tsig.BadSignature):
        _feed(query, None, bytes(tampered))
    # A transfer whose last message is unsigned does not end signed.
    wires = _transfer(query, [records[:2], records[2:]], signed=[True, False])
    inbound = _Inbound("zone.test.", None)
    ctx: object = None
    for wire in wires:
        ctx, last_signed = _read_xfr_message(wire, query, KEY, ctx, inbound)
    assert inbound.done
    assert not last_signed
    # An answer to another query (other id) is not taken either.
    other = bytearray(_response(query, records))
    struct.pack_into("!H", other, 0, (query.id + 1) % 65536)
    with pytest.raises(dns.exception.FormError):
        _feed(query, None, bytes(other))
