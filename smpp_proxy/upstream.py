"""Upstream client pool: our binds to the real SMSC(s).

Each configured upstream keeps ``binds`` sessions up (transceivers, or transmitter+receiver
pairs), each with its own reconnect loop (exponential backoff with jitter, reset on a successful
bind) and enquire_link keeper. ``UpstreamPool.submit`` picks a bound transmitter with window
room, preferring the lowest ``priority`` and spreading load round-robin among equals; when every
preferred session is down or full it fails over to the next priority. Requests arriving from an
upstream (receipts, MO) go to ``on_deliver``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from .config import UpstreamConfig
from .constants import CommandId, Status
from .metrics import ProxyMetrics
from .pdu import Pdu
from .session import Role, SmppSession
from .transport import ConnectionLost, RequestTimeout, SmppConnection

log = logging.getLogger(__name__)

DeliverHandler = Callable[[str, SmppConnection, Pdu], Awaitable[None] | None]


class NoUpstream(Exception):
    """No bound upstream session could take the request in time."""


@dataclass
class _Slot:
    upstream: Upstream
    bind_command: int
    index: int
    conn: SmppConnection | None = None
    state: str = "down"  # down | connecting | bound

    @property
    def can_submit(self) -> bool:
        return (
            self.state == "bound"
            and self.conn is not None
            and self.conn.writable
            and self.conn.session.state.can_transmit
        )


class _Handler:
    def __init__(self, slot: _Slot, pool: UpstreamPool):
        self.slot = slot
        self.pool = pool

    def on_request(self, conn: SmppConnection, pdu: Pdu) -> None:
        cid = pdu.command_id
        if cid == CommandId.UNBIND:
            conn.respond(pdu.response(Status.ROK))
            conn.close()
            return
        if cid in (CommandId.DELIVER_SM, CommandId.DATA_SM):
            res = self.pool.on_deliver(self.slot.upstream.cfg.name, conn, pdu)
            if asyncio.iscoroutine(res):
                task = asyncio.ensure_future(res)
                self.pool._tasks.add(task)
                task.add_done_callback(self.pool._tasks.discard)
            return
        if cid == CommandId.ALERT_NOTIFICATION:
            return  # no response is defined for alert_notification
        conn.respond(pdu.response(Status.RINVCMDID))

    def on_closed(self, conn: SmppConnection, exc: Exception | None) -> None:
        self.slot.upstream._set_state(self.slot, "down")
        self.pool._room.set()


class Upstream:
    def __init__(self, cfg: UpstreamConfig, pool: UpstreamPool):
        self.cfg = cfg
        self.pool = pool
        self.slots: list[_Slot] = []
        if cfg.bind_mode == "transceiver":
            for i in range(cfg.binds):
                self.slots.append(_Slot(self, int(CommandId.BIND_TRANSCEIVER), i))
        else:
            for i in range(cfg.binds):
                self.slots.append(_Slot(self, int(CommandId.BIND_TRANSMITTER), i))
                self.slots.append(_Slot(self, int(CommandId.BIND_RECEIVER), i))
        self._tasks: list[asyncio.Task] = []
        self._stopping = False

    def _set_state(self, slot: _Slot, state: str) -> None:
        slot.state = state
        m = self.pool.metrics
        if m:
            for st in ("down", "connecting", "bound"):
                m.upstream_sessions.labels(self.cfg.name, st).set(
                    sum(1 for s in self.slots if s.state == st)
                )

    def start(self) -> None:
        for slot in self.slots:
            self._set_state(slot, "down")
            self._tasks.append(asyncio.ensure_future(self._run_slot(slot)))

    async def stop(self) -> None:
        # unbind politely first (the reconnect loops see _stopping and end), then cancel
        self._stopping = True
        await asyncio.gather(
            *(s.conn.unbind(2.0) for s in self.slots if s.conn is not None and s.conn.is_open),
            return_exceptions=True,
        )
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    @property
    def bound_transmitters(self) -> int:
        return sum(1 for s in self.slots if s.can_submit)

    async def _run_slot(self, slot: _Slot) -> None:
        cfg = self.cfg
        delay = cfg.reconnect_min_s
        loop = asyncio.get_running_loop()
        while not self._stopping:
            self._set_state(slot, "connecting")
            conn: SmppConnection | None = None
            try:
                session = SmppSession(Role.ESME)
                _, conn = await asyncio.wait_for(
                    loop.create_connection(
                        lambda s=session: SmppConnection(
                            s, _Handler(slot, self.pool), self.pool.metrics, "upstream",
                            enquire_link_interval=cfg.enquire_link_interval_s,
                            response_timeout=cfg.response_timeout_s,
                        ),
                        cfg.host, cfg.port,
                    ),
                    cfg.connect_timeout_s,
                )
                bind = Pdu(
                    slot.bind_command,
                    params={
                        "system_id": cfg.system_id,
                        "password": cfg.password,
                        "system_type": cfg.system_type,
                        "interface_version": 0x34,
                        "addr_ton": 0,
                        "addr_npi": 0,
                        "address_range": "",
                    },
                )
                resp = await conn.request(bind, cfg.response_timeout_s)
                if resp.command_status != Status.ROK:
                    raise ConnectionError(f"bind refused with status {resp.command_status:#x}")
                conn.session.bind_accepted(slot.bind_command)
                conn.system_id = cfg.system_id
                slot.conn = conn
                self._set_state(slot, "bound")
                log.info("upstream %s bind %d (%s) bound", cfg.name, slot.index,
                         "rx" if slot.bind_command == CommandId.BIND_RECEIVER else "tx/trx")
                delay = cfg.reconnect_min_s
                self.pool._room.set()
                await conn.closed.wait()
                if self._stopping:
                    break
                log.warning("upstream %s bind %d lost", cfg.name, slot.index)
            except asyncio.CancelledError:
                if conn is not None:
                    conn.close()
                raise
            except (OSError, asyncio.TimeoutError, RequestTimeout, ConnectionLost, ConnectionError) as exc:
                log.warning("upstream %s bind %d: %s; retry in %.1fs", cfg.name, slot.index, exc, delay)
                if conn is not None:
                    conn.close()
            except Exception:  # a bug must not end this bind's reconnect loop for good
                log.exception("upstream %s bind %d: unexpected error; retry in %.1fs",
                              cfg.name, slot.index, delay)
                if conn is not None:
                    conn.close()
            if self._stopping:
                break
            self._set_state(slot, "down")
            slot.conn = None
            await asyncio.sleep(delay * (0.8 + 0.4 * random.random()))
            delay = min(delay * 2, cfg.reconnect_max_s)


class UpstreamPool:
    def __init__(
        self,
        configs: list[UpstreamConfig],
        metrics: ProxyMetrics | None,
        on_deliver: DeliverHandler,
    ):
        self.metrics = metrics
        self.on_deliver = on_deliver
        self.upstreams = [Upstream(c, self) for c in configs]
        self._rr = 0
        self._room = asyncio.Event()
        self._tasks: set[asyncio.Task] = set()

    async def start(self) -> None:
        for u in self.upstreams:
            u.start()

    async def close(self) -> None:
        await asyncio.gather(*(u.stop() for u in self.upstreams), return_exceptions=True)
        for t in list(self._tasks):
            t.cancel()

    def bound_count(self) -> int:
        return sum(u.bound_transmitters for u in self.upstreams)

    def _pick(self, only: str | None = None) -> _Slot | None:
        ups = [u for u in self.upstreams if only is None or u.cfg.name == only]
        for prio in sorted({u.cfg.priority for u in ups}):
            slots = [
                s for u in ups if u.cfg.priority == prio for s in u.slots
                if s.can_submit and s.conn.session.pending_count() < u.cfg.window  # type: ignore[union-attr]
            ]
            if slots:
                self._rr = (self._rr + 1) % (1 << 30)
                return slots[self._rr % len(slots)]
        return None

    async def submit(
        self, pdu: Pdu, wait: float, upstream: str | None = None
    ) -> tuple[str, Pdu, float]:
        """Send ``pdu`` (a copy the caller owns) upstream; return (upstream, resp, seconds).

        ``upstream`` pins the request to one upstream (query_sm / cancel_sm of a message it has).
        Waits up to ``wait`` seconds for a bound session with window room. Raises NoUpstream
        (nothing bound / no room in time), RequestTimeout or ConnectionLost.
        """
        deadline = time.monotonic() + wait
        while True:
            slot = self._pick(upstream)
            if slot is not None:
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise NoUpstream("no upstream session available")
            self._room.clear()
            try:
                await asyncio.wait_for(self._room.wait(), remaining)
            except asyncio.TimeoutError:
                raise NoUpstream("no upstream session available") from None
        conn = slot.conn
        assert conn is not None
        name = slot.upstream.cfg.name
        t0 = time.perf_counter()
        try:
            resp = await conn.request(pdu)
        finally:
            self._room.set()
        dt = time.perf_counter() - t0
        if self.metrics:
            self.metrics.child(self.metrics.upstream_latency, name).observe(dt)
        return name, resp, dt
