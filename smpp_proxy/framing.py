"""Sans-I/O SMPP framing: split a TCP byte stream into whole PDUs.

Every PDU starts with a 4-byte big-endian command_length that counts the whole PDU, header
included. A command_length below 16 or above ``max_pdu_size`` means the stream is corrupt (or
not SMPP at all): :class:`FramingError` is raised, and since the stream cannot be resynchronised
the error is sticky (every later ``feed`` raises it again). The session answers generic_nack
ESME_RINVCMDLEN and closes.

PDUs that were complete before the bad header in the same ``feed`` call are not lost: they are
attached to the exception (``FramingError.pdus``), to be processed before the connection is
closed.

The error is reported once the 16 header bytes are buffered, so that it carries the header's
sequence_number for the generic_nack; TCP delivers a header in one segment in practice, and a
peer that stalls before that is handled by the session's inactivity timer.
"""

from __future__ import annotations

import struct

__all__ = ["Framer", "FramingError", "MIN_PDU_SIZE"]

MIN_PDU_SIZE = 16

_U32 = struct.Struct(">I")
_COMPACT_AT = 64 * 1024


class FramingError(Exception):
    """Invalid command_length in the stream; fatal for the connection.

    ``pdus``: the whole PDUs that preceded the bad header in the data of the failing ``feed``
    call (empty when the error is raised again by a later call).
    """

    def __init__(
        self,
        message: str,
        command_length: int,
        sequence_number: int = 0,
        pdus: list[bytes] | None = None,
    ) -> None:
        super().__init__(message)
        self.command_length = command_length
        self.sequence_number = sequence_number
        self.pdus: list[bytes] = pdus if pdus is not None else []

    def __reduce__(self):
        return (
            type(self),
            (str(self), self.command_length, self.sequence_number, self.pdus),
        )


class Framer:
    """Accumulates received bytes and returns the complete PDUs, in order."""

    __slots__ = ("max_pdu_size", "_buf", "_pos", "_error")

    def __init__(self, max_pdu_size: int = 65536) -> None:
        if max_pdu_size < MIN_PDU_SIZE:
            raise ValueError(f"max_pdu_size must be >= {MIN_PDU_SIZE}")
        self.max_pdu_size = max_pdu_size
        self._buf = bytearray()
        self._pos = 0  # start of the unconsumed data in _buf
        self._error: FramingError | None = None

    @property
    def buffered(self) -> int:
        """Number of received bytes not yet returned as a PDU (a partial PDU at EOF if > 0)."""
        return len(self._buf) - self._pos

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """Add received bytes; return the whole PDUs now available (header included)."""
        if self._error is not None:
            e = self._error
            raise FramingError(str(e), e.command_length, e.sequence_number)
        out: list[bytes] = []
        if self._pos == len(self._buf):
            # Nothing pending: cut PDUs straight from ``data`` (the common case: one read
            # holds whole PDUs) and only buffer the tail.
            if not isinstance(data, bytes):
                data = bytes(data)
            pos = self._scan(data, 0, len(data), out)
            self._buf.clear()
            self._pos = 0
            if pos < len(data):
                self._buf += data[pos:] if pos else data
            return out

        buf = self._buf
        buf += data
        end = len(buf)
        pos = self._pos
        with memoryview(buf) as view:
            pos = self._scan(view, pos, end, out)
        if pos == end:
            buf.clear()
            pos = 0
        elif pos >= _COMPACT_AT or pos * 2 >= end:
            del buf[:pos]
            pos = 0
        self._pos = pos
        return out

    def _scan(self, data, pos: int, end: int, out: list[bytes]) -> int:
        max_size = self.max_pdu_size
        unpack = _U32.unpack_from
        while end - pos >= 4:
            length = unpack(data, pos)[0]
            if length < MIN_PDU_SIZE or length > max_size:
                if end - pos < MIN_PDU_SIZE:
                    break  # wait for the header's sequence_number
                seq = unpack(data, pos + 12)[0]
                self._error = FramingError(
                    f"invalid command_length {length} (allowed {MIN_PDU_SIZE}..{max_size})",
                    length,
                    seq,
                    list(out),
                )
                raise self._error
            if end - pos < length:
                break
            out.append(bytes(data[pos : pos + length]))
            pos += length
        return pos
