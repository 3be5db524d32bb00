"""SMSC simulator: a real SMPP 3.4 server for tests, demos and benchmarks.

Built on the proxy's own ``SmppSession(Role.SMSC)`` and ``SmppConnection`` (no second codec).
It accepts bind_transmitter / bind_receiver / bind_transceiver, answers submit_sm, data_sm and
submit_multi with its own unique message ids, keeps every received submit (the decoded ``Pdu``,
TLVs and UDH untouched) and sends SMPP 3.4 Appendix B delivery receipts after
``receipt_delay_s`` to a bound receiver / transceiver of the same system_id (round robin),
holding them until one is bound. MO messages are sent with :meth:`Simulator.send_mo`.

Faults (``reject_status``, ``reject_every``, ``never_reply``, ``generic_nack``,
``disconnect_after``) and the receipt settings live in the mutable :class:`SimulatorConfig`
and are read on every submit, so tests flip them at run time (``sim.set_fault(...)``).

Hot path (the bench needs > 20k submit/s on one core): submit_sm_resp and receipts are
pre-encoded (:class:`PreEncodedPdu`, :class:`ReceiptEncoder`), no per-message task or timer:
receipts wait in one heap driven by one ``call_at`` timer, their responses come back through a
synchronous callback and overdue ones are swept once a second; all writes of one event-loop
iteration leave in one ``transport.write`` (:class:`CoalescingConnection`).

Command line: ``python -m smpp_proxy.simulator --help`` (also ``smpp-proxy simulate-smsc``).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import heapq
import itertools
import json
import logging
import signal
import struct
import sys
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, replace
from typing import Any

from .constants import ESM_UDHI, CommandId, Status, Tag
from .dlr import STATE_CODES, build_receipt
from .pdu import Pdu, Tlv
from .session import BIND_STATE_FOR, Role, SmppSession
from .transport import ConnectionLost, RequestTimeout, SmppConnection

log = logging.getLogger(__name__)

__all__ = [
    "CoalescingConnection",
    "ID_FORMATS",
    "NoReceiver",
    "Simulator",
    "SimulatorConfig",
    "SimStats",
    "SubmitRecord",
    "format_id",
    "main",
]

_SUBMIT_SM = int(CommandId.SUBMIT_SM)
_DATA_SM = int(CommandId.DATA_SM)
_SUBMIT_MULTI = int(CommandId.SUBMIT_MULTI)
_SUBMITS = frozenset((_SUBMIT_SM, _DATA_SM, _SUBMIT_MULTI))
_UNBIND = int(CommandId.UNBIND)
_GENERIC_NACK = int(CommandId.GENERIC_NACK)
_DELIVER_SM = int(CommandId.DELIVER_SM)

# message id renderings (``id_format`` / ``receipt_id_in_text``)
ID_FORMATS: dict[str, Callable[[int], str]] = {
    "hex": lambda n: format(n, "x"),
    "hex_upper": lambda n: format(n, "X"),
    "hex_zero_padded": lambda n: format(n, "016x"),
    "hex_upper_zero_padded": lambda n: format(n, "016X"),
    "decimal": str,
    "decimal_zero_padded": lambda n: format(n, "020d"),
}
FAULTS = (
    "reject_status",
    "reject_every",
    "reject_every_status",
    "never_reply",
    "generic_nack",
    "generic_nack_status",
    "disconnect_after",
)
# stats that count as failures for receipts (registered_delivery == 2: "on failure only")
_SUCCESS_STATS = frozenset(("DELIVRD", "ACCEPTD", "ENROUTE"))


def format_id(n: int, fmt: str) -> str:
    """``n`` rendered as ``fmt`` (one of :data:`ID_FORMATS`)."""
    return ID_FORMATS[fmt](n)


class NoReceiver(LookupError):
    """No bound receiver / transceiver to deliver to."""


# ---------------------------------------------------------------------------- config / stats


@dataclass
class SimulatorConfig:
    host: str = "127.0.0.1"
    port: int = 0  # 0: ephemeral (read Simulator.port after start())
    # credentials expected from ESMEs; None accepts anything
    system_id: str | None = None
    password: str | None = None
    smsc_system_id: str = "SIMSMSC"  # ours, in bind_*_resp
    window: int = 0  # unanswered submits per bind before ESME_RMSGQFUL; 0: unlimited
    max_pdu_size: int = 65536
    enquire_link_interval_s: float = 30.0
    response_timeout_s: float = 10.0  # for our deliver_sm / unbind
    # --- receipts
    receipt_delay_s: float = 0.5
    receipt_stat: str = "DELIVRD"
    receipt_err: int | str = 0
    id_format: str = "hex"
    receipt_id_in_text: str = "same"  # "same" or an id format: how the id is written in the text
    receipt_tlv: bool = True  # receipted_message_id TLV (message_state TLV is always sent)
    receipt_retry_s: float = 1.0  # after a failed deliver_sm (error status, timeout, lost)
    receipt_max_attempts: int = 5
    deliver_window: int = 256  # our unanswered deliver_sm per bind
    # --- faults (read on every submit: change them at run time)
    reject_status: int = 0  # answer every submit with this command_status
    reject_every: int = 0  # answer every Nth submit with reject_every_status
    reject_every_status: int = int(Status.RSUBMITFAIL)
    never_reply: bool = False  # swallow submits
    generic_nack: bool = False  # answer submits with generic_nack(generic_nack_status)
    generic_nack_status: int = int(Status.RSYSERR)
    disconnect_after: int = 0  # close a connection once it has had N submits (answered first)
    # --- bookkeeping
    keep_received: int | None = None  # keep the last N submits (None: all; the bench uses less)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if self.id_format not in ID_FORMATS:
            raise ValueError(f"id_format must be one of {sorted(ID_FORMATS)}")
        if self.receipt_id_in_text != "same" and self.receipt_id_in_text not in ID_FORMATS:
            raise ValueError(f"receipt_id_in_text must be 'same' or one of {sorted(ID_FORMATS)}")
        for name in ("reject_status", "reject_every", "reject_every_status",
                     "generic_nack_status", "disconnect_after", "window", "deliver_window"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"{name} must be >= 0")
        if self.receipt_delay_s < 0 or self.receipt_retry_s <= 0:
            raise ValueError("receipt_delay_s must be >= 0 and receipt_retry_s > 0")
        if self.deliver_window < 1:
            raise ValueError("deliver_window must be >= 1")


@dataclass
class SimStats:
    connections: int = 0
    disconnects: int = 0
    binds: int = 0
    bind_failures: int = 0
    unbinds: int = 0
    submits: int = 0  # every submit_sm / data_sm / submit_multi received
    submits_ok: int = 0
    submits_rejected: int = 0  # error status or generic_nack
    submits_unanswered: int = 0  # never_reply
    receipts_scheduled: int = 0
    receipts_sent: int = 0  # deliver_sm written (retries included)
    receipts_acked: int = 0  # deliver_sm_resp with status 0
    receipts_failed: int = 0  # deliver_sm_resp with an error status, timeout or lost connection
    receipts_dropped: int = 0  # gave up after receipt_max_attempts
    mo_sent: int = 0
    mo_acked: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(slots=True)
class SubmitRecord:
    pdu: Pdu
    system_id: str
    message_id: str | None  # None when not accepted
    status: int | None  # command_status answered; None: no answer (never_reply), -1: generic_nack
    received_at: float  # time.time()


class _Receipt:
    __slots__ = ("system_id", "message_id", "number", "submit", "submitted_at", "attempts")

    def __init__(self, system_id: str, message_id: str, number: int, submit: Pdu, at: float):
        self.system_id = system_id
        self.message_id = message_id
        self.number = number
        self.submit = submit
        self.submitted_at = at
        self.attempts = 0


# ---------------------------------------------------------------------------- connection


class _CallbackWaiter(asyncio.Future):
    """What ``SmppConnection`` resolves when a response arrives (it only resolves
    ``asyncio.Future`` contexts): forwards the outcome to ``callback`` at once and never
    completes itself, so nothing is scheduled and no exception is left unretrieved."""

    callback: Callable[[Pdu | None, BaseException | None], None]

    def set_result(self, result: Any) -> None:
        try:
            self.callback(result, None)
        except Exception:  # never break the connection's receive loop
            log.exception("response callback failed")

    def set_exception(self, exception: Any) -> None:
        if isinstance(exception, type):
            exception = exception()
        try:
            self.callback(None, exception)
        except Exception:
            log.exception("response callback failed")


class CoalescingConnection(SmppConnection):
    """``SmppConnection`` with the simulator's extras: an ``on_connected`` hook and untimed
    requests with callbacks (writes are already batched per loop iteration by the base)."""

    submit_count: int = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        on_connected = getattr(self.handler, "on_connected", None)
        if on_connected is not None:
            on_connected(self)

    @property
    def can_write(self) -> bool:
        return self._can_write.is_set()

    def send_request_untimed(
        self, pdu: Pdu, callback: Callable[[Pdu | None, BaseException | None], None]
    ) -> None:
        """``send_request_nowait`` for the hot path: no per-request timer (whoever uses it
        calls :meth:`expire_pending` periodically) and ``callback(response, None)`` /
        ``callback(None, exc)`` is called synchronously, without a future's call_soon hop."""
        if not self.is_open:
            raise ConnectionLost("connection not open")
        waiter = _CallbackWaiter(loop=self._loop)
        waiter.callback = callback
        self._write(self.session.send_request(pdu, waiter, time.monotonic()))

    def expire_pending(self, timeout: float) -> int:
        """Fail (RequestTimeout) the untimed requests older than ``timeout`` seconds."""
        n = 0
        for seq in self.session.expired(time.monotonic() - timeout):
            if seq in self._deadlines:  # sent with send_request_nowait: the sweeper handles it
                continue
            got = self.session.pop_pending(seq)
            if got is None:
                continue
            pdu, fut = got
            if isinstance(fut, asyncio.Future) and not fut.done():
                fut.set_exception(RequestTimeout(f"no response to {pdu.name} seq={seq}"))
                n += 1
        return n


