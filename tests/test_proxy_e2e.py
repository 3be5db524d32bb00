"""The proxy end to end over real sockets on 127.0.0.1: third-party clients → proxy → simulator.

Classification is off here (pass-through); the filtering pipeline has its own tests.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time

import pytest
import smpplib.exceptions
import yaml

from smpp_proxy.constants import CommandId, Status, Tag
from smpp_proxy.dlr import parse_receipt
from smpp_proxy.pdu import Pdu, Tlv, decode_pdu

from .conftest import aiosmpplib_esme
from .proxy_harness import (
    ProxyProcess,
    free_port,
    http_get,
    metrics_families,
    proxy_config_dict,
    start_proxy,
    wait_port,
    wait_until,
    wait_upstream_bound,
)

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def proxy(simulator, tmp_path):
    """A started in-process proxy in front of the ``simulator`` fixture."""
    apps = []

    async def make(**overrides):
        cfg = proxy_config_dict(simulator.port, tmp_path / "proxy.db", metrics_port=0, **overrides)
        app = await start_proxy(cfg, tmp_path / "proxy.yaml")
        apps.append(app)
        await wait_upstream_bound(app, 2)
        return app

    yield make
    for app in apps:
        await app.stop()


def _receipt_id(pdu) -> tuple[str, str | None]:
    """(id from the receipt text, receipted_message_id TLV) of a smpplib deliver_sm."""
    text = pdu.short_message
    text_id = text.split(b" ")[0].split(b":", 1)[1].decode()
    tlv = getattr(pdu, "receipted_message_id", None)
    if isinstance(tlv, bytes):
        tlv = tlv.rstrip(b"\x00").decode()
    return text_id, tlv


async def test_smpplib_submit_resp_and_receipt_relayed_with_proxy_id(proxy, simulator, smpplib_client):
    app = await proxy()
    client = await smpplib_client(app.server.port, system_id="acme", password="secret")
    res = await asyncio.to_thread(client.submit, "hello world", registered_delivery=1)
    assert res.status == 0 and res.message_id and len(res.message_id) == 16
    [fwd] = await simulator.wait_for_submits(1)
    assert fwd.params["short_message"] == b"hello world"
    upstream_id = simulator.records[-1].message_id if hasattr(simulator, "records") else None
    [dlr] = await asyncio.to_thread(client.receipts, 1, 10)
    text_id, tlv_id = _receipt_id(dlr)
    assert text_id == res.message_id
    assert tlv_id == res.message_id
    assert upstream_id is None or upstream_id != res.message_id
    assert b"stat:DELIVRD" in dlr.short_message


async def test_every_field_and_tlv_forwarded_unchanged(proxy, simulator, async_esme):
    app = await proxy()
    esme = await async_esme(app.server.port, system_id="acme", password="secret")
    sent = Pdu(
        int(CommandId.SUBMIT_SM),
        params={
            "service_type": "CMT", "source_addr_ton": 5, "source_addr_npi": 0,
            "source_addr": "MyBrand", "dest_addr_ton": 1, "dest_addr_npi": 1,
            "destination_addr": "447700900123", "esm_class": 0x40, "protocol_id": 0,
            "priority_flag": 1, "schedule_delivery_time": "", "validity_period": "",
            "registered_delivery": 1, "replace_if_present_flag": 0, "data_coding": 8,
            "sm_default_msg_id": 0,
            "short_message": b"\x05\x00\x03\x7f\x01\x01" + "héllo €".encode("utf-16-be"),
        },
        tlvs=[Tlv(0x1400, b"vendor-data"), Tlv(int(Tag.USER_MESSAGE_REFERENCE), b"\x00\x07")],
    )
    resp = await esme.request(sent.copy())
    assert resp.command_status == 0
    [got] = await simulator.wait_for_submits(1)
    assert got.params == sent.params
    assert got.tlvs == sent.tlvs


async def test_aiosmpplib_through_the_proxy(proxy, simulator):
    from aiosmpplib import DeliverSm, PhoneNumber, SubmitSm, SubmitSmResp

    app = await proxy()
    async with aiosmpplib_esme(app.server.port, system_id="acme", password="secret") as (esme, got):
        await wait_until(lambda: app.clients.get("acme").conns, 10)
        await esme.broker.enqueue(SubmitSm(
            short_message="via aiosmpplib", source=PhoneNumber("12345"),
            destination=PhoneNumber("491701234567"), registered_delivery=1, log_id="m1"))
        resp = await asyncio.wait_for(got.get(), 10)
        assert isinstance(resp, SubmitSmResp) and resp.command_status == 0
        dlr = await asyncio.wait_for(got.get(), 10)
        assert isinstance(dlr, DeliverSm) and dlr.is_receipt()
        assert dlr.parse_receipt()["id"] == resp.message_id
        assert dlr.log_id == "m1"


# ---------------------------------------------------------------------------- bind errors

async def _bind_status(port: int, system_id: str, password: str, smpplib_client, bind="transceiver"):
    c = await smpplib_client(port, connect=False, system_id=system_id, password=password, bind=bind)
    try:
        await asyncio.to_thread(c.connect)
    except smpplib.exceptions.PDUError as exc:
        return exc.args[1]
    return 0


async def test_bind_errors(proxy, smpplib_client):
    app = await proxy(clients=[
        {"system_id": "acme", "password": "secret", "max_binds": 1},
        {"system_id": "remote", "password": "pw", "allowed_ips": ["10.0.0.0/8"]},
    ])
    port = app.server.port
    assert await _bind_status(port, "acme", "wrong", smpplib_client) == Status.RINVPASWD
    assert await _bind_status(port, "nobody", "x", smpplib_client) == Status.RINVSYSID
    assert await _bind_status(port, "remote", "pw", smpplib_client) == Status.RBINDFAIL
    assert await _bind_status(port, "acme", "secret", smpplib_client) == 0
    # max_binds = 1: the second bind is refused
    assert await _bind_status(port, "acme", "secret", smpplib_client) == Status.RBINDFAIL


async def test_bind_while_bound_and_submit_on_receiver(proxy, async_esme):
    app = await proxy()
    rx = await async_esme(app.server.port, system_id="acme", password="secret",
                          command=int(CommandId.BIND_RECEIVER))
    bind_again = Pdu(int(CommandId.BIND_TRANSCEIVER),
                     params={"system_id": "acme", "password": "secret", "interface_version": 0x34})
    resp = await rx.request(bind_again)
    assert resp.command_status == Status.RALYBND
    resp = await rx.request(Pdu(int(CommandId.SUBMIT_SM),
                                params={"destination_addr": "1", "short_message": b"x"}))
    assert resp.command_status == Status.RINVBNDSTS


# ---------------------------------------------------------------------------- outbox and restarts

async def test_receipt_for_unbound_client_delivered_when_it_binds(proxy, simulator, smpplib_client):
    app = await proxy()
    tx = await smpplib_client(app.server.port, system_id="acme", password="secret", bind="transmitter")
    res = await asyncio.to_thread(tx.submit, "deliver me later", registered_delivery=1)
    assert res.status == 0
    await asyncio.to_thread(tx.close)
    await simulator.wait_for_receipts(1, timeout=10)  # acknowledged by the proxy (outbox)
    await wait_until(lambda: app.metrics.outbox_pending._value.get() >= 1, 10)
    rx = await smpplib_client(app.server.port, system_id="acme", password="secret", bind="receiver")
    [dlr] = await asyncio.to_thread(rx.receipts, 1, 10)
    assert _receipt_id(dlr)[0] == res.message_id
    await wait_until(lambda: app.metrics.outbox_pending._value.get() == 0, 10)


async def test_receipt_retried_after_client_error(proxy, simulator, smpplib_client):
    app = await proxy()
    c = await smpplib_client(app.server.port, system_id="acme", password="secret")
    c.deliver_status = 0x08  # the client refuses the first delivery attempts
    res = await asyncio.to_thread(c.submit, "retry me", registered_delivery=1)
    [first] = await asyncio.to_thread(c.receipts, 1, 10)
    c.deliver_status = 0
    [second] = await asyncio.to_thread(c.receipts, 1, 10)
    assert _receipt_id(first)[0] == _receipt_id(second)[0] == res.message_id


async def test_kill9_between_submit_and_receipt(tmp_path, make_simulator, smpplib_client):
    sim = await make_simulator(receipt_delay_s=4.0)
    port = free_port()
    cfg = proxy_config_dict(sim.port, tmp_path / "proxy.db", port=port)
    cfg_path = tmp_path / "proxy.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    proc = ProxyProcess(cfg_path, tmp_path / "proxy.log")
    proc.start()
    try:
        await asyncio.to_thread(wait_port, port, 60)
        await sim.wait_for_bind(2, timeout=20)
        c = await smpplib_client(port, system_id="acme", password="secret")
        res = await asyncio.to_thread(c.submit, "survive kill -9", registered_delivery=1)
        assert res.status == 0
        proc.kill9()
        await asyncio.to_thread(c.close)
        proc2 = ProxyProcess(cfg_path, tmp_path / "proxy2.log")
        proc2.start()
        try:
            await asyncio.to_thread(wait_port, port, 60)
            c2 = await smpplib_client(port, system_id="acme", password="secret")
            [dlr] = await asyncio.to_thread(c2.receipts, 1, 30)
            assert _receipt_id(dlr)[0] == res.message_id
        finally:
            proc2.stop()
    finally:
        proc.stop()


# ---------------------------------------------------------------------------- admission control

async def test_window_exceeded_gets_0x14(proxy, simulator, async_esme):
    app = await proxy(clients=[{"system_id": "acme", "password": "secret", "window": 2}])
    simulator.set_fault(never_reply=True)
    esme = await async_esme(app.server.port, system_id="acme", password="secret")
    futs = [
        esme.conn.send_request_nowait(
            Pdu(int(CommandId.SUBMIT_SM), params={"destination_addr": "1", "short_message": b"w"}),
            timeout=10,
        )
        for _ in range(3)
    ]
    third = await asyncio.wait_for(futs[2], 5)
    assert third.command_status == Status.RMSGQFUL
    # the two in the window get 0x08 when the upstream never answers
    for f in futs[:2]:
        assert (await asyncio.wait_for(f, 10)).command_status == Status.RSYSERR


async def test_throughput_limit_gets_0x58(proxy, async_esme):
    app = await proxy(clients=[{"system_id": "acme", "password": "secret", "throughput": 3}])
    esme = await async_esme(app.server.port, system_id="acme", password="secret")
    futs = [
        esme.conn.send_request_nowait(
            Pdu(int(CommandId.SUBMIT_SM), params={"destination_addr": "1", "short_message": b"t"}),
            timeout=10,
        )
        for _ in range(10)
    ]
    statuses = [(await f).command_status for f in futs]
    assert statuses.count(Status.RTHROTTLED) >= 5
    assert statuses.count(0) >= 3


# ---------------------------------------------------------------------------- malformed input

def _raw_bind(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    body = b"acme\x00secret\x00\x00\x34\x00\x00\x00"
    s.sendall(struct.pack(">IIII", 16 + len(body), int(CommandId.BIND_TRANSCEIVER), 0, 1) + body)
    resp = decode_pdu(_read_pdu(s))
    assert resp.command_status == 0
    return s


def _read_pdu(s: socket.socket) -> bytes:
    hdr = b""
    while len(hdr) < 4:
        chunk = s.recv(4 - len(hdr))
        if not chunk:
            raise ConnectionError("closed")
        hdr += chunk
    (n,) = struct.unpack(">I", hdr)
    data = hdr
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


async def test_malformed_pdus_answered_and_other_sessions_unaffected(proxy, smpplib_client):
    app = await proxy()
    good = await smpplib_client(app.server.port, system_id="acme", password="secret")

    def bad_session():
        s = _raw_bind(app.server.port)
        # unknown command id → generic_nack 0x03, session continues
        s.sendall(struct.pack(">IIII", 16, 0x00000099, 0, 2))
        nack = decode_pdu(_read_pdu(s))
        assert (nack.command_id, nack.command_status, nack.sequence_number) == (
            CommandId.GENERIC_NACK, Status.RINVCMDID, 2)
        # malformed submit_sm body → submit_sm_resp with an error, session continues
        body = b"\x00" + b"X" * 30
        s.sendall(struct.pack(">IIII", 16 + len(body), int(CommandId.SUBMIT_SM), 0, 3) + body)
        r = decode_pdu(_read_pdu(s))
        assert r.command_id == CommandId.SUBMIT_SM_RESP and r.command_status != 0
        s.sendall(struct.pack(">IIII", 16, int(CommandId.ENQUIRE_LINK), 0, 4))
        assert decode_pdu(_read_pdu(s)).command_id == CommandId.ENQUIRE_LINK_RESP
        # impossible command_length → generic_nack 0x02 and the connection closes
        s.sendall(struct.pack(">IIII", 5, int(CommandId.SUBMIT_SM), 0, 5))
        nack = decode_pdu(_read_pdu(s))
        assert nack.command_id == CommandId.GENERIC_NACK and nack.command_status == Status.RINVCMDLEN
        assert s.recv(10) == b""
        s.close()

    await asyncio.to_thread(bad_session)
    res = await asyncio.to_thread(good.submit, "still fine")
    assert res.status == 0


# ---------------------------------------------------------------------------- upstream failures

async def test_upstream_down_gets_0x08_then_recovers(tmp_path, make_simulator, async_esme):
    sim = await make_simulator()
    up_port = sim.port
    cfg = proxy_config_dict(up_port, tmp_path / "p.db")
    app = await start_proxy(cfg)
    try:
        await wait_upstream_bound(app, 2)
        esme = await async_esme(app.server.port, system_id="acme", password="secret")
        sub = Pdu(int(CommandId.SUBMIT_SM), params={"destination_addr": "1", "short_message": b"u"})
        assert (await esme.request(sub.copy())).command_status == 0
        await sim.stop(unbind_timeout=0.5)
        await wait_until(lambda: app.pool.bound_count() == 0, 10)
        resp = await esme.request(sub.copy(), timeout=10)
        assert resp.command_status == Status.RSYSERR
        sim2 = await make_simulator(port=up_port)
        await wait_upstream_bound(app, 1, timeout=15)
        assert (await esme.request(sub.copy())).command_status == 0
        assert len(sim2.received) == 1
    finally:
        await app.stop()


async def test_upstream_error_status_passed_through(proxy, simulator, async_esme):
    app = await proxy()
    simulator.set_fault(reject_status=0x0B)
    esme = await async_esme(app.server.port, system_id="acme", password="secret")
    resp = await esme.request(
        Pdu(int(CommandId.SUBMIT_SM), params={"destination_addr": "1", "short_message": b"r"}))
    assert resp.command_status == 0x0B


async def test_failover_to_second_upstream(tmp_path, make_simulator, async_esme):
    a = await make_simulator()
    b = await make_simulator()
    cfg = proxy_config_dict(a.port, tmp_path / "p.db")
    second = dict(cfg["upstreams"][0], name="backup", port=b.port, priority=1)
    cfg["upstreams"].append(second)
    app = await start_proxy(cfg)
    try:
        await wait_upstream_bound(app, 4)
        esme = await async_esme(app.server.port, system_id="acme", password="secret")
        sub = Pdu(int(CommandId.SUBMIT_SM), params={"destination_addr": "1", "short_message": b"f"})
        assert (await esme.request(sub.copy())).command_status == 0
        assert len(a.received) == 1 and len(b.received) == 0  # primary preferred
        await a.stop(unbind_timeout=0.5)
        await wait_until(lambda: app.pool.bound_count() == 2, 10)
        assert (await esme.request(sub.copy())).command_status == 0
        assert len(b.received) == 1
    finally:
        await app.stop()


# ---------------------------------------------------------------------------- MO, query, keep-alive

async def test_mo_routed_by_prefix_and_unmatched_answered(proxy, simulator, smpplib_client):
    app = await proxy()
    c = await smpplib_client(app.server.port, system_id="acme", password="secret", bind="receiver")
    await simulator.send_mo("491700000001", "4470123456", "hi from a phone")
    [mo] = await asyncio.to_thread(c.receipts, 1, 10)
    assert mo.short_message == b"hi from a phone"
    await simulator.send_mo("491700000001", "9999", "nobody")
    await wait_until(lambda: app.metrics.mo.labels("unmatched")._value.get() == 1, 10)


async def test_query_sm_translates_ids(proxy, simulator, async_esme):
    app = await proxy()
    esme = await async_esme(app.server.port, system_id="acme", password="secret")
    resp = await esme.request(
        Pdu(int(CommandId.SUBMIT_SM), params={"destination_addr": "1", "short_message": b"q"}))
    mid = resp.params["message_id"]
    q = await esme.request(Pdu(int(CommandId.QUERY_SM), params={"message_id": mid}))
    assert q.command_id == CommandId.QUERY_SM_RESP
    if q.command_status == 0:
        assert q.params["message_id"] == mid
    unknown = await esme.request(Pdu(int(CommandId.QUERY_SM), params={"message_id": "nope"}))
    assert unknown.command_status == Status.RINVMSGID


async def test_proxy_probes_idle_clients_and_closes_dead_ones(proxy):
    app = await proxy(server={"enquire_link_interval_s": 0.3, "response_timeout_s": 0.5})

    def dead_client():
        s = _raw_bind(app.server.port)
        # do not answer anything: the proxy's enquire_link goes unanswered
        got = _read_pdu(s)
        assert decode_pdu(got).command_id == CommandId.ENQUIRE_LINK
        s.settimeout(5)
        t0 = time.monotonic()
        while True:
            data = s.recv(4096)
            if not data:
                break
        s.close()
        return time.monotonic() - t0

    elapsed = await asyncio.to_thread(dead_client)
    assert elapsed < 4


async def test_clean_unbind_always_answered(proxy, smpplib_client):
    app = await proxy()
    c = await smpplib_client(app.server.port, system_id="acme", password="secret")
    resp = await asyncio.to_thread(c.unbind)
    assert resp.command == "unbind_resp"


async def test_metrics_endpoint_counts_pdus(proxy, smpplib_client):
    app = await proxy()
    c = await smpplib_client(app.server.port, system_id="acme", password="secret")
    await asyncio.to_thread(c.submit, "count me")
    fams = await metrics_families(app)
    pdus = fams["smsfw_pdus"].samples
    assert any(s.labels == {"side": "client", "direction": "in", "command": "submit_sm",
                            "status": "0x00"} and s.value >= 1 for s in pdus)
    assert "smsfw_submit_latency_seconds" in fams
    assert any(s.value == 2 for s in fams["smsfw_upstream_sessions"].samples
               if s.labels.get("state") == "bound")


def test_parse_receipt_helper_matches_smpplib_format():
    p = Pdu(int(CommandId.DELIVER_SM), params={"esm_class": 4, "short_message": b"id:abc stat:DELIVRD"})
    assert parse_receipt(p).message_id == "abc"


async def test_receipt_with_decimal_id_in_text_and_no_tlv_is_matched(tmp_path, make_simulator, smpplib_client):
    # the upstream answers submit_sm with a hex id but writes the receipt id in decimal, zero
    # padded, with no receipted_message_id TLV
    sim = await make_simulator(id_format="hex", receipt_id_in_text="decimal_zero_padded",
                               receipt_tlv=False)
    app = await start_proxy(proxy_config_dict(sim.port, tmp_path / "p.db"))
    try:
        await wait_upstream_bound(app, 2)
        c = await smpplib_client(app.server.port, system_id="acme", password="secret")
        res = await asyncio.to_thread(c.submit, "decimal receipt", registered_delivery=1)
        [dlr] = await asyncio.to_thread(c.receipts, 1, 10)
        assert _receipt_id(dlr)[0] == res.message_id
        assert app.metrics.dlr.labels("unmatched")._value.get() == 0
    finally:
        await app.stop()


async def test_transmitter_receiver_pair_upstream(tmp_path, make_simulator, smpplib_client):
    sim = await make_simulator()
    cfg = proxy_config_dict(sim.port, tmp_path / "p.db")
    cfg["upstreams"][0].update(bind_mode="transmitter_receiver", binds=1)
    app = await start_proxy(cfg)
    try:
        await sim.wait_for_bind(2, timeout=10)
        await wait_upstream_bound(app, 1)
        c = await smpplib_client(app.server.port, system_id="acme", password="secret")
        res = await asyncio.to_thread(c.submit, "via a tx/rx pair", registered_delivery=1)
        assert res.status == 0
        [dlr] = await asyncio.to_thread(c.receipts, 1, 10)  # came in on the receiver bind
        assert _receipt_id(dlr)[0] == res.message_id
    finally:
        await app.stop()


def test_check_config_cli_and_run_refuses_invalid_file(tmp_path):
    import subprocess
    import sys

    from .proxy_harness import REPO

    bad = tmp_path / "bad.yaml"
    bad.write_text("upstreams:\n  - name: a\n    host: h\n    system_id: s\n    port: 99999\n")
    for cmd in ("check-config", "run"):
        p = subprocess.run([sys.executable, "-m", "smpp_proxy", cmd, "--config", str(bad)],
                           cwd=REPO, capture_output=True, text=True, timeout=120)
        assert p.returncode == 2, (cmd, p.stdout, p.stderr)
        assert "upstreams[0].port (line 5)" in p.stderr
    p = subprocess.run([sys.executable, "-m", "smpp_proxy", "check-config", "--config",
                        str(REPO / "config" / "proxy.yaml")],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and "OK" in p.stdout


async def test_health_and_readiness_endpoints(tmp_path, make_simulator):
    sim = await make_simulator()
    app = await start_proxy(proxy_config_dict(sim.port, tmp_path / "p.db", metrics_port=0))

    port = app.metrics_server.bound_port
    try:
        assert (await http_get(port, "/healthz"))[0] == 200
        await wait_upstream_bound(app, 2)
        assert (await http_get(port, "/readyz")) == (200, b"ready\n")
        await sim.stop(unbind_timeout=0.5)
        await wait_until(lambda: app.pool.bound_count() == 0, 10)
        assert (await http_get(port, "/readyz")) == (503, b"no upstream bound\n")
    finally:
        await app.stop()


async def test_shutdown_unbinds_upstreams_and_clients(tmp_path, make_simulator, smpplib_client):
    sim = await make_simulator()
    app = await start_proxy(proxy_config_dict(sim.port, tmp_path / "p.db"))
    await wait_upstream_bound(app, 2)
    c = await smpplib_client(app.server.port, system_id="acme", password="secret")
    await app.stop()
    await sim.wait_until(lambda: sim.stats.unbinds >= 2, timeout=5)
    assert await asyncio.to_thread(c.unbound_by_peer.wait, 5)
