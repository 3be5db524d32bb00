"""The filtering proxy end to end with the shipped default model, over real sockets.

smpplib / our ESME → proxy (assembler → batcher → model → policy) → simulator.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest
import yaml

from smpp_proxy.constants import CommandId, Status
from smpp_proxy.pdu import Pdu
from smpp_proxy.udh import build_udh, split_udh

from .proxy_harness import (
    REPO,
    metrics_families,
    proxy_config_dict,
    start_proxy,
    wait_until,
    wait_upstream_bound,
)

MODEL = Path(os.environ.get("SMSFW_TEST_MODEL_DIR", REPO / "classifier" / "models" / "default"))
pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(not (MODEL / "config.json").exists(), reason="default model not built"),
]

PHISHING = (
    "Your bank account has been suspended. Verify your identity now at "
    "http://secure-bank-login.example.com/verify or it will be closed within 24 hours"
)
PHISHING_GSM = (
    "URGENT: your PayPal account is locked. Confirm your card details at "
    "http://paypal-secure-check.com/login within 24h to avoid suspension"
)
HAM = (
    "Hey, are we still meeting for lunch tomorrow at 1? Let me know if you want to move it, "
    "I can also do Thursday. Don't forget to bring the photos from the trip, mum wants to see them!"
)

POLICY = {
    "labels": {
        "ham": {"threshold": 0.0, "action": "forward"},
        "spam": {"threshold": 0.9, "action": "forward"},
        "phishing": {"threshold": 0.5, "action": "reject", "reject_status": 0x45},
    },
}


@pytest.fixture
async def fproxy(simulator, tmp_path):
    apps = []

    async def make(policy=None, multipart=None, clients=None, **kw):
        cfg = proxy_config_dict(
            simulator.port, tmp_path / "proxy.db", metrics_port=0, classifier=True,
            clients=clients, **kw,
        )
        cfg["classifier"] = {"enabled": True, "model_dir": str(MODEL), "timeout_ms": 10000}
        cfg["policy"] = policy if policy is not None else POLICY
        cfg["multipart"] = multipart or {"timeout_s": 30}
        app = await start_proxy(cfg, tmp_path / "proxy.yaml")
        apps.append(app)
        await wait_upstream_bound(app, 2)
        return app

    yield make
    for app in apps:
        await app.stop()


def split_parts(payload: bytes, n: int, ref: int, ref16: bool = False) -> list[bytes]:
    """short_message of each part: UDH (concatenation IE) + a chunk of ``payload``."""
    size = -(-len(payload) // n)
    if size % 2:
        size += 1  # keep UCS-2 code units whole (a pair may still straddle parts)
    chunks = [payload[i : i + size] for i in range(0, len(payload), size)]
    assert len(chunks) == n
    out = []
    for i, chunk in enumerate(chunks, 1):
        if ref16:
            ie = (0x08, ref.to_bytes(2, "big") + bytes([n, i]))
        else:
            ie = (0x00, bytes([ref, n, i]))
        out.append(build_udh([ie]) + chunk)
    return out


def sample(fams, name, **labels) -> float:
    return sum(
        s.value for s in fams[name].samples
        if s.name == name + "_total" and all(s.labels.get(k) == v for k, v in labels.items())
    ) if name in fams else 0.0


def stat_of(dlr) -> str:
    return dlr.short_message.split(b"stat:")[1].split(b" ")[0].decode()


def id_of(dlr) -> str:
    return dlr.short_message.split(b" ")[0].split(b":", 1)[1].decode()


async def test_ucs2_phishing_in_three_parts_out_of_order_is_blocked(fproxy, simulator, smpplib_client):
    app = await fproxy()
    c = await smpplib_client(app.server.port, system_id="acme", password="secret")
    parts = split_parts(("⚠️ " + PHISHING).encode("utf-16-be"), 3, ref=0x42)
    order = [2, 0, 1]  # part 3, part 1, then part 2 completes the message
    results = []
    for i in order:
        r = await asyncio.to_thread(
            c.submit, parts[i], esm_class=0x40, data_coding=8, registered_delivery=1
        )
        results.append(r)
    assert results[0].status == 0 and results[1].status == 0  # held parts answered at once
    assert results[2].status == 0x45  # the completing part carries the verdict
    dlrs = await asyncio.to_thread(c.receipts, 2, 15)
    assert {id_of(d) for d in dlrs} == {results[0].message_id, results[1].message_id}
    assert all(stat_of(d) == "REJECTD" for d in dlrs)
    assert all(b"err:045" in d.short_message for d in dlrs)
    assert simulator.received == []  # nothing reached the SMSC
    fams = await metrics_families(app)
    assert sample(fams, "smsfw_messages", client="acme", label="phishing", action="reject") == 1


async def test_ham_multipart_forwarded_with_udh_intact_and_receipts_relayed(
    fproxy, simulator, smpplib_client
):
    app = await fproxy()
    c = await smpplib_client(app.server.port, system_id="acme", password="secret")
    parts = split_parts(HAM.encode("ascii"), 2, ref=0x1234, ref16=True)
    res = [
        await asyncio.to_thread(c.submit, p, esm_class=0x40, data_coding=0, registered_delivery=1)
        for p in parts
    ]
    assert [r.status for r in res] == [0, 0]
    got = await simulator.wait_for_submits(2, timeout=10)
    assert [g.params["short_message"] for g in got] == parts  # UDH and payload byte-identical
    assert all(g.params["esm_class"] == 0x40 for g in got)
    ies, _ = split_udh(got[0].params["short_message"])
    assert ies == [(0x08, b"\x12\x34\x02\x01")]
    dlrs = await asyncio.to_thread(c.receipts, 2, 15)
    assert {id_of(d) for d in dlrs} == {r.message_id for r in res}
    assert all(stat_of(d) == "DELIVRD" for d in dlrs)


async def test_gsm7_single_part_phishing_blocked_and_ham_forwarded(fproxy, simulator, smpplib_client):
    app = await fproxy()
    c = await smpplib_client(app.server.port, system_id="acme", password="secret")
    r = await asyncio.to_thread(c.submit, PHISHING_GSM, data_coding=0, registered_delivery=0)
    assert r.status == 0x45
    r = await asyncio.to_thread(c.submit, "Running 10 min late, save me a seat please", data_coding=0)
    assert r.status == 0
    [fwd] = await simulator.wait_for_submits(1)
    assert fwd.params["short_message"] == b"Running 10 min late, save me a seat please"


async def test_allow_listed_sender_passes_whatever_the_model_says(fproxy, simulator, smpplib_client):
    app = await fproxy(policy={**POLICY, "allow": {"senders": ["TrustBank"]}})
    c = await smpplib_client(app.server.port, system_id="acme", password="secret")
    r = await asyncio.to_thread(c.submit, PHISHING_GSM, source="TrustBank", source_addr_ton=5)
    assert r.status == 0
    await simulator.wait_for_submits(1)
    r = await asyncio.to_thread(c.submit, PHISHING_GSM, source="Other")
    assert r.status == 0x45


async def test_block_list_regex(fproxy, simulator, async_esme):
    app = await fproxy(policy={**POLICY, "block": {"text_patterns": [r"casino\s+bonus"],
                                                   "reject_status": 0x0B}})
    esme = await async_esme(app.server.port, system_id="acme", password="secret")
    resp = await esme.request(Pdu(int(CommandId.SUBMIT_SM), params={
        "destination_addr": "1", "short_message": b"See you at the Casino  Bonus night, Tom"}))
    assert resp.command_status == 0x0B


async def test_shadow_mode_forwards_everything_and_counts(fproxy, simulator, smpplib_client):
    app = await fproxy(policy={**POLICY, "mode": "shadow"})
    c = await smpplib_client(app.server.port, system_id="acme", password="secret")
    r = await asyncio.to_thread(c.submit, PHISHING_GSM)
    assert r.status == 0
    await simulator.wait_for_submits(1)
    fams = await metrics_families(app)
    assert sample(fams, "smsfw_shadow_verdicts", label="phishing", action="reject") == 1
    assert sample(fams, "smsfw_messages", label="phishing", action="forward") == 1


async def test_per_client_shadow_override(fproxy, simulator, smpplib_client):
    clients = [
        {"system_id": "acme", "password": "secret"},
        {"system_id": "trial", "password": "pw", "policy": {"mode": "shadow"}},
    ]
    app = await fproxy(clients=clients)
    trial = await smpplib_client(app.server.port, system_id="trial", password="pw")
    acme = await smpplib_client(app.server.port, system_id="acme", password="secret")
    assert (await asyncio.to_thread(trial.submit, PHISHING_GSM)).status == 0
    assert (await asyncio.to_thread(acme.submit, PHISHING_GSM)).status == 0x45


async def test_drop_answers_ok_and_sends_configured_receipt(fproxy, simulator, smpplib_client):
    policy = {"labels": {**POLICY["labels"],
                         "phishing": {"threshold": 0.5, "action": "drop", "drop_receipt": "DELIVRD"}}}
    app = await fproxy(policy=policy)
    c = await smpplib_client(app.server.port, system_id="acme", password="secret")
    r = await asyncio.to_thread(c.submit, PHISHING_GSM, registered_delivery=1)
    assert r.status == 0 and r.message_id
    [dlr] = await asyncio.to_thread(c.receipts, 1, 15)
    assert id_of(dlr) == r.message_id and stat_of(dlr) == "DELIVRD"
    assert simulator.received == []


async def test_incomplete_message_times_out_and_is_still_handled(fproxy, simulator, smpplib_client):
    app = await fproxy(multipart={"timeout_s": 1.0})
    c = await smpplib_client(app.server.port, system_id="acme", password="secret")
    # phishing: 2 of 3 parts arrive; after the timeout they are classified on their own text
    bad = split_parts(PHISHING_GSM.encode("ascii"), 3, ref=7)
    res = [await asyncio.to_thread(c.submit, p, esm_class=0x40, registered_delivery=1) for p in bad[:2]]
    assert [r.status for r in res] == [0, 0]
    dlrs = await asyncio.to_thread(c.receipts, 2, 20)
    assert {id_of(d) for d in dlrs} == {r.message_id for r in res}
    assert all(stat_of(d) == "REJECTD" for d in dlrs)
    # ham: 1 of 2 parts arrives; after the timeout it is forwarded as it is
    good = split_parts(HAM.encode("ascii"), 2, ref=8)
    r = await asyncio.to_thread(c.submit, good[0], esm_class=0x40, registered_delivery=0)
    assert r.status == 0
    [fwd] = await simulator.wait_for_submits(1, timeout=20)
    assert fwd.params["short_message"] == good[0]
    fams = await metrics_families(app)
    assert sum(s.value for s in fams["smsfw_multipart_timeouts"].samples
               if s.name.endswith("_total")) == 2


async def test_sighup_with_broken_file_keeps_old_policy(fproxy, simulator, smpplib_client, tmp_path):
    app = await fproxy()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGHUP, app.reload)
    try:
        c = await smpplib_client(app.server.port, system_id="acme", password="secret")
        cfg_path = tmp_path / "proxy.yaml"
        good_text = cfg_path.read_text()
        cfg_path.write_text(good_text.replace("reject_status: 69", "reject_status: banana"))
        os.kill(os.getpid(), signal.SIGHUP)
        await asyncio.sleep(0.3)
        assert (await asyncio.to_thread(c.submit, PHISHING_GSM)).status == 0x45
        # a valid change applies without dropping the bind
        shadow = yaml.safe_load(good_text)
        shadow["policy"]["mode"] = "shadow"
        cfg_path.write_text(yaml.safe_dump(shadow))
        os.kill(os.getpid(), signal.SIGHUP)
        await wait_until(lambda: app.config.policy.mode == "shadow", 5)
        assert (await asyncio.to_thread(c.submit, PHISHING_GSM)).status == 0
        assert not c.closed.is_set()
    finally:
        loop.remove_signal_handler(signal.SIGHUP)


async def _submit_with_expired_deadline(app, async_esme, on_error: str) -> int:
    """A classification whose deadline cannot be met is a classifier failure."""
    cfg = app.config.model_copy(update={
        "classifier": app.config.classifier.model_copy(update={"timeout_ms": 0.001}),
        "policy": app.config.policy.model_copy(update={"on_classifier_error": on_error}),
    })
    app.apply_config(cfg)
    esme = await async_esme(app.server.port, system_id="acme", password="secret")
    resp = await esme.request(Pdu(int(CommandId.SUBMIT_SM), params={
        "destination_addr": "1", "short_message": PHISHING_GSM.encode()}))
    return resp.command_status


async def test_classifier_failure_tempfails_when_configured(fproxy, simulator, async_esme):
    app = await fproxy()
    assert await _submit_with_expired_deadline(app, async_esme, "tempfail") == Status.RTHROTTLED
    assert simulator.received == []


async def test_classifier_failure_fails_open_by_default(fproxy, simulator, async_esme):
    app = await fproxy()
    assert await _submit_with_expired_deadline(app, async_esme, "forward") == 0
    await simulator.wait_for_submits(1)


async def test_metrics_show_verdicts_batches_and_latency(fproxy, simulator, smpplib_client):
    app = await fproxy()
    c = await smpplib_client(app.server.port, system_id="acme", password="secret")
    await asyncio.to_thread(c.submit, PHISHING_GSM)
    await asyncio.to_thread(c.submit, "See you at 7 at the cinema")
    fams = await metrics_families(app)
    assert sample(fams, "smsfw_messages", client="acme", label="phishing", action="reject") == 1
    assert sample(fams, "smsfw_messages", client="acme", label="ham", action="forward") == 1
    for name in ("smsfw_classification_latency_seconds", "smsfw_message_latency_seconds",
                 "smsfw_classifier_batch_size", "smsfw_classifier_queue_depth",
                 "smsfw_multipart_pending_messages", "smsfw_upstream_sessions",
                 "smsfw_submit_latency_seconds"):
        assert name in fams, name
    count = [s.value for s in fams["smsfw_classifier_batch_size"].samples
             if s.name == "smsfw_classifier_batch_size_count"]
    assert count and count[0] >= 1


async def test_audit_log_records_verdicts_with_hashed_text(fproxy, simulator, smpplib_client, tmp_path):
    import hashlib
    import json

    audit = tmp_path / "audit.jsonl"
    app = await fproxy(audit={"enabled": True, "path": str(audit), "text": "hash"})
    c = await smpplib_client(app.server.port, system_id="acme", password="secret")
    assert (await asyncio.to_thread(c.submit, PHISHING_GSM, source="4470111")).status == 0x45
    [line] = audit.read_text().splitlines()
    rec = json.loads(line)
    assert rec["client"] == "acme" and rec["source"] == "4470111"
    assert rec["label"] == "phishing" and rec["action"] == "reject"
    assert set(rec["probs"]) == {"ham", "spam", "phishing"}
    assert rec["text_sha256"] == hashlib.sha256(PHISHING_GSM.encode()).hexdigest()
    assert "text" not in rec


async def test_completing_part_refused_upstream_is_forwarded_on_retry(fproxy, simulator, smpplib_client):
    app = await fproxy()
    c = await smpplib_client(app.server.port, system_id="acme", password="secret")
    parts = split_parts(HAM.encode("ascii"), 2, ref=0x33)
    first = await asyncio.to_thread(c.submit, parts[0], esm_class=0x40, registered_delivery=1)
    assert first.status == 0
    simulator.set_fault(reject_status=0x14)  # the SMSC's queue is full for a moment
    r = await asyncio.to_thread(c.submit, parts[1], esm_class=0x40, registered_delivery=1)
    assert r.status == 0x14  # the upstream's status, unchanged
    [undeliv] = await asyncio.to_thread(c.receipts, 1, 10)  # part 1 was answered OK earlier
    assert id_of(undeliv) == first.message_id and stat_of(undeliv) == "UNDELIV"
    simulator.clear_faults()
    retry = await asyncio.to_thread(c.submit, parts[1], esm_class=0x40, registered_delivery=1)
    assert retry.status == 0 and retry.message_id
    fwd = await simulator.wait_for_submits(1, timeout=10)
    assert fwd[-1].params["short_message"] == parts[1]
    # a blocked message stays blocked when its completing part is resubmitted
    bad = split_parts(PHISHING_GSM.encode("ascii"), 2, ref=0x34)
    assert (await asyncio.to_thread(c.submit, bad[0], esm_class=0x40, registered_delivery=0)).status == 0
    assert (await asyncio.to_thread(c.submit, bad[1], esm_class=0x40, registered_delivery=0)).status == 0x45
    assert (await asyncio.to_thread(c.submit, bad[1], esm_class=0x40, registered_delivery=0)).status == 0x45
