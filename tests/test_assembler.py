"""Tests for smpp_proxy.assembler against a real SQLiteStore on a file."""

from __future__ import annotations

import asyncio
import random

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge

from smpp_proxy.assembler import (
    GAP,
    AssembledMessage,
    Assembler,
    group_key,
    message_text,
    parse_group_key,
)
from smpp_proxy.constants import ESM_UDHI, CommandId, Tag
from smpp_proxy.pdu import Pdu, Tlv, decode_pdu
from smpp_proxy.store import HeldPart, SQLiteStore
from smpp_proxy.text import gsm7_encode
from smpp_proxy.udh import build_udh

T0 = 1_700_000_000.0
SRC = "SENDER"
DST = "447700900123"


# --------------------------------------------------------------------------------------------
# helpers


@pytest.fixture
async def store(tmp_path):
    s = SQLiteStore(tmp_path / "assembler.db")
    await s.open()
    yield s
    await s.close()


def submit(
    short_message: bytes = b"",
    *,
    esm_class: int = 0,
    data_coding: int = 0,
    tlvs: list[Tlv] | None = None,
    src: str = SRC,
    dst: str = DST,
    seq: int = 1,
) -> tuple[Pdu, bytes]:
    """A submit_sm as received from the wire: (decoded Pdu, the original frame)."""
    pdu = Pdu(
        CommandId.SUBMIT_SM,
        0,
        seq,
        {
            "service_type": "",
            "source_addr_ton": 5,
            "source_addr_npi": 0,
            "source_addr": src,
            "dest_addr_ton": 1,
            "dest_addr_npi": 1,
            "destination_addr": dst,
            "esm_class": esm_class,
            "registered_delivery": 1,
            "data_coding": data_coding,
            "short_message": short_message,
        },
        list(tlvs or []),
    )
    frame = pdu.encode()
    return decode_pdu(frame), frame


def chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def udh_parts(
    payload: bytes, size: int, ref: int, *, bits: int = 8, data_coding: int = 0, **kw
) -> list[tuple[Pdu, bytes]]:
    """Parts with a concatenation UDH (IEI 0x00 or 0x08)."""
    pieces = chunks(payload, size)
    out = []
    for i, piece in enumerate(pieces, 1):
        if bits == 8:
            ie = (0x00, bytes((ref, len(pieces), i)))
        else:
            ie = (0x08, bytes((ref >> 8, ref & 0xFF, len(pieces), i)))
        out.append(
            submit(
                build_udh([ie]) + piece,
                esm_class=ESM_UDHI,
                data_coding=data_coding,
                seq=i,
                **kw,
            )
        )
    return out


def sar_parts(payload: bytes, size: int, ref: int, *, data_coding: int = 0, **kw):
    pieces = chunks(payload, size)
    return [
        submit(
            piece,
            data_coding=data_coding,
            tlvs=[
                Tlv(Tag.SAR_MSG_REF_NUM, ref.to_bytes(2, "big")),
                Tlv(Tag.SAR_TOTAL_SEGMENTS, bytes((len(pieces),))),
                Tlv(Tag.SAR_SEGMENT_SEQNUM, bytes((i,))),
            ],
            seq=i,
            **kw,
        )
        for i, piece in enumerate(pieces, 1)
    ]


async def feed(asm: Assembler, client: str, parts, order, now: float = T0):
    """Add parts in the given order; returns the AddResults (by position in ``order``)."""
    results = []
    for k, idx in enumerate(order):
        pdu, frame = parts[idx]
        results.append(await asm.add(client, pdu, f"{client}-p{idx + 1}", now + k * 0.01))
    return results


def check_whole(msg: AssembledMessage, parts, text: str, client: str = "esme1") -> None:
    assert msg.complete and msg.missing == []
    assert msg.text == text
    assert msg.client_id == client
    assert msg.total == len(parts)
    assert [p.seqnum for p in msg.parts] == list(range(1, len(parts) + 1))
    # every original part byte for byte, in seqnum order, and decoded alongside
    assert [p.pdu for p in msg.parts] == [frame for _, frame in parts]
    assert [p.encode() for p in msg.pdus] == [frame for _, frame in parts]
    assert msg.proxy_ids == [f"{client}-p{i}" for i in range(1, len(parts) + 1)]


