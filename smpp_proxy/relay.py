"""Receipts and MO messages from upstream to the right client: store, then forward.

Everything an upstream delivers is first written to the persistent outbox, then acknowledged to
the upstream, then pushed to a bound receiver/transceiver of the owning client. Nothing is lost
if the client is not bound (it waits in the outbox until it binds), if the client answers with
an error or not at all (retried with exponential backoff), or if the proxy is killed (the
outbox is on disk). Receipts are matched by (upstream, upstream message id) and their id is
rewritten to the proxy id the client knows; MO messages are routed by ``mo_prefixes``.
"""

from __future__ import annotations

import asyncio
import logging
import time

from .config import ProxyConfig
from .constants import Status
from .dlr import id_candidates, is_receipt, parse_receipt, rewrite_receipt_id
from .metrics import ProxyMetrics
from .pdu import Pdu, decode_pdu
from .server import ClientRegistry
from .store import MessageRecord, OutboxItem, Store
from .transport import ConnectionLost, RequestTimeout, SmppConnection

log = logging.getLogger(__name__)


class Outbox:
    """Delivery of receipts / MO to clients: direct when possible, else via the persistent outbox.

    ``deliver`` is the fast path: when the client has a bound receiver with window room and
    nothing older waiting in the outbox, the PDU goes straight to it and ``deliver`` returns once
    the client acknowledged it; only if that fails (no receiver, error status, timeout) is the
    PDU written to the store. The caller answers the upstream after ``deliver`` returns, so until
    then the upstream still owns the message: nothing is lost if the proxy dies in between.

    Per-client dispatchers drain the stored backlog into bound receivers, keeping up to the
    client's window in flight (pipelined, not batch by batch), with exponential backoff on errors.
    """

    DIRECT_TIMEOUT_S = 2.0

    def __init__(
        self, config: ProxyConfig, store: Store, registry: ClientRegistry, metrics: ProxyMetrics | None
    ):
        self.config = config
        self.store = store
        self.registry = registry
        self.metrics = metrics
        self._wake: dict[str, asyncio.Event] = {}
        self._tasks: dict[str, asyncio.Task] = {}
        self._backlog: dict[str, int] = {}  # stored items per client (approximate, in memory)
        self._inflight: dict[str, set] = {}  # stored item ids being sent, per client
        self._rr = 0
        self._closing = False
        registry.bind_listeners.append(self._on_bind)

    async def start(self) -> None:
        for client_id in await self.store.outbox_clients():
            self._backlog[client_id] = await self.store.outbox_count(client_id)
            self.wake(client_id)
        await self._update_gauge()

    async def close(self) -> None:
        self._closing = True
        for t in self._tasks.values():
            t.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    def _receiver(self, client_id: str) -> SmppConnection | None:
        state = self.registry.get(client_id)
        if state is None:
            return None
        window = state.config.window
        ready = [
            c for c in state.receivers() if c.writable and c.session.pending_count() < window
        ]
        if not ready:
            return None
        self._rr = (self._rr + 1) % (1 << 30)
        return ready[self._rr % len(ready)]

    async def deliver(self, client_id: str, pdu: Pdu) -> str:
        """Deliver now, or store for later. Returns "relayed" or "queued"."""
        if not self._backlog.get(client_id):
            conn = self._receiver(client_id)
            if conn is not None:
                try:
                    # short: the upstream waits for our answer meanwhile
                    resp = await conn.request(pdu.copy(), timeout=self.DIRECT_TIMEOUT_S)
                    if resp.command_status == Status.ROK:
                        return "relayed"
                    log.info("%s refused %s with %#x; queued", client_id, pdu.name, resp.command_status)
                except (RequestTimeout, ConnectionLost) as exc:
                    log.info("delivery to %s failed (%s); queued", client_id, exc)
        await self.put(client_id, pdu)
        return "queued"

    async def put(self, client_id: str, pdu: Pdu) -> None:
        await self.store.outbox_put(client_id, pdu.encode(), time.time())
        self._backlog[client_id] = self._backlog.get(client_id, 0) + 1
        if self.metrics:
            self.metrics.outbox_pending.inc()
        self.wake(client_id)

    def _on_bind(self, client_id: str, conn: SmppConnection) -> None:
        if conn.session.state.can_receive and self._backlog.get(client_id):
            self.wake(client_id)

    def wake(self, client_id: str) -> None:
        if self._closing:
            return
        ev = self._wake.setdefault(client_id, asyncio.Event())
        ev.set()
        task = self._tasks.get(client_id)
        if task is None or task.done():
            self._tasks[client_id] = asyncio.ensure_future(self._run_forever(client_id))

    async def _update_gauge(self) -> None:
        if self.metrics:
            self.metrics.outbox_pending.set(await self.store.outbox_count())

    async def _run_forever(self, client_id: str) -> None:
        """The dispatcher of one client; an unexpected error is logged and it starts over."""
        while not self._closing:
            try:
                await self._run(client_id)
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("outbox dispatcher of %s failed; restarting in 1 s", client_id)
                await asyncio.sleep(1.0)

    async def _run(self, client_id: str) -> None:
        ev = self._wake[client_id]
        inflight = self._inflight.setdefault(client_id, set())
        retry_min = self.config.dlr.retry_min_s
        sending: set[asyncio.Task] = set()
        try:
            while not self._closing:
                ev.clear()
                state = self.registry.get(client_id)
                if state is None or not state.receivers():
                    await ev.wait()  # woken by a bind or a new item
                    continue
                window = state.config.window * len(state.receivers())
                room = window - len(inflight)
                items = []
                if room > 0:
                    due = await self.store.outbox_due(client_id, time.time(), limit=window)
                    items = [it for it in due if it.item_id not in inflight][:room]
                if not items:
                    if not self._backlog.get(client_id):
                        if not inflight:
                            self._backlog[client_id] = await self.store.outbox_count(client_id)
                            if not self._backlog[client_id]:
                                await ev.wait()
                                continue
                    try:  # wait for a completion, a new item, a bind, or a retry coming due
                        await asyncio.wait_for(ev.wait(), retry_min)
                    except asyncio.TimeoutError:
                        pass
                    continue
                for it in items:
                    conn = self._receiver(client_id)
                    if conn is None:
                        break
                    inflight.add(it.item_id)
                    t = asyncio.ensure_future(self._send(client_id, conn, it, ev))
                    sending.add(t)
                    t.add_done_callback(sending.discard)
                else:
                    continue
                await asyncio.sleep(0)  # every receiver full: let responses come in
                try:
                    await asyncio.wait_for(ev.wait(), retry_min)
                except asyncio.TimeoutError:
                    pass
        finally:
            for t in sending:
                t.cancel()

    async def _send(self, client_id: str, conn: SmppConnection, item: OutboxItem, ev: asyncio.Event) -> None:
        cfg = self.config.dlr
        inflight = self._inflight[client_id]
        try:
            try:
                pdu = decode_pdu(item.pdu)
            except Exception:
                log.error("outbox item %s is not a valid PDU; discarding", item.item_id)
                await self._done(client_id, item)
                return
            lost = False
            try:
                resp = await conn.request(pdu)
                ok = resp.command_status == Status.ROK
                why = f"status {resp.command_status:#x}"
            except RequestTimeout as exc:
                ok, why = False, str(exc)
            except ConnectionLost as exc:  # the client unbound: not the item's fault, no backoff
                ok, why, lost = False, str(exc), True
            if ok:
                await self._done(client_id, item)
                if self.metrics:
                    self.metrics.child(self.metrics.dlr, "relayed").inc()
                return
            delay = cfg.retry_min_s if lost else min(
                cfg.retry_max_s, cfg.retry_min_s * (2 ** min(item.attempts, 20))
            )
            log.info("delivery to %s failed (%s); retry in %.1fs", client_id, why, delay)
            await self.store.outbox_retry(item.item_id, time.time() + delay)
            if self.metrics:
                self.metrics.child(self.metrics.dlr, "retried").inc()
        except Exception:
            log.exception("outbox delivery of item %s to %s failed", item.item_id, client_id)
        finally:
            inflight.discard(item.item_id)
            ev.set()

    async def _done(self, client_id: str, item: OutboxItem) -> None:
        if await self.store.outbox_done(item.item_id):
            self._backlog[client_id] = max(0, self._backlog.get(client_id, 1) - 1)
            if self.metrics:
                self.metrics.outbox_pending.dec()


