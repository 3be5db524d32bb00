"""Tests of smpp_proxy.pdu and smpp_proxy.constants."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smpp_proxy.constants import (
    COMMAND_NAMES,
    CommandId,
    Status,
    Tag,
    command_name,
    status_name,
    tag_name,
)
from smpp_proxy.pdu import Pdu, PduError, Tlv, decode_pdu, default_params, field_names

ALL_COMMANDS = [int(c) for c in CommandId]


def frame(command_id: int, body: bytes = b"", status: int = 0, seq: int = 1) -> bytes:
    return struct.pack(">IIII", 16 + len(body), command_id, status, seq) + body


def tlv(tag: int, value: bytes) -> bytes:
    return struct.pack(">HH", tag, len(value)) + value


# ---------------------------------------------------------------------------------------------
# constants
# ---------------------------------------------------------------------------------------------


def test_constants_values():
    assert CommandId.GENERIC_NACK == 0x80000000
    assert CommandId.SUBMIT_SM_RESP == 0x80000004
    assert CommandId.DATA_SM_RESP == 0x80000103
    for c in CommandId:
        if c.name.endswith("_RESP"):
            assert c == CommandId[c.name[:-5]] | 0x80000000
    assert Status.RINVOPTPARSTREAM == 0xC0
    assert Status.RTHROTTLED == 0x58
    assert Tag.RECEIPTED_MESSAGE_ID == 0x001E
    assert Tag.MESSAGE_STATE == 0x0427
    assert Tag.NETWORK_ERROR_CODE == 0x0423
    assert Tag.SAR_MSG_REF_NUM == 0x020C
    assert Tag.SAR_TOTAL_SEGMENTS == 0x020E
    assert Tag.SAR_SEGMENT_SEQNUM == 0x020F
    assert Tag.MESSAGE_PAYLOAD == 0x0424
    assert Tag.SC_INTERFACE_VERSION == 0x0210
    assert Tag.USER_MESSAGE_REFERENCE == 0x0204
    assert Tag.SOURCE_PORT == 0x020A and Tag.DEST_PORT == Tag.DESTINATION_PORT == 0x020B


def test_command_names():
    assert command_name(CommandId.SUBMIT_SM) == "submit_sm"
    assert command_name(0x80000005) == "deliver_sm_resp"
    assert command_name(0x80000000) == "generic_nack"
    assert command_name(0x99) == "unknown_0x00000099"
    assert COMMAND_NAMES[0x103] == "data_sm"
    assert tag_name(0x1E) == "receipted_message_id"
    assert tag_name(0x020B) == "destination_port"
    assert tag_name(0x1400) == "tag_0x1400"
    assert status_name(0x58) == "ESME_RTHROTTLED"
    assert status_name(0x400) == "0x00000400"


# ---------------------------------------------------------------------------------------------
# round trips
# ---------------------------------------------------------------------------------------------

cstr = st.text(alphabet=st.characters(min_codepoint=1, max_codepoint=255), max_size=5)
u8 = st.integers(0, 255)
tlvs_st = st.lists(st.builds(Tlv, st.integers(0, 0xFFFF), st.binary(max_size=20)), max_size=4)
dest_st = st.one_of(
    st.fixed_dictionaries(
        {
            "dest_flag": st.just(1),
            "dest_addr_ton": u8,
            "dest_addr_npi": u8,
            "destination_addr": cstr,
        }
    ),
    st.fixed_dictionaries({"dest_flag": st.just(2), "dl_name": cstr}),
)
unsuccess_st = st.fixed_dictionaries(
    {
        "dest_addr_ton": u8,
        "dest_addr_npi": u8,
        "destination_addr": cstr,
        "error_status_code": st.integers(0, 0xFFFFFFFF),
    }
)


@st.composite
def pdus(draw, command_id=None):
    cid = draw(st.sampled_from(ALL_COMMANDS)) if command_id is None else command_id
    params = {}
    for name, default in default_params(cid).items():
        if isinstance(default, str):
            params[name] = draw(cstr)
        elif isinstance(default, bytes):
            params[name] = draw(st.binary(max_size=255))
        elif isinstance(default, int):
            params[name] = draw(u8)
        elif name == "dest_address":
            params[name] = draw(st.lists(dest_st, max_size=4))
        else:
            params[name] = draw(st.lists(unsuccess_st, max_size=4))
    is_resp = bool(cid & 0x80000000)
    tlvs = draw(tlvs_st)
    if is_resp and draw(st.booleans()):
        # body-less response (e.g. non-zero status); TLVs would need the mandatory part first
        params = {}
        tlvs = []
    return Pdu(
        cid,
        draw(st.integers(0, 0xFFFFFFFF)),
        draw(st.integers(0, 0xFFFFFFFF)),
        params,
        tlvs,
    )


@settings(max_examples=200, deadline=None)
@given(pdus())
def test_round_trip_any(p):
    b = p.encode()
    assert len(b) == struct.unpack(">I", b[:4])[0]
    q = decode_pdu(b)
    assert q == p
    assert q.encode() == b


@pytest.mark.parametrize("cid", ALL_COMMANDS, ids=[command_name(c) for c in ALL_COMMANDS])
@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_round_trip_each_command(cid, data):
    p = data.draw(pdus(cid))
    b = p.encode()
    assert decode_pdu(b) == p
    assert decode_pdu(b).encode() == b


def test_defaults_for_missing_params():
    p = Pdu(CommandId.SUBMIT_SM, sequence_number=3, params={"destination_addr": "4670"})
    q = decode_pdu(p.encode())
    assert q.params == {**default_params(CommandId.SUBMIT_SM), "destination_addr": "4670"}
    assert "sm_length" not in q.params
    assert q.params["short_message"] == b""
    # every request is encoded with its whole body even without params
    assert len(Pdu(CommandId.BIND_TRANSMITTER).encode()) == 16 + 7
    assert len(Pdu(CommandId.ENQUIRE_LINK, sequence_number=9).encode()) == 16


def test_field_names_spec_order():
    assert field_names(CommandId.SUBMIT_SM) == (
        "service_type", "source_addr_ton", "source_addr_npi", "source_addr", "dest_addr_ton",
        "dest_addr_npi", "destination_addr", "esm_class", "protocol_id", "priority_flag",
        "schedule_delivery_time", "validity_period", "registered_delivery",
        "replace_if_present_flag", "data_coding", "sm_default_msg_id", "short_message",
    )  # fmt: skip
    assert field_names(CommandId.BIND_TRANSCEIVER) == (
        "system_id", "password", "system_type", "interface_version", "addr_ton", "addr_npi",
        "address_range",
    )  # fmt: skip
    assert field_names(CommandId.ENQUIRE_LINK) == ()
    with pytest.raises(ValueError):
        field_names(0x1234)


# ---------------------------------------------------------------------------------------------
# hand-written wire frames: decode, check fields, re-encode byte for byte
# ---------------------------------------------------------------------------------------------

BIND_TRX_BODY = b"smppclient1\x00password\x00\x00\x34\x01\x01\x00"
SUBMIT_BODY = (
    b"\x00"  # service_type
    + b"\x05\x00" + b"Bank\x00"  # source ton/npi/addr
    + b"\x01\x01" + b"46701234567\x00"  # dest ton/npi/addr
    + b"\x40\x00\x00"  # esm_class (UDHI), protocol_id, priority_flag
    + b"\x00" + b"000001000000000R\x00"  # schedule_delivery_time, validity_period (relative)
    + b"\x01\x00\x08\x00"  # registered_delivery, replace_if_present, data_coding UCS2, default id
    + b"\x0a" + b"\x05\x00\x03\x2a\x02\x01" + b"\x00H\x00i"  # sm_length, UDH, "Hi"
    + tlv(0x0204, b"\x00\x07")  # user_message_reference
    + tlv(0x1400, b"\xde\xad\xbe\xef")  # vendor TLV
    + tlv(0x1401, b"")  # empty vendor TLV
    + tlv(0x1400, b"\x01")  # duplicate tag kept, in order
)  # fmt: skip
DLR_TEXT = (
    b"id:0123456789 sub:001 dlvrd:001 submit date:2401011200 done date:2401011201 "
    b"stat:DELIVRD err:000 text:Hi"
)
DELIVER_BODY = (
    b"\x00" + b"\x01\x01" + b"46701234567\x00" + b"\x05\x00" + b"Bank\x00"
    + b"\x04\x00\x00" + b"\x00" + b"\x00" + b"\x00\x00\x00\x00"
    + bytes([len(DLR_TEXT)]) + DLR_TEXT
    + tlv(0x001E, b"0123456789\x00")
    + tlv(0x0427, b"\x02")
    + tlv(0x0423, b"\x03\x00\x00")
    + tlv(0x1501, b"vendor")
)  # fmt: skip
SUBMIT_MULTI_BODY = (
    b"\x00" + b"\x00\x00" + b"1234\x00"
    + b"\x03"
    + b"\x01\x01\x01" + b"4670001\x00"
    + b"\x02" + b"friends\x00"
    + b"\x01\x00\x00" + b"4670002\x00"
    + b"\x00\x00\x00" + b"\x00\x00" + b"\x00\x00\x00\x00" + b"\x03abc"
)  # fmt: skip
SUBMIT_MULTI_RESP_BODY = (
    b"msg-1\x00" + b"\x02"
    + b"\x01\x01" + b"4670001\x00" + b"\x00\x00\x00\x0b"
    + b"\x00\x00" + b"4670002\x00" + b"\x00\x00\x00\x45"
)  # fmt: skip
DATA_SM_BODY = (
    b"WAP\x00" + b"\x01\x01" + b"4670001\x00" + b"\x01\x01" + b"4670002\x00" + b"\x00\x01\x04"
    + tlv(0x0424, bytes(range(256)) * 2)  # payload longer than 255 octets
    + tlv(0x020A, b"\x23\xf0") + tlv(0x020B, b"\x0b\x84")
)  # fmt: skip

WIRE_FRAMES = {
    "bind_transceiver": frame(0x09, BIND_TRX_BODY),
    "bind_transceiver_resp": frame(0x80000009, b"SMSC\x00" + tlv(0x0210, b"\x34")),
    "bind_transmitter_resp_error_no_body": frame(0x80000002, b"", Status.RBINDFAIL),
    "bind_receiver_resp_error_with_body": frame(0x80000001, b"\x00", Status.RINVPASWD),
    "outbind": frame(0x0B, b"smsc\x00secret\x00"),
    "unbind": frame(0x06),
    "unbind_resp": frame(0x80000006),
    "enquire_link": frame(0x15, seq=0x7FFFFFFF),
    "enquire_link_resp": frame(0x80000015, seq=0x7FFFFFFF),
    "generic_nack": frame(0x80000000, status=Status.RINVCMDID, seq=17),
    "submit_sm": frame(0x04, SUBMIT_BODY, seq=42),
    "submit_sm_resp": frame(0x80000004, b"5f3c0a1b-0001\x00"),
    "submit_sm_resp_error_no_body": frame(0x80000004, b"", Status.RTHROTTLED),
    "submit_sm_resp_error_nul_body": frame(0x80000004, b"\x00", Status.RSUBMITFAIL),
    "deliver_sm_dlr": frame(0x05, DELIVER_BODY),
    "deliver_sm_resp": frame(0x80000005, b"\x00"),
    "deliver_sm_resp_empty": frame(0x80000005),
    "data_sm": frame(0x103, DATA_SM_BODY),
    "data_sm_resp_error_tlv": frame(
        0x80000103, b"\x00" + tlv(0x0425, b"\x01") + tlv(0x001D, b"no route\x00"), 0xFE
    ),
    "query_sm": frame(0x03, b"abc\x00\x01\x01" + b"4670001\x00"),
    "query_sm_resp": frame(0x80000003, b"abc\x00" + b"240101120000000+\x00" + b"\x02\x00"),
    "cancel_sm": frame(0x08, b"\x00abc\x00\x01\x01" + b"1\x00\x01\x01" + b"2\x00"),
    "cancel_sm_resp": frame(0x80000008),
    "replace_sm": frame(0x07, b"abc\x00\x00\x00\x00\x00\x00\x01\x00\x04new!"),
    "replace_sm_resp": frame(0x80000007),
    "submit_multi": frame(0x21, SUBMIT_MULTI_BODY),
    "submit_multi_resp": frame(0x80000021, SUBMIT_MULTI_RESP_BODY),
    "alert_notification": frame(0x102, b"\x01\x01" + b"4670001\x00\x00\x00" + b"esme\x00"
                                + tlv(0x0422, b"\x00")),
}  # fmt: skip


@pytest.mark.parametrize("name", list(WIRE_FRAMES))
def test_wire_frames_reencode_byte_exact(name):
    raw = WIRE_FRAMES[name]
    p = decode_pdu(raw)
    assert p.encode() == raw
    assert decode_pdu(p.encode()) == p
    # a copy with a rewritten sequence number differs only in the header
    c = p.copy()
    c.sequence_number = 0x01020304
    assert c.encode()[16:] == raw[16:] and c.encode()[12:16] == b"\x01\x02\x03\x04"
    assert c.encode()[:12] == raw[:12]


def test_wire_submit_sm_fields():
    p = decode_pdu(WIRE_FRAMES["submit_sm"])
    assert p.name == "submit_sm" and not p.is_response
    assert p.sequence_number == 42
    assert p.params["source_addr_ton"] == 5
    assert p.params["source_addr"] == "Bank"
    assert p.params["destination_addr"] == "46701234567"
    assert p.params["validity_period"] == "000001000000000R"
    assert p.params["esm_class"] == 0x40
    assert p.params["data_coding"] == 8
    assert p.params["short_message"] == b"\x05\x00\x03\x2a\x02\x01\x00H\x00i"
    assert [t.tag for t in p.tlvs] == [0x0204, 0x1400, 0x1401, 0x1400]
    assert p.get_tlv(0x1400) == b"\xde\xad\xbe\xef"  # first occurrence
    assert p.get_tlv(0x1401) == b""
    assert p.get_tlv_int(Tag.USER_MESSAGE_REFERENCE) == 7
    assert p.get_tlv(0x9999) is None


def test_wire_deliver_sm_dlr_fields():
    p = decode_pdu(WIRE_FRAMES["deliver_sm_dlr"])
    assert p.params["esm_class"] == 0x04
    assert p.params["short_message"] == DLR_TEXT
    assert p.get_tlv(Tag.RECEIPTED_MESSAGE_ID) == b"0123456789\x00"
    assert p.get_tlv_str(Tag.RECEIPTED_MESSAGE_ID) == "0123456789"
    assert p.get_tlv_int(Tag.MESSAGE_STATE) == 2
    assert p.get_tlv(Tag.NETWORK_ERROR_CODE) == b"\x03\x00\x00"
    assert p.get_tlv(0x1501) == b"vendor"


def test_wire_submit_multi_fields():
    p = decode_pdu(WIRE_FRAMES["submit_multi"])
    assert p.params["dest_address"] == [
        {"dest_flag": 1, "dest_addr_ton": 1, "dest_addr_npi": 1, "destination_addr": "4670001"},
        {"dest_flag": 2, "dl_name": "friends"},
        {"dest_flag": 1, "dest_addr_ton": 0, "dest_addr_npi": 0, "destination_addr": "4670002"},
    ]
    assert "number_of_dests" not in p.params
    assert list(p.params)[:5] == [
        "service_type", "source_addr_ton", "source_addr_npi", "source_addr", "dest_address",
    ]  # fmt: skip
    assert p.params["short_message"] == b"abc"
    r = decode_pdu(WIRE_FRAMES["submit_multi_resp"])
    assert r.params["message_id"] == "msg-1"
    assert r.params["unsuccess_sme"][1] == {
        "dest_addr_ton": 0,
        "dest_addr_npi": 0,
        "destination_addr": "4670002",
        "error_status_code": 0x45,
    }


def test_wire_data_sm_long_payload():
    p = decode_pdu(WIRE_FRAMES["data_sm"])
    assert p.params["service_type"] == "WAP"
    assert p.get_tlv(Tag.MESSAGE_PAYLOAD) == bytes(range(256)) * 2
    assert p.get_tlv_int(Tag.DESTINATION_PORT) == 2948


def test_error_responses_body_tolerance():
    p = decode_pdu(WIRE_FRAMES["submit_sm_resp_error_no_body"])
    assert p.params == {} and p.tlvs == [] and p.command_status == Status.RTHROTTLED
    p = decode_pdu(WIRE_FRAMES["submit_sm_resp_error_nul_body"])
    assert p.params == {"message_id": ""}
    p = decode_pdu(WIRE_FRAMES["deliver_sm_resp_empty"])
    assert p.params == {}
    p = decode_pdu(WIRE_FRAMES["data_sm_resp_error_tlv"])
    assert p.params == {"message_id": ""}
    assert p.get_tlv(Tag.DELIVERY_FAILURE_REASON) == b"\x01"
    assert p.get_tlv_str(Tag.ADDITIONAL_STATUS_INFO_TEXT) == "no route"


def test_latin1_strings_survive():
    body = b"\x00" + b"\x00\x00" + b"Caf\xe9\xff\x00" + b"\x01\x01" + b"1\x00" + b"\x00" * 3
    body += b"\x00\x00" + b"\x00" * 4 + b"\x01\xe9"
    raw = frame(0x04, body)
    p = decode_pdu(raw)
    assert p.params["source_addr"] == "Caf\xe9\xff"
    assert p.params["short_message"] == b"\xe9"
    assert p.encode() == raw


# ---------------------------------------------------------------------------------------------
# decode errors
# ---------------------------------------------------------------------------------------------


def _err(raw: bytes) -> PduError:
    with pytest.raises(PduError) as ei:
        decode_pdu(raw)
    return ei.value


def test_error_short_frame():
    e = _err(b"\x00\x00\x00\x10\x00\x00")
    assert e.status == Status.RINVCMDLEN and e.command_id == 0 and e.sequence_number == 0


def test_error_length_mismatch():
    raw = frame(0x15, seq=77) + b"\x00"
    e = _err(raw)
    assert (e.status, e.command_id, e.sequence_number) == (Status.RINVCMDLEN, 0x15, 77)


def test_error_unknown_command_id():
    e = _err(frame(0x99, b"whatever", seq=5))
    assert (e.status, e.command_id, e.sequence_number) == (Status.RINVCMDID, 0x99, 5)
    e = _err(frame(0x80000099, seq=6))
    assert (e.status, e.command_id, e.sequence_number) == (Status.RINVCMDID, 0x80000099, 6)


def test_error_unterminated_cstring():
    e = _err(frame(0x09, b"smppclient1", seq=9))
    assert (e.status, e.command_id, e.sequence_number) == (Status.RINVCMDLEN, 0x09, 9)


def test_error_cstring_too_long_specific_status():
    cases = [
        (0x04, b"\x00\x01\x01" + b"1" * 21 + b"\x00", Status.RINVSRCADR),
        (0x04, b"\x00\x01\x01" + b"1\x00\x01\x01" + b"2" * 21 + b"\x00", Status.RINVDSTADR),
        (0x04, b"CMTCMT\x00", Status.RINVSERTYP),
        (0x09, b"s" * 16 + b"\x00", Status.RINVSYSID),
        (0x09, b"sys\x00" + b"p" * 9 + b"\x00", Status.RINVPASWD),
        (0x03, b"m" * 65 + b"\x00", Status.RINVMSGID),
        (0x103, b"\x00\x01\x01" + b"1" * 65 + b"\x00", Status.RINVSRCADR),
    ]
    for cid, body, status in cases:
        e = _err(frame(cid, body, seq=3))
        assert (e.status, e.command_id, e.sequence_number) == (status, cid, 3), body
    # at the limit it is fine: 20 digits + NUL for submit_sm source_addr, 64 for data_sm
    p = Pdu(CommandId.SUBMIT_SM, params={"source_addr": "1" * 20, "destination_addr": "2" * 20})
    assert decode_pdu(p.encode()).params["destination_addr"] == "2" * 20
    p = Pdu(CommandId.DATA_SM, params={"source_addr": "1" * 64})
    assert decode_pdu(p.encode()).params["source_addr"] == "1" * 64


def test_error_truncated_mandatory_fields():
    full = frame(0x04, SUBMIT_BODY, seq=4)
    sm_start = 16 + SUBMIT_BODY.index(b"\x0a\x05\x00\x03")
    # cut in the middle of the integer fields -> RINVCMDLEN
    e = _err(frame(0x04, SUBMIT_BODY[: sm_start - 16 - 2], seq=4))
    assert (e.status, e.command_id, e.sequence_number) == (Status.RINVCMDLEN, 4, 4)
    # sm_length larger than what is left -> RINVMSGLEN
    body = full[16 : sm_start + 1 + 5]
    e = _err(frame(0x04, body, seq=4))
    assert (e.status, e.sequence_number) == (Status.RINVMSGLEN, 4)
    # a request with an empty body
    e = _err(frame(0x04, b"", seq=8))
    assert (e.status, e.command_id, e.sequence_number) == (Status.RINVCMDLEN, 4, 8)
    # a response body cut inside its mandatory part
    e = _err(frame(0x80000003, b"abc\x00\x00\x02", seq=8))
    assert (e.status, e.command_id) == (Status.RINVCMDLEN, 0x80000003)


@pytest.mark.parametrize(
    "tail",
    [b"\x14", b"\x14\x00", b"\x14\x00\x00", tlv(0x1400, b"abc")[:-1], b"\x00\x1e\xff\xff0"],
)
def test_error_truncated_tlv(tail):
    e = _err(frame(0x05, DELIVER_BODY + tail, seq=11))
    assert (e.status, e.command_id, e.sequence_number) == (Status.RINVOPTPARSTREAM, 5, 11)
    e = _err(frame(0x15, tail, seq=12))  # even where no TLV is expected
    assert (e.status, e.command_id, e.sequence_number) == (Status.RINVOPTPARSTREAM, 0x15, 12)


def test_error_submit_multi():
    bad_flag = SUBMIT_MULTI_BODY.replace(b"\x02friends", b"\x03friends")
    e = _err(frame(0x21, bad_flag, seq=2))
    assert (e.status, e.command_id) == (Status.RINVDESTFLAG, 0x21)
    too_many = SUBMIT_MULTI_BODY.replace(b"1234\x00\x03", b"1234\x00\x09")
    e = _err(frame(0x21, too_many, seq=2))
    assert e.status in (Status.RINVCMDLEN, Status.RINVDESTFLAG, Status.RINVDSTADR)
    long_dl = SUBMIT_MULTI_BODY.replace(b"friends", b"f" * 21)
    assert _err(frame(0x21, long_dl)).status == Status.RINVDLNAME


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=0, max_size=80), st.sampled_from(ALL_COMMANDS + [0x99]))
def test_decode_fuzz_only_pdu_error(body, cid):
    raw = frame(cid, body, seq=1234)
    try:
        p = decode_pdu(raw)
    except PduError as e:
        assert e.sequence_number == 1234 and e.command_id == cid
        assert e.status != 0
    else:
        assert p.encode() == raw  # whatever decodes re-encodes identically


@settings(max_examples=100, deadline=None)
@given(pdus(), st.data())
def test_decode_truncated_valid_frames(p, data):
    raw = p.encode()
    cut = data.draw(st.integers(16, len(raw)))
    truncated = raw[:cut]
    truncated = struct.pack(">I", len(truncated)) + truncated[4:]
    try:
        q = decode_pdu(truncated)
    except PduError as e:
        assert e.sequence_number == p.sequence_number and e.command_id == p.command_id
    else:
        assert q.encode() == truncated


# ---------------------------------------------------------------------------------------------
# Pdu API
# ---------------------------------------------------------------------------------------------


def test_response():
    req = decode_pdu(WIRE_FRAMES["submit_sm"])
    r = req.response(0, message_id="abc")
    assert r.command_id == CommandId.SUBMIT_SM_RESP and r.sequence_number == 42
    assert r.is_response and r.name == "submit_sm_resp"
    assert r.encode() == frame(0x80000004, b"abc\x00", seq=42)
    # non-zero status: no body for submit_sm_resp / data_sm_resp / bind_*_resp
    assert req.response(Status.RTHROTTLED).encode() == frame(0x80000004, status=0x58, seq=42)
    bind = decode_pdu(WIRE_FRAMES["bind_transceiver"])
    assert len(bind.response(Status.RBINDFAIL).encode()) == 16
    ok = bind.response(0, system_id="proxy")
    ok.set_tlv(Tag.SC_INTERFACE_VERSION, b"\x34")
    assert ok.encode() == frame(0x80000009, b"proxy\x00" + tlv(0x0210, b"\x34"), seq=1)
    data_sm = decode_pdu(WIRE_FRAMES["data_sm"])
    assert len(data_sm.response(Status.RDELIVERYFAILURE).encode()) == 16
    # deliver_sm_resp always carries message_id (NULL)
    dlr = decode_pdu(WIRE_FRAMES["deliver_sm_dlr"])
    assert dlr.response().encode() == frame(0x80000005, b"\x00", seq=1)
    assert dlr.response(Status.RX_T_APPN).encode() == frame(0x80000005, b"\x00", 0x64, 1)
    assert (
        decode_pdu(WIRE_FRAMES["enquire_link"]).response().encode()
        == WIRE_FRAMES["enquire_link_resp"]
    )
    assert decode_pdu(WIRE_FRAMES["unbind"]).response().encode() == WIRE_FRAMES["unbind_resp"]
    q = decode_pdu(WIRE_FRAMES["query_sm"]).response(0, message_id="abc", message_state=2)
    assert q.params == {"message_id": "abc", "final_date": "", "message_state": 2, "error_code": 0}


@pytest.mark.parametrize(
    "cid",
    [0x80000000, 0x80000004, 0x80000015, CommandId.OUTBIND, CommandId.ALERT_NOTIFICATION],
)
def test_response_not_defined(cid):
    with pytest.raises(ValueError):
        Pdu(cid, sequence_number=1).response()


def test_copy_is_independent():
    orig = decode_pdu(WIRE_FRAMES["submit_multi"])
    orig.tlvs.append(Tlv(0x1400, b"x"))
    raw = orig.encode()
    c = orig.copy()
    assert c == orig and c is not orig
    c.params["source_addr"] = "other"
    c.params["dest_address"][0]["destination_addr"] = "999"
    c.params["dest_address"].append({"dest_flag": 2, "dl_name": "x"})
    c.tlvs[0].value = b"y"
    c.tlvs.append(Tlv(0x1401, b""))
    c.set_tlv(0x1402, b"z")
    c.sequence_number = 99
    assert orig.encode() == raw
    assert orig.params["dest_address"][0]["destination_addr"] == "4670001"


def test_tlv_helpers():
    p = Pdu(CommandId.DELIVER_SM)
    p.set_tlv(Tag.MESSAGE_STATE, b"\x02")
    p.set_tlv(0x1400, b"a")
    p.tlvs.append(Tlv(Tag.MESSAGE_STATE, b"\x03"))
    p.set_tlv(Tag.MESSAGE_STATE, b"\x05")  # in place, later duplicate dropped
    assert [(t.tag, t.value) for t in p.tlvs] == [(0x0427, b"\x05"), (0x1400, b"a")]
    p.remove_tlv(0x0427)
    p.remove_tlv(0x7777)
    assert [t.tag for t in p.tlvs] == [0x1400]
    assert Tlv.from_int(0x020C, 0x1234, 2).value == b"\x12\x34"
    assert Tlv.from_str(0x001E, "abc") == Tlv(0x001E, b"abc\x00")
    assert Tlv(0x001E, b"abc").as_str() == "abc"
    assert Tlv(0x020C, b"\x12\x34").as_int() == 0x1234
    with pytest.raises(ValueError):
        p.set_tlv(0x1400, b"x" * 70000)


def test_encode_errors():
    with pytest.raises(ValueError, match="destination_address"):
        Pdu(CommandId.SUBMIT_SM, params={"destination_address": "1"}).encode()
    with pytest.raises(ValueError):
        Pdu(CommandId.ENQUIRE_LINK, params={"foo": 1}).encode()
    with pytest.raises(ValueError):
        Pdu(CommandId.SUBMIT_SM, params={"source_addr": "1" * 21}).encode()
    with pytest.raises(ValueError):
        Pdu(CommandId.SUBMIT_SM, params={"source_addr": "a\x00b"}).encode()
    with pytest.raises(ValueError):
        Pdu(CommandId.SUBMIT_SM, params={"source_addr": "\u20ac"}).encode()
    with pytest.raises(ValueError):
        Pdu(CommandId.SUBMIT_SM, params={"esm_class": 256}).encode()
    with pytest.raises(TypeError):
        Pdu(CommandId.SUBMIT_SM, params={"short_message": "text"}).encode()
    with pytest.raises(ValueError):
        Pdu(CommandId.SUBMIT_SM, params={"short_message": b"x" * 256}).encode()
    with pytest.raises(ValueError):
        Pdu(CommandId.SUBMIT_SM, sequence_number=2**32).encode()
    with pytest.raises(ValueError):
        Pdu(0x99).encode()
    with pytest.raises(ValueError):
        Pdu(CommandId.SUBMIT_MULTI, params={"dest_address": [{"dest_flag": 3}]}).encode()
    # derived lengths are accepted (and ignored) in params
    p = Pdu(CommandId.SUBMIT_SM, params={"sm_length": 99, "short_message": b"ab"})
    assert decode_pdu(p.encode()).params["short_message"] == b"ab"


def test_pdu_error_pickles():
    import pickle

    e = pickle.loads(pickle.dumps(PduError("x", Status.RSYSERR, 4, 5)))
    assert (str(e), e.status, e.command_id, e.sequence_number) == ("x", 8, 4, 5)


# ---------------------------------------------------------------------------------------------
# cross-check against smpplib
# ---------------------------------------------------------------------------------------------

smpplib_smpp = pytest.importorskip("smpplib.smpp")


class _SeqClient:
    """Stands in for smpplib's Client when parsing requests (no socket involved)."""

    sequence = 0

    def next_sequence(self) -> int:
        self.sequence += 1
        return self.sequence