async def assemble_shuffled(store, parts, text, seed: int, client: str = "esme1"):
    asm = Assembler(store, timeout_s=60)
    order = list(range(len(parts)))
    random.Random(seed).shuffle(order)
    results = await feed(asm, client, parts, order)
    kinds = [r.kind for r in results]
    assert kinds.count("complete") == 1 and kinds[-1] == "complete"
    assert kinds[:-1] == ["held"] * (len(parts) - 1)
    check_whole(results[-1].message, parts, text, client)
    assert asm.pending_parts() == 0 and asm.pending_messages() == 0
    assert await store.part_count() == 0
    assert asm.next_deadline() is None
    return asm


# --------------------------------------------------------------------------------------------
# assembly of the different kinds of multipart messages


async def test_ucs2_surrogate_pair_straddles_parts(store):
    text = "Prize 🎉 waiting: claim at http://example.test/x 😀 now ✅ 🇬🇧 end"
    payload = text.encode("utf-16-be")
    size = 14  # 7 UCS-2 units per part
    pieces = chunks(payload, size)
    # at least one part ends with a high surrogate whose low half starts the next part
    assert any(0xD8 <= p[-2] <= 0xDB for p in pieces[:-1])
    # decoding each part alone would break the emoji
    assert "".join(p.decode("utf-16-be", "replace") for p in pieces) != text
    parts = udh_parts(payload, size, ref=0x42, data_coding=0x08)
    assert len(parts) >= 5
    for seed in range(3):
        await assemble_shuffled(store, parts, text, seed)


async def test_gsm7_unpacked_escape_straddles_parts(store):
    text = "Your code {1234} costs 5€ [promo] ~ see you ^^ |end|"
    septets = gsm7_encode(text)
    size = 9
    pieces = chunks(septets, size)
    assert any(p[-1] == 0x1B for p in pieces[:-1]), "an escape must end a part"
    parts = udh_parts(septets, size, ref=7, data_coding=0x00)
    await assemble_shuffled(store, parts, text, seed=11)


async def test_16bit_reference(store):
    text = "sixteen-bit reference, " * 4
    parts = udh_parts(text.encode("ascii"), 30, ref=0xBEEF, bits=16, data_coding=0x01)
    asm = await assemble_shuffled(store, parts, text, seed=3)
    assert asm.pending_messages() == 0


async def test_sar_tlvs(store):
    text = "Привет! Это сообщение из нескольких частей 😀 конец"
    payload = text.encode("utf-16-be")
    parts = sar_parts(payload, 20, ref=0x1234, data_coding=0x08)
    await assemble_shuffled(store, parts, text, seed=5)


async def test_utf8_under_default_alphabet_split_across_parts(store):
    # misconfigured ESMEs send UTF-8 with data_coding 0: join before decoding too
    text = "café ünïcödé " * 3
    payload = text.encode("utf-8")
    pieces = chunks(payload, 4)
    assert any(p.decode("utf-8", "replace") != p.decode("utf-8", "ignore") for p in pieces)
    parts = udh_parts(payload, 4, ref=9, data_coding=0x00)
    await assemble_shuffled(store, parts, text, seed=1)


async def test_message_payload_and_short_single(store):
    asm = Assembler(store)
    long_text = "A long message in message_payload " * 10
    pdu, frame = submit(b"", data_coding=0x01, tlvs=[Tlv(Tag.MESSAGE_PAYLOAD, long_text.encode())])
    r = await asm.add("esme1", pdu, "id-1", T0)
    assert r.kind == "single" and r.proxy_id == "id-1" and r.key is None
    m = r.message
    assert m.key is None and m.complete and m.total == 1 and m.missing == []
    assert m.text == long_text
    assert [(p.seqnum, p.total, p.pdu, p.proxy_id) for p in m.parts] == [(1, 1, frame, "id-1")]
    assert m.pdus == [pdu]

    pdu, frame = submit(gsm7_encode("Hi €5"), data_coding=0)
    r = await asm.add("esme1", pdu, "id-2", T0)
    assert r.kind == "single" and r.message.text == "Hi €5"
    assert await store.part_count() == 0 and asm.pending_parts() == 0


