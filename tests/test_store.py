"""Tests for smpp_proxy.store.

The behavioural suite runs against every backend: SQLite on a real file, RedisStore on
fakeredis (always) and RedisStore on a real ``redis-server`` (when one is installed).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from smpp_proxy.store import (
    HeldPart,
    MessageRecord,
    OutboxItem,
    RedisStore,
    SQLiteStore,
    Store,
    StoreError,
    open_store,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
REDIS_SERVER = shutil.which("redis-server")
BACKENDS = ["sqlite", "fakeredis"] + (["redis-server"] if REDIS_SERVER else [])


# --------------------------------------------------------------------------------------------
# fixtures


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    """A private redis-server on 127.0.0.1, no persistence (only if one is installed)."""
    if not REDIS_SERVER:
        pytest.skip("redis-server not installed")  # never reached: only requested if present
    import redis

    port = _free_port()
    workdir = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [
            REDIS_SERVER,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        client = redis.Redis(host="127.0.0.1", port=port)
        deadline = time.monotonic() + 15
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.05)
        client.close()
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(params=BACKENDS)
async def make_store(request, tmp_path):
    """An async factory: every call opens a new store object on the same persistent state
    (a reopened file, a new Redis connection), i.e. what a restarted proxy would see."""
    backend = request.param
    opened: list[Store] = []
    clients: list = []

    if backend == "sqlite":
        path = tmp_path / "state.db"

        def build() -> Store:
            return SQLiteStore(path)

    elif backend == "fakeredis":
        import fakeredis

        server = fakeredis.FakeServer()

        def build() -> Store:
            client = fakeredis.aioredis.FakeRedis(server=server)
            clients.append(client)
            return RedisStore(client, prefix="t:")

    else:
        url = request.getfixturevalue("redis_url")
        prefix = f"test:{uuid.uuid4().hex}:"

        def build() -> Store:
            return RedisStore(url, prefix=prefix)

    async def make() -> Store:
        store = build()
        await store.open()
        opened.append(store)
        return store

    make.backend = backend
    yield make
    for store in opened:
        await store.close()
    for client in clients:
        await client.aclose()


@pytest.fixture
async def store(make_store) -> Store:
    return await make_store()


def rec(i: int, now: float | None = None, ttl: float = 3600.0, **kw) -> MessageRecord:
    now = time.time() if now is None else now
    fields = dict(
        proxy_id=f"P{i:06d}",
        client_id="esme1",
        source_addr="Shop",
        destination_addr=f"44790000{i:04d}",
        registered_delivery=1,
        created_at=now,
        expires_at=now + ttl,
    )
    fields.update(kw)
    return MessageRecord(**fields)


def part(key: str, seqnum: int, total: int = 3, t: float = 1000.0, **kw) -> HeldPart:
    fields = dict(
        key=key,
        seqnum=seqnum,
        total=total,
        pdu=b"\x00\x00\x00\x10\n\xff" + bytes([seqnum]) * 5,  # binary, with NUL and newline
        proxy_id=f"{key}-{seqnum}",
        received_at=t,
        meta={"dc": 8, "text": "h\u00e9llo\n", "udh": [5, 0, 3]},
    )
    fields.update(kw)
    return HeldPart(**fields)


# --------------------------------------------------------------------------------------------
# messages


async def test_save_and_get_message(store):
    now = time.time()
    r = rec(1, now)
    await store.save_message(r)
    got = await store.get_message("P000001")
    assert got == r
    assert got.upstream is None and got.upstream_id is None and got.status == "accepted"
    assert isinstance(got.registered_delivery, int) and got.created_at == now
    assert await store.get_message("nope") is None


async def test_save_message_replaces(store):
    await store.save_message(rec(1, status="accepted"))
    r2 = rec(1, status="rejected", source_addr="Other", upstream="", upstream_id="")
    await store.save_message(r2)
    got = await store.get_message("P000001")
    assert got == r2
    assert got.upstream == "" and got.upstream_id == ""  # "" is not None


async def test_save_messages_batch(store):
    recs = [rec(i) for i in range(250)]
    recs[7] = rec(7, upstream="upA", upstream_id="abc7")
    await store.save_messages(recs)
    await store.save_messages([])
    for r in recs:
        assert await store.get_message(r.proxy_id) == r
    # an upstream id given at save time is indexed too
    assert await store.find_by_upstream_id("upA", ["abc7"]) == recs[7]


async def test_update_status(store):
    await store.save_message(rec(1))
    assert await store.update_status("P000001", "forwarded") is True
    assert (await store.get_message("P000001")).status == "forwarded"
    assert await store.update_status("missing", "forwarded") is False
    assert await store.get_message("missing") is None  # no partial record created


async def test_set_upstream_id_and_find(store):
    await store.save_message(rec(1))
    await store.save_message(rec(2))
    assert await store.set_upstream_id("P000001", "upA", "0A1B") is True
    assert await store.set_upstream_id("P000002", "upA", "2587") is True
    got = await store.get_message("P000001")
    assert (got.upstream, got.upstream_id, got.status) == ("upA", "0A1B", "accepted")

    # exact match of any candidate, in the order given
    assert (await store.find_by_upstream_id("upA", ["a1b", "0A1B"])).proxy_id == "P000001"
    assert (await store.find_by_upstream_id("upA", ["x", "2587", "0A1B"])).proxy_id == "P000002"
    assert (await store.find_by_upstream_id("upA", ["0A1B", "2587"])).proxy_id == "P000001"
    # stored exactly as given: no case folding, no zero stripping
    assert await store.find_by_upstream_id("upA", ["0a1b", "A1B", "00A1B"]) is None
    # the index is per upstream
    assert await store.find_by_upstream_id("upB", ["0A1B"]) is None
    assert await store.find_by_upstream_id("upA", []) is None
    # no record: no mapping, nothing created
    assert await store.set_upstream_id("missing", "upA", "FFFF") is False
    assert await store.find_by_upstream_id("upA", ["FFFF"]) is None
    assert await store.get_message("missing") is None


async def test_upstream_names_with_separators_do_not_collide(store):
    await store.save_message(rec(1))
    await store.save_message(rec(2))
    await store.set_upstream_id("P000001", "a:b", "c")
    await store.set_upstream_id("P000002", "a", "b:c")
    assert (await store.find_by_upstream_id("a:b", ["c"])).proxy_id == "P000001"
    assert (await store.find_by_upstream_id("a", ["b:c"])).proxy_id == "P000002"


async def test_remap_to_other_upstream(store):
    await store.save_message(rec(1))
    await store.set_upstream_id("P000001", "upA", "111")
    await store.set_upstream_id("P000001", "upB", "222")  # re-forwarded after a failure
    assert (await store.find_by_upstream_id("upB", ["222"])).proxy_id == "P000001"
    assert await store.find_by_upstream_id("upA", ["111"]) is None


async def test_reused_upstream_id_newest_wins(store):
    now = time.time()
    await store.save_message(rec(1, now - 100))
    await store.save_message(rec(2, now))
    await store.set_upstream_id("P000001", "upA", "42")
    await store.set_upstream_id("P000002", "upA", "42")
    assert (await store.find_by_upstream_id("upA", ["42"])).proxy_id == "P000002"


async def test_purge_expired(store):
    now = time.time()
    short = [rec(i, now, ttl=100, upstream="upA", upstream_id=f"s{i}") for i in range(5)]
    long = [rec(i, now, ttl=10_000) for i in range(100, 103)]
    await store.save_messages(short)
    await store.save_messages(long)
    await store.save_message(rec(200, now, ttl=50))
    await store.set_upstream_id("P000200", "upA", "s200")
    await store.set_upstream_id("P000100", "upA", "L100")

    assert await store.purge_expired(now + 10) == 0
    assert await store.purge_expired(now + 1000) == 6
    for r in [*short, rec(200)]:
        assert await store.get_message(r.proxy_id) is None
    for i in [*range(5), 200]:  # index entries went with the records
        assert await store.find_by_upstream_id("upA", [f"s{i}"]) is None
    for r in long:
        assert await store.get_message(r.proxy_id) is not None
    assert (await store.find_by_upstream_id("upA", ["L100"])).proxy_id == "P000100"
    assert await store.purge_expired(now + 1000) == 0
    assert await store.purge_expired(now + 20_000) == 3


async def test_purge_spares_record_resaved_with_later_expiry(store):
    now = time.time()
    await store.save_message(rec(1, now, ttl=100, upstream="up", upstream_id="1"))
    await store.save_message(rec(1, now, ttl=10_000, upstream="up", upstream_id="1"))
    assert await store.purge_expired(now + 1000) == 0
    assert (await store.find_by_upstream_id("up", ["1"])).expires_at == now + 10_000


async def test_purge_in_batches(store, monkeypatch):
    monkeypatch.setattr(type(store), "PURGE_BATCH", 7)
    now = time.time()
    await store.save_messages([rec(i, now, ttl=100) for i in range(30)])
    await store.save_messages([rec(i, now, ttl=10_000) for i in range(100, 110)])
    assert await store.purge_expired(now + 1000) == 30
    assert await store.get_message("P000105") is not None


async def test_purge_keeps_index_of_id_reused_by_live_record(store):
    now = time.time()
    await store.save_message(rec(1, now - 10, ttl=100))
    await store.save_message(rec(2, now, ttl=10_000))
    await store.set_upstream_id("P000001", "upA", "7")
    await store.set_upstream_id("P000002", "upA", "7")
    assert await store.purge_expired(now + 1000) == 1
    assert (await store.find_by_upstream_id("upA", ["7"])).proxy_id == "P000002"


# --------------------------------------------------------------------------------------------
# outbox


async def test_outbox_basic(store):
    assert await store.outbox_count() == 0
    assert await store.outbox_clients() == []
    a1 = await store.outbox_put("A", b"pdu-a1", 100.0)
    a2 = await store.outbox_put("A", b"pdu-a2", 101.0)
    b1 = await store.outbox_put("B", b"\x00\x01pdu-b1\n", 102.0)
    assert isinstance(a1, int) and a1 < a2 < b1
    assert await store.outbox_count() == 3
    assert await store.outbox_count("A") == 2
    assert await store.outbox_count("nobody") == 0
    assert await store.outbox_clients() == ["A", "B"]

    due = await store.outbox_due("A", 200.0)
    assert due == [
        OutboxItem(a1, "A", b"pdu-a1", 0, 100.0, 100.0),
        OutboxItem(a2, "A", b"pdu-a2", 0, 101.0, 101.0),
    ]
    assert [i.item_id for i in await store.outbox_due("A", 100.5)] == [a1]
    assert await store.outbox_due("A", 99.0) == []
    assert (await store.outbox_due("B", 200.0))[0].pdu == b"\x00\x01pdu-b1\n"

    assert await store.outbox_done(a1) is True
    assert await store.outbox_done(a1) is False
    assert await store.outbox_done(str(b1)) is True  # ids may come back as str
    assert await store.outbox_clients() == ["A"]
    assert await store.outbox_count() == 1
    assert await store.outbox_done(a2) is True
    assert await store.outbox_clients() == []
    assert await store.outbox_count() == 0
    assert await store.outbox_retry(a2, 500.0) is False
    assert await store.outbox_done(999_999) is False


async def test_outbox_limit_and_order(store):
    ids = [await store.outbox_put("A", b"%d" % i, 1000.0 + i) for i in range(20)]
    assert [i.item_id for i in await store.outbox_due("A", 5000.0, limit=5)] == ids[:5]
    assert [i.item_id for i in await store.outbox_due("A", 5000.0)] == ids
    assert await store.outbox_due("A", 5000.0, limit=0) == []


async def test_outbox_retry_ordering(store):
    t = 1000.0
    ids = [await store.outbox_put("A", b"m%d" % i, t) for i in range(4)]
    # the oldest two fail and back off
    assert await store.outbox_retry(ids[0], t + 30) is True
    assert await store.outbox_retry(ids[1], t + 10) is True
    due = await store.outbox_due("A", t + 1)
    assert [i.item_id for i in due] == ids[2:]
    # at t+10 the second is due again, at t+30 both: always oldest first, not by retry time
    assert [i.item_id for i in await store.outbox_due("A", t + 10)] == [ids[1], ids[2], ids[3]]
    due = await store.outbox_due("A", t + 30)
    assert [i.item_id for i in due] == ids
    assert (due[0].attempts, due[0].next_attempt_at) == (1, t + 30)
    assert (due[2].attempts, due[2].next_attempt_at) == (0, t)
    assert due[0].created_at == t
    # attempts accumulate
    await store.outbox_retry(ids[0], t + 60)
    await store.outbox_retry(str(ids[0]), t + 120)
    item = next(i for i in await store.outbox_due("A", t + 120) if i.item_id == ids[0])
    assert (item.attempts, item.next_attempt_at) == (3, t + 120)
    assert [i.item_id for i in await store.outbox_due("A", t + 119)] == ids[1:]
    assert await store.outbox_count("A") == 4


async def test_outbox_due_skips_many_backing_off_items(store):
    t = 1000.0
    ids = [await store.outbox_put("A", b"m%d" % i, t) for i in range(8)]
    for i in ids[:6]:  # more items backing off than the limit
        await store.outbox_retry(i, t + 100)
    assert [i.item_id for i in await store.outbox_due("A", t + 1, limit=3)] == ids[6:]
    assert [i.item_id for i in await store.outbox_due("A", t + 100, limit=3)] == ids[:3]
    await store.outbox_retry(ids[1], t + 200)
    got = await store.outbox_due("A", t + 100, limit=3)
    assert [i.item_id for i in got] == [ids[0], ids[2], ids[3]]
    assert await store.outbox_due("B", t + 100) == []


async def test_outbox_ids_not_reused(make_store):
    store = await make_store()
    a = await store.outbox_put("A", b"x", 1.0)
    b = await store.outbox_put("A", b"y", 1.0)
    await store.outbox_done(b)
    await store.close()
    store = await make_store()
    c = await store.outbox_put("A", b"z", 1.0)
    assert c > b > a


# --------------------------------------------------------------------------------------------
# held parts


async def test_parts(store):
    assert await store.part_count() == 0
    assert await store.part_groups() == []
    k1, k2 = "esme1|Shop|447900|17|3", "esme2|x|y|200|2"
    assert await store.part_put(part(k1, 3, t=1003.0)) is True
    assert await store.part_put(part(k1, 1, t=1001.5)) is True
    assert await store.part_put(part(k2, 2, total=2, t=1000.0)) is True
    assert await store.part_count() == 3

    held = await store.part_list(k1)
    assert [p.seqnum for p in held] == [1, 3]
    assert held[0] == part(k1, 1, t=1001.5)
    assert held[0].meta == {"dc": 8, "text": "h\u00e9llo\n", "udh": [5, 0, 3]}
    assert held[1].pdu == part(k1, 3).pdu
    assert await store.part_list("unknown") == []

    groups = dict(await store.part_groups())
    assert groups == {k1: 1001.5, k2: 1000.0}
    assert [k for k, _ in await store.part_groups()] == [k2, k1]  # oldest group first

    assert await store.part_delete(k1) == 2
    assert await store.part_list(k1) == []
    assert await store.part_groups() == [(k2, 1000.0)]
    assert await store.part_count() == 1
    assert await store.part_delete(k1) == 0


async def test_duplicate_part(store):
    k = "c|s|d|9|2"
    original = part(k, 1, total=2, t=10.0, proxy_id="first")
    assert await store.part_put(original) is True
    dup = part(k, 1, total=2, t=11.0, proxy_id="second", pdu=b"other", meta={"x": 1})
    assert await store.part_put(dup) is False
    assert await store.part_list(k) == [original]  # the first copy is kept untouched
    assert await store.part_count() == 1
    assert await store.part_put(part(k, 2, total=2, t=12.0)) is True
    assert [p.seqnum for p in await store.part_list(k)] == [1, 2]
    assert await store.part_groups() == [(k, 10.0)]
    # once the group is released the same (key, seqnum) may start a new group
    await store.part_delete(k)
    assert await store.part_put(part(k, 1, total=2, t=20.0)) is True
    assert await store.part_groups() == [(k, 20.0)]


async def test_empty_meta_roundtrip(store):
    await store.part_put(part("k", 1, meta={}))
    assert (await store.part_list("k"))[0].meta == {}


# --------------------------------------------------------------------------------------------
# lifecycle / restart


async def test_state_survives_restart(make_store):
    now = time.time()
    s1 = await make_store()
    await s1.save_message(rec(1, now))
    await s1.save_messages([rec(2, now), rec(3, now)])
    await s1.set_upstream_id("P000002", "upA", "00ff")
    await s1.update_status("P000002", "forwarded")
    o1 = await s1.outbox_put("A", b"dlr-1", now)
    o2 = await s1.outbox_put("A", b"dlr-2", now)
    await s1.outbox_retry(o1, now + 5)
    await s1.part_put(part("grp", 2, t=now - 3))
    await s1.part_put(part("grp", 1, t=now - 1))
    await s1.close()

    s2 = await make_store()  # a restarted proxy
    assert await s2.get_message("P000001") == rec(1, now)
    got = await s2.find_by_upstream_id("upA", ["255", "00ff"])
    assert got.proxy_id == "P000002" and got.status == "forwarded"
    due = await s2.outbox_due("A", now + 5)
    assert [(i.item_id, i.pdu, i.attempts) for i in due] == [(o1, b"dlr-1", 1), (o2, b"dlr-2", 0)]
    assert await s2.outbox_clients() == ["A"]
    assert [p.seqnum for p in await s2.part_list("grp")] == [1, 2]
    assert await s2.part_groups() == [("grp", now - 3)]
    assert await s2.part_count() == 2
    assert await s2.part_put(part("grp", 1)) is False  # duplicate detection survives too


async def test_open_close_idempotent_and_closed_errors(make_store):
    store = await make_store()
    await store.open()  # second open is a no-op
    await store.save_message(rec(1))
    await store.close()
    await store.close()
    with pytest.raises(StoreError):
        await store.get_message("P000001")
    await store.open()  # reopen the same object
    assert await store.get_message("P000001") is not None


async def test_concurrent_tasks(make_store):
    """Many tasks (and, for Redis, two 'proxies') interleaving on the same records."""
    a = await make_store()
    b = await make_store()
    await a.save_messages([rec(i) for i in range(20)])

    async def work(s: Store, i: int):
        await s.set_upstream_id(f"P{i:06d}", "up", f"u{i}")
        await s.update_status(f"P{i:06d}", "forwarded")
        await s.update_status(f"P{i:06d}", "delivered")

    await asyncio.gather(*(work(a if i % 2 else b, i) for i in range(20)))
    for i in range(20):
        got = await b.find_by_upstream_id("up", [f"u{i}"])
        assert got.proxy_id == f"P{i:06d}" and got.status == "delivered"
    results = await asyncio.gather(*(s.part_put(part("k", 1)) for s in (a, b, a, b)))
    assert sorted(results) == [False, False, False, True]
    ids = await asyncio.gather(*(s.outbox_put("C", b"x", 1.0) for s in (a, b) * 5))
    assert len(set(ids)) == 10
    assert await a.outbox_count("C") == 10


# --------------------------------------------------------------------------------------------
# SQLite specifics


async def test_sqlite_pragmas_and_schema(tmp_path):
    path = tmp_path / "sub" / "dir" / "s.db"  # parent directories are created
    store = SQLiteStore(path)
    await store.open()
    db = store.db
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    assert db.execute("PRAGMA busy_timeout").fetchone()[0] == 2000
    assert db.execute("PRAGMA user_version").fetchone()[0] == 1
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"messages", "outbox", "held_parts"} <= tables
    plan = db.execute(
        "EXPLAIN QUERY PLAN SELECT * FROM messages WHERE upstream=? AND upstream_id IN (?,?)",
        ("a", "b", "c"),
    ).fetchall()
    assert "messages_by_upstream_id" in str(plan)
    await store.close()
    # reopening an up-to-date file does not re-run migrations
    store = SQLiteStore(path)
    await store.open()
    await store.close()


async def test_sqlite_background_checkpoints(tmp_path):
    path = tmp_path / "c.db"
    store = SQLiteStore(path, checkpoint_interval_s=0.01)
    await store.open()
    assert store.db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 10000
    await store.save_messages([rec(i) for i in range(200)])
    before = os.stat(path).st_size
    for _ in range(200):  # the worker copies the WAL into the database file
        await asyncio.sleep(0.01)
        if os.stat(path).st_size > before:
            break
    assert os.stat(path).st_size > before
    busy, wal_pages, copied = await store.checkpoint()
    assert busy == 0 and copied == wal_pages
    await store.close()  # stops the worker cleanly (no warnings under -W error)
    async with SQLiteStore(path, checkpoint_interval_s=None) as inline:
        assert inline.db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 1000
        assert await inline.checkpoint() is not None
        assert await inline.get_message("P000199") is not None


async def test_sqlite_refuses_newer_schema(tmp_path):
    path = tmp_path / "s.db"
    async with SQLiteStore(path):
        pass
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version = 99")
    with pytest.raises(StoreError, match="newer"):
        await SQLiteStore(path).open()


async def test_sqlite_batch_is_atomic(tmp_path):
    async with SQLiteStore(tmp_path / "s.db") as store:
        bad = [rec(1), rec(2), rec(3, client_id=None)]  # NOT NULL violation in the 3rd
        with pytest.raises(sqlite3.IntegrityError):
            await store.save_messages(bad)
        assert await store.get_message("P000001") is None
        await store.save_message(rec(4))  # the connection is usable afterwards
        assert await store.get_message("P000004") is not None


_CHILD = textwrap.dedent(
    """
    import asyncio, os, signal, sys, time
    sys.path.insert(0, sys.argv[1])
    from smpp_proxy.store import HeldPart, MessageRecord, SQLiteStore

    async def main(path, n):
        s = SQLiteStore(path)
        await s.open()
        now = time.time()
        for i in range(n):
            await s.save_message(MessageRecord(f"K{i}", "esme", "a", "b", 1, now, now + 3600))
            if i % 10 == 0:
                await s.set_upstream_id(f"K{i}", "up", f"U{i}")
        await s.save_messages(
            [MessageRecord(f"B{i}", "esme", "a", "b", 1, now, now + 3600) for i in range(n)]
        )
        for i in range(20):
            await s.outbox_put("esme", b"dlr%d" % i, now)
        await s.part_put(HeldPart("grp", 1, 2, b"part", "K0", now, {"a": 1}))
        await s.update_status("K1", "forwarded")
        os.kill(os.getpid(), signal.SIGKILL)  # no close(), no checkpoint, no atexit

    asyncio.run(main(sys.argv[2], int(sys.argv[3])))
    """
)


async def test_sqlite_survives_kill_9(tmp_path):
    path = tmp_path / "k.db"
    n = 300
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _CHILD,
        str(REPO_ROOT),
        str(path),
        str(n),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == -signal.SIGKILL, err.decode()
    # recovery really goes through the WAL: nothing was checkpointed into the main file
    assert os.stat(f"{path}-wal").st_size > 0

    async with SQLiteStore(path) as store:
        for i in range(n):
            assert await store.get_message(f"K{i}") is not None, i
            assert await store.get_message(f"B{i}") is not None, i
        assert (await store.find_by_upstream_id("up", ["U290"])).proxy_id == "K290"
        assert (await store.get_message("K1")).status == "forwarded"
        assert await store.outbox_count("esme") == 20
        assert (await store.part_list("grp"))[0].meta == {"a": 1}
        assert await store.part_put(HeldPart("grp", 1, 2, b"p", "x", 0.0, {})) is False


_WRITER = textwrap.dedent(
    """
    import asyncio, sys, time
    sys.path.insert(0, sys.argv[1])
    from smpp_proxy.store import MessageRecord, SQLiteStore

    async def main(path):
        # frequent background checkpoints, so that the kill also lands during them
        s = SQLiteStore(path, checkpoint_interval_s=0.005)
        await s.open()
        now = time.time()
        i = 0
        while True:
            await s.save_message(MessageRecord(f"W{i}", "esme", "a", "b", 1, now, now + 3600))
            print(f"W{i}", flush=True)  # acknowledged only after the commit returned
            i += 1
            await asyncio.sleep(0)

    asyncio.run(main(sys.argv[2]))
    """
)


async def test_sqlite_kill_9_mid_stream_loses_nothing_acknowledged(tmp_path):
    """kill -9 from outside at an arbitrary moment: every write the child reported as done
    (after save_message returned, i.e. after the commit) is in the file."""
    path = tmp_path / "w.db"
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _WRITER,
        str(REPO_ROOT),
        str(path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    acked = []
    try:
        while len(acked) < 2000:
            line = await asyncio.wait_for(child.stdout.readline(), 60)
            if not line:
                raise AssertionError((await child.stderr.read()).decode())
            acked.append(line.decode().strip())
        child.send_signal(signal.SIGKILL)
        rest, _ = await asyncio.wait_for(child.communicate(), 60)
        acked += [ln.decode().strip() for ln in rest.splitlines() if ln.strip()]
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
    assert child.returncode == -signal.SIGKILL
    async with SQLiteStore(path) as store:
        missing = [pid for pid in acked if await store.get_message(pid) is None]
    assert missing == []


# --------------------------------------------------------------------------------------------
# Redis specifics


@pytest.fixture(params=["fakeredis"] + (["redis-server"] if REDIS_SERVER else []))
async def redis_client(request):
    if request.param == "fakeredis":
        import fakeredis

        client = fakeredis.aioredis.FakeRedis()
    else:
        import redis.asyncio as aioredis

        client = aioredis.from_url(request.getfixturevalue("redis_url"))
    yield client
    await client.aclose()


async def test_redis_records_carry_ttl(redis_client):
    prefix = f"ttl:{uuid.uuid4().hex}:"
    store = RedisStore(redis_client, prefix=prefix)
    await store.open()
    now = time.time()
    await store.save_message(rec(1, now, ttl=600))
    await store.set_upstream_id("P000001", "upA", "77")
    ttl_msg = await redis_client.pttl(f"{prefix}m:P000001")
    ttl_idx = await redis_client.pttl(f"{prefix}u:3:upA:77")
    assert 590_000 < ttl_msg <= 601_000
    assert 590_000 < ttl_idx <= 601_000
    await store.outbox_put("A", b"x", now)
    item_keys = [k async for k in redis_client.scan_iter(f"{prefix}ob:i:*")]
    assert await redis_client.pttl(item_keys[0]) == -1  # outbox items never expire
    await store.close()
    await redis_client.ping()  # a client passed in is not closed by the store


async def test_redis_expired_by_ttl_is_gone_and_purge_cleans_index(redis_client):
    store = RedisStore(redis_client, prefix=f"exp:{uuid.uuid4().hex}:")
    await store.open()
    now = time.time()
    await store.save_message(rec(1, now, ttl=0.05, upstream="up", upstream_id="9"))
    await asyncio.sleep(0.2)
    assert await store.get_message("P000001") is None  # Redis dropped it by itself
    assert await store.find_by_upstream_id("up", ["9"]) is None
    assert await store.purge_expired(time.time()) == 1
    assert await redis_client.zcard(f"{store.prefix}mexp") == 0
    await store.close()


async def test_redis_rejects_decoding_client():
    import fakeredis

    client = fakeredis.aioredis.FakeRedis(decode_responses=True)
    with pytest.raises(StoreError, match="decode_responses"):
        await RedisStore(client).open()
    await client.aclose()


async def test_redis_prefixes_isolate(redis_client):
    a = RedisStore(redis_client, prefix=f"a{uuid.uuid4().hex}:")
    b = RedisStore(redis_client, prefix=f"b{uuid.uuid4().hex}:")
    await a.open()
    await b.open()
    await a.save_message(rec(1))
    await a.outbox_put("A", b"x", 1.0)
    assert await b.get_message("P000001") is None
    assert await b.outbox_count() == 0


async def test_redis_refuses_newer_schema(redis_client):
    prefix = f"s{uuid.uuid4().hex}:"
    await redis_client.set(f"{prefix}schema", 99)
    with pytest.raises(StoreError, match="newer"):
        await RedisStore(redis_client, prefix=prefix).open()


# --------------------------------------------------------------------------------------------
# factory


def test_open_store_urls(tmp_path):
    s = open_store("sqlite:///relative/dir/x.db")
    assert isinstance(s, SQLiteStore) and s.path == "relative/dir/x.db"
    assert open_store("sqlite:////abs/x.db").path == "/abs/x.db"
    assert open_store("sqlite:///:memory:").path == ":memory:"
    assert open_store("sqlite://").path == ":memory:"
    assert open_store(str(tmp_path / "p.db")).path == str(tmp_path / "p.db")
    assert open_store(tmp_path / "q.db").path == str(tmp_path / "q.db")
    assert open_store("plain.db").path == "plain.db"
    r = open_store("redis://localhost:6379/2", prefix="x:")
    assert isinstance(r, RedisStore) and r.prefix == "x:"
    assert isinstance(open_store("rediss://h:1/0"), RedisStore)
    assert isinstance(open_store("unix:///run/redis.sock"), RedisStore)
    with pytest.raises(ValueError):
        open_store("postgres://x/y")
    with pytest.raises(ValueError):
        open_store("sqlite:relative.db")  # a malformed URL, not a file named so


async def test_open_store_await_and_context(tmp_path):
    url = f"sqlite:///{tmp_path}/a.db"  # tmp_path is absolute: four slashes in all
    store = await open_store(url)
    assert store.path == str(tmp_path / "a.db")
    await store.save_message(rec(1))
    await store.close()
    async with open_store(url) as store:
        assert await store.get_message("P000001") is not None
    async with open_store("sqlite:///:memory:") as mem:
        await mem.save_message(rec(2))
        assert await mem.get_message("P000002") is not None


async def test_open_store_redis_url(request):
    if not REDIS_SERVER:
        pytest.skip("needs a real redis-server for a URL")
    url = request.getfixturevalue("redis_url")
    async with open_store(url, prefix=f"u{uuid.uuid4().hex}:") as store:
        r = rec(1)
        await store.save_message(r)
        assert await store.get_message("P000001") == r