def _smpplib_parse(raw: bytes):
    return smpplib_smpp.parse_pdu(raw, client=_SeqClient())


def _smpplib(command: str, sequence: int, **kwargs) -> bytes:
    # smpplib's make_pdu keeps its dummy client's sequence (0) even when given one: set it after
    pdu = smpplib_smpp.make_pdu(command, sequence=sequence, **kwargs)
    pdu.sequence = sequence
    return pdu.generate()


def test_smpplib_bind_transceiver():
    theirs = _smpplib(
        "bind_transceiver",
        sequence=1,
        system_id="smppclient1",
        password="password",
        system_type="",
        addr_ton=1,
        addr_npi=1,
        address_range="",
    )
    ours = Pdu(
        CommandId.BIND_TRANSCEIVER,
        0,
        1,
        {
            "system_id": "smppclient1",
            "password": "password",
            "system_type": "",
            "interface_version": 0x34,
            "addr_ton": 1,
            "addr_npi": 1,
            "address_range": "",
        },
    ).encode()
    assert ours == theirs == WIRE_FRAMES["bind_transceiver"]


def test_smpplib_submit_sm_with_tlvs():
    sm = "Привет".encode("utf-16-be")
    theirs = _smpplib(
        "submit_sm",
        sequence=0x01020304,
        service_type="CMT",
        source_addr_ton=5,
        source_addr_npi=0,
        source_addr="Bank",
        dest_addr_ton=1,
        dest_addr_npi=1,
        destination_addr="46701234567",
        esm_class=0x40,
        registered_delivery=1,
        data_coding=8,
        short_message=sm,
        user_message_reference=7,
        source_port=0x23F0,
        sar_msg_ref_num=0x1234,
        sar_total_segments=3,
        sar_segment_seqnum=2,
    )
    p = decode_pdu(theirs)
    assert p.sequence_number == 0x01020304
    assert p.params["service_type"] == "CMT"
    assert p.params["short_message"] == sm
    assert p.get_tlv_int(Tag.USER_MESSAGE_REFERENCE) == 7
    assert p.get_tlv(Tag.SAR_MSG_REF_NUM) == b"\x12\x34"
    assert p.encode() == theirs

    ours = Pdu(
        CommandId.SUBMIT_SM,
        0,
        0x01020304,
        {
            "service_type": "CMT",
            "source_addr_ton": 5,
            "source_addr": "Bank",
            "dest_addr_ton": 1,
            "dest_addr_npi": 1,
            "destination_addr": "46701234567",
            "esm_class": 0x40,
            "registered_delivery": 1,
            "data_coding": 8,
            "short_message": sm,
        },
        [
            Tlv.from_int(Tag.USER_MESSAGE_REFERENCE, 7, 2),
            Tlv.from_int(Tag.SOURCE_PORT, 0x23F0, 2),
            Tlv.from_int(Tag.SAR_MSG_REF_NUM, 0x1234, 2),
            Tlv.from_int(Tag.SAR_TOTAL_SEGMENTS, 3, 1),
            Tlv.from_int(Tag.SAR_SEGMENT_SEQNUM, 2, 1),
        ],
    ).encode()
    assert ours == theirs