async def test_single_with_non_concat_udh_and_total_one(store):
    asm = Assembler(store)
    # port addressing UDH only: single, UDH stripped from the text
    pdu, _ = submit(build_udh([(0x05, bytes(4))]) + b"hello", esm_class=ESM_UDHI, data_coding=0x04)
    r = await asm.add("esme1", pdu, "a")
    assert r.kind == "single" and r.message.text == "hello"
    # a concatenation IE with total 1
    pdu, _ = submit(build_udh([(0x00, b"\x01\x01\x01")]) + b"one", esm_class=ESM_UDHI)
    r = await asm.add("esme1", pdu, "b")
    assert r.kind == "single" and r.message.text == "one"


async def test_message_payload_with_udh_is_assembled(store):
    text = "payload parts " * 5
    parts = []
    pieces = chunks(text.encode(), 25)
    for i, piece in enumerate(pieces, 1):
        udh = build_udh([(0x00, bytes((3, len(pieces), i)))])
        parts.append(
            submit(
                b"",
                esm_class=ESM_UDHI,
                data_coding=0x01,
                tlvs=[Tlv(Tag.MESSAGE_PAYLOAD, udh + piece)],
                seq=i,
            )
        )
    await assemble_shuffled(store, parts, text, seed=2)


async def test_mixed_data_coding_decoded_per_part(store):
    asm = Assembler(store)
    p1 = submit(
        build_udh([(0x00, b"\x05\x02\x01")]) + "Grüße ".encode("latin-1"),
        esm_class=ESM_UDHI,
        data_coding=0x03,
    )
    p2 = submit(
        build_udh([(0x00, b"\x05\x02\x02")]) + "😀 ok".encode("utf-16-be"),
        esm_class=ESM_UDHI,
        data_coding=0x08,
    )
    assert (await asm.add("c", p1[0], "x1", T0)).kind == "held"
    r = await asm.add("c", p2[0], "x2", T0 + 1)
    assert r.kind == "complete" and r.message.text == "Grüße 😀 ok"


# --------------------------------------------------------------------------------------------
# duplicates, keys, interleaving


async def test_duplicate_part_answered_with_held_proxy_id(store):
    asm = Assembler(store)
    parts = udh_parts(b"abcdefghij" * 3, 10, ref=1, data_coding=1)
    r1 = await asm.add("esme1", parts[0][0], "first-id", T0)
    assert r1.kind == "held" and r1.proxy_id == "first-id"
    # a retransmission (new sequence number, same content)
    again = decode_pdu(parts[0][1])
    again.sequence_number = 999
    r2 = await asm.add("esme1", again, "second-id", T0 + 1)
    assert r2.kind == "duplicate" and r2.proxy_id == "first-id" and r2.message is None
    assert asm.pending_parts() == 1 and await store.part_count() == 1

    assert (await asm.add("esme1", parts[2][0], "id3", T0 + 2)).kind == "held"
    r = await asm.add("esme1", parts[1][0], "id2", T0 + 3)
    assert r.kind == "complete"
    assert r.message.proxy_ids == ["first-id", "id2", "id3"]
    assert r.message.parts[0].pdu == parts[0][1]  # the first copy, not the retransmission

    # a late retransmission of a part of the completed message is still a duplicate
    late = await asm.add("esme1", parts[1][0], "late-id", T0 + 10)
    assert late.kind == "duplicate" and late.proxy_id == "id2"
    assert asm.pending_parts() == 0 and await store.part_count() == 0
    # ... but not after timeout_s: then it is a new fragment to hold
    later = await asm.add("esme1", parts[1][0], "later-id", T0 + 100)
    assert later.kind == "held"


async def test_reference_reuse_releases_the_old_group(store):
    asm = Assembler(store, timeout_s=60)
    old = udh_parts(b"OLD-one OLD-two OLD-thr", 8, ref=77, data_coding=1)
    new = udh_parts(b"NEW-one NEW-two NEW-thr", 8, ref=77, data_coding=1)
    assert (await asm.add("c", old[0][0], "o1", T0)).kind == "held"
    assert (await asm.add("c", old[1][0], "o2", T0 + 1)).kind == "held"
    # same key and seqnum, different content: the old message lost its part 3
    r = await asm.add("c", new[0][0], "n1", T0 + 2)
    assert r.kind == "held" and r.proxy_id == "n1"
    assert asm.next_deadline() == T0 + 2  # the released group is due now
    released = await asm.expire(T0 + 2)
    assert len(released) == 1
    m = released[0]
    assert not m.complete and m.missing == [3] and m.text == "OLD-one OLD-two "
    assert m.proxy_ids == ["o1", "o2"]
    assert asm.pending_parts() == 1 and await store.part_count() == 1
    assert (await asm.add("c", new[2][0], "n3", T0 + 3)).kind == "held"
    r = await asm.add("c", new[1][0], "n2", T0 + 4)
    assert r.kind == "complete" and r.message.text == "NEW-one NEW-two NEW-thr"
    assert r.message.proxy_ids == ["n1", "n2", "n3"]


