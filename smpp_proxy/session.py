"""Sans-I/O SMPP session state machine.

``SmppSession`` takes bytes (``receive_data``) and returns events; it takes PDUs (``send``) and
returns bytes. It knows nothing about sockets or time: the asyncio layer (``smpp_proxy.transport``)
sits on top. It owns what the SMPP 3.4 spec says about one connection:

- framing, and what to answer to a malformed PDU (generic_nack or the command's resp);
- the bind state (open → bound_tx / bound_rx / bound_trx → unbound → closed) and which
  commands are legal in each state, for either role (we are the SMSC to our clients and the
  ESME to our upstreams);
- sequence numbers of the requests we send and the matching of responses to them;
- the inbound window: more unanswered submits than allowed are refused with ESME_RMSGQFUL.

Protocol errors that need an answer come back as ``ProtocolError`` events holding the reply to
send; the caller sends it (and closes if ``close`` is set), so policy stays out of this module.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from .constants import CommandId, Status, Tag
from .framing import Framer, FramingError
from .pdu import Pdu, PduError, decode_pdu

GENERIC_NACK = int(CommandId.GENERIC_NACK)
RESP_BIT = 0x80000000


class Role(enum.Enum):
    SMSC = "smsc"  # we accept binds (our clients connect to us)
    ESME = "esme"  # we bind to a peer (the upstream SMSC)


class BindState(enum.Enum):
    OPEN = "open"
    BOUND_TX = "bound_tx"
    BOUND_RX = "bound_rx"
    BOUND_TRX = "bound_trx"
    UNBOUND = "unbound"  # unbind sent or received: only the unbind handshake remains
    CLOSED = "closed"

    @property
    def bound(self) -> bool:
        return self in (BindState.BOUND_TX, BindState.BOUND_RX, BindState.BOUND_TRX)

    @property
    def can_transmit(self) -> bool:  # the ESME side may submit
        return self in (BindState.BOUND_TX, BindState.BOUND_TRX)

    @property
    def can_receive(self) -> bool:  # the ESME side may be sent deliver_sm
        return self in (BindState.BOUND_RX, BindState.BOUND_TRX)


BIND_STATE_FOR = {
    int(CommandId.BIND_TRANSMITTER): BindState.BOUND_TX,
    int(CommandId.BIND_RECEIVER): BindState.BOUND_RX,
    int(CommandId.BIND_TRANSCEIVER): BindState.BOUND_TRX,
}
BIND_COMMANDS = frozenset(BIND_STATE_FOR)

# Requests an ESME sends, allowed when the ESME is bound as transmitter (or transceiver).
_ESME_TX_REQUESTS = frozenset(
    int(c)
    for c in (
        CommandId.SUBMIT_SM,
        CommandId.SUBMIT_MULTI,
        CommandId.DATA_SM,
        CommandId.QUERY_SM,
        CommandId.CANCEL_SM,
        CommandId.REPLACE_SM,
    )
)
# Requests an SMSC sends, allowed when the ESME is bound as receiver (or transceiver).
_SMSC_RX_REQUESTS = frozenset(
    int(c) for c in (CommandId.DELIVER_SM, CommandId.DATA_SM, CommandId.ALERT_NOTIFICATION)
)
_WINDOWED = frozenset(int(c) for c in (CommandId.SUBMIT_SM, CommandId.SUBMIT_MULTI, CommandId.DATA_SM))
_ANY_STATE = frozenset(int(c) for c in (CommandId.ENQUIRE_LINK, CommandId.GENERIC_NACK))
# Requests the spec gives no response PDU: a refusal has to be a generic_nack.
_NO_RESPONSE = frozenset(int(c) for c in (CommandId.OUTBIND, CommandId.ALERT_NOTIFICATION))


def refusal(command_id: int, sequence_number: int, status: int) -> Pdu:
    """The PDU refusing a request: its *_resp with ``status`` (with the body the spec gives
    that response), or a generic_nack for commands that have no response."""
    if command_id in _NO_RESPONSE or command_id & RESP_BIT:
        return Pdu(GENERIC_NACK, status, sequence_number)
    return Pdu(command_id, 0, sequence_number).response(status)


# ---------------------------------------------------------------------------- events

@dataclass
class RequestReceived:
    pdu: Pdu


@dataclass
class ResponseReceived:
    pdu: Pdu
    request: Pdu | None  # the request it answers; None when nothing was pending under that number
    context: Any = None  # what the sender attached to the request


@dataclass
class ProtocolError:
    reason: str
    reply: Pdu | None  # what to send back (already accounted for by the session)
    close: bool = False  # the connection cannot continue (framing lost, or peer misbehaved)
    command_id: int = 0


Event = RequestReceived | ResponseReceived | ProtocolError


@dataclass
class _Pending:
    pdu: Pdu
    context: Any
    sent_at: float


@dataclass
class SmppSession:
    role: Role
    max_pdu_size: int = 65536
    inbound_window: int = 0  # 0: unlimited
    state: BindState = BindState.OPEN
    _framer: Framer = field(init=False)
    _next_seq: int = field(init=False, default=1)
    _pending: dict[int, _Pending] = field(init=False, default_factory=dict)
    _unanswered: set[int] = field(init=False, default_factory=set)  # inbound windowed requests

    def __post_init__(self) -> None:
        self._framer = Framer(self.max_pdu_size)

    # ------------------------------------------------------------------ outgoing
    def next_sequence(self) -> int:
        seq = self._next_seq
        self._next_seq = 1 if seq >= 0x7FFFFFFF else seq + 1
        return seq

    def send_request(self, pdu: Pdu, context: Any = None, now: float = 0.0) -> bytes:
        """Assign a sequence number to a request, remember it as pending, return its bytes."""
        if pdu.command_id & RESP_BIT:
            raise ValueError("send_request() takes requests; use send_response()")
        if self.state is BindState.CLOSED:
            raise ConnectionError("session closed")
        pdu.sequence_number = self.next_sequence()
        self._pending[pdu.sequence_number] = _Pending(pdu, context, now)
        if pdu.command_id == CommandId.UNBIND:
            self.state = BindState.UNBOUND
        return pdu.encode()

    def send_response(self, pdu: Pdu) -> bytes:
        """Bytes of a response (or generic_nack); frees the inbound window slot it answers."""
        self._unanswered.discard(pdu.sequence_number)
        if pdu.command_id == CommandId.UNBIND_RESP:
            self.state = BindState.UNBOUND
        return pdu.encode()

    def pending_count(self) -> int:
        return len(self._pending)

    def unanswered_count(self) -> int:
        return len(self._unanswered)

    def pop_pending(self, seq: int) -> tuple[Pdu, Any] | None:
        """Forget a request we will no longer wait for (timed out); returns it and its context."""
        p = self._pending.pop(seq, None)
        return (p.pdu, p.context) if p else None

    def expired(self, before: float) -> list[int]:
        """Sequence numbers of pending requests sent before ``before``."""
        return [s for s, p in self._pending.items() if p.sent_at < before]

    def drain_pending(self) -> list[tuple[Pdu, Any]]:
        out = [(p.pdu, p.context) for p in self._pending.values()]
        self._pending.clear()
        return out

    # ------------------------------------------------------------------ bind decisions
    def accept_bind(self, request: Pdu, system_id: str) -> Pdu:
        """SMSC role: the response accepting ``request``; moves to the bound state."""
        self.state = BIND_STATE_FOR[request.command_id]
        resp = request.response(Status.ROK, system_id=system_id)
        # tells the ESME we speak 3.4, so it may send optional parameters (SMPP 3.4 5.3.2.25)
        resp.set_tlv(Tag.SC_INTERFACE_VERSION, b"\x34")
        return resp

    def bind_accepted(self, bind_command_id: int) -> None:
        """ESME role: the peer accepted our bind."""
        self.state = BIND_STATE_FOR[bind_command_id]

    def close(self) -> None:
        self.state = BindState.CLOSED

    # ------------------------------------------------------------------ incoming
    def receive_data(self, data: bytes) -> list[Event]:
        if self.state is BindState.CLOSED:
            return []
        events: list[Event] = []
        try:
            frames = self._framer.feed(data)
        except FramingError as exc:
            # Everything framed before the bad header is still handled, then we give up.
            frames = exc.pdus or []
            for frame in frames:
                events.extend(self._handle_frame(frame))
            nack = Pdu(GENERIC_NACK, int(Status.RINVCMDLEN), exc.sequence_number or 0)
            events.append(
                ProtocolError(f"impossible command_length {exc.command_length}", nack, close=True)
            )
            self.state = BindState.CLOSED
            return events
        for frame in frames:
            events.extend(self._handle_frame(frame))
        return events

    def _handle_frame(self, frame: bytes) -> list[Event]:
        try:
            pdu = decode_pdu(frame)
        except PduError as exc:
            return [self._decode_error(exc)]
        cid = pdu.command_id
        if cid & RESP_BIT:  # generic_nack included: it refuses the request under its number
            return [self._response(pdu)]
        return [self._request(pdu)]

    def _decode_error(self, exc: PduError) -> Event:
        cid = exc.command_id
        seq = exc.sequence_number
        if cid & RESP_BIT:
            # A response we cannot parse: fail the request it answers rather than hang it.
            pending = self._pending.pop(seq, None)
            nack = Pdu(GENERIC_NACK, int(exc.status) or int(Status.RSYSERR), seq)
            if pending is not None:
                return ResponseReceived(nack, pending.pdu, pending.context)
            return ProtocolError(f"undecodable {cid:#010x}: {exc}", None, command_id=cid)
        if exc.status == Status.RINVCMDID:
            reply = Pdu(GENERIC_NACK, int(Status.RINVCMDID), seq)
        else:
            reply = refusal(cid, seq, int(exc.status))
        return ProtocolError(f"malformed {cid:#010x}: {exc}", reply, command_id=cid)

    def _response(self, pdu: Pdu) -> Event:
        pending = self._pending.pop(pdu.sequence_number, None)
        if pending is None:
            return ResponseReceived(pdu, None, None)
        return ResponseReceived(pdu, pending.pdu, pending.context)

    def _request(self, pdu: Pdu) -> Event:
        cid = pdu.command_id
        seq = pdu.sequence_number
        status = self._check_state(cid)
        if status is not None:
            return ProtocolError(
                f"{pdu.name} not allowed in state {self.state.value}",
                refusal(cid, seq, status),
                command_id=cid,
            )
        if cid in _WINDOWED and self.role is Role.SMSC:
            if self.inbound_window and len(self._unanswered) >= self.inbound_window:
                return ProtocolError(
                    "window exceeded", refusal(cid, seq, int(Status.RMSGQFUL)), command_id=cid
                )
            self._unanswered.add(seq)
        if cid == CommandId.UNBIND:
            self.state = BindState.UNBOUND
        return RequestReceived(pdu)

    def _check_state(self, cid: int) -> int | None:
        """The command_status refusing command ``cid`` in the current state, or None if legal."""
        if cid in _ANY_STATE:
            return None
        st = self.state
        if cid in BIND_COMMANDS:
            if self.role is Role.ESME:
                return int(Status.RINVCMDID)
            return None if st is BindState.OPEN else int(Status.RALYBND)
        if cid == CommandId.OUTBIND:
            return None if (self.role is Role.ESME and st is BindState.OPEN) else int(Status.RINVBNDSTS)
        if cid == CommandId.UNBIND:
            return None if st.bound else int(Status.RINVBNDSTS)
        if self.role is Role.SMSC:
            # The peer is an ESME: it may send transmitter requests when bound to transmit.
            if cid in _ESME_TX_REQUESTS:
                return None if st.can_transmit else int(Status.RINVBNDSTS)
            return int(Status.RINVCMDID)
        # We are the ESME: the SMSC may deliver to us when we are bound to receive.
        if cid in _SMSC_RX_REQUESTS:
            return None if st.can_receive else int(Status.RINVBNDSTS)
        return int(Status.RINVCMDID)
