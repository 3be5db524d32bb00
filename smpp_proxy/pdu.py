"""Sans-I/O SMPP 3.4 PDU codec.

A :class:`Pdu` holds the 16-byte header fields, the mandatory body fields by their SMPP spec
name (``params``, in spec order) and the optional parameters (``tlvs``) in wire order. Decoding
then encoding a frame received from the wire gives back the identical bytes (TLVs, including
unknown and vendor ones, are kept raw), so the proxy can rewrite the sequence number (or any
single field) and forward everything else untouched.

Field representation (SMPP 3.4 section 4 and 5):

* Integer(1/2/4): ``int``.
* C-Octet String: ``str`` decoded as latin-1 (every byte maps to one code point, so any byte
  string survives the round trip). The maximum lengths of the spec include the NUL terminator.
* ``short_message``: ``bytes``; ``sm_length`` is derived on encode and never stored in params.
* submit_multi ``dest_address``: list of dicts, ``{"dest_flag": 1, "dest_addr_ton": int,
  "dest_addr_npi": int, "destination_addr": str}`` (SME address) or ``{"dest_flag": 2,
  "dl_name": str}`` (distribution list); ``number_of_dests`` is derived on encode.
* submit_multi_resp ``unsuccess_sme``: list of dicts ``{"dest_addr_ton", "dest_addr_npi",
  "destination_addr", "error_status_code"}``; ``no_unsuccess`` is derived on encode.

Encoding rules:

* A parameter missing from ``params`` is encoded with its default (0, "", b"", []).
* Response PDUs whose ``params`` and ``tlvs`` are both empty are encoded without a body. This
  is how a non-zero-status bind_*_resp / submit_sm_resp / data_sm_resp must look (SMPP 3.4
  4.1, 4.4.2, 4.7.2) and is what :meth:`Pdu.response` builds for them; it is also what decoding
  a body-less response yields, so a response received without a body is forwarded without one,
  and one received with a body (many SMSCs send ``message_id = "\\0"`` with an error status)
  is forwarded with it.
* Decoding accepts a response with an empty body whatever its status ("params == {}").

Decode failures raise :class:`PduError` carrying the ``command_status`` to answer with and the
header's ``command_id`` / ``sequence_number`` (readable whenever the frame has 16 bytes).
Encode failures (value out of range, string too long, unknown parameter name) raise
``ValueError`` / ``TypeError``: they are programming errors, not peer errors.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

from .constants import RESP_BIT, CommandId, Status, command_name

__all__ = [
    "Pdu",
    "PduError",
    "Tlv",
    "decode_pdu",
    "default_params",
    "field_names",
    "HEADER_SIZE",
]

HEADER_SIZE = 16

_HEADER = struct.Struct(">IIII")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_TLV_HEAD = struct.Struct(">HH")


class PduError(Exception):
    """A PDU could not be decoded.

    ``status`` is the command_status to answer with (in the ``*_resp`` of the request, or in a
    generic_nack when the command id is unknown); ``command_id`` and ``sequence_number`` come
    from the header (0 when the frame is shorter than 16 bytes).
    """

    def __init__(
        self, message: str, status: int, command_id: int = 0, sequence_number: int = 0
    ) -> None:
        super().__init__(message)
        self.status = int(status)
        self.command_id = command_id
        self.sequence_number = sequence_number

    def __reduce__(self):  # keep pickling (multiprocessing, logging handlers) working
        return (
            type(self),
            (str(self), self.status, self.command_id, self.sequence_number),
        )


@dataclass(slots=True)
class Tlv:
    """One optional parameter: tag and raw value (length is ``len(value)``)."""

    tag: int
    value: bytes

    def as_int(self) -> int:
        """The value as a big-endian unsigned integer (0 for an empty value)."""
        return int.from_bytes(self.value, "big")

    def as_str(self) -> str:
        """The value as a C-Octet String: latin-1, without the NUL terminator (and what follows)."""
        v = bytes(self.value)
        nul = v.find(0)
        if nul >= 0:
            v = v[:nul]
        return v.decode("latin-1")

    @classmethod
    def from_int(cls, tag: int, value: int, size: int) -> Tlv:
        return cls(tag, int(value).to_bytes(size, "big"))

    @classmethod
    def from_str(cls, tag: int, value: str) -> Tlv:
        """A C-Octet String TLV (latin-1, NUL terminated)."""
        return cls(tag, value.encode("latin-1") + b"\x00")


# ---------------------------------------------------------------------------------------------
# Body schemas
# ---------------------------------------------------------------------------------------------

# field kinds
_C = 0  # C-Octet String (max length incl. NUL)
_I1 = 1
_I2 = 2
_I4 = 4
_SM = 5  # sm_length (Integer 1) + short_message (Octet String)
_DESTS = 6  # number_of_dests + dest_address list (submit_multi)
_UNSUCC = 7  # no_unsuccess + unsuccess_sme list (submit_multi_resp)

_S = Status
# (name, kind, max_length, status for "too long")
_F = tuple[str, int, int, int]


def _c(name: str, max_len: int, status: int = _S.RINVPARLEN) -> _F:
    return (name, _C, max_len, int(status))


def _i(name: str, size: int = 1) -> _F:
    return (name, size, 0, 0)


_SM_FIELD: _F = ("short_message", _SM, 0, 0)

_BIND = (
    _c("system_id", 16, _S.RINVSYSID),
    _c("password", 9, _S.RINVPASWD),
    _c("system_type", 13, _S.RINVSYSTYP),
    _i("interface_version"),
    _i("addr_ton"),
    _i("addr_npi"),
    _c("address_range", 41),
)
_BIND_RESP = (_c("system_id", 16, _S.RINVSYSID),)

_SUBMIT_TAIL = (
    _i("esm_class"),
    _i("protocol_id"),
    _i("priority_flag"),
    _c("schedule_delivery_time", 17, _S.RINVSCHED),
    _c("validity_period", 17, _S.RINVEXPIRY),
    _i("registered_delivery"),
    _i("replace_if_present_flag"),
    _i("data_coding"),
    _i("sm_default_msg_id"),
    _SM_FIELD,
)

_SUBMIT = (
    _c("service_type", 6, _S.RINVSERTYP),
    _i("source_addr_ton"),
    _i("source_addr_npi"),
    _c("source_addr", 21, _S.RINVSRCADR),
    _i("dest_addr_ton"),
    _i("dest_addr_npi"),
    _c("destination_addr", 21, _S.RINVDSTADR),
    *_SUBMIT_TAIL,
)

_MSG_ID_RESP = (_c("message_id", 65, _S.RINVMSGID),)

_SCHEMAS: dict[int, tuple[_F, ...]] = {
    CommandId.GENERIC_NACK: (),
    CommandId.BIND_RECEIVER: _BIND,
    CommandId.BIND_TRANSMITTER: _BIND,
    CommandId.BIND_TRANSCEIVER: _BIND,
    CommandId.BIND_RECEIVER_RESP: _BIND_RESP,
    CommandId.BIND_TRANSMITTER_RESP: _BIND_RESP,
    CommandId.BIND_TRANSCEIVER_RESP: _BIND_RESP,
    CommandId.OUTBIND: (_c("system_id", 16, _S.RINVSYSID), _c("password", 9, _S.RINVPASWD)),
    CommandId.UNBIND: (),
    CommandId.UNBIND_RESP: (),
    CommandId.ENQUIRE_LINK: (),
    CommandId.ENQUIRE_LINK_RESP: (),
    CommandId.SUBMIT_SM: _SUBMIT,
    CommandId.SUBMIT_SM_RESP: _MSG_ID_RESP,
    CommandId.DELIVER_SM: _SUBMIT,
    CommandId.DELIVER_SM_RESP: _MSG_ID_RESP,
    CommandId.DATA_SM: (
        _c("service_type", 6, _S.RINVSERTYP),
        _i("source_addr_ton"),
        _i("source_addr_npi"),
        _c("source_addr", 65, _S.RINVSRCADR),
        _i("dest_addr_ton"),
        _i("dest_addr_npi"),
        _c("destination_addr", 65, _S.RINVDSTADR),
        _i("esm_class"),
        _i("registered_delivery"),
        _i("data_coding"),
    ),
    CommandId.DATA_SM_RESP: _MSG_ID_RESP,
    CommandId.QUERY_SM: (
        _c("message_id", 65, _S.RINVMSGID),
        _i("source_addr_ton"),
        _i("source_addr_npi"),
        _c("source_addr", 21, _S.RINVSRCADR),
    ),
    CommandId.QUERY_SM_RESP: (
        _c("message_id", 65, _S.RINVMSGID),
        _c("final_date", 17),
        _i("message_state"),
        _i("error_code"),
    ),
    CommandId.CANCEL_SM: (
        _c("service_type", 6, _S.RINVSERTYP),
        _c("message_id", 65, _S.RINVMSGID),
        _i("source_addr_ton"),
        _i("source_addr_npi"),
        _c("source_addr", 21, _S.RINVSRCADR),
        _i("dest_addr_ton"),
        _i("dest_addr_npi"),
        _c("destination_addr", 21, _S.RINVDSTADR),
    ),
    CommandId.CANCEL_SM_RESP: (),
    CommandId.REPLACE_SM: (
        _c("message_id", 65, _S.RINVMSGID),
        _i("source_addr_ton"),
        _i("source_addr_npi"),
        _c("source_addr", 21, _S.RINVSRCADR),
        _c("schedule_delivery_time", 17, _S.RINVSCHED),
        _c("validity_period", 17, _S.RINVEXPIRY),
        _i("registered_delivery"),
        _i("sm_default_msg_id"),
        _SM_FIELD,
    ),
    CommandId.REPLACE_SM_RESP: (),
    CommandId.SUBMIT_MULTI: (
        _c("service_type", 6, _S.RINVSERTYP),
        _i("source_addr_ton"),
        _i("source_addr_npi"),
        _c("source_addr", 21, _S.RINVSRCADR),
        ("dest_address", _DESTS, 0, 0),
        *_SUBMIT_TAIL,
    ),
    CommandId.SUBMIT_MULTI_RESP: (
        _c("message_id", 65, _S.RINVMSGID),
        ("unsuccess_sme", _UNSUCC, 0, 0),
    ),
    CommandId.ALERT_NOTIFICATION: (
        _i("source_addr_ton"),
        _i("source_addr_npi"),
        _c("source_addr", 65, _S.RINVSRCADR),
        _i("esme_addr_ton"),
        _i("esme_addr_npi"),
        _c("esme_addr", 65, _S.RINVDSTADR),
    ),
}
# plain int keys: dict lookups with int command ids hash the same, but keep it explicit
_SCHEMAS = {int(k): v for k, v in _SCHEMAS.items()}

# Requests that have no response PDU in SMPP 3.4.
_NO_RESPONSE = frozenset(
    int(c) for c in (CommandId.OUTBIND, CommandId.ALERT_NOTIFICATION, CommandId.GENERIC_NACK)
)
# Responses whose body is not returned when command_status != 0 (SMPP 3.4 4.1, 4.4.2, 4.7.2).
_NO_BODY_ON_ERROR = frozenset(
    int(c)
    for c in (
        CommandId.BIND_RECEIVER_RESP,
        CommandId.BIND_TRANSMITTER_RESP,
        CommandId.BIND_TRANSCEIVER_RESP,
        CommandId.SUBMIT_SM_RESP,
        CommandId.DATA_SM_RESP,
    )
)
# Keys accepted in params on encode although they are derived (and ignored).
_DERIVED = {"sm_length", "number_of_dests", "no_unsuccess"}

_DEFAULTS_BY_KIND: dict[int, Any] = {_C: "", _I1: 0, _I2: 0, _I4: 0, _SM: b""}

_DEST_SME = 1
_DEST_DL = 2


def _default(kind: int) -> Any:
    if kind == _DESTS or kind == _UNSUCC:
        return []
    return _DEFAULTS_BY_KIND[kind]


def field_names(command_id: int) -> tuple[str, ...]:
    """Names of the mandatory body fields of a command, in spec order (as keys of params)."""
    schema = _SCHEMAS.get(command_id)
    if schema is None:
        raise ValueError(f"unknown command_id 0x{command_id:08x}")
    return tuple(f[0] for f in schema)


def default_params(command_id: int) -> dict[str, Any]:
    """A params dict with every mandatory field of ``command_id`` at its default value."""
    schema = _SCHEMAS.get(command_id)
    if schema is None:
        raise ValueError(f"unknown command_id 0x{command_id:08x}")
    return {name: _default(kind) for name, kind, _, _ in schema}


# ---------------------------------------------------------------------------------------------
# Pdu
# ---------------------------------------------------------------------------------------------


@dataclass(slots=True)
class Pdu:
    command_id: int
    command_status: int = 0
    sequence_number: int = 0
    params: dict[str, Any] = field(default_factory=dict)
    tlvs: list[Tlv] = field(default_factory=list)

    # -- properties ---------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return command_name(self.command_id)

    @property
    def is_response(self) -> bool:
        return bool(self.command_id & RESP_BIT)

    # -- TLV helpers --------------------------------------------------------------------------
    def get_tlv(self, tag: int) -> bytes | None:
        """Value of the first TLV with this tag, or None."""
        for t in self.tlvs:
            if t.tag == tag:
                return t.value
        return None

    def get_tlv_int(self, tag: int) -> int | None:
        v = self.get_tlv(tag)
        return None if v is None else int.from_bytes(v, "big")

    def get_tlv_str(self, tag: int) -> str | None:
        """A C-Octet String TLV as str (latin-1, NUL terminator stripped), or None."""
        for t in self.tlvs:
            if t.tag == tag:
                return t.as_str()
        return None

    def set_tlv(self, tag: int, value: bytes) -> None:
        """Replace the value of the first TLV with this tag in place (dropping any later
        duplicates), or append a new TLV."""
        value = bytes(value)
        if len(value) > 0xFFFF:
            raise ValueError(f"TLV 0x{tag:04x} value too long ({len(value)} bytes)")
        found = False
        out = []
        for t in self.tlvs:
            if t.tag == tag:
                if found:
                    continue
                found = True
                t = Tlv(tag, value)
            out.append(t)
        if not found:
            out.append(Tlv(tag, value))
        self.tlvs = out

    def remove_tlv(self, tag: int) -> None:
        """Remove every TLV with this tag (no-op if absent)."""
        self.tlvs = [t for t in self.tlvs if t.tag != tag]

    # -- copy / response ----------------------------------------------------------------------
    def copy(self) -> Pdu:
        """An independent copy: params, list-valued params (dicts inside) and TLVs are copied."""
        params = self.params.copy()
        for k, v in params.items():
            t = type(v)
            if t is list:
                params[k] = [x.copy() if type(x) is dict else x for x in v]
            elif t is dict or t is bytearray:
                params[k] = v.copy()
        return Pdu(
            self.command_id,
            self.command_status,
            self.sequence_number,
            params,
            [Tlv(t.tag, t.value) for t in self.tlvs],
        )

    def response(self, status: int = 0, **params: Any) -> Pdu:
        """The ``*_resp`` of this request, with the same sequence number.

        With ``status == 0`` (and for responses that keep their body on error) every mandatory
        field of the response is present, at its default unless given in ``params``. For a
        non-zero status of bind_*_resp, submit_sm_resp and data_sm_resp the body is empty
        unless params are given explicitly.
        """
        cid = self.command_id
        if cid & RESP_BIT or cid in _NO_RESPONSE:
            raise ValueError(f"{self.name} has no response PDU")
        resp_id = cid | RESP_BIT
        schema = _SCHEMAS.get(resp_id)
        if schema is None:
            raise ValueError(f"{self.name} has no response PDU")
        if status and resp_id in _NO_BODY_ON_ERROR:
            body = dict(params)
        else:
            body = {name: _default(kind) for name, kind, _, _ in schema}
            body.update(params)
        return Pdu(resp_id, int(status), self.sequence_number, body, [])

    # -- encode -------------------------------------------------------------------------------
    def encode(self) -> bytes:
        cid = self.command_id
        schema = _SCHEMAS.get(cid)
        if schema is None:
            raise ValueError(f"cannot encode unknown command_id 0x{cid & 0xFFFFFFFF:08x}")
        out = bytearray(16)
        params = self.params
        tlvs = self.tlvs
        if schema and (params or tlvs or not (cid & RESP_BIT)):
            used = 0
            for name, kind, max_len, _status in schema:
                v = params.get(name)
                if v is None:
                    v = _default(kind)
                else:
                    used += 1
                if kind == _C:
                    _put_cstr(out, name, v, max_len)
                elif kind == _I1:
                    if not 0 <= v <= 0xFF:
                        raise ValueError(f"{name}={v!r} out of range for Integer(1)")
                    out.append(v)
                elif kind == _SM:
                    if not isinstance(v, (bytes, bytearray, memoryview)):
                        raise TypeError(f"short_message must be bytes, not {type(v).__name__}")
                    n = len(v)
                    if n > 0xFF:
                        raise ValueError(
                            f"short_message too long ({n} octets); use message_payload"
                        )
                    out.append(n)
                    out += v
                elif kind == _I2 or kind == _I4:
                    _put_int(out, name, v, kind)
                elif kind == _DESTS:
                    _put_dests(out, v)
                else:  # _UNSUCC
                    _put_unsuccess(out, v)
            if used != len(params):
                _check_keys(schema, params)
        elif params:
            _check_keys(schema, params)
        for t in tlvs:
            value = t.value
            n = len(value)
            if n > 0xFFFF or not 0 <= t.tag <= 0xFFFF:
                raise ValueError(f"TLV 0x{t.tag:04x} with {n} octets cannot be encoded")
            out += _TLV_HEAD.pack(t.tag, n)
            out += value
        try:
            _HEADER.pack_into(out, 0, len(out), cid, self.command_status, self.sequence_number)
        except struct.error as exc:
            raise ValueError(f"header field out of range: {exc}") from None
        return bytes(out)


def _check_keys(schema: tuple[_F, ...], params: dict[str, Any]) -> None:
    known = {f[0] for f in schema}
    unknown = [k for k, v in params.items() if k not in known and k not in _DERIVED]
    if unknown:
        raise ValueError(f"unknown parameter(s) for this command: {', '.join(sorted(unknown))}")


def _put_cstr(out: bytearray, name: str, v: Any, max_len: int) -> None:
    if isinstance(v, str):
        try:
            b = v.encode("latin-1")
        except UnicodeEncodeError:
            raise ValueError(f"{name}={v!r} is not representable in latin-1") from None
    elif isinstance(v, (bytes, bytearray)):
        b = v
    else:
        raise TypeError(f"{name} must be str, not {type(v).__name__}")
    if len(b) >= max_len:
        raise ValueError(f"{name} too long ({len(b)} >= {max_len} incl. NUL)")
    if 0 in b:
        raise ValueError(f"{name} contains a NUL octet")
    out += b
    out.append(0)


def _put_int(out: bytearray, name: str, v: int, size: int) -> None:
    if size == 2:
        if not 0 <= v <= 0xFFFF:
            raise ValueError(f"{name}={v!r} out of range for Integer(2)")
        out += _U16.pack(v)
    else:
        if not 0 <= v <= 0xFFFFFFFF:
            raise ValueError(f"{name}={v!r} out of range for Integer(4)")
        out += _U32.pack(v)


def _put_dests(out: bytearray, dests: list[dict[str, Any]]) -> None:
    if len(dests) > 0xFF:
        raise ValueError(f"too many destinations ({len(dests)})")
    out.append(len(dests))
    for d in dests:
        flag = d.get("dest_flag", _DEST_SME)
        if flag == _DEST_SME:
            out.append(1)
            ton = d.get("dest_addr_ton", 0)
            npi = d.get("dest_addr_npi", 0)
            if not (0 <= ton <= 0xFF and 0 <= npi <= 0xFF):
                raise ValueError(f"dest_addr_ton/npi out of range in {d!r}")
            out.append(ton)
            out.append(npi)
            _put_cstr(out, "destination_addr", d.get("destination_addr", ""), 21)
        elif flag == _DEST_DL:
            out.append(2)
            _put_cstr(out, "dl_name", d.get("dl_name", ""), 21)
        else:
            raise ValueError(f"invalid dest_flag {flag!r}")


def _put_unsuccess(out: bytearray, items: list[dict[str, Any]]) -> None:
    if len(items) > 0xFF:
        raise ValueError(f"too many unsuccess_sme entries ({len(items)})")
    out.append(len(items))
    for d in items:
        ton = d.get("dest_addr_ton", 0)
        npi = d.get("dest_addr_npi", 0)
        if not (0 <= ton <= 0xFF and 0 <= npi <= 0xFF):
            raise ValueError(f"dest_addr_ton/npi out of range in {d!r}")
        out.append(ton)
        out.append(npi)
        _put_cstr(out, "destination_addr", d.get("destination_addr", ""), 21)
        _put_int(out, "error_status_code", d.get("error_status_code", 0), 4)


# ---------------------------------------------------------------------------------------------
# decode
# ---------------------------------------------------------------------------------------------


def decode_pdu(frame: bytes | bytearray | memoryview) -> Pdu:
    """Decode one whole PDU (16-byte header included). Raises :class:`PduError`."""
    if not isinstance(frame, bytes):
        frame = bytes(frame)
    end = len(frame)
    if end < HEADER_SIZE:
        raise PduError(f"frame too short ({end} octets)", Status.RINVCMDLEN)
    length, cid, status, seq = _HEADER.unpack_from(frame, 0)
    if length != end:
        raise PduError(
            f"command_length {length} does not match the frame size {end}",
            Status.RINVCMDLEN,
            cid,
            seq,
        )
    schema = _SCHEMAS.get(cid)
    if schema is None:
        raise PduError(f"unknown command_id 0x{cid:08x}", Status.RINVCMDID, cid, seq)

    params: dict[str, Any] = {}
    pos = HEADER_SIZE
    # A response may come without a body (all of them when command_status != 0, and e.g. the
    # many ESMEs that answer deliver_sm with an empty deliver_sm_resp).
    if schema and not (pos == end and cid & RESP_BIT):
        for name, kind, max_len, err in schema:
            if kind == _C:
                nul = frame.find(0, pos, end)
                if nul < 0:
                    raise PduError(
                        f"{name}: unterminated C-Octet String", Status.RINVCMDLEN, cid, seq
                    )
                if nul - pos >= max_len:
                    raise PduError(f"{name}: {nul - pos} octets, max {max_len - 1}", err, cid, seq)
                params[name] = frame[pos:nul].decode("latin-1")
                pos = nul + 1
            elif kind == _I1:
                if pos >= end:
                    raise PduError(f"{name}: body truncated", Status.RINVCMDLEN, cid, seq)
                params[name] = frame[pos]
                pos += 1
            elif kind == _SM:
                if pos >= end:
                    raise PduError("sm_length: body truncated", Status.RINVCMDLEN, cid, seq)
                n = frame[pos]
                pos += 1
                if pos + n > end:
                    raise PduError(
                        f"sm_length {n} exceeds the {end - pos} octets left",
                        Status.RINVMSGLEN,
                        cid,
                        seq,
                    )
                params[name] = frame[pos : pos + n]
                pos += n
            elif kind == _I2 or kind == _I4:
                if pos + kind > end:
                    raise PduError(f"{name}: body truncated", Status.RINVCMDLEN, cid, seq)
                params[name] = int.from_bytes(frame[pos : pos + kind], "big")
                pos += kind
            elif kind == _DESTS:
                params[name], pos = _get_dests(frame, pos, end, cid, seq)
            else:  # _UNSUCC
                params[name], pos = _get_unsuccess(frame, pos, end, cid, seq)

    tlvs: list[Tlv] = []
    while pos < end:
        if end - pos < 4:
            raise PduError(
                f"truncated TLV header ({end - pos} octets left)",
                Status.RINVOPTPARSTREAM,
                cid,
                seq,
            )
        tag, n = _TLV_HEAD.unpack_from(frame, pos)
        pos += 4
        if pos + n > end:
            raise PduError(
                f"TLV 0x{tag:04x} length {n} exceeds the {end - pos} octets left",
                Status.RINVOPTPARSTREAM,
                cid,
                seq,
            )
        tlvs.append(Tlv(tag, frame[pos : pos + n]))
        pos += n
    return Pdu(cid, status, seq, params, tlvs)


def _get_cstr(
    frame: bytes, pos: int, end: int, name: str, max_len: int, err: int, cid: int, seq: int
) -> tuple[str, int]:
    nul = frame.find(0, pos, end)
    if nul < 0:
        raise PduError(f"{name}: unterminated C-Octet String", Status.RINVCMDLEN, cid, seq)
    if nul - pos >= max_len:
        raise PduError(f"{name}: {nul - pos} octets, max {max_len - 1}", err, cid, seq)
    return frame[pos:nul].decode("latin-1"), nul + 1


def _get_dests(
    frame: bytes, pos: int, end: int, cid: int, seq: int
) -> tuple[list[dict[str, Any]], int]:
    if pos >= end:
        raise PduError("number_of_dests: body truncated", Status.RINVCMDLEN, cid, seq)
    count = frame[pos]
    pos += 1
    dests: list[dict[str, Any]] = []
    for _ in range(count):
        if pos >= end:
            raise PduError("dest_address: body truncated", Status.RINVCMDLEN, cid, seq)
        flag = frame[pos]
        pos += 1
        if flag == _DEST_SME:
            if pos + 2 > end:
                raise PduError("dest_address: body truncated", Status.RINVCMDLEN, cid, seq)
            ton = frame[pos]
            npi = frame[pos + 1]
            addr, pos = _get_cstr(
                frame, pos + 2, end, "destination_addr", 21, Status.RINVDSTADR, cid, seq
            )
            dests.append(
                {
                    "dest_flag": 1,
                    "dest_addr_ton": ton,
                    "dest_addr_npi": npi,
                    "destination_addr": addr,
                }
            )
        elif flag == _DEST_DL:
            dl, pos = _get_cstr(frame, pos, end, "dl_name", 21, Status.RINVDLNAME, cid, seq)
            dests.append({"dest_flag": 2, "dl_name": dl})
        else:
            raise PduError(f"invalid dest_flag {flag}", Status.RINVDESTFLAG, cid, seq)
    return dests, pos


def _get_unsuccess(
    frame: bytes, pos: int, end: int, cid: int, seq: int
) -> tuple[list[dict[str, Any]], int]:
    if pos >= end:
        raise PduError("no_unsuccess: body truncated", Status.RINVCMDLEN, cid, seq)
    count = frame[pos]
    pos += 1
    items: list[dict[str, Any]] = []
    for _ in range(count):
        if pos + 2 > end:
            raise PduError("unsuccess_sme: body truncated", Status.RINVCMDLEN, cid, seq)
        ton = frame[pos]
        npi = frame[pos + 1]
        addr, pos = _get_cstr(
            frame, pos + 2, end, "destination_addr", 21, Status.RINVDSTADR, cid, seq
        )
        if pos + 4 > end:
            raise PduError("error_status_code: body truncated", Status.RINVCMDLEN, cid, seq)
        code = _U32.unpack_from(frame, pos)[0]
        pos += 4
        items.append(
            {
                "dest_addr_ton": ton,
                "dest_addr_npi": npi,
                "destination_addr": addr,
                "error_status_code": code,
            }
        )
    return items, pos