async def test_interleaved_clients_same_reference_do_not_mix(store):
    asm = Assembler(store)
    a = udh_parts("client A says hello to you".encode("utf-16-be"), 12, ref=5, data_coding=8)
    b = udh_parts("client B is different text".encode("utf-16-be"), 12, ref=5, data_coding=8)
    c = udh_parts(
        "same client other recipient".encode("utf-16-be"),
        12,
        ref=5,
        data_coding=8,
        dst="447700900999",
    )
    assert len(a) == len(b)
    seq = [("A", "esme1", p) for p in a] + [("B", "esme2", p) for p in b]
    seq += [("C", "esme1", p) for p in c]
    random.Random(42).shuffle(seq)
    done: dict[str, AssembledMessage] = {}
    for i, (tag, client, (pdu, _)) in enumerate(seq):
        r = await asm.add(client, pdu, f"{tag}{i}", T0 + i)
        assert r.kind in ("held", "complete")
        if r.kind == "complete":
            assert tag not in done
            done[tag] = r.message
    assert done["A"].text == "client A says hello to you" and done["A"].client_id == "esme1"
    assert done["B"].text == "client B is different text" and done["B"].client_id == "esme2"
    assert done["C"].text == "same client other recipient"
    assert [p.pdu for p in done["A"].parts] == [f for _, f in a]
    assert [p.pdu for p in done["B"].parts] == [f for _, f in b]
    assert await store.part_count() == 0


def test_group_key_escaping_round_trips():
    k1 = group_key("a|b", "c", "d", 1, 2)
    k2 = group_key("a", "b|c", "d", 1, 2)
    assert k1 != k2
    assert parse_group_key(k1) == ("a|b", "c", "d", 1, 2)
    assert parse_group_key(group_key("%7C|%", "", "x", 65535, 255)) == (
        "%7C|%",
        "",
        "x",
        65535,
        255,
    )
    assert parse_group_key("nonsense") is None


# --------------------------------------------------------------------------------------------
# timeout, overflow, restart


async def test_timeout_releases_incomplete_message(store):
    asm = Assembler(store, timeout_s=60)
    pieces = ["first part 1", "second part2", "third part 3"]  # 12 UCS-2 units each
    parts = udh_parts("".join(pieces).encode("utf-16-be"), 24, ref=200, data_coding=8)
    assert len(parts) == 3
    assert (await asm.add("esme1", parts[0][0], "p1", T0)).kind == "held"
    assert (await asm.add("esme1", parts[2][0], "p3", T0 + 5)).kind == "held"
    assert asm.next_deadline() == T0 + 60
    assert await asm.expire(T0 + 59.9) == []
    assert asm.pending_messages() == 1 and asm.pending_parts() == 2

    out = await asm.expire(T0 + 60)
    assert len(out) == 1
    m = out[0]
    assert not m.complete and m.total == 3 and m.missing == [2]
    assert m.text == pieces[0] + GAP + pieces[2]
    assert [p.pdu for p in m.parts] == [parts[0][1], parts[2][1]]
    assert m.proxy_ids == ["p1", "p3"] and m.client_id == "esme1"
    assert asm.pending_messages() == 0 and asm.pending_parts() == 0
    assert await store.part_count() == 0 and asm.next_deadline() is None
    assert await asm.expire(T0 + 1000) == []
    # a late retransmission of a released part is recognised
    assert (await asm.add("esme1", parts[0][0], "again", T0 + 61)).kind == "duplicate"


async def test_overflow_but_completing_part_accepted(store):
    asm = Assembler(store, max_pending=2)
    a = udh_parts(b"aaaa" * 3, 4, ref=1, data_coding=1)
    b = udh_parts(b"bbbb" * 2, 4, ref=2, data_coding=1)
    assert (await asm.add("c", a[0][0], "a1", T0)).kind == "held"
    assert (await asm.add("c", a[1][0], "a2", T0)).kind == "held"
    r = await asm.add("c", b[0][0], "b1", T0)
    assert r.kind == "overflow" and r.proxy_id is None
    assert asm.pending_parts() == 2 and await store.part_count() == 2
    # the part that completes a held message is always accepted
    r = await asm.add("c", a[2][0], "a3", T0)
    assert r.kind == "complete" and r.message.text == "aaaa" * 3
    # room again: the client's retry of b1 is held now
    assert (await asm.add("c", b[0][0], "b1", T0)).kind == "held"