def test_smpplib_deliver_sm_dlr():
    theirs = _smpplib(
        "deliver_sm",
        sequence=5,
        source_addr_ton=1,
        source_addr_npi=1,
        source_addr="46701234567",
        dest_addr_ton=5,
        destination_addr="Bank",
        esm_class=0x04,
        short_message=DLR_TEXT,
        receipted_message_id="0123456789",
        message_state=2,
        network_error_code=b"\x03\x00\x00",
    )
    p = decode_pdu(theirs)
    assert p.params["esm_class"] == 4 and p.params["short_message"] == DLR_TEXT
    assert p.get_tlv_str(Tag.RECEIPTED_MESSAGE_ID) == "0123456789"
    assert p.encode() == theirs
    ours = Pdu(
        CommandId.DELIVER_SM,
        0,
        5,
        {
            "source_addr_ton": 1,
            "source_addr_npi": 1,
            "source_addr": "46701234567",
            "dest_addr_ton": 5,
            "destination_addr": "Bank",
            "esm_class": 4,
            "short_message": DLR_TEXT,
        },
        [
            Tlv(Tag.NETWORK_ERROR_CODE, b"\x03\x00\x00"),
            Tlv.from_int(Tag.MESSAGE_STATE, 2, 1),
            Tlv.from_str(Tag.RECEIPTED_MESSAGE_ID, "0123456789"),
        ],
    ).encode()
    assert ours == theirs
    # and smpplib decodes ours
    parsed = _smpplib_parse(ours)
    assert parsed.receipted_message_id == b"0123456789"
    assert parsed.short_message == DLR_TEXT


