"""Sans-I/O session state machine: no sockets, bytes in → events out."""

from __future__ import annotations

import struct

from smpp_proxy.constants import CommandId, Status
from smpp_proxy.pdu import Pdu, decode_pdu
from smpp_proxy.session import (
    BindState,
    ProtocolError,
    RequestReceived,
    ResponseReceived,
    Role,
    SmppSession,
)


def bind(cid=CommandId.BIND_TRANSCEIVER, seq=1, system_id="acme", password="pw") -> Pdu:
    return Pdu(
        int(cid), 0, seq,
        params={"system_id": system_id, "password": password, "system_type": "",
                "interface_version": 0x34, "addr_ton": 0, "addr_npi": 0, "address_range": ""},
    )


def submit(seq: int, text: bytes = b"hello") -> Pdu:
    return Pdu(int(CommandId.SUBMIT_SM), 0, seq,
               params={"source_addr": "111", "destination_addr": "222", "short_message": text})


def bound_smsc(cid=CommandId.BIND_TRANSCEIVER, window=0) -> SmppSession:
    s = SmppSession(Role.SMSC, inbound_window=window)
    [ev] = s.receive_data(bind(cid).encode())
    assert isinstance(ev, RequestReceived)
    s.send_response(s.accept_bind(ev.pdu, "smsfw"))
    return s


def test_bind_then_submit_flow():
    s = SmppSession(Role.SMSC)
    [ev] = s.receive_data(bind().encode())
    assert isinstance(ev, RequestReceived) and ev.pdu.params["system_id"] == "acme"
    resp = s.accept_bind(ev.pdu, "smsfw")
    out = decode_pdu(s.send_response(resp))
    assert out.command_id == CommandId.BIND_TRANSCEIVER_RESP and out.sequence_number == 1
    assert out.params["system_id"] == "smsfw"
    assert s.state is BindState.BOUND_TRX
    [ev] = s.receive_data(submit(2).encode())
    assert isinstance(ev, RequestReceived) and ev.pdu.params["short_message"] == b"hello"


def test_submit_before_bind_is_refused_with_0x04():
    s = SmppSession(Role.SMSC)
    [ev] = s.receive_data(submit(7).encode())
    assert isinstance(ev, ProtocolError) and not ev.close
    assert ev.reply.command_id == CommandId.SUBMIT_SM_RESP
    assert ev.reply.command_status == Status.RINVBNDSTS and ev.reply.sequence_number == 7


def test_submit_on_receiver_is_refused_with_0x04():
    s = bound_smsc(CommandId.BIND_RECEIVER)
    [ev] = s.receive_data(submit(3).encode())
    assert isinstance(ev, ProtocolError) and ev.reply.command_status == Status.RINVBNDSTS


def test_bind_while_bound_is_0x05():
    s = bound_smsc()
    [ev] = s.receive_data(bind(seq=9).encode())
    assert isinstance(ev, ProtocolError)
    assert ev.reply.command_id == CommandId.BIND_TRANSCEIVER_RESP
    assert ev.reply.command_status == Status.RALYBND


def test_unknown_command_gets_generic_nack_0x03():
    s = bound_smsc()
    frame = struct.pack(">IIII", 16, 0x00000099, 0, 42)
    [ev] = s.receive_data(frame)
    assert isinstance(ev, ProtocolError) and not ev.close
    assert ev.reply.command_id == CommandId.GENERIC_NACK
    assert ev.reply.command_status == Status.RINVCMDID and ev.reply.sequence_number == 42
    # the session goes on
    [ev] = s.receive_data(submit(43).encode())
    assert isinstance(ev, RequestReceived)


def test_impossible_command_length_nacks_0x02_and_closes():
    s = bound_smsc()
    frame = struct.pack(">IIII", 8, int(CommandId.SUBMIT_SM), 0, 5)
    [ev] = s.receive_data(frame)
    assert isinstance(ev, ProtocolError) and ev.close
    assert ev.reply.command_id == CommandId.GENERIC_NACK
    assert ev.reply.command_status == Status.RINVCMDLEN
    assert s.state is BindState.CLOSED
    assert s.receive_data(submit(6).encode()) == []


def test_oversized_command_length_nacks_and_closes():
    s = SmppSession(Role.SMSC, max_pdu_size=1024)
    [ev] = s.receive_data(struct.pack(">IIII", 10_000_000, 4, 0, 1))
    assert isinstance(ev, ProtocolError) and ev.close
    assert ev.reply.command_status == Status.RINVCMDLEN