async def test_restart_restores_held_parts(tmp_path):
    path = tmp_path / "restart.db"
    text = "restart-safe 😀 multipart message!"
    parts = udh_parts(text.encode("utf-16-be"), 24, ref=99, data_coding=8)
    assert len(parts) == 3

    store1 = SQLiteStore(path)
    await store1.open()
    asm1 = Assembler(store1, timeout_s=60)
    assert (await asm1.add("esme1", parts[2][0], "esme1-p3", T0)).kind == "held"
    assert (await asm1.add("esme1", parts[0][0], "esme1-p1", T0 + 1)).kind == "held"
    await store1.close()  # the process dies here

    store2 = SQLiteStore(path)
    await store2.open()
    try:
        asm2 = Assembler(store2, timeout_s=60)
        assert asm2.pending_parts() == 0
        assert await asm2.restore() == 1
        assert await asm2.restore() == 0  # idempotent
        assert asm2.pending_messages() == 1 and asm2.pending_parts() == 2
        assert asm2.next_deadline() == T0 + 60  # the timeout runs from the first part
        # a retransmission of a part held before the restart is still a duplicate
        dup = await asm2.add("esme1", parts[0][0], "other", T0 + 2)
        assert dup.kind == "duplicate" and dup.proxy_id == "esme1-p1"
        r = await asm2.add("esme1", parts[1][0], "esme1-p2", T0 + 3)
        assert r.kind == "complete"
        check_whole(r.message, parts, text)
        assert await store2.part_count() == 0 and asm2.next_deadline() is None
    finally:
        await store2.close()


async def test_restart_then_timeout(tmp_path):
    path = tmp_path / "restart2.db"
    parts = udh_parts(b"0123456789" * 3, 10, ref=4, data_coding=1)
    async with SQLiteStore(path) as s1:
        a1 = Assembler(s1, timeout_s=30)
        await a1.add("c", parts[1][0], "x2", T0)
    async with SQLiteStore(path) as s2:
        a2 = Assembler(s2, timeout_s=30)
        assert await a2.restore() == 1
        assert await a2.expire(T0 + 29) == []
        (m,) = await a2.expire(T0 + 30)
        assert m.missing == [1, 3] and m.text == "0123456789" and m.client_id == "c"
        assert await s2.part_count() == 0


# --------------------------------------------------------------------------------------------
# bad input, concurrency, metrics


async def test_broken_udh_is_single_and_never_raises(store, caplog):
    asm = Assembler(store)
    # UDHL points past the end of the message
    pdu, frame = submit(b"\x30\x00\x03\x01\x02\x01abc", esm_class=ESM_UDHI, data_coding=1)
    with caplog.at_level("WARNING", logger="smpp_proxy.assembler"):
        r = await asm.add("esme1", pdu, "b1")
    assert r.kind == "single" and r.message.parts[0].pdu == frame
    assert "malformed UDH" in caplog.text
    # UDHI with an empty message, concat IE with seqnum 0 / seqnum > total
    for sm in (
        b"",
        build_udh([(0x00, b"\x01\x03\x00")]) + b"x",
        build_udh([(0x00, b"\x01\x03\x04")]) + b"y",
        b"\x05\x00\x03\x01",
    ):
        pdu, _ = submit(sm, esm_class=ESM_UDHI)
        assert (await asm.add("esme1", pdu, "b2")).kind == "single"
    # random garbage never raises
    rnd = random.Random(0)
    for _ in range(200):
        sm = bytes(rnd.randrange(256) for _ in range(rnd.randrange(0, 12)))
        pdu, _ = submit(sm, esm_class=rnd.choice((0, ESM_UDHI)), data_coding=rnd.randrange(256))
        r = await asm.add("fuzz", pdu, "f")
        assert r.kind in ("single", "held", "complete", "duplicate")
    # a hand-built Pdu with odd field types does not raise either
    odd = Pdu(CommandId.SUBMIT_SM, params={"esm_class": ESM_UDHI, "short_message": None})
    assert (await asm.add("esme1", odd, "odd")).kind == "single"


