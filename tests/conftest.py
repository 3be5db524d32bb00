"""Shared pytest fixtures.

SMSC simulator / SMPP clients (real sockets on 127.0.0.1):

* ``simulator``: a started :class:`smpp_proxy.simulator.Simulator` on an ephemeral port
  (receipt delay 50 ms), stopped after the test. Change its behaviour at run time with
  ``simulator.set_fault(...)`` / ``simulator.configure(...)``.
* ``make_simulator``: ``await make_simulator(**SimulatorConfig fields)`` for other settings
  (several allowed); all stopped after the test.
* ``smpplib_client``: async factory ``await smpplib_client(port, **kw) -> SmpplibClient``
  (connected and bound); every client is closed after the test.
* ``smpplib_client_sync``: the same, blocking, for servers in another process.
* ``async_esme``: async factory ``await async_esme(port, **kw) -> AsyncEsme``: our own
  SmppSession/SmppConnection ESME, for byte-exact PDUs (vendor TLVs, data_sm).
* :class:`SmpplibClient`: a blocking smpplib ESME with a reader thread. Its methods block, so
  from an async test call them through ``asyncio.to_thread`` (the simulator runs in the test's
  event loop and must keep running meanwhile).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_asyncio

from smpp_proxy.simulator import Simulator, SimulatorConfig

# ---------------------------------------------------------------------------- simulator


@pytest_asyncio.fixture
async def simulator():
    sim = Simulator(SimulatorConfig(host="127.0.0.1", port=0, receipt_delay_s=0.05))
    await sim.start()
    try:
        yield sim
    finally:
        await sim.stop(unbind_timeout=1.0)


@pytest_asyncio.fixture
async def make_simulator():
    sims: list[Simulator] = []

    async def make(**settings: Any) -> Simulator:
        settings.setdefault("host", "127.0.0.1")
        settings.setdefault("port", 0)
        settings.setdefault("receipt_delay_s", 0.05)
        sim = Simulator(SimulatorConfig(**settings))
        await sim.start()
        sims.append(sim)
        return sim

    try:
        yield make
    finally:
        for sim in sims:
            await sim.stop(unbind_timeout=1.0)


# ---------------------------------------------------------------------------- smpplib client


@dataclass
class SubmitResult:
    sequence: int
    command: str  # "submit_sm_resp" or "generic_nack"
    status: int
    message_id: str | None


class SmpplibClient:
    """smpplib ESME for tests: a reader thread answers deliver_sm / enquire_link / unbind and
    queues every deliver_sm in ``deliveries`` (a thread-safe ``queue.Queue`` of smpplib PDUs);
    ``submit()`` waits for the response with the same sequence number. Thread-safe sends.

    Blocking API: from async code use ``await asyncio.to_thread(client.submit, ...)``.
    """

    def __init__(self, host: str, port: int, *, system_id: str = "esme", password: str = "pw",
                 bind: str = "transceiver", timeout: float = 5.0):
        import smpplib.client

        self.host, self.port = host, port
        self.system_id, self.password, self.bind_mode = system_id, password, bind
        self.timeout = timeout
        self.client = smpplib.client.Client(
            host, port, timeout=timeout, allow_unknown_opt_params=True,
            logger_name=f"smpplib.test.{id(self):x}",
        )
        logging.getLogger(f"smpplib.test.{id(self):x}").setLevel(logging.WARNING)
        self.deliveries: queue.Queue = queue.Queue()
        self.deliver_status = 0  # command_status of our deliver_sm_resp (tests change it)
        self.answer_deliveries = True  # False: leave deliver_sm unanswered (timeouts)
        self.closed = threading.Event()  # the connection is gone (EOF, error or close())
        self.unbound_by_peer = threading.Event()
        self._send_lock = threading.Lock()
        self._waiters: dict[int, tuple[threading.Event, list]] = {}
        self._waiters_lock = threading.Lock()
        self._reader: threading.Thread | None = None

    # ------------------------------------------------------------------ setup / teardown
    def connect(self) -> Any:
        """Connect and bind (raises smpplib.exceptions.PDUError on refusal); start the reader."""
        self.client.connect()
        resp = getattr(self.client, f"bind_{self.bind_mode}")(
            system_id=self.system_id, password=self.password
        )
        self.client._socket.settimeout(None)  # the reader blocks; close() unblocks it
        self._reader = threading.Thread(target=self._read_loop, name="smpplib-reader", daemon=True)
        self._reader.start()
        return resp

    def close(self) -> None:
        sock = self.client._socket
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._reader is not None:
            self._reader.join(5)
        if self.client._socket is not None:
            self.client._socket.close()
            self.client._socket = None
        self.closed.set()

    # ------------------------------------------------------------------ sending
    def _send(self, pdu: Any) -> None:
        with self._send_lock:
            self.client._socket.sendall(pdu.generate())

    def _request(self, command: str, timeout: float | None, **kwargs: Any) -> Any:
        import smpplib.smpp

        pdu = smpplib.smpp.make_pdu(command, client=self.client, **kwargs)
        ev, box = threading.Event(), []
        with self._waiters_lock:
            self._waiters[pdu.sequence] = (ev, box)
        self._send(pdu)
        if not ev.wait(self.timeout if timeout is None else timeout):
            with self._waiters_lock:
                self._waiters.pop(pdu.sequence, None)
            raise TimeoutError(f"no response to {command} seq={pdu.sequence}")
        if not box:
            raise ConnectionError("connection closed while waiting for the response")
        return box[0]

    def submit(self, text: str | bytes = "hello", *, source: str = "12345",
               destination: str = "491701234567", registered_delivery: int = 1,
               timeout: float | None = None, **kwargs: Any) -> SubmitResult:
        """submit_sm; wait for its submit_sm_resp (or generic_nack). TimeoutError if none."""
        sm = text.encode("latin-1") if isinstance(text, str) else text
        kwargs.setdefault("source_addr_ton", 1)
        kwargs.setdefault("source_addr_npi", 1)
        kwargs.setdefault("dest_addr_ton", 1)
        kwargs.setdefault("dest_addr_npi", 1)
        resp = self._request(
            "submit_sm", timeout, source_addr=source, destination_addr=destination,
            short_message=sm, registered_delivery=registered_delivery, **kwargs,
        )
        mid = getattr(resp, "message_id", None)
        if isinstance(mid, bytes):
            mid = mid.decode("latin-1")
        return SubmitResult(resp.sequence, resp.command, int(resp.status), mid or None)

    def enquire_link(self, timeout: float | None = None) -> Any:
        return self._request("enquire_link", timeout)

    def unbind(self, timeout: float | None = None) -> Any:
        return self._request("unbind", timeout)

    # ------------------------------------------------------------------ receiving
    def receipts(self, n: int = 1, timeout: float = 5.0) -> list[Any]:
        """The next ``n`` deliver_sm (receipts or MO); TimeoutError if they do not come."""
        out = []
        deadline = time.monotonic() + timeout
        for _ in range(n):
            left = deadline - time.monotonic()
            try:
                out.append(self.deliveries.get(timeout=max(left, 0.001)))
            except queue.Empty:
                raise TimeoutError(f"got {len(out)} of {n} deliver_sm in {timeout}s") from None
        return out

    next_deliveries = receipts

    def no_delivery_within(self, seconds: float) -> bool:
        try:
            self.deliveries.get(timeout=seconds)
        except queue.Empty:
            return True
        return False

    def _read_loop(self) -> None:
        import smpplib.smpp

        try:
            while True:
                pdu = self.client.read_pdu()
                cmd = pdu.command
                if cmd == "deliver_sm":
                    self.deliveries.put(pdu)
                    if not self.answer_deliveries:
                        continue
                    resp = smpplib.smpp.make_pdu(
                        "deliver_sm_resp", client=self.client, status=self.deliver_status
                    )
                    resp.sequence = pdu.sequence
                    self._send(resp)
                elif cmd == "enquire_link":
                    resp = smpplib.smpp.make_pdu("enquire_link_resp", client=self.client)
                    resp.sequence = pdu.sequence
                    self._send(resp)
                elif cmd == "unbind":
                    resp = smpplib.smpp.make_pdu("unbind_resp", client=self.client)
                    resp.sequence = pdu.sequence
                    self._send(resp)
                    self.unbound_by_peer.set()
                else:
                    with self._waiters_lock:
                        w = self._waiters.pop(pdu.sequence, None)
                    if w is not None:
                        w[1].append(pdu)
                        w[0].set()
        except Exception:  # EOF, reset, close(): the connection is over
            pass
        finally:
            self.closed.set()
            with self._waiters_lock:
                waiters, self._waiters = self._waiters, {}
            for ev, _box in waiters.values():
                ev.set()


@pytest_asyncio.fixture
async def smpplib_client():
    """``client = await smpplib_client(port, **SmpplibClient kwargs)``: connected and bound
    (in a thread, so the simulator in this event loop can answer). Pass ``connect=False`` to
    get it unconnected. All closed after the test."""
    clients: list[SmpplibClient] = []

    async def make(port: int, host: str = "127.0.0.1", connect: bool = True,
                   **kw: Any) -> SmpplibClient:
        c = SmpplibClient(host, port, **kw)
        clients.append(c)
        if connect:
            await asyncio.to_thread(c.connect)
        return c

    try:
        yield make
    finally:
        for c in clients:
            await asyncio.to_thread(c.close)


@pytest.fixture
def smpplib_client_sync():
    """Blocking factory for servers outside this event loop (subprocesses): ``c = f(port)``."""
    clients: list[SmpplibClient] = []

    def make(port: int, host: str = "127.0.0.1", connect: bool = True, **kw: Any) -> SmpplibClient:
        c = SmpplibClient(host, port, **kw)
        clients.append(c)
        if connect:
            c.connect()
        return c

    try:
        yield make
    finally:
        for c in clients:
            c.close()


# ---------------------------------------------------------------------------- our own asyncio ESME


class AsyncEsme:
    """A minimal asyncio ESME on the project's ``SmppSession(Role.ESME)`` + ``SmppConnection``:
    send any ``Pdu`` byte-exact (vendor TLVs, data_sm ...), ``deliveries`` is an
    ``asyncio.Queue`` of received deliver_sm (answered with ``deliver_status``)."""

    def __init__(self) -> None:
        self.conn: Any = None
        self.deliveries: asyncio.Queue = asyncio.Queue()
        self.deliver_status = 0
        self.closed = asyncio.Event()

    async def connect(self, port: int, host: str = "127.0.0.1", *, system_id: str = "esme",
                      password: str = "pw", command: int | None = None) -> Any:
        from smpp_proxy.constants import CommandId
        from smpp_proxy.pdu import Pdu
        from smpp_proxy.session import Role, SmppSession
        from smpp_proxy.simulator import CoalescingConnection

        cid = int(command if command is not None else CommandId.BIND_TRANSCEIVER)
        loop = asyncio.get_running_loop()
        _t, self.conn = await asyncio.wait_for(loop.create_connection(
            lambda: CoalescingConnection(SmppSession(Role.ESME), self, None, "upstream",
                                         response_timeout=5.0),
            host, port), 5)
        resp = await self.conn.request(Pdu(cid, params={
            "system_id": system_id, "password": password, "system_type": "",
            "interface_version": 0x34, "addr_ton": 0, "addr_npi": 0, "address_range": ""}), 5)
        if resp.command_status == 0:
            self.conn.session.bind_accepted(cid)
        return resp

    async def request(self, pdu: Any, timeout: float = 5.0) -> Any:
        return await self.conn.request(pdu, timeout)

    def on_request(self, conn: Any, pdu: Any) -> None:
        if pdu.name == "deliver_sm":
            conn.respond(pdu.response(self.deliver_status))
            self.deliveries.put_nowait(pdu)
        else:
            conn.respond(pdu.response(0))
            if pdu.name == "unbind":
                conn.close()

    def on_closed(self, conn: Any, exc: Exception | None) -> None:
        self.closed.set()

    async def close(self) -> None:
        if self.conn is not None:
            await self.conn.unbind(1.0)


@pytest_asyncio.fixture
async def async_esme():
    """Factory: ``esme = await async_esme(port, **connect kwargs)``; unbound after the test."""
    made: list[AsyncEsme] = []

    async def make(port: int, **kw: Any) -> AsyncEsme:
        e = AsyncEsme()
        made.append(e)
        resp = await e.connect(port, **kw)
        if resp.command_status != 0:
            raise ConnectionRefusedError(f"bind refused: {resp.command_status:#x}")
        return e

    try:
        yield make
    finally:
        for e in made:
            await e.close()


async def in_thread(fn, *args: Any, **kwargs: Any) -> Any:
    """``asyncio.to_thread`` shorthand for the blocking client calls."""
    return await asyncio.to_thread(fn, *args, **kwargs)


# ---------------------------------------------------------------------------- aiosmpplib ESME


@contextlib.asynccontextmanager
async def aiosmpplib_esme(port: int, *, system_id: str, password: str):
    """A running aiosmpplib ESME (the third-party asyncio client) bound to 127.0.0.1:``port``.

    Yields ``(esme, received)``: ``received`` is an ``asyncio.Queue`` of the SubmitSmResp and
    DeliverSm it gets, and of send errors. Stopped on exit.
    """
    from aiosmpplib import ESME, AbstractHook, DeliverSm, SubmitSmResp

    received: asyncio.Queue = asyncio.Queue()

    class Hook(AbstractHook):
        async def sending(self, smpp_message, pdu, client_id):
            pass

        async def received(self, smpp_message, pdu, client_id):
            if isinstance(smpp_message, (SubmitSmResp, DeliverSm)):
                received.put_nowait(smpp_message)

        async def send_error(self, smpp_message, error, client_id):
            received.put_nowait(error)

    esme = ESME(
        smsc_host="127.0.0.1", smsc_port=port, system_id=system_id, password=password,
        hook=Hook(), log_level=logging.WARNING, log_handler=logging.NullHandler(),
        socket_timeout=5.0,
    )
    task = asyncio.create_task(esme.start())
    try:
        yield esme, received
    finally:
        await asyncio.wait_for(esme.stop(), 5)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