@pytest.mark.parametrize(
    "command, cid",
    [
        ("enquire_link", CommandId.ENQUIRE_LINK),
        ("enquire_link_resp", CommandId.ENQUIRE_LINK_RESP),
        ("unbind", CommandId.UNBIND),
        ("unbind_resp", CommandId.UNBIND_RESP),
        ("generic_nack", CommandId.GENERIC_NACK),
    ],
)
def test_smpplib_empty_body_commands(command, cid):
    theirs = _smpplib(command, sequence=314)
    assert Pdu(cid, 0, 314).encode() == theirs
    assert decode_pdu(theirs) == Pdu(cid, 0, 314)


def test_smpplib_responses():
    theirs = _smpplib("submit_sm_resp", sequence=8, message_id="abc-123")
    req = Pdu(CommandId.SUBMIT_SM, sequence_number=8)
    assert req.response(0, message_id="abc-123").encode() == theirs
    theirs = _smpplib("bind_transceiver_resp", sequence=1, system_id="SMSC")
    assert decode_pdu(theirs).params == {"system_id": "SMSC"}
    assert decode_pdu(theirs).encode() == theirs
    theirs = _smpplib(
        "query_sm_resp", sequence=3, message_id="abc", final_date="", message_state=2, error_code=1
    )
    assert decode_pdu(theirs).params == {
        "message_id": "abc",
        "final_date": "",
        "message_state": 2,
        "error_code": 1,
    }
    assert decode_pdu(theirs).encode() == theirs


def test_smpplib_parses_ours():
    p = decode_pdu(WIRE_FRAMES["submit_sm"])
    p.tlvs = [t for t in p.tlvs if t.tag < 0x1400]  # smpplib rejects vendor tags
    parsed = _smpplib_parse(p.encode())
    assert parsed.command == "submit_sm"
    assert parsed.sequence == 42
    assert parsed.destination_addr == b"46701234567"
    assert parsed.short_message == p.params["short_message"]
    assert parsed.user_message_reference == 7
