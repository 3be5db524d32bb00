"""Tests of smpp_proxy.udh."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smpp_proxy.constants import CommandId, Tag
from smpp_proxy.pdu import Pdu, Tlv, decode_pdu
from smpp_proxy.udh import (
    ConcatInfo,
    build_udh,
    concat_info,
    fill_bits,
    message_body,
    message_data,
    split_udh,
)


def sms(short_message: bytes = b"", esm_class: int = 0, tlvs: list[Tlv] | None = None) -> Pdu:
    return Pdu(
        CommandId.SUBMIT_SM,
        0,
        1,
        {"esm_class": esm_class, "short_message": short_message},
        tlvs or [],
    )


def test_split_udh_concat8():
    ies, payload = split_udh(bytes.fromhex("050003CC0301") + b"Hello")
    assert ies == [(0x00, b"\xcc\x03\x01")]
    assert payload == b"Hello"


def test_split_udh_several_ies():
    udh = bytes.fromhex("0C" "0504" "0B8423F0" "08" "04" "1234" "0201")  # fmt: skip
    ies, payload = split_udh(udh + b"x")
    assert ies == [(0x05, b"\x0b\x84\x23\xf0"), (0x08, b"\x12\x34\x02\x01")]
    assert payload == b"x"
    assert build_udh(ies) == udh


def test_split_udh_empty_udh_and_payload():
    assert split_udh(b"\x00abc") == ([], b"abc")
    assert split_udh(bytes.fromhex("050003CC0301")) == ([(0, b"\xcc\x03\x01")], b"")
    assert split_udh(b"\x02\x70\x00") == ([(0x70, b"")], b"")


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x05\x00\x03\xcc\x03",  # UDHL past the end
        b"\xff" + b"a" * 10,
        b"\x01\x00",  # IE header truncated
        b"\x03\x00\x03\xcc" + b"abc",  # IE data overruns the UDH
        b"\x04\x00\x01\xcc\x08",  # second IE header truncated
    ],
)
def test_split_udh_errors(data):
    with pytest.raises(ValueError):
        split_udh(data)


def test_build_udh_errors():
    with pytest.raises(ValueError):
        build_udh([(0x00, b"x" * 256)])
    with pytest.raises(ValueError):
        build_udh([(0x70, b"x" * 200), (0x71, b"y" * 100)])
    with pytest.raises(ValueError):
        build_udh([(256, b"")])
    assert build_udh([]) == b"\x00"


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 255), st.binary(max_size=30)), max_size=6),
    st.binary(max_size=50),
)
def test_udh_round_trip(ies, payload):
    udh = build_udh(ies)
    assert split_udh(udh + payload) == (ies, payload)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=80))
def test_split_udh_only_value_error(data):
    try:
        ies, payload = split_udh(data)
    except ValueError:
        return
    assert build_udh(ies) + payload == data


def test_concat_info_udh_8bit_and_16bit():
    p = sms(bytes.fromhex("050003CC0302") + b"part2", esm_class=0x40)
    assert concat_info(p) == ConcatInfo(reference=0xCC, total=3, seqnum=2, ref_bits=8)
    p = sms(bytes.fromhex("0608041234" "0201") + b"part1", esm_class=0x43)  # fmt: skip
    assert concat_info(p) == ConcatInfo(0x1234, 2, 1, 16)
    # other IEs are skipped
    udh = build_udh([(0x05, b"\x0b\x84\x23\xf0"), (0x00, b"\x07\x02\x02")])
    assert concat_info(sms(udh + b"x", 0x40)) == ConcatInfo(7, 2, 2, 8)
    # last concatenation IE wins (TS 23.040 9.2.3.24)
    udh = build_udh([(0x00, b"\x01\x02\x01"), (0x00, b"\x09\x04\x03")])
    assert concat_info(sms(udh, 0x40)) == ConcatInfo(9, 4, 3, 8)


def test_concat_info_needs_udhi():
    sm = bytes.fromhex("050003CC0302") + b"part2"
    assert concat_info(sms(sm, esm_class=0x00)) is None


@pytest.mark.parametrize(
    "ie",
    [
        (0x00, b"\xcc\x01\x01"),  # single part
        (0x00, b"\xcc\x00\x00"),  # total 0
        (0x00, b"\xcc\x03\x00"),  # seqnum 0
        (0x00, b"\xcc\x03\x04"),  # seqnum > total
        (0x00, b"\xcc\x03"),  # wrong IE length
        (0x08, b"\x12\x34\x02"),  # wrong IE length
        (0x08, b"\x12\x34\x02\x05"),
    ],
)
def test_concat_info_nonsense(ie):
    assert concat_info(sms(build_udh([ie]) + b"x", 0x40)) is None


def test_concat_info_broken_udh():
    assert concat_info(sms(b"\x09\x00\x03", 0x40)) is None


def sar(ref: bytes, total: bytes, seq: bytes) -> list[Tlv]:
    return [
        Tlv(Tag.SAR_MSG_REF_NUM, ref),
        Tlv(Tag.SAR_TOTAL_SEGMENTS, total),
        Tlv(Tag.SAR_SEGMENT_SEQNUM, seq),
    ]


def test_concat_info_sar_tlvs():
    p = sms(b"part", tlvs=sar(b"\xab\xcd", b"\x03", b"\x01"))
    assert concat_info(p) == ConcatInfo(0xABCD, 3, 1, 16)
    # UDHI set but the UDH has no concatenation IE: SAR TLVs are used
    udh = build_udh([(0x05, b"\x0b\x84\x23\xf0")])
    p = sms(udh + b"x", 0x40, sar(b"\x00\x05", b"\x02", b"\x02"))
    assert concat_info(p) == ConcatInfo(5, 2, 2, 16)
    # UDH concatenation wins over SAR
    udh = build_udh([(0x00, b"\x07\x02\x01")])
    p = sms(udh + b"x", 0x40, sar(b"\x00\x05", b"\x02", b"\x02"))
    assert concat_info(p) == ConcatInfo(7, 2, 1, 8)


@pytest.mark.parametrize(
    "tlvs",
    [
        sar(b"\x00\x05", b"\x01", b"\x01"),  # single part
        sar(b"\x00\x05", b"\x00", b"\x00"),
        sar(b"\x00\x05", b"\x02", b"\x03"),
        sar(b"\x05", b"\x02", b"\x01"),  # wrong lengths
        sar(b"\x00\x05", b"\x00\x02", b"\x01"),
        sar(b"\x00\x05", b"\x02", b"\x01")[:2],  # seqnum missing
        [],
    ],
)
def test_concat_info_sar_nonsense(tlvs):
    assert concat_info(sms(b"x", tlvs=tlvs)) is None


def test_concat_info_from_wire_deliver_sm():
    import struct

    body = (
        b"\x00\x01\x01" + b"4670001\x00" + b"\x00\x00" + b"Bank\x00"
        + b"\x40\x00\x00\x00\x00\x00\x00\x00\x00"
        + b"\x0b" + bytes.fromhex("050003CC0201") + b"Hello"
    )  # fmt: skip
    raw = struct.pack(">IIII", 16 + len(body), 5, 0, 7) + body
    p = decode_pdu(raw)
    assert concat_info(p) == ConcatInfo(0xCC, 2, 1, 8)
    assert message_body(p) == b"Hello"


def test_message_body_and_data():
    udh = bytes.fromhex("050003CC0201")
    assert message_body(sms(udh + b"Hello", 0x40)) == b"Hello"
    assert message_body(sms(udh + b"Hello", 0x00)) == udh + b"Hello"  # no UDHI: all text
    assert message_body(sms(b"\x09broken", 0x40)) == b"\x09broken"  # unparsable UDH kept
    # message_payload when short_message is empty
    p = sms(b"", 0x40, [Tlv(Tag.MESSAGE_PAYLOAD, udh + b"long text")])
    assert message_data(p) == udh + b"long text"
    assert message_body(p) == b"long text"
    assert concat_info(p) == ConcatInfo(0xCC, 2, 1, 8)
    p = sms(b"", 0, [Tlv(Tag.MESSAGE_PAYLOAD, b"payload")])
    assert message_body(p) == b"payload"
    assert message_body(sms(b"", 0)) == b""
    assert message_body(Pdu(CommandId.DATA_SM, params={}, tlvs=[])) == b""
    assert message_body(sms(b"short", 0, [Tlv(Tag.MESSAGE_PAYLOAD, b"ignored")])) == b"short"


def test_fill_bits():
    assert fill_bits(6) == 1  # 8-bit concatenation UDH
    assert fill_bits(7) == 0  # 16-bit concatenation UDH
    assert fill_bits(0) == 0
    assert all((n * 8 + fill_bits(n)) % 7 == 0 for n in range(1, 141))
