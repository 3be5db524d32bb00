"""The SMSC-facing server: client binds, authentication, admission control, dispatch.

A client (carrier ESME) connects and binds; we check ``clients:`` from the config (system_id,
password in constant time, source IP, bind count). Bound transmitters' submits pass the
per-client throughput bucket and go to the ``SubmitHandler`` (the forwarder, or the filtering
pipeline); the session layer already enforces bind state and the per-bind window.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from .config import ClientConfig, ProxyConfig
from .constants import CommandId, Status
from .metrics import ProxyMetrics
from .pdu import Pdu
from .session import BIND_COMMANDS, BindState, Role, SmppSession
from .transport import SmppConnection

log = logging.getLogger(__name__)

SUBMIT_COMMANDS = frozenset(
    int(c) for c in (CommandId.SUBMIT_SM, CommandId.DATA_SM, CommandId.SUBMIT_MULTI)
)
CONTROL_COMMANDS = frozenset(
    int(c) for c in (CommandId.QUERY_SM, CommandId.CANCEL_SM, CommandId.REPLACE_SM)
)
MAX_BIND_FAILURES = 3
_BIND_NAMES = {
    int(CommandId.BIND_TRANSMITTER): "transmitter",
    int(CommandId.BIND_RECEIVER): "receiver",
    int(CommandId.BIND_TRANSCEIVER): "transceiver",
}


class SubmitHandler(Protocol):
    async def handle_submit(self, client: ClientConfig, conn: SmppConnection, pdu: Pdu) -> Pdu:
        """Return the response to send for a submit_sm / data_sm / submit_multi."""
        ...

    async def handle_control(self, client: ClientConfig, conn: SmppConnection, pdu: Pdu) -> Pdu:
        """Return the response to a query_sm / cancel_sm / replace_sm."""
        ...


class TokenBucket:
    """Requests per second with a one-second burst; shared by all binds of a client."""

    def __init__(self, rate: float):
        self.rate = rate
        self.capacity = max(1.0, rate)
        self.tokens = self.capacity
        self.stamp = time.monotonic()

    def take(self) -> bool:
        if self.rate <= 0:
            return True
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


@dataclass
class ClientState:
    config: ClientConfig
    bucket: TokenBucket
    conns: list[SmppConnection] = field(default_factory=list)

    def receivers(self) -> list[SmppConnection]:
        return [c for c in self.conns if c.is_open and c.session.state.can_receive]


class ClientRegistry:
    """Bound client sessions by system_id, and per-client shared state (throughput bucket)."""

    def __init__(self, config: ProxyConfig):
        self._states: dict[str, ClientState] = {}
        self.bind_listeners: list[Callable[[str, SmppConnection], None]] = []
        self.update(config)

    def update(self, config: ProxyConfig) -> None:
        """Apply a new client list (SIGHUP): existing binds stay, settings change in place."""
        new: dict[str, ClientState] = {}
        for c in config.clients:
            old = self._states.get(c.system_id)
            if old is not None:
                old.config = c
                if old.bucket.rate != c.throughput:
                    old.bucket = TokenBucket(c.throughput)
                for conn in old.conns:
                    conn.session.inbound_window = c.window
                new[c.system_id] = old
            else:
                new[c.system_id] = ClientState(c, TokenBucket(c.throughput))
        for sid, st in self._states.items():
            if sid not in new:  # removed from the config: its binds are unbound
                log.warning("client %s removed from the configuration; unbinding %d session(s)",
                            sid, len(st.conns))
                for conn in list(st.conns):
                    asyncio.ensure_future(conn.unbind(2.0))
        self._states = new

    def get(self, system_id: str) -> ClientState | None:
        return self._states.get(system_id)

    def add(self, system_id: str, conn: SmppConnection) -> None:
        st = self._states.get(system_id)
        if st is not None:
            st.conns.append(conn)
            for cb in self.bind_listeners:
                cb(system_id, conn)

    def remove(self, system_id: str, conn: SmppConnection) -> None:
        st = self._states.get(system_id)
        if st is not None and conn in st.conns:
            st.conns.remove(conn)

    def all_connections(self) -> list[SmppConnection]:
        return [c for st in self._states.values() for c in st.conns]


class _ClientHandler:
    def __init__(self, server: SmppServer):
        self.server = server
        self.client: ClientState | None = None
        self.bind_failures = 0

    def on_request(self, conn: SmppConnection, pdu: Pdu) -> None:
        cid = pdu.command_id
        srv = self.server
        if cid in BIND_COMMANDS:
            self._bind(conn, pdu)
        elif cid == CommandId.UNBIND:
            conn.respond(pdu.response(Status.ROK))
            conn.close()
        elif cid in SUBMIT_COMMANDS:
            client = self.client
            assert client is not None  # the session only lets bound transmitters submit
            if srv.draining:  # shutting down: a temporary error, the client resubmits elsewhere
                conn.respond(pdu.response(Status.RSYSERR))
                return
            if not client.bucket.take():
                if srv.metrics:
                    srv.metrics.child(srv.metrics.submits, client.config.system_id, "throttled").inc()
                conn.respond(pdu.response(Status.RTHROTTLED))
                return
            srv._spawn(self._submit(conn, client, pdu))
        elif cid in CONTROL_COMMANDS:
            assert self.client is not None
            srv._spawn(self._control(conn, self.client, pdu))
        else:
            conn.respond(pdu.response(Status.RINVCMDID))

    async def _submit(self, conn: SmppConnection, client: ClientState, pdu: Pdu) -> None:
        t0 = time.perf_counter()
        try:
            resp = await self.server.handler.handle_submit(client.config, conn, pdu)
        except Exception:
            log.exception("submit handler failed")
            resp = pdu.response(Status.RSYSERR)
        conn.respond(resp)
        m = self.server.metrics
        if m:
            m.child(m.submit_latency, client.config.system_id).observe(time.perf_counter() - t0)

    async def _control(self, conn: SmppConnection, client: ClientState, pdu: Pdu) -> None:
        try:
            resp = await self.server.handler.handle_control(client.config, conn, pdu)
        except Exception:
            log.exception("control handler failed")
            resp = pdu.response(Status.RSYSERR)
        conn.respond(resp)

    def _bind(self, conn: SmppConnection, pdu: Pdu) -> None:
        srv = self.server
        system_id = str(pdu.params.get("system_id", ""))
        password = str(pdu.params.get("password", ""))
        state = srv.registry.get(system_id)
        cfg = state.config if state else None
        # Compare against something even for unknown ids so timing reveals nothing.
        pw_ok = hmac.compare_digest(
            password.encode("latin-1", "replace"),
            (cfg.password if cfg else "\x00invalid").encode("latin-1", "replace"),
        )
        if state is None or cfg is None:
            status = Status.RINVSYSID
        elif not cfg.ip_allowed(conn.peer_ip):
            status = Status.RBINDFAIL
        elif not pw_ok:
            status = Status.RINVPASWD
        elif len([c for c in state.conns if c.is_open]) >= cfg.max_binds:
            status = Status.RBINDFAIL
        else:
            status = Status.ROK
        if status != Status.ROK:
            log.warning(
                "bind refused: system_id=%r from %s status=%#x", system_id, conn.peer_ip, int(status)
            )
            if srv.metrics:
                srv.metrics.child(srv.metrics.bind_failures, f"{int(status):#04x}").inc()
            conn.respond(pdu.response(status))
            self.bind_failures += 1
            if self.bind_failures >= MAX_BIND_FAILURES:
                conn.close()
            return
        conn.respond(conn.session.accept_bind(pdu, srv.config.server.system_id))
        conn.session.inbound_window = cfg.window  # type: ignore[union-attr]
        conn.system_id = system_id
        self.client = state
        bind_name = _BIND_NAMES[pdu.command_id]
        log.info("client %s bound as %s from %s:%s", system_id, bind_name, conn.peer_ip, conn.peer_port)
        if srv.metrics:
            srv.metrics.child(srv.metrics.bound_sessions, system_id, bind_name).inc()
        self._bind_name = bind_name
        srv.registry.add(system_id, conn)

    def on_closed(self, conn: SmppConnection, exc: Exception | None) -> None:
        srv = self.server
        srv._conns.discard(conn)
        if self.client is not None:
            sid = self.client.config.system_id
            srv.registry.remove(sid, conn)
            if srv.metrics:
                srv.metrics.child(srv.metrics.bound_sessions, sid, self._bind_name).dec()
            log.info("client %s session from %s:%s closed", sid, conn.peer_ip, conn.peer_port)


class SmppServer:
    def __init__(
        self,
        config: ProxyConfig,
        handler: SubmitHandler,
        registry: ClientRegistry,
        metrics: ProxyMetrics | None = None,
    ):
        self.config = config
        self.handler = handler
        self.registry = registry
        self.metrics = metrics
        self._server: asyncio.base_events.Server | None = None
        self._conns: set[SmppConnection] = set()
        self._tasks: set[asyncio.Task] = set()
        self.draining = False

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _make_conn(self) -> SmppConnection:
        s = self.config.server
        conn = SmppConnection(
            SmppSession(Role.SMSC, max_pdu_size=s.max_pdu_size),
            _ClientHandler(self),
            self.metrics,
            "client",
            enquire_link_interval=s.enquire_link_interval_s,
            response_timeout=s.response_timeout_s,
        )
        self._conns.add(conn)
        loop = asyncio.get_running_loop()
        loop.call_later(s.bind_timeout_s, self._check_bound, conn)
        return conn

    def _check_bound(self, conn: SmppConnection) -> None:
        if conn.is_open and conn.session.state is BindState.OPEN:
            log.info("connection from %s:%s did not bind in time; closing", conn.peer_ip, conn.peer_port)
            conn.close()

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.sockets[0].getsockname()[1]

    async def start(self) -> None:
        s = self.config.server
        self._server = await asyncio.get_running_loop().create_server(
            self._make_conn, s.host, s.port, reuse_address=True
        )
        log.info("SMPP server listening on %s:%d", s.host, self.port)

    async def stop(self, timeout: float) -> None:
        """Stop accepting, let in-flight submits finish (bounded), then unbind every client."""
        if self._server is not None:
            self._server.close()
        self.draining = True
        deadline = asyncio.get_running_loop().time() + timeout
        while self._tasks:  # tasks started meanwhile are waited for too
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                log.warning("stopping with %d submits still in flight", len(self._tasks))
                break
            await asyncio.wait(list(self._tasks), timeout=left)
        await asyncio.gather(*(c.unbind(2.0) for c in list(self._conns)), return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
