#!/usr/bin/env python
"""SMPP load generator: submit_sm throughput and latency, straight to the SMSC and through the proxy.

Default: start the SMSC simulator in a subprocess, measure against it ("direct"), start the
proxy (``python -m smpp_proxy run``) in a subprocess in front of the same simulator, measure
through it ("proxy"), print both and their ratio last. See bench/README.md.

    python bench/load.py --binds 4 --window 64 --messages 50000 [--receipts]
    python bench/load.py --proxy-host 127.0.0.1 --proxy-port 2775 --system-id carrier1 --password secret1
    python bench/load.py --direct-only
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import math
import multiprocessing
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from smpp_proxy.constants import CommandId  # noqa: E402
from smpp_proxy.dlr import id_candidates, is_receipt, parse_receipt  # noqa: E402
from smpp_proxy.pdu import Pdu  # noqa: E402
from smpp_proxy.session import Role, SmppSession  # noqa: E402
from smpp_proxy.simulator import CoalescingConnection  # noqa: E402
from smpp_proxy.transport import ConnectionLost, RequestTimeout  # noqa: E402

SUBMIT_SM = int(CommandId.SUBMIT_SM)
DELIVER_SM = int(CommandId.DELIVER_SM)
BIND_TRX = int(CommandId.BIND_TRANSCEIVER)


# ---------------------------------------------------------------------------- spec / result


@dataclass
class Spec:
    host: str
    port: int
    system_id: str = "bench"
    password: str = "bench"
    binds: int = 4
    window: int = 64
    messages: int = 50_000
    receipts: bool = False
    text: str = "Load test message {n}"
    data_coding: int = 0
    source: str = "12345"
    destination: str = "4915112345678"
    timeout: float = 10.0  # per submit
    receipt_timeout: float = 15.0  # after the last response
    max_seconds: float = 600.0


@dataclass
class Result:
    label: str = ""
    sent: int = 0
    answered: int = 0
    statuses: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)  # timeouts, lost connections
    latencies: list[float] = field(default_factory=list)  # seconds, submit -> resp
    t_first: float = 0.0  # time.time() of the first submit
    t_last: float = 0.0  # time.time() of the last response
    receipts: int = 0
    receipts_unmatched: int = 0
    receipt_latencies: list[float] = field(default_factory=list)
    t_last_receipt: float = 0.0
    mo: int = 0
    server_name: str = ""
    server_cpu: float | None = None  # CPU seconds the simulator / proxy process used
    client_cpu: float | None = None  # ours (in-process client only)
    other_name: str = ""
    other_cpu: float | None = None  # the simulator's, during the proxy phase

    @property
    def elapsed(self) -> float:
        return max(self.t_last - self.t_first, 1e-9)

    @property
    def rate(self) -> float:
        return self.answered / self.elapsed if self.answered else 0.0

    @property
    def receipt_rate(self) -> float:
        if not self.receipts:
            return 0.0
        return self.receipts / max(self.t_last_receipt - self.t_first, 1e-9)

    def merge(self, other: Result) -> None:
        self.sent += other.sent
        self.answered += other.answered
        self.statuses.update(other.statuses)
        self.errors.update(other.errors)
        self.latencies.extend(other.latencies)
        self.t_first = min(self.t_first, other.t_first) if self.t_first else other.t_first
        self.t_last = max(self.t_last, other.t_last)
        self.receipts += other.receipts
        self.receipts_unmatched += other.receipts_unmatched
        self.receipt_latencies.extend(other.receipt_latencies)
        self.t_last_receipt = max(self.t_last_receipt, other.t_last_receipt)
        self.mo += other.mo


def percentiles(values: list[float], ps=(50, 90, 99)) -> dict[str, float]:
    if not values:
        return {}
    v = sorted(values)
    out = {}
    for p in ps:
        k = max(0, min(len(v) - 1, math.ceil(p / 100 * len(v)) - 1))
        out[f"p{p}"] = v[k]
    out["max"] = v[-1]
    return out


def args_procs_is_one(r: Result) -> bool:
    return r.client_cpu is not None and r.client_cpu > 0.01


def report(r: Result) -> str:
    lat = percentiles(r.latencies)
    lat_s = " ".join(f"{k}={v * 1000:.2f}" for k, v in lat.items())
    statuses = ", ".join(f"{s:#04x}: {n}" for s, n in sorted(r.statuses.items()))
    lines = [
        f"[{r.label}] {r.answered}/{r.sent} submit_sm answered in {r.elapsed:.2f} s: "
        f"{r.rate:,.0f} submit/s",
        f"[{r.label}]   submit->resp latency ms: {lat_s}",
        f"[{r.label}]   command_status: {{{statuses}}}"
        + (f"  errors: {dict(r.errors)}" if r.errors else ""),
    ]
    if r.server_cpu is not None:
        per = r.server_cpu / r.answered
        lines.append(
            f"[{r.label}]   {r.server_name} CPU: {r.server_cpu:.2f} s = {per * 1e6:.0f} us/submit"
            + (" (receipts included)" if r.receipts else "")
            + f" -> ~{1 / per:,.0f} submit/s per core"
            + (f"; client CPU {r.client_cpu:.2f} s" if r.client_cpu and args_procs_is_one(r) else "")
        )
    if r.other_cpu is not None:
        lines.append(
            f"[{r.label}]   {r.other_name} CPU meanwhile: {r.other_cpu:.2f} s "
            f"= {r.other_cpu / r.answered * 1e6:.0f} us/submit"
        )
    if r.receipts or r.receipt_latencies or r.receipts_unmatched:
        rl = percentiles(r.receipt_latencies)
        rl_s = " ".join(f"{k}={v * 1000:.1f}" for k, v in rl.items())
        lines.append(
            f"[{r.label}]   receipts: {r.receipts} ({r.receipt_rate:,.0f}/s since the first submit), "
            f"unmatched {r.receipts_unmatched}; submit->receipt ms: {rl_s}"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------- own client

_HEADER = struct.Struct(">IIII")


@dataclass(slots=True)
class PreEncodedSubmit(Pdu):
    """A submit_sm whose body was encoded once: ``encode()`` only packs the header.

    The session still assigns the sequence number and tracks the request; the generic
    encoder (~9 us a PDU) is what the load generator must not spend its CPU on.
    """

    body: bytes = b""

    def encode(self) -> bytes:
        return _HEADER.pack(16 + len(self.body), SUBMIT_SM, 0, self.sequence_number) + self.body


def submit_body_parts(params: dict[str, Any]) -> tuple[bytes, bytes]:
    """(everything before sm_length, everything after short_message) of a submit_sm body."""
    probe = Pdu(SUBMIT_SM, params={**params, "short_message": b"\x00"}).encode()[16:]
    # the body ends with sm_length=1, short_message=b"\x00" (no TLVs)
    return probe[:-2], b""


class OwnClient:
    """N transceiver binds with SmppSession(Role.ESME) + SmppConnection, W submits in flight each."""

    def __init__(self, spec: Spec):
        self.spec = spec
        self.result = Result()
        self.conns: list[CoalescingConnection] = []
        self.to_send = spec.messages
        self.index = 0
        self.pending_ids: dict[str, float] = {}
        self.early: dict[str, float] = {}  # receipts whose submit_sm_resp has not arrived yet
        self.accepted = 0
        self.all_answered = asyncio.Event()
        self.all_receipts = asyncio.Event()
        self._params = {
            "service_type": "", "source_addr_ton": 5 if not spec.source.isdigit() else 1,
            "source_addr_npi": 0 if not spec.source.isdigit() else 1, "source_addr": spec.source,
            "dest_addr_ton": 1, "dest_addr_npi": 1, "destination_addr": spec.destination,
            "esm_class": 0, "protocol_id": 0, "priority_flag": 0, "schedule_delivery_time": "",
            "validity_period": "", "registered_delivery": 1 if spec.receipts else 0,
            "replace_if_present_flag": 0, "data_coding": spec.data_coding, "sm_default_msg_id": 0,
        }
        self._prefix, self._suffix = submit_body_parts(self._params)
        fixed = None if "{n}" in spec.text else self._encode(spec.text)
        self._fixed_body = None if fixed is None else self._body(fixed)

    def _body(self, sm: bytes) -> bytes:
        if len(sm) > 254:
            raise ValueError("--text too long for short_message (254 octets)")
        return self._prefix + bytes((len(sm),)) + sm + self._suffix

    def _encode(self, text: str) -> bytes:
        if self.spec.data_coding == 8:
            return text.encode("utf-16-be")
        return text.encode("latin-1", "replace")

    # handler protocol
    def on_request(self, conn: CoalescingConnection, pdu: Pdu) -> None:
        if pdu.command_id == DELIVER_SM:
            conn.respond(pdu.response(0))
            if is_receipt(pdu):
                self._on_receipt(pdu)
            else:
                self.result.mo += 1
        elif pdu.command_id == int(CommandId.UNBIND):
            conn.respond(pdu.response(0))
            conn.close()
        else:
            conn.respond(pdu.response(0))

    def on_closed(self, conn: CoalescingConnection, exc: Exception | None) -> None:
        pass

    def _on_receipt(self, pdu: Pdu) -> None:
        r = self.result
        now = time.time()
        mid = parse_receipt(pdu).message_id
        t0 = None
        if mid is not None:
            t0 = self.pending_ids.pop(mid, None)
            if t0 is None:
                for cand in id_candidates(mid):
                    t0 = self.pending_ids.pop(cand, None)
                    if t0 is not None:
                        break
        if t0 is None:
            # On another bind than the submit, a receipt can overtake its submit_sm_resp.
            if mid is not None:
                self.early[mid] = now
            else:
                r.receipts_unmatched += 1
            return
        self._count_receipt(now, t0)

    def _count_receipt(self, now: float, t0: float) -> None:
        r = self.result
        r.receipts += 1
        r.t_last_receipt = max(r.t_last_receipt, now)
        r.receipt_latencies.append(now - t0)
        if self.all_answered.is_set() and r.receipts >= self.accepted:
            self.all_receipts.set()

    async def connect(self) -> None:
        loop = asyncio.get_running_loop()
        spec = self.spec

        async def one() -> CoalescingConnection:
            _t, conn = await loop.create_connection(
                lambda: CoalescingConnection(
                    SmppSession(Role.ESME), self, None, "upstream",
                    enquire_link_interval=30.0, response_timeout=spec.timeout,
                ),
                spec.host, spec.port,
            )
            bind = Pdu(BIND_TRX, params={
                "system_id": spec.system_id, "password": spec.password, "system_type": "",
                "interface_version": 0x34, "addr_ton": 0, "addr_npi": 0, "address_range": "",
            })
            resp = await conn.request(bind, 10.0)
            if resp.command_status != 0:
                conn.close()
                raise RuntimeError(
                    f"bind to {spec.host}:{spec.port} as {spec.system_id!r} refused: "
                    f"status {resp.command_status:#x}"
                )
            conn.session.bind_accepted(BIND_TRX)
            return conn

        self.conns = list(await asyncio.gather(*(one() for _ in range(spec.binds))))

    def start(self) -> None:
        self.result.t_first = time.time()
        for conn in self.conns:
            for _ in range(self.spec.window):
                self._send(conn)

    def _send(self, conn: CoalescingConnection) -> None:
        if self.to_send <= 0:
            return
        if not conn.is_open:
            live = [c for c in self.conns if c.is_open]
            if not live:
                # nothing left to send on: count the rest as lost
                self.result.errors["connection_lost"] += self.to_send
                self.result.answered += 0
                self.to_send = 0
                self.all_answered.set()
                return
            conn = live[self.index % len(live)]
        self.to_send -= 1
        n = self.index
        self.index = n + 1
        body = self._fixed_body or self._body(self._encode(self.spec.text.replace("{n}", str(n))))
        pdu = PreEncodedSubmit(SUBMIT_SM, body=body)
        t0 = time.perf_counter()
        self.result.sent += 1
        try:
            # no per-request timer and no future hop: the sweeper below times requests out
            conn.send_request_untimed(pdu, functools.partial(self._done, conn, t0))
        except ConnectionLost:
            self._finish_one(time.perf_counter(), None, "connection_lost", t0)
            return

    def _done(self, conn: CoalescingConnection, t0: float, resp: Pdu | None,
              exc: BaseException | None) -> None:
        t1 = time.perf_counter()
        if exc is not None:
            kind = "timeout" if isinstance(exc, RequestTimeout) else (
                "connection_lost" if isinstance(exc, ConnectionLost) else type(exc).__name__
            )
            self._finish_one(t1, None, kind, t0)
        else:
            self._finish_one(t1, resp, None, t0)
        self._send(conn)

    async def sweep(self) -> None:
        """Once a second: fail the submits unanswered for longer than ``--timeout``."""
        while True:
            await asyncio.sleep(1.0)
            for c in self.conns:
                c.expire_pending(self.spec.timeout)

    def _finish_one(self, t1: float, resp: Pdu | None, error: str | None, t0: float) -> None:
        r = self.result
        if resp is not None:
            r.answered += 1
            status = resp.command_status
            if resp.command_id == int(CommandId.GENERIC_NACK):
                r.errors["generic_nack"] += 1
            r.statuses[status] += 1
            r.latencies.append(t1 - t0)
            r.t_last = time.time()
            if status == 0 and self.spec.receipts and resp.command_id == SUBMIT_SM | 0x80000000:
                self.accepted += 1
                mid = resp.params.get("message_id", "")
                t_sub = r.t_last - (t1 - t0)
                if self.early:
                    for cand in id_candidates(mid):
                        at = self.early.pop(cand, None)
                        if at is not None:
                            self._count_receipt(at, t_sub)
                            break
                    else:
                        self.pending_ids[mid] = t_sub
                else:
                    self.pending_ids[mid] = t_sub
        else:
            r.errors[error or "error"] += 1
        if r.answered + sum(r.errors.values()) - r.errors.get("generic_nack", 0) >= self.spec.messages:
            self.all_answered.set()
            if r.receipts >= self.accepted:
                self.all_receipts.set()

    async def close(self) -> None:
        await asyncio.gather(*(c.unbind(2.0) for c in self.conns), return_exceptions=True)


async def run_own(spec: Spec, label: str, go: Any = None) -> Result:
    client = OwnClient(spec)
    await client.connect()
    if go is not None:  # multiprocess: wait until every worker is bound
        await asyncio.get_running_loop().run_in_executor(None, go.wait)
    sweeper = asyncio.get_running_loop().create_task(client.sweep())
    client.start()
    try:
        await asyncio.wait_for(client.all_answered.wait(), spec.max_seconds)
    except asyncio.TimeoutError:
        client.result.errors["bench_timeout"] += client.spec.messages - client.result.answered
    finally:
        sweeper.cancel()
    if spec.receipts:
        try:
            await asyncio.wait_for(client.all_receipts.wait(), spec.receipt_timeout)
        except asyncio.TimeoutError:
            pass
    await client.close()
    client.result.receipts_unmatched += len(client.early)
    client.result.label = label
    return client.result


# ---------------------------------------------------------------------------- aiosmpplib client


async def run_aiosmpplib(spec: Spec, label: str, go: Any = None) -> Result:
    """The same load with the third-party aiosmpplib ESME (one per bind), for comparison."""
    import logging

    from aiosmpplib import (
        ESME,
        AbstractBroker,
        AbstractHook,
        DeliverSm,
        PhoneNumber,
        SmppCommandStatus,
        SubmitSm,
        SubmitSmResp,
    )

    res = Result(label=label)
    sent_at: dict[str, float] = {}
    pending_ids: dict[str, float] = {}
    done = asyncio.Event()
    state = {"to_send": spec.messages, "finished": 0, "accepted": 0, "n": 0}
    all_receipts = asyncio.Event()

    early: dict[str, float] = {}

    def count_receipt(now: float, t0: float) -> None:
        res.receipts += 1
        res.receipt_latencies.append(now - t0)
        res.t_last_receipt = max(res.t_last_receipt, now)
        if done.is_set() and res.receipts >= state["accepted"]:
            all_receipts.set()

    class WindowBroker(AbstractBroker):
        def __init__(self) -> None:
            self.slots = asyncio.Semaphore(spec.window)

        async def enqueue(self, message: Any) -> None:  # not used
            raise NotImplementedError

        async def dequeue(self) -> Any:
            await self.slots.acquire()
            if state["to_send"] <= 0:  # all sent: park this sender until the ESME stops
                await asyncio.Event().wait()
            state["to_send"] -= 1
            n = state["n"]
            state["n"] = n + 1
            log_id = str(n)
            sent_at[log_id] = time.perf_counter()
            res.sent += 1
            return SubmitSm(
                short_message=spec.text.replace("{n}", str(n)),
                source=PhoneNumber(spec.source), destination=PhoneNumber(spec.destination),
                registered_delivery=1 if spec.receipts else 0, log_id=log_id,
            )

    class Hook(AbstractHook):
        def __init__(self, broker: WindowBroker) -> None:
            self.broker = broker

        async def sending(self, smpp_message: Any, pdu: bytes, client_id: str) -> None:
            pass

        async def received(self, smpp_message: Any, pdu: bytes, client_id: str) -> None:
            if isinstance(smpp_message, SubmitSmResp) or (
                smpp_message is not None and getattr(smpp_message, "log_id", "") in sent_at
                and not isinstance(smpp_message, DeliverSm)
            ):
                t0 = sent_at.pop(smpp_message.log_id, None)
                if t0 is None:
                    return
                t1 = time.perf_counter()
                status = int(smpp_message.command_status)
                res.answered += 1
                res.statuses[status] += 1
                res.latencies.append(t1 - t0)
                res.t_last = time.time()
                if status == SmppCommandStatus.ESME_ROK and spec.receipts:
                    state["accepted"] += 1
                    mid = getattr(smpp_message, "message_id", "")
                    t_sub = time.time() - (t1 - t0)
                    for cand in id_candidates(mid) if early else ():
                        at = early.pop(cand, None)
                        if at is not None:
                            count_receipt(at, t_sub)
                            break
                    else:
                        pending_ids[mid] = t_sub
                state["finished"] += 1
                self.broker.slots.release()
                if state["finished"] >= spec.messages:
                    done.set()
            elif isinstance(smpp_message, DeliverSm):
                if smpp_message.is_receipt():
                    mid = str(smpp_message.parse_receipt().get("id", ""))
                    t0r = None
                    for cand in id_candidates(mid) if mid else ():
                        t0r = pending_ids.pop(cand, None)
                        if t0r is not None:
                            break
                    if t0r is None:
                        if mid:
                            early[mid] = time.time()
                        else:
                            res.receipts_unmatched += 1
                    else:
                        count_receipt(time.time(), t0r)
                else:
                    res.mo += 1

        async def send_error(self, smpp_message: Any, error: Exception, client_id: str) -> None:
            res.errors[type(error).__name__] += 1

    quiet = logging.NullHandler()
    esmes = []
    for i in range(spec.binds):
        broker = WindowBroker()
        esmes.append(ESME(
            smsc_host=spec.host, smsc_port=spec.port, system_id=spec.system_id,
            password=spec.password, client_id=f"bench{i}", log_level=logging.WARNING,
            log_handler=quiet, hook=Hook(broker), broker=broker,
            socket_timeout=spec.timeout,
        ))
    # the brokers only hand out messages once we allow it
    for e in esmes:
        e.broker.slots = asyncio.Semaphore(0)
    tasks = [asyncio.create_task(e.start()) for e in esmes]
    t_wait = time.monotonic() + 10
    while not all(e._bound.is_set() for e in esmes):  # noqa: SLF001 - no public "bound" event
        if time.monotonic() > t_wait:
            raise RuntimeError("aiosmpplib: bind timed out")
        await asyncio.sleep(0.01)
    if go is not None:
        await asyncio.get_running_loop().run_in_executor(None, go.wait)
    res.t_first = time.time()
    for e in esmes:
        for _ in range(spec.window):
            e.broker.slots.release()
    try:
        await asyncio.wait_for(done.wait(), spec.max_seconds)
    except asyncio.TimeoutError:
        res.errors["bench_timeout"] += spec.messages - res.answered
    if spec.receipts and res.receipts < state["accepted"]:
        try:
            await asyncio.wait_for(all_receipts.wait(), spec.receipt_timeout)
        except asyncio.TimeoutError:
            pass
    for e in esmes:
        try:
            await asyncio.wait_for(e.stop(), 5)
        except (asyncio.TimeoutError, Exception):
            pass
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    res.receipts_unmatched += len(early)
    return res


# ---------------------------------------------------------------------------- running a phase


def _new_loop_run(coro_fn, *args) -> Result:
    try:
        import uvloop  # type: ignore[import-not-found]

        return uvloop.run(coro_fn(*args))
    except ImportError:
        return asyncio.run(coro_fn(*args))


def _worker(client: str, spec: Spec, label: str, go: Any, out: Any) -> None:
    fn = run_own if client == "own" else run_aiosmpplib
    try:
        out.put(("ok", _new_loop_run(fn, spec, label, go)))
    except BaseException as exc:  # report instead of hanging the parent
        out.put(("error", repr(exc)))


def run_phase(args: argparse.Namespace, label: str, host: str, port: int,
              system_id: str, password: str) -> Result:
    spec = Spec(
        host=host, port=port, system_id=system_id, password=password, binds=args.binds,
        window=args.window, messages=args.messages, receipts=args.receipts, text=args.text,
        data_coding=args.data_coding, timeout=args.timeout, max_seconds=args.max_seconds,
        receipt_timeout=args.receipt_timeout,
    )
    fn = run_own if args.client == "own" else run_aiosmpplib
    procs = max(1, min(args.procs, args.binds))
    if procs == 1:
        return _new_loop_run(fn, spec, label)
    ctx = multiprocessing.get_context("spawn")
    go = ctx.Event()
    out = ctx.Queue()
    workers = []
    for i in range(procs):
        binds = args.binds // procs + (1 if i < args.binds % procs else 0)
        msgs = args.messages // procs + (1 if i < args.messages % procs else 0)
        s = Spec(**{**spec.__dict__, "binds": binds, "messages": msgs})
        w = ctx.Process(target=_worker, args=(args.client, s, label, go, out), daemon=True)
        w.start()
        workers.append(w)
    # workers connect and bind, then block on ``go``: give them time, then release together
    time.sleep(min(5.0, 0.5 + 0.05 * args.binds))
    go.set()
    total = Result(label=label)
    for _ in workers:
        kind, value = out.get(timeout=args.max_seconds + args.receipt_timeout + 60)
        if kind != "ok":
            raise RuntimeError(f"worker failed: {value}")
        total.merge(value)
    for w in workers:
        w.join(5)
    return total


# ---------------------------------------------------------------------------- subprocesses


def cpu_seconds(pid: int | None) -> float | None:
    """user + system CPU seconds used so far by process ``pid`` (Linux /proc), or None."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def measure(args: argparse.Namespace, label: str, host: str, port: int,
            server_pid: int | None, server_name: str, other_pid: int | None = None,
            other_name: str = "") -> Result:
    """run_phase, plus the CPU time the server process (simulator / proxy) spent on it, and
    that of ``other_pid`` (the simulator behind the proxy)."""
    c0, o0 = cpu_seconds(server_pid), cpu_seconds(other_pid)
    me0 = time.process_time()
    r = run_phase(args, label, host, port, args.system_id, args.password)
    c1, o1 = cpu_seconds(server_pid), cpu_seconds(other_pid)
    r.client_cpu = time.process_time() - me0 if max(1, min(args.procs, args.binds)) == 1 else None
    if c0 is not None and c1 is not None and r.answered:
        r.server_cpu = c1 - c0
        r.server_name = server_name
    if o0 is not None and o1 is not None and r.answered:
        r.other_cpu = o1 - o0
        r.other_name = other_name
    return r


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_simulator(args: argparse.Namespace, workdir: Path) -> tuple[subprocess.Popen, int]:
    cmd = [
        sys.executable, "-m", "smpp_proxy.simulator", "--host", "127.0.0.1", "--port", "0",
        "--receipt-delay", str(args.receipt_delay), "--log-level", "warning",
        "--keep-received", "0", "--stats-json", str(workdir / "simulator-stats.json"),
        *args.sim_arg,
    ]
    log = open(workdir / "simulator.log", "wb")
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=log,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    deadline = time.monotonic() + 20
    line = b""
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        r, _, _ = select.select([proc.stdout], [], [], 0.2)
        if r:
            line = proc.stdout.readline()
            break
        if proc.poll() is not None:
            break
    if not line.startswith(b"LISTENING"):
        proc.kill()
        raise RuntimeError(
            f"simulator did not start: {line!r}\n{(workdir / 'simulator.log').read_text()[-2000:]}"
        )
    return proc, int(line.split()[2])


