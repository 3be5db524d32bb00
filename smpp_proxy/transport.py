"""asyncio transport for one SMPP connection, on top of the sans-I/O ``SmppSession``.

``SmppConnection`` is an ``asyncio.Protocol``: bytes in go to the session, events out go to a
handler; ``request()`` sends a request and awaits its response (with a timeout);
``respond()`` sends a response. An enquire_link keeper probes an idle peer and closes the
connection when the peer stops answering. The handler is the application (server side:
``smpp_proxy.server``; upstream side: ``smpp_proxy.upstream``).

Hot-path choices (measured with bench/load.py under cProfile): writes made during one loop
iteration leave in one ``transport.write`` (a read of 64 pipelined submits produces one send()
of 64 responses, not 64 system calls; latency is unchanged since the flush runs in the same
iteration), and request timeouts are enforced by one sweeper per connection over a dict of
deadlines instead of a TimerHandle per request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Protocol

from .constants import CommandId, Status, command_name
from .metrics import ProxyMetrics
from .pdu import Pdu
from .session import (
    BindState,
    ProtocolError,
    RequestReceived,
    ResponseReceived,
    SmppSession,
)

log = logging.getLogger(__name__)


class RequestTimeout(Exception):
    """The peer did not answer a request in time."""


class ConnectionLost(ConnectionError):
    """The connection closed before the response arrived."""


class ConnectionHandler(Protocol):
    def on_request(self, conn: SmppConnection, pdu: Pdu) -> None: ...

    def on_closed(self, conn: SmppConnection, exc: Exception | None) -> None: ...


class SmppConnection(asyncio.Protocol):
    def __init__(
        self,
        session: SmppSession,
        handler: ConnectionHandler,
        metrics: ProxyMetrics | None,
        side: str,
        *,
        enquire_link_interval: float = 30.0,
        response_timeout: float = 10.0,
    ):
        self.session = session
        self.handler = handler
        self.metrics = metrics
        self.side = side
        self.enquire_link_interval = enquire_link_interval
        self.response_timeout = response_timeout
        self.transport: asyncio.Transport | None = None
        self.peer_ip: str = ""
        self.peer_port: int = 0
        self.last_rx = time.monotonic()
        self.closed = asyncio.Event()
        self.system_id: str = ""  # the peer's (server side) or ours (upstream side) once bound
        self._deadlines: dict[int, float] = {}  # seq -> monotonic deadline of pending requests
        self._sweeper: asyncio.TimerHandle | None = None
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self._keeper: asyncio.Task | None = None
        self._can_write = asyncio.Event()
        self._can_write.set()
        self._loop = asyncio.get_event_loop()

    # ------------------------------------------------------------------ asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCPTransport is not an asyncio.Transport subclass: no isinstance check here.
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        if peer:
            self.peer_ip, self.peer_port = peer[0], peer[1]
        self._keeper = self._loop.create_task(self._keep_alive())

    def data_received(self, data: bytes) -> None:
        self.last_rx = time.monotonic()
        for ev in self.session.receive_data(data):
            if isinstance(ev, RequestReceived):
                self._count("in", ev.pdu)
                if ev.pdu.command_id == CommandId.ENQUIRE_LINK:
                    self.respond(ev.pdu.response(Status.ROK))
                    continue
                try:
                    self.handler.on_request(self, ev.pdu)
                except Exception:  # a handler bug must not kill the connection silently
                    log.exception("%s: handler failed on %s", self.side, ev.pdu.name)
                    self.respond(ev.pdu.response(Status.RSYSERR))
            elif isinstance(ev, ResponseReceived):
                self._count("in", ev.pdu)
                self._deadlines.pop(ev.pdu.sequence_number, None)
                fut = ev.context
                if isinstance(fut, asyncio.Future) and not fut.done():
                    fut.set_result(ev.pdu)
                elif ev.request is None:
                    log.debug("%s: unsolicited %s seq=%d", self.side, ev.pdu.name, ev.pdu.sequence_number)
            elif isinstance(ev, ProtocolError):
                log.warning("%s %s:%s protocol error: %s", self.side, self.peer_ip, self.peer_port, ev.reason)
                if self.metrics:
                    reason = "framing" if ev.close else (
                        f"status_{ev.reply.command_status:#04x}" if ev.reply else "response"
                    )
                    self.metrics.protocol_errors.labels(self.side, reason).inc()
                if ev.reply is not None:
                    self.respond(ev.reply)
                if ev.close:
                    self.close()
                    return

    def connection_lost(self, exc: Exception | None) -> None:
        self.session.close()
        self._out.clear()
        if self._sweeper is not None:
            self._sweeper.cancel()
        self._deadlines.clear()
        for _pdu, fut in self.session.drain_pending():
            if isinstance(fut, asyncio.Future) and not fut.done():
                fut.set_exception(ConnectionLost("connection closed"))
        if self._keeper is not None:
            self._keeper.cancel()
        self._can_write.set()
        self.closed.set()
        try:
            self.handler.on_closed(self, exc)
        except Exception:
            log.exception("%s: on_closed handler failed", self.side)

    def pause_writing(self) -> None:
        self._can_write.clear()

    def resume_writing(self) -> None:
        self._can_write.set()

    # ------------------------------------------------------------------ sending
    @property
    def is_open(self) -> bool:
        return self.transport is not None and not self.closed.is_set() and (
            self.session.state is not BindState.CLOSED
        )

    def _count(self, direction: str, pdu: Pdu) -> None:
        if self.metrics:
            self.metrics.pdu(self.side, direction, command_name(pdu.command_id), pdu.command_status)

    def respond(self, pdu: Pdu) -> None:
        # Not is_open: the last words to a peer whose framing broke (generic_nack 0x02) are
        # still written while the session is already closed; transport.close() flushes them.
        if self.transport is None or self.transport.is_closing():
            return
        data = self.session.send_response(pdu)
        self._count("out", pdu)
        self._write(data)

    def _write(self, data: bytes) -> None:
        self._out.append(data)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        out = self._out
        if not out:
            return
        self._out = []
        t = self.transport
        if t is not None and not t.is_closing():
            t.write(out[0] if len(out) == 1 else b"".join(out))

    def send_request_nowait(self, pdu: Pdu, timeout: float | None = None) -> asyncio.Future:
        """Send a request; return a future resolved with the response PDU.

        The future fails with RequestTimeout after ``timeout`` and ConnectionLost if the
        connection goes away first.
        """
        if not self.is_open:
            raise ConnectionLost("connection not open")
        fut: asyncio.Future = self._loop.create_future()
        now = time.monotonic()
        data = self.session.send_request(pdu, fut, now)
        self._deadlines[pdu.sequence_number] = now + (
            self.response_timeout if timeout is None else timeout
        )
        if self._sweeper is None:
            self._arm_sweeper()
        self._count("out", pdu)
        self._write(data)
        return fut

    async def request(self, pdu: Pdu, timeout: float | None = None) -> Pdu:
        if not self._can_write.is_set():
            # the peer stopped reading: wait for room, but no longer than a response would take
            limit = self.response_timeout if timeout is None else timeout
            try:
                await asyncio.wait_for(self._can_write.wait(), limit)
            except asyncio.TimeoutError:
                raise RequestTimeout(f"peer not reading; {pdu.name} not sent") from None
            if not self.is_open:
                raise ConnectionLost("connection closed")
        return await self.send_request_nowait(pdu, timeout)

    @property
    def writable(self) -> bool:
        """Open and not paused by a full write buffer (a peer that stopped reading)."""
        return self._can_write.is_set() and self.is_open

    def _arm_sweeper(self) -> None:
        # granularity: a tenth of the shortest timeout in use, at most 250 ms
        soonest = min(self._deadlines.values(), default=None)
        if soonest is None:
            self._sweeper = None
            return
        delay = max(0.005, min(0.25, soonest - time.monotonic()))
        self._sweeper = self._loop.call_later(delay, self._sweep)

    def _sweep(self) -> None:
        now = time.monotonic()
        expired = [seq for seq, dl in self._deadlines.items() if dl <= now]
        for seq in expired:
            del self._deadlines[seq]
            got = self.session.pop_pending(seq)
            if got is None:
                continue
            pdu, fut = got
            if isinstance(fut, asyncio.Future) and not fut.done():
                fut.set_exception(RequestTimeout(f"no response to {pdu.name} seq={seq}"))
        self._arm_sweeper()

    # ------------------------------------------------------------------ keep-alive / close
    async def _keep_alive(self) -> None:
        try:
            while self.is_open:
                idle = time.monotonic() - self.last_rx
                if idle < self.enquire_link_interval:
                    await asyncio.sleep(self.enquire_link_interval - idle)
                    continue
                if not self.session.state.bound:
                    # never bound within the interval: a dead or hostile peer
                    if self.side == "client":
                        log.info("client %s:%s did not bind in time; closing", self.peer_ip, self.peer_port)
                        self.close()
                        return
                try:
                    await self.request(Pdu(int(CommandId.ENQUIRE_LINK)))
                except (RequestTimeout, ConnectionLost):
                    log.warning(
                        "%s %s:%s (%s) stopped answering enquire_link; closing",
                        self.side, self.peer_ip, self.peer_port, self.system_id,
                    )
                    self.close()
                    return
                self.last_rx = time.monotonic()
        except asyncio.CancelledError:
            pass

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self._flush()
            self.transport.close()
            # close() waits for the write buffer to drain: a peer that stopped reading would
            # keep the connection (and its bind slot) forever, so abort after a short grace
            self._loop.call_later(2.0, self._abort_if_lingering)
        self.session.close()

    def _abort_if_lingering(self) -> None:
        if not self.closed.is_set() and self.transport is not None:
            log.warning("%s %s:%s did not drain on close; aborting", self.side, self.peer_ip, self.peer_port)
            self._out.clear()
            self.transport.abort()

    async def unbind(self, timeout: float = 5.0) -> None:
        """Polite close: unbind, wait for unbind_resp (bounded), then close."""
        if self.is_open and self.session.state.bound:
            try:
                await self.request(Pdu(int(CommandId.UNBIND)), timeout)
            except (RequestTimeout, ConnectionLost):
                pass
        self.close()
        try:
            await asyncio.wait_for(self.closed.wait(), timeout)
        except asyncio.TimeoutError:
            if self.transport is not None:
                self._out.clear()
                self.transport.abort()