class SlowStore(SQLiteStore):
    """The real SQLite store, yielding to the event loop inside every part_* call (as a
    networked store would), to interleave concurrent add() calls."""

    async def part_put(self, part):
        await asyncio.sleep(0)
        ok = await super().part_put(part)
        await asyncio.sleep(0)
        return ok

    async def part_list(self, key):
        await asyncio.sleep(0)
        return await super().part_list(key)

    async def part_delete(self, key):
        await asyncio.sleep(0)
        return await super().part_delete(key)


async def test_concurrent_adds_complete_exactly_once(tmp_path):
    async with SlowStore(tmp_path / "slow.db") as store:
        asm = Assembler(store)
        text = "concurrently delivered parts " * 4
        parts = udh_parts(text.encode(), 10, ref=12, data_coding=1)
        # every part sent twice, from different sessions, all at once
        calls = [asm.add("esme1", pdu, f"esme1-p{i + 1}", T0) for i, (pdu, _) in enumerate(parts)]
        calls += [asm.add("esme1", pdu, f"dup-{i + 1}", T0) for i, (pdu, _) in enumerate(parts)]
        order = list(range(len(calls)))
        random.Random(8).shuffle(order)
        results = await asyncio.gather(*(calls[i] for i in order))
        kinds = [r.kind for r in results]
        assert kinds.count("complete") == 1
        assert kinds.count("held") == len(parts) - 1
        assert kinds.count("duplicate") == len(parts)
        (msg,) = [r.message for r in results if r.kind == "complete"]
        assert msg.text == text and [p.pdu for p in msg.parts] == [f for _, f in parts]
        assert asm.pending_parts() == 0 and await store.part_count() == 0

        # max_pending holds under concurrency too
        small = Assembler(store, max_pending=3)
        many = [udh_parts(b"xx" * 2, 2, ref=r, data_coding=1)[0][0] for r in range(10)]
        res = await asyncio.gather(*(small.add("c", p, f"m{i}", T0) for i, p in enumerate(many)))
        assert [r.kind for r in res].count("held") == 3
        assert small.pending_parts() == 3 and await store.part_count() == 3


async def test_metrics_and_message_text_helper(store):
    reg = CollectorRegistry()

    class M:
        assembler_events = Counter("asm_events", "e", ["event"], registry=reg)
        assembler_pending_parts = Gauge("asm_parts", "p", registry=reg)
        assembler_pending_messages = Gauge("asm_msgs", "m", registry=reg)

    asm = Assembler(store, metrics=M())
    parts = udh_parts(b"metrics!" * 2, 8, ref=1, data_coding=1)
    await asm.add("c", parts[0][0], "1", T0)
    assert reg.get_sample_value("asm_parts") == 1
    assert reg.get_sample_value("asm_msgs") == 1
    await asm.add("c", parts[0][0], "1b", T0)
    await asm.add("c", parts[1][0], "2", T0)
    assert reg.get_sample_value("asm_parts") == 0
    for ev, n in (("held", 1), ("duplicate", 1), ("complete", 1)):
        assert reg.get_sample_value("asm_events_total", {"event": ev}) == n
    # message_text with a gap between runs
    pdus = [p for p, _ in udh_parts(b"aabbccdd", 2, ref=3, data_coding=1)]
    assert message_text([pdus[0], pdus[1], pdus[3]], [1, 2, 4]) == "aabb" + GAP + "dd"
    assert message_text(pdus) == "aabbccdd"
    # the store rejects nothing for a metrics-less assembler either
    assert Assembler(store).pending_parts() == 0


async def test_index_out_of_step_with_store_is_adopted(store):
    # a part in the store that the index does not know (an add() cancelled mid-write)
    asm = Assembler(store)
    parts = udh_parts(b"abcdefgh" * 3, 8, ref=31, data_coding=1)
    key = group_key("esme1", SRC, DST, 31, 3)
    assert await store.part_put(HeldPart(key, 1, 3, parts[0][1], "stored-id", T0, {}))
    r = await asm.add("esme1", parts[0][0], "new-id", T0 + 1)
    assert r.kind == "duplicate" and r.proxy_id == "stored-id"
    assert asm.pending_parts() == 1 and asm.next_deadline() == T0 + 60
    assert (await asm.add("esme1", parts[1][0], "id2", T0 + 2)).kind == "held"
    r = await asm.add("esme1", parts[2][0], "id3", T0 + 3)
    assert r.kind == "complete" and r.message.proxy_ids == ["stored-id", "id2", "id3"]