PROXY_YAML = """\
server:
  host: 127.0.0.1
  port: {proxy_port}
  system_id: smsfw
  response_timeout_s: {timeout}
clients:
  - system_id: {system_id}
    password: {password}
    max_binds: {max_binds}
    window: {client_window}
    throughput: 0
upstreams:
  - name: sim
    host: 127.0.0.1
    port: {sim_port}
    system_id: smsfw
    password: upstream
    binds: {upstream_binds}
    window: {upstream_window}
    response_timeout_s: {timeout}
store:
  url: sqlite:///{db}
metrics:
  enabled: false
{classifier}"""


def proxy_available() -> tuple[bool, str]:
    try:
        p = subprocess.run([sys.executable, "-m", "smpp_proxy", "run", "--help"], cwd=REPO,
                           capture_output=True, timeout=60,
                           env={**os.environ, "PYTHONPATH": str(REPO)})
    except subprocess.TimeoutExpired:
        return False, "`python -m smpp_proxy run --help` timed out"
    if p.returncode != 0:
        return False, (p.stderr or p.stdout).decode(errors="replace")[-1500:]
    return True, ""


def start_proxy(args: argparse.Namespace, workdir: Path, sim_port: int) -> tuple[subprocess.Popen, int]:
    port = free_port()
    cfg = workdir / "proxy.yaml"
    model_dir = Path(args.model_dir)
    if not model_dir.is_absolute():
        model_dir = REPO / model_dir
    use_classifier = args.classifier == "on" or (args.classifier == "auto" and model_dir.exists())
    if args.classifier == "stub":
        classifier = "classifier:\n  enabled: true\n"
    elif use_classifier:
        classifier = (f"classifier:\n  enabled: true\n  model_dir: {model_dir}\n"
                      f"  device: {args.classifier_device}\n")
    else:
        classifier = "classifier:\n  enabled: false\n"
    shown = ("stub (constant verdict, full pipeline)" if args.classifier == "stub"
             else "on (" + str(model_dir) + ")" if use_classifier else "off")
    print(f"proxy classifier: {shown}", flush=True)
    cfg.write_text(PROXY_YAML.format(
        classifier=classifier,
        proxy_port=port, sim_port=sim_port, system_id=args.system_id, password=args.password,
        max_binds=max(args.binds, 1), client_window=max(args.window, 1),
        upstream_binds=args.upstream_binds, upstream_window=args.upstream_window,
        db=workdir / "smsfw.db", timeout=args.timeout,
    ))
    if args.proxy_config_extra:
        with cfg.open("a") as fh:
            fh.write(Path(args.proxy_config_extra).read_text())
    log = open(workdir / "proxy.log", "wb")
    proc = subprocess.Popen(
        ([sys.executable, str(REPO / "bench" / "stub_proxy.py")] if args.classifier == "stub"
         else [sys.executable, "-m", "smpp_proxy", "run"])
        + ["--config", str(cfg), "--log-level", args.proxy_log_level],
        cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    return proc, port


def wait_proxy_ready(proc: subprocess.Popen, port: int, args: argparse.Namespace,
                     workdir: Path, timeout: float = 60.0) -> None:
    """Until a bind + one submit through the proxy is answered with status 0."""
    deadline = time.monotonic() + timeout
    last = "no attempt"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"proxy exited with {proc.returncode}:\n{(workdir / 'proxy.log').read_text()[-3000:]}"
            )
        try:
            spec = Spec(host="127.0.0.1", port=port, system_id=args.system_id,
                        password=args.password, binds=1, window=1, messages=1, timeout=5,
                        max_seconds=10)
            r = _new_loop_run(run_own, spec, "probe")
            if r.statuses.get(0):
                return
            last = f"statuses {dict(r.statuses)} errors {dict(r.errors)}"
        except (OSError, RuntimeError) as exc:
            last = repr(exc)
        time.sleep(0.5)
    raise RuntimeError(f"proxy not ready after {timeout}s ({last}); log:\n"
                       f"{(workdir / 'proxy.log').read_text()[-3000:]}")