def test_malformed_body_gets_command_resp_not_nack():
    s = bound_smsc()
    # submit_sm whose body is a C-string without terminator
    body = b"\x00" + b"A" * 20
    frame = struct.pack(">IIII", 16 + len(body), int(CommandId.SUBMIT_SM), 0, 11) + body
    [ev] = s.receive_data(frame)
    assert isinstance(ev, ProtocolError) and not ev.close
    assert ev.reply.command_id == CommandId.SUBMIT_SM_RESP
    assert ev.reply.command_status != Status.ROK and ev.reply.sequence_number == 11


def test_window_limits_unanswered_submits():
    s = bound_smsc(window=2)
    evs = s.receive_data(b"".join(submit(i).encode() for i in (10, 11, 12)))
    assert [type(e) for e in evs] == [RequestReceived, RequestReceived, ProtocolError]
    assert evs[2].reply.command_status == Status.RMSGQFUL
    s.send_response(evs[0].pdu.response(Status.ROK, message_id="x"))
    [ev] = s.receive_data(submit(13).encode())
    assert isinstance(ev, RequestReceived)


def test_request_response_matching_and_generic_nack():
    s = SmppSession(Role.ESME)
    data = s.send_request(bind(), context="ctx")
    seq = decode_pdu(data).sequence_number
    resp = Pdu(int(CommandId.BIND_TRANSCEIVER_RESP), 0, seq, params={"system_id": "smsc"})
    [ev] = s.receive_data(resp.encode())
    assert isinstance(ev, ResponseReceived) and ev.context == "ctx"
    s.bind_accepted(int(CommandId.BIND_TRANSCEIVER))
    data = s.send_request(submit(0), context="sub")
    seq2 = decode_pdu(data).sequence_number
    assert seq2 == seq + 1
    [ev] = s.receive_data(Pdu(int(CommandId.GENERIC_NACK), 3, seq2).encode())
    assert isinstance(ev, ResponseReceived) and ev.context == "sub"
    assert s.pending_count() == 0


def test_esme_receives_deliver_sm_only_when_bound_to_receive():
    s = SmppSession(Role.ESME)
    s.bind_accepted(int(CommandId.BIND_TRANSMITTER))
    dlv = Pdu(int(CommandId.DELIVER_SM), 0, 5, params={"short_message": b"x"})
    [ev] = s.receive_data(dlv.encode())
    assert isinstance(ev, ProtocolError) and ev.reply.command_status == Status.RINVBNDSTS
    s2 = SmppSession(Role.ESME)
    s2.bind_accepted(int(CommandId.BIND_RECEIVER))
    [ev] = s2.receive_data(dlv.encode())
    assert isinstance(ev, RequestReceived)


def test_pdus_split_at_every_byte():
    s = bound_smsc()
    stream = b"".join(submit(i, b"m%d" % i).encode() for i in range(1, 6))
    events = []
    for i in range(len(stream)):
        events.extend(s.receive_data(stream[i : i + 1]))
    assert [e.pdu.params["short_message"] for e in events] == [b"m%d" % i for i in range(1, 6)]


def test_sequence_numbers_wrap():
    s = SmppSession(Role.ESME)
    s._next_seq = 0x7FFFFFFF
    assert s.next_sequence() == 0x7FFFFFFF
    assert s.next_sequence() == 1


def test_unbind_moves_to_unbound():
    s = bound_smsc()
    [ev] = s.receive_data(Pdu(int(CommandId.UNBIND), 0, 77).encode())
    assert isinstance(ev, RequestReceived) and s.state is BindState.UNBOUND


def test_commands_without_response_are_refused_with_generic_nack():
    s = bound_smsc()
    alert = Pdu(int(CommandId.ALERT_NOTIFICATION), 0, 31,
                params={"source_addr": "1", "esme_addr": "2"})
    outbind = Pdu(int(CommandId.OUTBIND), 0, 32, params={"system_id": "x", "password": "y"})
    evs = s.receive_data(alert.encode() + outbind.encode() + submit(33).encode())
    assert [type(e) for e in evs] == [ProtocolError, ProtocolError, RequestReceived]
    for ev, seq in zip(evs[:2], (31, 32), strict=True):
        assert ev.reply.command_id == CommandId.GENERIC_NACK and ev.reply.sequence_number == seq
        decode_pdu(ev.reply.encode())


def test_bind_resp_announces_interface_version():
    from smpp_proxy.constants import Tag

    s = SmppSession(Role.SMSC)
    [ev] = s.receive_data(bind().encode())
    resp = decode_pdu(s.send_response(s.accept_bind(ev.pdu, "smsfw")))
    assert resp.get_tlv(Tag.SC_INTERFACE_VERSION) == b"\x34"