class DeliveryRelay:
    """Handles deliver_sm / data_sm arriving from upstreams (receipts and MO)."""

    def __init__(
        self,
        config: ProxyConfig,
        store: Store,
        outbox: Outbox,
        metrics: ProxyMetrics | None = None,
    ):
        self.config = config
        self.store = store
        self.outbox = outbox
        self.metrics = metrics

    def update(self, config: ProxyConfig) -> None:
        self.config = config

    async def on_deliver(self, upstream: str, conn: SmppConnection, pdu: Pdu) -> None:
        try:
            if is_receipt(pdu):
                status = await self._receipt(upstream, pdu)
            else:
                status = await self._mo(pdu)
        except Exception:
            log.exception("failed to handle %s from upstream %s", pdu.name, upstream)
            status = int(Status.RSYSERR)  # the upstream will retry: nothing is lost
        conn.respond(pdu.response(status))

    async def lookup(self, upstream: str, message_id: str) -> MessageRecord | None:
        """Find the message of a receipt; waits briefly for a submit_sm_resp still in flight."""
        cands = id_candidates(message_id)
        deadline = time.monotonic() + self.config.dlr.unmatched_grace_s
        delay = 0.02
        while True:
            rec = await self.store.find_by_upstream_id(upstream, cands)
            if rec is not None or time.monotonic() >= deadline:
                return rec
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)

    async def _receipt(self, upstream: str, pdu: Pdu) -> int:
        m = self.metrics
        if m:
            m.child(m.dlr, "received").inc()
        info = parse_receipt(pdu)
        rec = await self.lookup(upstream, info.message_id) if info.message_id else None
        if rec is None:
            log.warning("receipt from %s for unknown message id %r", upstream, info.message_id)
            if m:
                m.child(m.dlr, "unmatched").inc()
            return int(Status.ROK)  # answered and counted; the upstream must not retry forever
        out = pdu.copy()
        rewrite_receipt_id(out, rec.proxy_id)
        event = await self.outbox.deliver(rec.client_id, out)
        if m:
            m.child(m.dlr, event).inc()
        return int(Status.ROK)

    def route_mo(self, destination: str) -> str | None:
        best, best_len = None, -1
        for c in self.config.clients:
            for prefix in c.mo_prefixes:
                if destination.startswith(prefix) and len(prefix) > best_len:
                    best, best_len = c.system_id, len(prefix)
        return best

    async def _mo(self, pdu: Pdu) -> int:
        dst = str(pdu.params.get("destination_addr", ""))
        client = self.route_mo(dst)
        if client is None:
            log.warning("MO to %r matches no client's mo_prefixes", dst)
            if self.metrics:
                self.metrics.child(self.metrics.mo, "unmatched").inc()
            return self.config.dlr.unmatched_mo_status
        event = await self.outbox.deliver(client, pdu)
        if self.metrics:
            self.metrics.child(self.metrics.mo, event).inc()
        return int(Status.ROK)