# ---------------------------------------------------------------------------- receipts

_TICK = 0.005  # receipts due within this much of each other leave in the same timer tick

_HEADER = struct.Struct(">IIII")
_TLV_HEAD = struct.Struct(">HH")


@dataclass(slots=True)
class PreEncodedPdu(Pdu):
    """A request whose body is already encoded: ``encode()`` only packs the 16-byte header
    (the session still assigns and tracks its sequence number). ``params`` stays empty."""

    body: bytes = b""

    def encode(self) -> bytes:
        return _HEADER.pack(
            16 + len(self.body), self.command_id, self.command_status, self.sequence_number
        ) + self.body


class ReceiptEncoder:
    """Receipt deliver_sm bodies, fast: same content as ``dlr.build_receipt``.

    The mandatory fields up to ``sm_length`` are encoded once per address pair by the generic
    codec (``build_receipt(...).encode()``) and cached; per receipt only the Appendix B text and
    the two TLVs are appended. Date strings are formatted once a minute.
    """

    def __init__(self, max_cached: int = 4096):
        self._prefixes: dict[tuple, bytes] = {}
        self._max_cached = max_cached
        self._dates: dict[int, str] = {}

    def _date_of(self, t: float) -> str:
        m = int(t // 60)
        s = self._dates.get(m)
        if s is None:
            if len(self._dates) > 8:
                self._dates.clear()
            s = self._dates[m] = time.strftime("%y%m%d%H%M", time.localtime(t))
        return s

    def _prefix(self, src: str, s_ton: int, s_npi: int, dst: str, d_ton: int, d_npi: int) -> bytes:
        key = (src, s_ton, s_npi, dst, d_ton, d_npi)
        p = self._prefixes.get(key)
        if p is None:
            pdu = build_receipt(
                message_id="", source_addr=src, source_addr_ton=s_ton, source_addr_npi=s_npi,
                destination_addr=dst, dest_addr_ton=d_ton, dest_addr_npi=d_npi,
                stat="DELIVRD", err=0, submitted_at=0.0, done_at=0.0,
            )
            pdu.params["short_message"] = b""
            pdu.tlvs = []
            p = pdu.encode()[16:-1]  # without the header and sm_length (0)
            if len(self._prefixes) >= self._max_cached:
                self._prefixes.clear()
            self._prefixes[key] = p
        return p

    def build(self, submit: Pdu, text_id: str, tlv_id: str | None, stat: str,
              err: int | str, submitted_at: float, done_at: float | None = None) -> PreEncodedPdu:
        p = submit.params
        dst = p.get("destination_addr", "")
        d_ton, d_npi = p.get("dest_addr_ton", 0), p.get("dest_addr_npi", 0)
        if submit.command_id == _SUBMIT_MULTI:
            first = (p.get("dest_address") or [{}])[0]
            dst = first.get("destination_addr", first.get("dl_name", ""))
            d_ton, d_npi = first.get("dest_addr_ton", 0), first.get("dest_addr_npi", 0)
        prefix = self._prefix(
            p.get("source_addr", ""), p.get("source_addr_ton", 0), p.get("source_addr_npi", 0),
            dst[:20], d_ton, d_npi,
        )
        done = time.time() if done_at is None else done_at
        text = (
            f"id:{text_id} sub:001 dlvrd:{'001' if stat == 'DELIVRD' else '000'} "
            f"submit date:{self._date_of(submitted_at)} done date:{self._date_of(done)} "
            f"stat:{stat} err:{str(err)[:3]:0>3} text:"
        ).encode("latin-1") + _receipt_text(submit)
        text = text[:254]
        parts = [prefix, bytes((len(text),)), text]
        if tlv_id is not None:
            v = tlv_id.encode("latin-1") + b"\x00"
            parts.append(_TLV_HEAD.pack(int(Tag.RECEIPTED_MESSAGE_ID), len(v)))
            parts.append(v)
        parts.append(_TLV_HEAD.pack(int(Tag.MESSAGE_STATE), 1))
        parts.append(bytes((STATE_CODES.get(stat, 7),)))
        return PreEncodedPdu(_DELIVER_SM, body=b"".join(parts))


# ---------------------------------------------------------------------------- simulator


class Simulator:
    """The SMSC. ``await start()``, ``port``, ``await stop()``; everything else is for tests."""

    def __init__(self, config: SimulatorConfig | None = None, **overrides: Any):
        cfg = config if config is not None else SimulatorConfig()
        for k, v in overrides.items():
            if not hasattr(cfg, k):
                raise TypeError(f"unknown simulator setting {k!r}")
            setattr(cfg, k, v)
        cfg.validate()
        self.config = cfg
        self.stats = SimStats()
        self.received: deque[Pdu] | list[Pdu] = (
            [] if cfg.keep_received is None else deque(maxlen=cfg.keep_received)
        )
        self.records: deque[SubmitRecord] | list[SubmitRecord] = (
            [] if cfg.keep_received is None else deque(maxlen=cfg.keep_received)
        )
        self._keep_records = cfg.keep_received != 0
        # (kind "receipt" | "mo", message id or "", command_status or None if no response)
        self.deliver_responses: deque[tuple[str, str, int | None]] = deque(maxlen=100_000)
        self.deliver_statuses: Counter[int] = Counter()
        self.connections: set[CoalescingConnection] = set()
        self._receivers: dict[str, list[CoalescingConnection]] = {}
        self._rr = itertools.count()
        self._server: asyncio.base_events.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._next_number = int(time.time() * 1_000_000)  # unique across restarts
        self._heap: list[tuple[float, int, _Receipt]] = []
        self._heap_seq = itertools.count()
        self._parked: dict[str, deque[_Receipt]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._waiters: list[tuple[Callable[[], bool], asyncio.Future]] = []
        self._tasks: set[asyncio.Task] = set()
        self._receipts = ReceiptEncoder()
        self._stopping = False
        self.port = cfg.port

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> Simulator:
        self._loop = asyncio.get_running_loop()
        self._stopping = False
        cfg = self.config
        self._server = await self._loop.create_server(
            self.make_connection, cfg.host, cfg.port, backlog=512
        )
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("SMSC simulator listening on %s:%d", cfg.host, self.port)
        return self

    def make_connection(self) -> CoalescingConnection:
        """The protocol factory of the server (one SmppSession(Role.SMSC) per connection)."""
        cfg = self.config
        session = SmppSession(Role.SMSC, max_pdu_size=cfg.max_pdu_size, inbound_window=cfg.window)
        return CoalescingConnection(
            session, self, None, "client",
            enquire_link_interval=cfg.enquire_link_interval_s,
            response_timeout=cfg.response_timeout_s,
        )

    async def stop(self, unbind_timeout: float = 2.0) -> None:
        """Stop accepting, unbind every bound session (bounded wait), close the rest."""
        self._stopping = True
        if self._server is not None:
            self._server.close()
        for h in (self._timer, self._sweeper):
            if h is not None:
                h.cancel()
        self._timer = self._sweeper = None
        self._heap.clear()
        self._parked.clear()
        for t in list(self._tasks):
            t.cancel()
        conns = list(self.connections)
        if conns:
            await asyncio.gather(
                *(c.unbind(unbind_timeout) for c in conns), return_exceptions=True
            )
        if self._server is not None:
            try:
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
            except asyncio.TimeoutError:
                pass
            self._server = None
        for _pred, fut in self._waiters:
            if not fut.done():
                fut.cancel()
        self._waiters.clear()

    async def __aenter__(self) -> Simulator:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------ run-time control
    def set_fault(self, **faults: Any) -> None:
        """Change faults (or any other setting) now: ``sim.set_fault(reject_status=0x58)``."""
        for k in faults:
            if not hasattr(self.config, k):
                raise TypeError(f"unknown simulator setting {k!r}")
        replace(self.config, **faults)  # validates (ValueError) before anything changes
        for k, v in faults.items():
            setattr(self.config, k, v)

    configure = set_fault

    def clear_faults(self) -> None:
        defaults = SimulatorConfig()
        for k in FAULTS:
            setattr(self.config, k, getattr(defaults, k))

    def reset(self) -> None:
        """Forget received submits, responses and counters (connections stay)."""
        self.received.clear()
        self.records.clear()
        self.deliver_responses.clear()
        self.deliver_statuses.clear()
        self.stats = SimStats(connections=len(self.connections))

    # ------------------------------------------------------------------ queries / waiting
    def bound(self, system_id: str | None = None) -> list[CoalescingConnection]:
        return [
            c for c in self.connections
            if c.is_open and c.session.state.bound and (system_id is None or c.system_id == system_id)
        ]

    def receivers(self, system_id: str | None = None) -> list[CoalescingConnection]:
        if system_id is not None:
            return [c for c in self._receivers.get(system_id, ()) if c.is_open]
        return [c for lst in self._receivers.values() for c in lst if c.is_open]

    def pending_receipts(self) -> int:
        return len(self._heap) + sum(len(q) for q in self._parked.values())

    def record_for(self, message_id: str) -> SubmitRecord | None:
        for r in reversed(self.records):
            if r.message_id == message_id:
                return r
        return None

    async def wait_until(self, predicate: Callable[[], bool], timeout: float = 5.0,
                         what: str | Callable[[], str] = "condition") -> None:
        """Wait until ``predicate()`` holds: re-checked on every submit, bind, receipt / MO
        response and disconnect, and every 50 ms anyway. ``asyncio.TimeoutError`` after
        ``timeout`` seconds (its message says ``what`` was awaited)."""
        if predicate():
            return
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        entry = (predicate, fut)
        self._waiters.append(entry)
        deadline = loop.time() + timeout
        try:
            while not fut.done():
                left = deadline - loop.time()
                if left <= 0:
                    desc = what() if callable(what) else what
                    raise asyncio.TimeoutError(
                        f"simulator: timed out after {timeout}s waiting for {desc}"
                    )
                await asyncio.wait({fut}, timeout=min(left, 0.05))
                if not fut.done() and predicate():
                    break
            if fut.done():
                fut.result()  # a predicate that raised
        finally:
            if entry in self._waiters:
                self._waiters.remove(entry)
            if not fut.done():
                fut.cancel()

    async def wait_for_submits(self, n: int, timeout: float = 5.0) -> list[Pdu]:
        """Wait until ``n`` submits in total were received; return the kept ones."""
        await self.wait_until(lambda: self.stats.submits >= n, timeout,
                              lambda: f"{n} submits (got {self.stats.submits})")
        return list(self.received)

    async def wait_for_receipts(self, n: int, timeout: float = 5.0) -> None:
        """Wait until ``n`` receipts were acknowledged with status 0."""
        await self.wait_until(lambda: self.stats.receipts_acked >= n, timeout,
                              lambda: f"{n} acknowledged receipts (got {self.stats.receipts_acked})")

    async def wait_for_bind(self, n: int = 1, system_id: str | None = None,
                            receiver: bool = False, timeout: float = 5.0) -> None:
        if receiver:
            pred = lambda: len(self.receivers(system_id)) >= n  # noqa: E731
        else:
            pred = lambda: len(self.bound(system_id)) >= n  # noqa: E731
        await self.wait_until(pred, timeout, f"{n} bound {'receiver' if receiver else 'session'}(s)")

    def _notify(self) -> None:
        if not self._waiters:
            return
        for pred, fut in list(self._waiters):
            if not fut.done():
                try:
                    ok = pred()
                except Exception as exc:  # a broken predicate fails its waiter
                    fut.set_exception(exc)
                    continue
                if ok:
                    fut.set_result(None)

    # ------------------------------------------------------------------ handler protocol
    def on_request(self, conn: CoalescingConnection, pdu: Pdu) -> None:
        cid = pdu.command_id
        if cid in _SUBMITS:
            self._on_submit(conn, pdu)
        elif cid in BIND_STATE_FOR:
            self._on_bind(conn, pdu)
        elif cid == _UNBIND:
            self.stats.unbinds += 1
            conn.respond(pdu.response(Status.ROK))
            self._drop_receiver(conn)
            conn.close()
        elif cid == CommandId.QUERY_SM:
            state = STATE_CODES.get(self.config.receipt_stat, 7)
            conn.respond(pdu.response(
                Status.ROK, message_id=pdu.params.get("message_id", ""), message_state=state,
            ))
        elif cid in (CommandId.CANCEL_SM, CommandId.REPLACE_SM):
            conn.respond(pdu.response(Status.ROK))
        else:  # the session lets nothing else through for an SMSC; be safe anyway
            conn.respond(Pdu(_GENERIC_NACK, int(Status.RINVCMDID), pdu.sequence_number))

    def on_closed(self, conn: CoalescingConnection, exc: Exception | None) -> None:
        self.connections.discard(conn)
        self._drop_receiver(conn)
        self.stats.disconnects += 1
        log.debug("connection %s:%s (%s) closed: %s", conn.peer_ip, conn.peer_port, conn.system_id, exc)
        self._notify()

    def on_connected(self, conn: CoalescingConnection) -> None:
        self.connections.add(conn)
        self.stats.connections += 1

    def _on_bind(self, conn: CoalescingConnection, pdu: Pdu) -> None:
        cfg = self.config
        p = pdu.params
        sid = p.get("system_id", "")
        status = 0
        if cfg.system_id is not None and sid != cfg.system_id:
            status = int(Status.RINVSYSID)
        elif cfg.password is not None and p.get("password", "") != cfg.password:
            status = int(Status.RINVPASWD)
        if status:
            self.stats.bind_failures += 1
            log.info("bind refused for %r from %s:%s: status %#x", sid, conn.peer_ip, conn.peer_port, status)
            conn.respond(pdu.response(status))
            return
        resp = conn.session.accept_bind(pdu, cfg.smsc_system_id)
        if p.get("interface_version", 0) >= 0x34:
            resp.tlvs.append(Tlv(int(Tag.SC_INTERFACE_VERSION), b"\x34"))
        conn.system_id = sid
        conn.respond(resp)
        self.stats.binds += 1
        if conn.session.state.can_receive:
            self._receivers.setdefault(sid, []).append(conn)
            self._drain(sid)
        log.debug("%s bound as %s from %s:%s", sid, conn.session.state.value, conn.peer_ip, conn.peer_port)
        self._notify()

    def _drop_receiver(self, conn: CoalescingConnection) -> None:
        lst = self._receivers.get(conn.system_id)
        if lst and conn in lst:
            lst.remove(conn)

    # ------------------------------------------------------------------ submits (hot path)
    def _on_submit(self, conn: CoalescingConnection, pdu: Pdu) -> None:
        if not conn.is_open:  # dropped by disconnect_after earlier in the same read
            return
        cfg = self.config
        st = self.stats
        st.submits += 1
        conn.submit_count += 1
        self.received.append(pdu)
        message_id = None
        if cfg.never_reply:
            status: int | None = None
            st.submits_unanswered += 1
        elif cfg.generic_nack:
            status = -1
            st.submits_rejected += 1
            conn.respond(Pdu(_GENERIC_NACK, int(cfg.generic_nack_status), pdu.sequence_number))
        elif cfg.reject_status or (cfg.reject_every and st.submits % cfg.reject_every == 0):
            status = int(cfg.reject_status or cfg.reject_every_status)
            st.submits_rejected += 1
            conn.respond(pdu.response(status))
        else:
            status = 0
            st.submits_ok += 1
            n = self._next_number
            self._next_number = n + 1
            message_id = ID_FORMATS[cfg.id_format](n)
            # the body of submit_sm_resp / data_sm_resp is message_id alone (submit_multi_resp:
            # plus no_unsuccess = 0): cheaper than Pdu.response().encode() on the hot path
            cid = pdu.command_id
            body = message_id.encode("latin-1") + (b"\x00\x00" if cid == _SUBMIT_MULTI else b"\x00")
            conn.respond(PreEncodedPdu(cid | 0x80000000, 0, pdu.sequence_number, body=body))
            if pdu.params.get("registered_delivery", 0) & 0x03:
                self._schedule_receipt(conn.system_id, message_id, n, pdu)
        if self._keep_records:
            self.records.append(SubmitRecord(pdu, conn.system_id, message_id, status, time.time()))
        if cfg.disconnect_after and conn.submit_count >= cfg.disconnect_after:
            log.info("disconnect_after=%d: dropping %s:%s", cfg.disconnect_after, conn.peer_ip, conn.peer_port)
            conn.close()
        if self._waiters:
            self._notify()

    # ------------------------------------------------------------------ receipts
    def _schedule_receipt(self, system_id: str, message_id: str, n: int, pdu: Pdu) -> None:
        cfg = self.config
        rd = pdu.params.get("registered_delivery", 0) & 0x03
        if rd == 2 and cfg.receipt_stat.upper() in _SUCCESS_STATS:
            return  # receipt on failure only, and this one "succeeded"
        self.stats.receipts_scheduled += 1
        job = _Receipt(system_id, message_id, n, pdu, time.time())
        self._push(job, self._loop.time() + cfg.receipt_delay_s)  # type: ignore[union-attr]

    def _push(self, job: _Receipt, due: float) -> None:
        if self._stopping:
            return
        heapq.heappush(self._heap, (due, next(self._heap_seq), job))
        # re-arm only for a job due well before the armed tick (ticks batch 5 ms anyway)
        if self._timer is None or due + _TICK < self._timer_at:
            self._arm(due)

    def _arm(self, due: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        loop = self._loop
        assert loop is not None
        # batch: never more than ~200 ticks a second
        due = max(due, loop.time() + _TICK)
        self._timer_at = due
        self._timer = loop.call_at(due, self._tick)

    def _tick(self) -> None:
        self._timer = None
        loop = self._loop
        assert loop is not None
        now = loop.time()
        heap = self._heap
        horizon = now + 0.002
        pop = heapq.heappop
        while heap and heap[0][0] <= horizon:
            job = pop(heap)[2]
            self._dispatch(job)
        if heap:
            self._arm(heap[0][0])
        elif any(self._parked.values()):
            self._arm(now + 0.05)  # a receiver may have resumed writing: try the parked again
        if self._parked:
            for sid in list(self._parked):
                self._drain(sid)

    def _pick(self, system_id: str | None) -> CoalescingConnection | None:
        lst = self._receivers.get(system_id, ()) if system_id is not None else self.receivers()
        n = len(lst)
        if not n:
            return None
        start = next(self._rr)
        window = self.config.deliver_window
        for i in range(n):
            c = lst[(start + i) % n]
            if c.is_open and c.can_write and c.session.pending_count() < window:
                return c
        return None

    def _dispatch(self, job: _Receipt) -> None:
        parked = self._parked.get(job.system_id)
        if parked:  # keep the order: behind the parked ones (the tick drains them after)
            parked.append(job)
            return
        conn = self._pick(job.system_id)
        if conn is None:
            self._parked.setdefault(job.system_id, deque()).append(job)
            return
        self._send_receipt(conn, job)

    def _fill(self, conn: CoalescingConnection, q: deque[_Receipt]) -> None:
        """Send parked receipts on ``conn`` while its deliver window has room."""
        if not (conn.is_open and conn.can_write):
            return
        free = self.config.deliver_window - conn.session.pending_count()
        send = self._send_receipt
        while q and free > 0:
            send(conn, q.popleft())
            free -= 1

    def _drain(self, system_id: str) -> None:
        q = self._parked.get(system_id)
        if q:
            for conn in list(self._receivers.get(system_id, ())):
                self._fill(conn, q)
                if not q:
                    break
        if q is not None and not q:
            del self._parked[system_id]

    def _build_receipt(self, job: _Receipt) -> Pdu:
        cfg = self.config
        text_id = job.message_id if cfg.receipt_id_in_text == "same" else (
            ID_FORMATS[cfg.receipt_id_in_text](job.number)
        )
        return self._receipts.build(
            job.submit, text_id, job.message_id if cfg.receipt_tlv else None,
            cfg.receipt_stat, cfg.receipt_err, job.submitted_at,
        )

    def _send_receipt(self, conn: CoalescingConnection, job: _Receipt) -> None:
        job.attempts += 1
        try:
            pdu = self._build_receipt(job)
            conn.send_request_untimed(pdu, functools.partial(self._receipt_done, job, conn))
        except ConnectionLost:
            self._receipt_failed(job)
            return
        except Exception:
            log.exception("cannot build the receipt for %s; dropped", job.message_id)
            self.stats.receipts_dropped += 1
            return
        self.stats.receipts_sent += 1
        if self._sweeper is None:
            self._sweeper = self._loop.call_later(1.0, self._sweep)  # type: ignore[union-attr]

    def _sweep(self) -> None:
        """Once a second while deliver_sm are unanswered: time out the overdue ones."""
        self._sweeper = None
        timeout = self.config.response_timeout_s
        busy = False
        for conn in list(self.connections):
            if conn.session.pending_count():
                conn.expire_pending(timeout)
                busy = busy or conn.session.pending_count() > 0
        if busy and not self._stopping:
            self._sweeper = self._loop.call_later(1.0, self._sweep)  # type: ignore[union-attr]

    def _receipt_done(self, job: _Receipt, conn: CoalescingConnection, resp: Pdu | None,
                      exc: BaseException | None) -> None:
        status: int | None = None
        if resp is not None:
            status = resp.command_status
            if resp.command_id == _GENERIC_NACK and not status:
                status = int(Status.RSYSERR)
        self.deliver_responses.append(("receipt", job.message_id, status))
        if status is not None:
            self.deliver_statuses[status] += 1
        if status == 0:
            self.stats.receipts_acked += 1
        else:
            self._receipt_failed(job)
        q = self._parked.get(conn.system_id)
        if q:  # the slot this response freed goes to the next parked receipt
            self._fill(conn, q)
            if not q:
                del self._parked[conn.system_id]
        if self._waiters:
            self._notify()

    def _receipt_failed(self, job: _Receipt) -> None:
        self.stats.receipts_failed += 1
        if job.attempts >= self.config.receipt_max_attempts:
            self.stats.receipts_dropped += 1
            log.warning("receipt for %s dropped after %d attempts", job.message_id, job.attempts)
            return
        if self._loop is not None and not self._stopping:
            self._push(job, self._loop.time() + self.config.receipt_retry_s)

    # ------------------------------------------------------------------ MO
    async def send_mo(
        self,
        source: str,
        destination: str,
        text: str | bytes,
        data_coding: int = 0,
        *,
        system_id: str | None = None,
        esm_class: int = 0,
        tlvs: Iterable[Tlv] = (),
        timeout: float | None = None,
    ) -> Pdu:
        """Send an MO deliver_sm to a bound receiver / transceiver (of ``system_id`` if given,
        round robin); return its deliver_sm_resp. ``NoReceiver`` if none is bound."""
        conn = self._pick(system_id)
        if conn is None:
            conn = next(iter(self.receivers(system_id)), None)
        if conn is None:
            raise NoReceiver(f"no bound receiver{' for ' + system_id if system_id else ''}")
        if isinstance(text, str):
            body = _encode_mo(text, data_coding)
        else:
            body = bytes(text)
        params = {
            "service_type": "", "source_addr_ton": 1 if source.isdigit() else 5,
            "source_addr_npi": 1 if source.isdigit() else 0, "source_addr": source,
            "dest_addr_ton": 0, "dest_addr_npi": 0, "destination_addr": destination,
            "esm_class": esm_class, "protocol_id": 0, "priority_flag": 0,
            "schedule_delivery_time": "", "validity_period": "", "registered_delivery": 0,
            "replace_if_present_flag": 0, "data_coding": data_coding, "sm_default_msg_id": 0,
            "short_message": b"",
        }
        pdu = Pdu(_DELIVER_SM, params=params, tlvs=list(tlvs))
        if len(body) > 254:
            pdu.set_tlv(Tag.MESSAGE_PAYLOAD, body)
        else:
            params["short_message"] = body
        self.stats.mo_sent += 1
        status: int | None = None
        try:
            resp = await conn.request(pdu, timeout)
            status = resp.command_status
            if status == 0 and resp.command_id != _GENERIC_NACK:
                self.stats.mo_acked += 1
            return resp
        finally:
            self.deliver_responses.append(("mo", "", status))
            if status is not None:
                self.deliver_statuses[status] += 1
            self._notify()

    def start_mo_generator(self, interval_s: float, source: str, destination: str, text: str,
                           data_coding: int = 0, system_id: str | None = None) -> asyncio.Task:
        """Send an MO every ``interval_s`` seconds while a receiver is bound (one task)."""

        async def run() -> None:
            k = 0
            while True:
                await asyncio.sleep(interval_s)
                k += 1
                try:
                    await self.send_mo(source, destination, text.replace("{n}", str(k)),
                                       data_coding, system_id=system_id)
                except NoReceiver:
                    pass
                except (RequestTimeout, ConnectionLost) as exc:
                    log.info("MO not acknowledged: %s", exc)

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task


def _receipt_text(sub: Pdu) -> bytes:
    """The first 20 characters of the submitted message, UDH removed, as latin-1 bytes."""
    sm = sub.params.get("short_message", b"") or sub.get_tlv(Tag.MESSAGE_PAYLOAD) or b""
    if not sm:
        return b""
    if sub.params.get("esm_class", 0) & ESM_UDHI and sm:
        sm = sm[1 + sm[0]:]
    dc = sub.params.get("data_coding", 0)
    if dc == 8:
        sm = sm[:40].decode("utf-16-be", "replace").encode("latin-1", "replace")
    out = sm[:20]
    return out.replace(b"\x00", b" ")


def _encode_mo(text: str, data_coding: int) -> bytes:
    if data_coding == 8:
        return text.encode("utf-16-be")
    try:
        from .text import encode_text

        return encode_text(text, data_coding)
    except Exception:
        return text.encode("latin-1", "replace")


# ---------------------------------------------------------------------------- command line


def _int(s: str) -> int:
    return int(s, 0)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="smpp-proxy simulate-smsc",
        description="SMPP 3.4 SMSC simulator: answers submits, sends receipts and MOs, injects faults.",
    )
    g = p.add_argument_group("server")
    g.add_argument("--host", default="127.0.0.1")
    g.add_argument("--port", type=int, default=2775, help="0: ephemeral (printed on stdout)")
    g.add_argument("--system-id", default=None, help="expected ESME system_id (default: any)")
    g.add_argument("--password", default=None, help="expected password (default: any)")
    g.add_argument("--smsc-system-id", default="SIMSMSC", help="system_id in bind responses")
    g.add_argument("--window", type=int, default=0, help="unanswered submits per bind (0: unlimited)")
    g.add_argument("--enquire-link-interval", type=float, default=30.0)
    g = p.add_argument_group("receipts")
    g.add_argument("--receipt-delay", type=float, default=0.5, help="seconds (default 0.5)")
    g.add_argument("--receipt-stat", default="DELIVRD", help="stat: in the receipt (DELIVRD, UNDELIV, ...)")
    g.add_argument("--receipt-err", default="0")
    g.add_argument("--id-format", choices=sorted(ID_FORMATS), default="hex")
    g.add_argument("--receipt-id-in-text", choices=["same", *sorted(ID_FORMATS)], default="same")
    g.add_argument("--no-receipt-tlv", action="store_true", help="omit receipted_message_id")
    g.add_argument("--receipt-retry", type=float, default=1.0)
    g.add_argument("--deliver-window", type=int, default=256)
    g = p.add_argument_group("faults")
    g.add_argument("--reject-status", type=_int, default=0, help="answer every submit with this status")
    g.add_argument("--reject-every", type=int, default=0, help="reject every Nth submit")
    g.add_argument("--reject-every-status", type=_int, default=int(Status.RSUBMITFAIL))
    g.add_argument("--never-reply", action="store_true", help="swallow submits")
    g.add_argument("--generic-nack", action="store_true", help="answer submits with generic_nack")
    g.add_argument("--generic-nack-status", type=_int, default=int(Status.RSYSERR))
    g.add_argument("--disconnect-after", type=int, default=0, help="drop a connection after N submits")
    g = p.add_argument_group("MO")
    g.add_argument("--mo-every", type=float, default=0.0, help="send an MO every N seconds (0: off)")
    g.add_argument("--mo-source", default="491701234567")
    g.add_argument("--mo-dest", default="12345")
    g.add_argument("--mo-text", default="MO test message {n}")
    g.add_argument("--mo-system-id", default=None, help="only to binds of this system_id")
    g = p.add_argument_group("misc")
    g.add_argument("--keep-received", type=int, default=10000, help="submits kept in memory")
    g.add_argument("--stats-interval", type=float, default=0.0, help="log counters every N s (0: off)")
    g.add_argument("--stats-json", default=None, help="write the final counters to this file")
    g.add_argument("--log-level", default="info")
    return p


def config_from_args(args: argparse.Namespace) -> SimulatorConfig:
    err: int | str = int(args.receipt_err) if args.receipt_err.isdigit() else args.receipt_err
    return SimulatorConfig(
        host=args.host, port=args.port, system_id=args.system_id, password=args.password,
        smsc_system_id=args.smsc_system_id, window=args.window,
        enquire_link_interval_s=args.enquire_link_interval,
        receipt_delay_s=args.receipt_delay, receipt_stat=args.receipt_stat, receipt_err=err,
        id_format=args.id_format, receipt_id_in_text=args.receipt_id_in_text,
        receipt_tlv=not args.no_receipt_tlv, receipt_retry_s=args.receipt_retry,
        deliver_window=args.deliver_window,
        reject_status=args.reject_status, reject_every=args.reject_every,
        reject_every_status=args.reject_every_status, never_reply=args.never_reply,
        generic_nack=args.generic_nack, generic_nack_status=args.generic_nack_status,
        disconnect_after=args.disconnect_after,
        keep_received=args.keep_received,
    )


async def _serve(args: argparse.Namespace, cfg: SimulatorConfig, holder: dict) -> int:
    sim = holder["sim"] = Simulator(cfg)
    await sim.start()
    print(f"LISTENING {cfg.host} {sim.port}", flush=True)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # pragma: no cover - non-POSIX
            pass
    if args.mo_every > 0:
        sim.start_mo_generator(args.mo_every, args.mo_source, args.mo_dest, args.mo_text,
                               system_id=args.mo_system_id)
    reporter = None
    if args.stats_interval > 0:
        async def report() -> None:
            prev, t0 = sim.stats.as_dict(), time.monotonic()
            while True:
                await asyncio.sleep(args.stats_interval)
                cur, t1 = sim.stats.as_dict(), time.monotonic()
                dt = t1 - t0
                log.info(
                    "binds=%d submits=%d (%.0f/s) rejected=%d receipts sent=%d acked=%d (%.0f/s) "
                    "pending=%d mo=%d",
                    len(sim.bound()), cur["submits"], (cur["submits"] - prev["submits"]) / dt,
                    cur["submits_rejected"], cur["receipts_sent"], cur["receipts_acked"],
                    (cur["receipts_acked"] - prev["receipts_acked"]) / dt,
                    sim.pending_receipts(), cur["mo_sent"],
                )
                prev, t0 = cur, t1

        reporter = loop.create_task(report())
    await stop.wait()
    log.info("stopping: unbinding %d session(s)", len(sim.connections))
    if reporter is not None:
        reporter.cancel()
    await sim.stop()
    log.info("stopped: %s", sim.stats.as_dict())
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        cfg = config_from_args(args)
    except ValueError as exc:
        print(f"simulate-smsc: {exc}", file=sys.stderr)
        return 2
    holder: dict[str, Simulator] = {}
    try:
        import uvloop  # type: ignore[import-not-found]
    except ImportError:
        rc = asyncio.run(_serve(args, cfg, holder))
    else:
        rc = uvloop.run(_serve(args, cfg, holder))
    if args.stats_json and "sim" in holder:
        with open(args.stats_json, "w", encoding="utf-8") as fh:
            json.dump(holder["sim"].stats.as_dict(), fh)
    return rc


if __name__ == "__main__":
    sys.exit(main())
