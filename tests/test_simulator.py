"""The SMSC simulator against real clients (smpplib, aiosmpplib, our own ESME) on 127.0.0.1."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import smpplib.exceptions

from smpp_proxy.constants import CommandId, Status, Tag
from smpp_proxy.dlr import parse_receipt
from smpp_proxy.pdu import Pdu, Tlv, decode_pdu
from smpp_proxy.simulator import (
    ID_FORMATS,
    NoReceiver,
    ReceiptEncoder,
    Simulator,
    SimulatorConfig,
    main,
)

from .conftest import aiosmpplib_esme, in_thread

pytestmark = pytest.mark.timeout(30)

REPO = Path(__file__).resolve().parent.parent
RECEIPT_RE = re.compile(
    rb"^id:(\S+) sub:001 dlvrd:(\d{3}) submit date:\d{10} done date:\d{10} "
    rb"stat:(\w+) err:(\w{3}) text:(.*)$",
    re.S,
)


def _s(v) -> str:
    return v.decode("latin-1") if isinstance(v, bytes) else str(v)


# ---------------------------------------------------------------------------- basic flow


async def test_bind_submit_receipt_smpplib(simulator, smpplib_client):
    c = await smpplib_client(simulator.port)
    res = await in_thread(c.submit, "hello world", registered_delivery=1)
    assert res.command == "submit_sm_resp" and res.status == 0
    assert res.message_id and re.fullmatch(r"[0-9a-f]+", res.message_id)

    [dlr] = await in_thread(c.receipts, 1, 5.0)
    assert dlr.esm_class == 0x04
    assert _s(dlr.receipted_message_id) == res.message_id
    assert dlr.message_state == 2  # DELIVERED
    m = RECEIPT_RE.match(dlr.short_message)
    assert m, dlr.short_message
    assert m.group(1).decode() == res.message_id
    assert m.group(2) == b"001" and m.group(3) == b"DELIVRD" and m.group(4) == b"000"
    assert m.group(5) == b"hello world"
    # addressed back: from the original destination to the original source
    assert _s(dlr.source_addr) == "491701234567" and _s(dlr.destination_addr) == "12345"

    await simulator.wait_for_receipts(1, timeout=5)
    assert simulator.stats.submits == 1 and simulator.stats.receipts_acked == 1
    [pdu] = simulator.received
    assert pdu.name == "submit_sm" and pdu.params["short_message"] == b"hello world"
    rec = simulator.record_for(res.message_id)
    assert rec is not None and rec.system_id == "esme" and rec.status == 0


async def test_ids_are_unique(simulator, smpplib_client):
    c = await smpplib_client(simulator.port)
    ids = [(await in_thread(c.submit, f"m{i}", registered_delivery=0)).message_id for i in range(20)]
    assert len(set(ids)) == 20
    assert simulator.pending_receipts() == 0


async def test_no_receipt_unless_requested(simulator, smpplib_client):
    c = await smpplib_client(simulator.port)
    res = await in_thread(c.submit, "x", registered_delivery=0)
    assert res.status == 0
    assert await in_thread(c.no_delivery_within, 0.3)
    assert simulator.stats.receipts_scheduled == 0


async def test_enquire_link_and_client_unbind(simulator, smpplib_client):
    c = await smpplib_client(simulator.port)
    resp = await in_thread(c.enquire_link)
    assert resp.command == "enquire_link_resp"
    resp = await in_thread(c.unbind)
    assert resp.command == "unbind_resp"
    assert await in_thread(c.closed.wait, 5)
    await simulator.wait_until(lambda: not simulator.connections, 5, "connection gone")
    assert simulator.stats.unbinds == 1


async def test_stop_unbinds_bound_clients(make_simulator, smpplib_client):
    sim = await make_simulator()
    c = await smpplib_client(sim.port)
    t0 = time.monotonic()
    await sim.stop(unbind_timeout=2.0)
    assert time.monotonic() - t0 < 2.0  # the client answered the unbind: no waiting
    assert await in_thread(c.unbound_by_peer.wait, 2)
    assert await in_thread(c.closed.wait, 2)


# ---------------------------------------------------------------------------- credentials


@pytest.mark.parametrize(
    "system_id,password,status",
    [("acme", "secret", 0), ("acme", "wrong", 0x0E), ("other", "secret", 0x0F)],
)
async def test_bind_credentials(make_simulator, smpplib_client, system_id, password, status):
    sim = await make_simulator(system_id="acme", password="secret")
    c = await smpplib_client(sim.port, connect=False, system_id=system_id, password=password)
    if status == 0:
        await in_thread(c.connect)
        assert len(sim.bound("acme")) == 1
    else:
        with pytest.raises(smpplib.exceptions.PDUError) as ei:
            await in_thread(c.connect)
        assert ei.value.args[1] == status
        assert sim.stats.bind_failures == 1 and not sim.bound()


async def test_any_credentials_accepted_by_default(simulator, smpplib_client):
    await smpplib_client(simulator.port, system_id="whoever", password="x")
    assert [c.system_id for c in simulator.bound()] == ["whoever"]


# ---------------------------------------------------------------------------- receipts: ids


@pytest.mark.parametrize(
    "id_format,in_text,tlv",
    [
        ("decimal", "same", True),
        ("hex_upper_zero_padded", "same", True),
        ("hex", "decimal", True),  # hex in submit_sm_resp, decimal in the receipt text
        ("hex", "decimal", False),  # ... and no receipted_message_id TLV
        ("decimal_zero_padded", "hex_upper", False),
    ],
)
async def test_receipt_id_variants(simulator, smpplib_client, id_format, in_text, tlv):
    simulator.configure(id_format=id_format, receipt_id_in_text=in_text, receipt_tlv=tlv)
    c = await smpplib_client(simulator.port)
    res = await in_thread(c.submit, "id test")
    mid = res.message_id
    if id_format == "decimal":
        assert mid.isdigit()
    elif id_format == "hex_upper_zero_padded":
        assert len(mid) == 16 and re.fullmatch(r"[0-9A-F]+", mid)
    elif id_format == "decimal_zero_padded":
        assert len(mid) == 20 and mid.isdigit()
    n = int(mid, 16) if id_format.startswith("hex") else int(mid)

    [dlr] = await in_thread(c.receipts, 1, 5.0)
    text_id = RECEIPT_RE.match(dlr.short_message).group(1).decode()
    expected_text_id = mid if in_text == "same" else ID_FORMATS[in_text](n)
    assert text_id == expected_text_id
    if tlv:
        assert _s(dlr.receipted_message_id) == mid
    else:
        assert dlr.receipted_message_id is None


async def test_receipt_failure_stat_and_err(simulator, smpplib_client):
    simulator.configure(receipt_stat="UNDELIV", receipt_err=5)
    c = await smpplib_client(simulator.port)
    await in_thread(c.submit, "doomed")
    [dlr] = await in_thread(c.receipts, 1, 5.0)
    m = RECEIPT_RE.match(dlr.short_message)
    assert m.group(2) == b"000" and m.group(3) == b"UNDELIV" and m.group(4) == b"005"
    assert dlr.message_state == 5


async def test_registered_delivery_failure_only(simulator, smpplib_client):
    c = await smpplib_client(simulator.port)
    await in_thread(c.submit, "ok", registered_delivery=2)  # DELIVRD: no receipt wanted
    assert await in_thread(c.no_delivery_within, 0.3)
    simulator.configure(receipt_stat="REJECTD")
    await in_thread(c.submit, "ko", registered_delivery=2)
    [dlr] = await in_thread(c.receipts, 1, 5.0)
    assert b"stat:REJECTD" in dlr.short_message


async def test_receipt_waits_for_a_receiver(simulator, smpplib_client):
    tx = await smpplib_client(simulator.port, bind="transmitter", system_id="acme")
    res = await in_thread(tx.submit, "later")
    await asyncio.sleep(0.2)
    assert simulator.pending_receipts() == 1 and simulator.stats.receipts_sent == 0
    # a receiver of another system_id does not get it
    other = await smpplib_client(simulator.port, bind="receiver", system_id="other")
    rx = await smpplib_client(simulator.port, bind="receiver", system_id="acme")
    [dlr] = await in_thread(rx.receipts, 1, 5.0)
    assert _s(dlr.receipted_message_id) == res.message_id
    assert await in_thread(other.no_delivery_within, 0.1)
    assert await in_thread(tx.no_delivery_within, 0.1)


async def test_receipts_round_robin_over_receivers(simulator, smpplib_client):
    tx = await smpplib_client(simulator.port, bind="transmitter")
    rx1 = await smpplib_client(simulator.port, bind="receiver")
    rx2 = await smpplib_client(simulator.port, bind="receiver")
    for i in range(6):
        await in_thread(tx.submit, f"rr{i}")
    await simulator.wait_for_receipts(6, timeout=5)
    assert rx1.deliveries.qsize() > 0 and rx2.deliveries.qsize() > 0
    assert rx1.deliveries.qsize() + rx2.deliveries.qsize() == 6


async def test_receipt_retried_after_error_status(simulator, smpplib_client):
    simulator.configure(receipt_retry_s=0.1)
    c = await smpplib_client(simulator.port)
    c.deliver_status = 0x08
    res = await in_thread(c.submit, "retry me")
    [first] = await in_thread(c.receipts, 1, 5.0)
    c.deliver_status = 0
    [second] = await in_thread(c.receipts, 1, 5.0)
    assert _s(first.receipted_message_id) == _s(second.receipted_message_id) == res.message_id
    await simulator.wait_for_receipts(1, timeout=5)
    assert simulator.deliver_statuses[0x08] == 1 and simulator.deliver_statuses[0] == 1
    assert simulator.stats.receipts_failed == 1


async def test_unanswered_receipt_times_out_and_is_retried(simulator, smpplib_client):
    simulator.configure(response_timeout_s=0.2, receipt_retry_s=0.1)
    c = await smpplib_client(simulator.port)
    c.answer_deliveries = False
    res = await in_thread(c.submit, "slow receiver")
    [first] = await in_thread(c.receipts, 1, 5.0)
    c.answer_deliveries = True
    [second] = await in_thread(c.receipts, 1, 5.0)  # after the 1 s timeout sweep
    assert _s(second.receipted_message_id) == res.message_id
    await simulator.wait_for_receipts(1, timeout=5)
    assert ("receipt", res.message_id, None) in simulator.deliver_responses  # the timeout
    assert simulator.stats.receipts_failed == 1 and simulator.stats.receipts_sent == 2


async def test_receipt_in_flight_on_a_lost_connection_goes_to_the_next_bind(
    simulator, smpplib_client
):
    simulator.configure(receipt_retry_s=0.1)
    c = await smpplib_client(simulator.port, system_id="acme")
    c.answer_deliveries = False
    res = await in_thread(c.submit, "lost")
    await in_thread(c.receipts, 1, 5.0)
    await in_thread(c.close)  # goes away without answering
    c2 = await smpplib_client(simulator.port, bind="receiver", system_id="acme")
    [dlr] = await in_thread(c2.receipts, 1, 5.0)
    assert _s(dlr.receipted_message_id) == res.message_id
    await simulator.wait_for_receipts(1, timeout=5)


def test_fast_receipt_encoder_matches_build_receipt():
    from smpp_proxy.dlr import build_receipt

    sub = Pdu(int(CommandId.SUBMIT_SM), params={
        "source_addr": "Acme", "source_addr_ton": 5, "source_addr_npi": 0,
        "destination_addr": "491701234567", "dest_addr_ton": 1, "dest_addr_npi": 1,
        "short_message": b"A fairly long message text", "registered_delivery": 1})
    t = time.time() - 120
    fast = ReceiptEncoder().build(sub, "1a2b", "1a2b", "DELIVRD", 0, t, t + 30)
    ref = build_receipt(
        message_id="1a2b", source_addr="Acme", source_addr_ton=5, source_addr_npi=0,
        destination_addr="491701234567", dest_addr_ton=1, dest_addr_npi=1, stat="DELIVRD",
        err=0, submitted_at=t, done_at=t + 30, text=b"A fairly long message text")
    assert fast.encode() == ref.encode()
    assert parse_receipt(decode_pdu(fast.encode())).message_id == "1a2b"


# ---------------------------------------------------------------------------- faults


async def test_reject_status_then_cleared(simulator, smpplib_client):
    c = await smpplib_client(simulator.port)
    simulator.set_fault(reject_status=int(Status.RTHROTTLED))
    res = await in_thread(c.submit, "no")
    assert res.command == "submit_sm_resp" and res.status == 0x58 and res.message_id is None
    simulator.clear_faults()
    res = await in_thread(c.submit, "yes", registered_delivery=0)
    assert res.status == 0 and res.message_id
    assert simulator.stats.submits_rejected == 1 and simulator.stats.submits_ok == 1
    assert simulator.stats.receipts_scheduled == 0  # no receipt for a rejected submit


async def test_reject_every_nth(simulator, smpplib_client):
    simulator.set_fault(reject_every=3)
    c = await smpplib_client(simulator.port)
    statuses = [(await in_thread(c.submit, f"n{i}", registered_delivery=0)).status for i in range(6)]
    assert statuses == [0, 0, 0x45, 0, 0, 0x45]


async def test_never_reply_times_out_the_client(simulator, smpplib_client):
    simulator.set_fault(never_reply=True)
    c = await smpplib_client(simulator.port)
    with pytest.raises(TimeoutError):
        await in_thread(c.submit, "into the void", timeout=0.5)
    await simulator.wait_for_submits(1, timeout=2)
    assert simulator.stats.submits_unanswered == 1
    assert simulator.received[0].params["short_message"] == b"into the void"
    simulator.set_fault(never_reply=False)
    assert (await in_thread(c.submit, "back", registered_delivery=0)).status == 0


async def test_generic_nack(simulator, smpplib_client):
    simulator.set_fault(generic_nack=True)
    c = await smpplib_client(simulator.port)
    res = await in_thread(c.submit, "nack me")
    assert res.command == "generic_nack" and res.status == 0x08


async def test_disconnect_after(simulator, smpplib_client):
    simulator.set_fault(disconnect_after=2)
    c = await smpplib_client(simulator.port)
    assert (await in_thread(c.submit, "1", registered_delivery=0)).status == 0
    assert not c.closed.is_set()
    assert (await in_thread(c.submit, "2", registered_delivery=0)).status == 0  # answered, then dropped
    assert await in_thread(c.closed.wait, 5)
    # a new connection works (and is dropped after 2 again)
    c2 = await smpplib_client(simulator.port)
    assert (await in_thread(c2.submit, "3", registered_delivery=0)).status == 0
    assert simulator.stats.submits == 3


async def test_window_exceeded_is_rmsgqful(make_simulator, async_esme):
    sim = await make_simulator(window=2, never_reply=True)
    e = await async_esme(sim.port)
    futs = [e.conn.send_request_nowait(_submit(f"w{i}"), 5) for i in range(3)]
    resp = await asyncio.wait_for(futs[2], 5)
    assert resp.command_status == Status.RMSGQFUL
    for f in futs[:2]:
        f.cancel()


# ---------------------------------------------------------------------------- byte-exact storage, data_sm


def _submit(text: str | bytes, **params) -> Pdu:
    p = {"source_addr": "12345", "destination_addr": "491701234567",
         "short_message": text.encode() if isinstance(text, str) else text}
    p.update(params)
    return Pdu(int(CommandId.SUBMIT_SM), params=p)


async def test_udh_and_tlvs_kept_byte_for_byte(simulator, async_esme):
    e = await async_esme(simulator.port)
    udh = bytes([0x05, 0x00, 0x03, 0x2A, 0x02, 0x01])
    pdu = _submit(udh + b"part one", esm_class=0x40, registered_delivery=1)
    pdu.tlvs = [
        Tlv(int(Tag.USER_MESSAGE_REFERENCE), b"\x00\x07"),
        Tlv(0x1401, b"vendor\x00\xff"),  # vendor specific, unknown to the codec
        Tlv(int(Tag.SOURCE_PORT), b"\x23\xf0"),
    ]
    resp = await e.request(pdu)
    assert resp.command_status == 0
    [got] = await simulator.wait_for_submits(1)
    assert got.encode() == pdu.encode()  # same sequence number too: the very same bytes
    assert got.params["short_message"][:6] == udh
    # the receipt's text skips the UDH
    dlr = await asyncio.wait_for(e.deliveries.get(), 5)
    assert dlr.params["short_message"].endswith(b"text:part one")


async def test_data_sm_and_submit_multi(simulator, async_esme):
    e = await async_esme(simulator.port)
    data_sm = Pdu(int(CommandId.DATA_SM), params={
        "source_addr": "12345", "destination_addr": "4917", "registered_delivery": 1})
    data_sm.set_tlv(Tag.MESSAGE_PAYLOAD, b"payload text")
    resp = await e.request(data_sm)
    assert resp.name == "data_sm_resp" and resp.command_status == 0 and resp.params["message_id"]
    dlr = await asyncio.wait_for(e.deliveries.get(), 5)
    assert parse_receipt(dlr).message_id == resp.params["message_id"]
    multi = Pdu(int(CommandId.SUBMIT_MULTI), params={
        "source_addr": "12345", "short_message": b"to many",
        "dest_address": [{"dest_flag": 1, "dest_addr_ton": 1, "dest_addr_npi": 1,
                          "destination_addr": "4917"}]})
    resp = await e.request(multi)
    assert resp.name == "submit_multi_resp" and resp.command_status == 0


# ---------------------------------------------------------------------------- MO


async def test_mo_delivery(simulator, smpplib_client):
    with pytest.raises(NoReceiver):
        await simulator.send_mo("491701234567", "12345", "nobody home")
    rx = await smpplib_client(simulator.port, bind="receiver")
    resp = await simulator.send_mo("491701234567", "12345", "Hello MO")
    assert resp.command_status == 0
    [mo] = await in_thread(rx.receipts, 1, 5.0)
    assert mo.esm_class == 0 and mo.short_message == b"Hello MO"
    assert _s(mo.source_addr) == "491701234567" and _s(mo.destination_addr) == "12345"
    # UCS-2
    await simulator.send_mo("491701234567", "12345", "Привет", data_coding=8)
    [mo] = await in_thread(rx.receipts, 1, 5.0)
    assert mo.data_coding == 8 and mo.short_message.decode("utf-16-be") == "Привет"
    assert simulator.stats.mo_sent == 2 and simulator.stats.mo_acked == 2


async def test_mo_error_status_recorded(simulator, async_esme):
    e = await async_esme(simulator.port, system_id="acme")
    e.deliver_status = 0x08
    resp = await simulator.send_mo("4917", "12345", "refused", system_id="acme")
    assert resp.command_status == 0x08
    assert ("mo", "", 0x08) in simulator.deliver_responses
    with pytest.raises(NoReceiver):
        await simulator.send_mo("4917", "12345", "x", system_id="nobody")


# ---------------------------------------------------------------------------- aiosmpplib


async def test_aiosmpplib_submit_and_receipt(simulator):
    from aiosmpplib import DeliverSm, PhoneNumber, SubmitSm, SubmitSmResp

    async with aiosmpplib_esme(simulator.port, system_id="aio", password="pw") as (esme, got):
        await simulator.wait_for_bind(1, "aio", timeout=5)
        await esme.broker.enqueue(SubmitSm(
            short_message="hello from aiosmpplib", source=PhoneNumber("12345"),
            destination=PhoneNumber("491701234567"), registered_delivery=1, log_id="msg-1"))
        resp = await asyncio.wait_for(got.get(), 5)
        assert isinstance(resp, SubmitSmResp) and resp.command_status == 0
        assert resp.log_id == "msg-1" and resp.message_id
        dlr = await asyncio.wait_for(got.get(), 5)
        assert isinstance(dlr, DeliverSm) and dlr.is_receipt()
        receipt = dlr.parse_receipt()
        assert receipt["id"] == resp.message_id and receipt["stat"] == "DELIVRD"
        assert dlr.log_id == "msg-1"  # aiosmpplib correlated it with its submit
        [pdu] = simulator.received
        assert pdu.params["short_message"] == b"hello from aiosmpplib"
        await simulator.wait_for_receipts(1, timeout=5)


# ---------------------------------------------------------------------------- config / CLI


def test_config_validation():
    with pytest.raises(ValueError):
        SimulatorConfig(id_format="octal")
    with pytest.raises(ValueError):
        SimulatorConfig(receipt_id_in_text="roman")
    sim = Simulator(receipt_delay_s=0.0)
    with pytest.raises(TypeError):
        sim.set_fault(no_such_fault=True)
    with pytest.raises(TypeError):
        Simulator(bogus=1)


def test_cli_help(capsys):
    with pytest.raises(SystemExit) as ei:
        main(["--help"])
    assert ei.value.code == 0
    out = capsys.readouterr().out
    for opt in ("--receipt-delay", "--receipt-stat", "--reject-status", "--never-reply",
                "--mo-every", "--disconnect-after", "--generic-nack", "--id-format"):
        assert opt in out


def test_cli_runs_and_stops_on_sigterm(smpplib_client_sync):
    proc = subprocess.Popen(
        [sys.executable, "-m", "smpp_proxy.simulator", "--port", "0", "--receipt-delay", "0.05",
         "--mo-every", "0.2", "--mo-text", "tick {n}", "--log-level", "warning"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        line = proc.stdout.readline().decode()
        assert line.startswith("LISTENING"), (line, proc.stderr.read1(4000) if proc.poll() else "")
        port = int(line.split()[2])
        c = smpplib_client_sync(port)
        res = c.submit("cli", registered_delivery=1)
        assert res.status == 0
        texts = {d.short_message for d in c.receipts(2, 5.0)}
        assert any(t.startswith(b"id:" + res.message_id.encode()) for t in texts)
        assert any(t.startswith(b"tick ") for t in texts)  # MO generator
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        assert c.unbound_by_peer.wait(2)  # clean unbind on SIGTERM
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


async def test_wait_until_times_out_with_a_message(simulator):
    with pytest.raises(asyncio.TimeoutError, match="3 submits \\(got 0\\)"):
        await simulator.wait_for_submits(3, timeout=0.2)
    # predicates on state that fires no event are polled
    flag = []
    asyncio.get_running_loop().call_later(0.1, flag.append, 1)
    await simulator.wait_until(lambda: bool(flag), timeout=2)


def test_set_fault_validates_before_changing():
    sim = Simulator()
    with pytest.raises(ValueError):
        sim.set_fault(reject_status=0x58, id_format="octal")
    assert sim.config.reject_status == 0 and sim.config.id_format == "hex"