def stop_process(proc: subprocess.Popen | None, timeout: float = 10.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


# ---------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="SMPP load generator: direct to the SMSC simulator, then through the proxy.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=textwrap.dedent(__doc__.split("\n\n", 2)[-1]),
    )
    p.add_argument("--binds", "-n", type=int, default=4, help="transceiver binds (default 4)")
    p.add_argument("--window", "-w", type=int, default=64, help="submits in flight per bind (default 64)")
    p.add_argument("--messages", "-m", type=int, default=50_000, help="submit_sm in total (default 50000)")
    p.add_argument("--receipts", action="store_true", help="registered_delivery=1, wait for the receipts")
    p.add_argument("--receipt-delay", type=float, default=0.1, help="simulator receipt delay (s)")
    p.add_argument("--receipt-timeout", type=float, default=15.0,
                   help="how long to wait for missing receipts after the last response")
    p.add_argument("--text", default="Load test message {n}", help="message text; {n} is the counter")
    p.add_argument("--data-coding", type=int, default=0, choices=[0, 1, 3, 8])
    p.add_argument("--client", choices=["own", "aiosmpplib"], default="own",
                   help="own: SmppSession/SmppConnection (fast); aiosmpplib: third-party ESME")
    p.add_argument("--procs", type=int, default=1, help="client processes (binds are split)")
    p.add_argument("--timeout", type=float, default=10.0, help="per-submit response timeout (s)")
    p.add_argument("--max-seconds", type=float, default=600.0, help="give up a phase after this")
    p.add_argument("--system-id", default="bench")
    p.add_argument("--password", default="bench")
    p.add_argument("--direct-only", action="store_true", help="only measure against the simulator")
    p.add_argument("--direct-host", default=None, help="an already running SMSC instead of the simulator")
    p.add_argument("--direct-port", type=int, default=None)
    p.add_argument("--proxy-host", default=None, help="an already running proxy (skips starting one)")
    p.add_argument("--proxy-port", type=int, default=None)
    p.add_argument("--upstream-binds", type=int, default=2, help="proxy -> simulator binds")
    p.add_argument("--upstream-window", type=int, default=256, help="proxy -> simulator window")
    p.add_argument("--classifier", choices=["auto", "on", "off", "stub"], default="auto",
                   help="proxy classifier: auto = on when --model-dir exists (default); "
                        "stub = the whole filtering pipeline with a constant verdict "
                        "(bench/stub_proxy.py), to separate pipeline cost from inference")
    p.add_argument("--model-dir", default="classifier/models/default")
    p.add_argument("--classifier-device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--proxy-config-extra", default=None, help="YAML appended to the generated proxy config")
    p.add_argument("--proxy-log-level", default="warning")
    p.add_argument("--wait-proxy", type=float, default=0.0,
                   help="poll up to N s for `python -m smpp_proxy run --help` to work")
    p.add_argument("--sim-arg", action="append", default=[],
                   help="extra simulator option (repeatable), e.g. --sim-arg=--reject-every=100")
    p.add_argument("--json", default=None, help="also write the results as JSON here")
    p.add_argument("--keep-workdir", action="store_true", help="keep configs and logs")
    return p