class FlakyStore(SQLiteStore):
    fail_lists = 0

    async def part_list(self, key):
        if self.fail_lists:
            self.fail_lists -= 1
            raise OSError("disk on fire")
        return await super().part_list(key)


async def test_store_errors(tmp_path):
    async with FlakyStore(tmp_path / "flaky.db") as store:
        asm = Assembler(store, timeout_s=10)
        parts = udh_parts(b"0123456789", 5, ref=1, data_coding=1)
        assert (await asm.add("c", parts[0][0], "p1", T0)).kind == "held"
        # add(): the error propagates and nothing changes; the client's retry completes it
        store.fail_lists = 1
        with pytest.raises(OSError):
            await asm.add("c", parts[1][0], "p2", T0 + 1)
        assert asm.pending_parts() == 1 and await store.part_count() == 1
        r = await asm.add("c", parts[1][0], "p2", T0 + 2)
        assert r.kind == "complete" and r.message.text == "0123456789"

        # expire(): never raises, retries the group a second later
        assert (await asm.add("c", parts[0][0], "q1", T0 + 100)).kind == "held"
        store.fail_lists = 1
        assert await asm.expire(T0 + 110) == []
        assert asm.pending_parts() == 1 and asm.next_deadline() == T0 + 111
        (m,) = await asm.expire(T0 + 111)
        assert m.missing == [2] and m.text == "01234"
        assert await store.part_count() == 0


# ---------------------------------------------------------------------------- deferred release


async def test_deferred_release_keeps_parts_until_the_verdict_is_carried_out(store, tmp_path):
    asm = Assembler(store, timeout_s=60, defer_release=True)
    parts = udh_parts(b"A" * 30, 10, ref=9)
    for i, (pdu, raw) in enumerate(parts[:2]):
        assert (await asm.add("c1", pdu, f"id{i}", raw=raw)).kind == "held"
    res = await asm.add("c1", parts[2][0], "id2", raw=parts[2][1])
    assert res.kind == "complete"
    # the whole message, completing part included, is still in the store
    assert sorted(p.seqnum for p in await store.part_list(res.key)) == [1, 2, 3]

    # "crash" before release: a new assembler on the same store hands the message out again
    asm2 = Assembler(store, timeout_s=60, defer_release=True)
    assert await asm2.restore() == 1
    [again] = await asm2.expire()
    assert again.complete and again.proxy_ids == ["id0", "id1", "id2"]
    await asm2.release(again.key)
    assert await store.part_list(again.key) == []


async def test_resubmitted_completing_part_waits_for_release(store):
    asm = Assembler(store, timeout_s=60, defer_release=True)
    parts = udh_parts(b"B" * 20, 10, ref=10)
    await asm.add("c1", parts[0][0], "a", raw=parts[0][1])
    res = await asm.add("c1", parts[1][0], "b", raw=parts[1][1])
    assert res.kind == "complete"
    dup = asyncio.ensure_future(asm.add("c1", parts[1][0], "b2", raw=parts[1][1]))
    await asyncio.sleep(0.05)
    assert not dup.done()  # blocked while the verdict is being carried out
    await asm.release(res.key)
    got = await asyncio.wait_for(dup, 5)
    assert got.kind == "duplicate" and got.proxy_id == "b"


async def test_reopen_holds_the_other_parts_again(store):
    asm = Assembler(store, timeout_s=60, defer_release=True)
    parts = udh_parts(b"C" * 30, 10, ref=11)
    for i, (pdu, raw) in enumerate(parts[:2]):
        await asm.add("c1", pdu, f"p{i}", raw=raw)
    res = await asm.add("c1", parts[2][0], "p2", raw=parts[2][1])
    assert res.kind == "complete"
    await asm.reopen(res.key, 3)  # the completing part was tempfailed
    assert asm.pending_parts() == 2
    assert sorted(p.seqnum for p in await store.part_list(res.key)) == [1, 2]
    again = await asm.add("c1", parts[2][0], "p2-retry", raw=parts[2][1])
    assert again.kind == "complete" and again.message.proxy_ids == ["p0", "p1", "p2-retry"]
    await asm.release(again.key)