def _summary(r: Result) -> dict[str, Any]:
    return {
        "label": r.label, "sent": r.sent, "answered": r.answered, "seconds": r.elapsed,
        "submits_per_s": r.rate, "latency_s": percentiles(r.latencies),
        "statuses": {f"{k:#x}": v for k, v in r.statuses.items()}, "errors": dict(r.errors),
        "receipts": r.receipts, "receipts_per_s": r.receipt_rate,
        "receipt_latency_s": percentiles(r.receipt_latencies),
        "receipts_unmatched": r.receipts_unmatched,
        "server_cpu_s": r.server_cpu,
    }


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="smpp-bench-"))
    sim = proxy = None
    results: list[Result] = []
    direct = through = None
    try:
        external_proxy = args.proxy_host is not None
        if args.direct_host:
            d_host, d_port = args.direct_host, int(args.direct_port or 2775)
        elif not external_proxy:
            sim, d_port = start_simulator(args, workdir)
            d_host = "127.0.0.1"
            print(f"simulator pid {sim.pid} on 127.0.0.1:{d_port}", flush=True)
        else:
            d_host = d_port = None

        if d_host is not None:
            direct = measure(args, "direct", d_host, d_port, sim.pid if sim else None, "simulator")
            results.append(direct)
            print(report(direct), flush=True)

        if not args.direct_only:
            if external_proxy:
                p_host, p_port = args.proxy_host, int(args.proxy_port or 2775)
            else:
                ok, why = proxy_available()
                deadline = time.monotonic() + args.wait_proxy
                while not ok and time.monotonic() < deadline:
                    time.sleep(5)
                    ok, why = proxy_available()
                if not ok:
                    print(f"proxy phase skipped: `python -m smpp_proxy run` is not usable:\n{why}",
                          file=sys.stderr)
                    return 3
                proxy, p_port = start_proxy(args, workdir, d_port)
                p_host = "127.0.0.1"
                wait_proxy_ready(proxy, p_port, args, workdir)
                print(f"proxy pid {proxy.pid} on 127.0.0.1:{p_port} (config {workdir / 'proxy.yaml'})",
                      flush=True)
            through = measure(args, "proxy", p_host, p_port, proxy.pid if proxy else None, "proxy",
                              sim.pid if sim else None, "simulator")
            results.append(through)
            print(report(through), flush=True)
    finally:
        stop_process(proxy)
        stop_process(sim)
        if args.json:
            Path(args.json).write_text(json.dumps([_summary(r) for r in results], indent=2))
        if args.keep_workdir or (proxy is not None and proxy.returncode not in (0, -15, None)):
            print(f"work dir kept: {workdir}", file=sys.stderr)
        else:
            for f in workdir.iterdir():
                f.unlink()
            workdir.rmdir()
    if direct is not None and through is not None:
        print(f"direct: {direct.rate:,.0f} submit/s   proxy: {through.rate:,.0f} submit/s")
        print(f"ratio proxy/direct: {through.rate / direct.rate if direct.rate else 0.0:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
