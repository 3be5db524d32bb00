"""Multipart message assembly: the stage between the SMPP session and the classifier.

For every client ``submit_sm`` the :class:`Assembler` decides whether it is a single message or
one part of a concatenated message, holds the parts until the message is complete and then
yields the whole message once (:class:`AssembledMessage`: every original part PDU plus the
whole decoded text), so that the classifier sees the text the handset will display, not
fragments of it.

Detection
---------
:func:`smpp_proxy.udh.concat_info`: a UDH concatenation IE (IEI 0x00, 8-bit reference, or
0x08, 16-bit reference) when ``esm_class & 0x40``, else the SAR TLVs (``sar_msg_ref_num``,
``sar_total_segments``, ``sar_segment_seqnum``). No concatenation info, a total of 1, or
nonsense (seqnum 0, seqnum > total, a UDH that does not parse) means a single message. The
user data is ``short_message``, or the ``message_payload`` TLV when ``short_message`` is
empty; a ``message_payload`` message without concatenation info is a single message, one that
carries concatenation info (a UDH inside the payload, or SAR TLVs) is assembled like any part.

Key and duplicates
------------------
Parts belong together when ``(client_id, source_addr, destination_addr, reference, total)``
are equal (:func:`group_key`). Parts may arrive in any order and from several sessions of the
same client. A part whose seqnum is already held with the same user data (UDH included) and
data_coding is a *duplicate* (a retransmission whose response was lost): the caller answers it
again with the ``proxy_id`` of the held copy (``AddResult.proxy_id``). Parts of messages that
completed or expired in the last ``timeout_s`` are remembered (in memory only) for the same
purpose, so a late retransmission is not classified and forwarded a second time as a fragment.

A part whose seqnum is held with *different* user data means the client reused the reference
before the old message was complete (its missing parts are lost): the old group is released
at once as an incomplete message (returned by the next :meth:`Assembler.expire`, and
:meth:`Assembler.next_deadline` says so) and the new part starts a new group.

Text
----
The payloads (user data without UDH) of the parts are joined in seqnum order and then decoded
with :func:`smpp_proxy.text.decode_text` and the data_coding of the first part, so a UCS-2
surrogate pair, a GSM 7-bit escape or a UTF-8 sequence split across two parts decodes right.
If the parts disagree on data_coding each part is decoded alone and the texts are joined. A
message released incomplete is decoded per run of consecutive seqnums and the runs are joined
with :data:`GAP` (a space, so the words on either side of a missing part do not merge).

Durability
----------
Every held part is written to the :class:`~smpp_proxy.store.Store` (``part_put``) before
:meth:`Assembler.add` returns ``"held"`` (so the caller may acknowledge it); the part that
completes a message is not written: the group is read back (``part_list``) and deleted
(``part_delete``) and the message is returned for classification. An in-memory index of the
groups (key -> first received time, seqnums held) spares ``add`` and ``expire`` any scan of the
store; :meth:`Assembler.restore` rebuilds it from the store after a restart, which re-arms the
timeouts (measured from the first part's ``received_at``, wall clock).

Store errors (``StoreError``, ``sqlite3.Error``, Redis errors) propagate from ``add`` with the
in-memory state unchanged, so the caller can answer with a temporary error and the client's
retry is handled as if it were the first attempt. ``expire`` never raises for a store error:
it logs it and retries that group a second later.

Concurrency
-----------
``add`` may be called concurrently (several sessions of one client send the parts of one
message): everything for one key runs under that key's :class:`asyncio.Lock`, so exactly one
call returns ``"complete"`` for a group. The ``max_pending`` bound counts held parts plus
parts being written, so concurrent adds cannot exceed it.

Metrics
-------
``metrics`` is duck-typed: any of these attributes that it has are used (prometheus-client
objects, e.g. added to :class:`smpp_proxy.metrics.ProxyMetrics`)::

    assembler_events           Counter, label "event": single held complete duplicate
                               overflow expired conflict broken_udh
    assembler_pending_parts    Gauge
    assembler_pending_messages Gauge
"""

from __future__ import annotations

import asyncio
import hashlib
import heapq
import itertools
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

from .constants import ESM_UDHI
from .pdu import Pdu, decode_pdu
from .store import HeldPart, Store, StoreError
from .text import Alphabet, decode_text
from .udh import ConcatInfo, concat_info, message_body, message_data, split_udh

log = logging.getLogger(__name__)

__all__ = [
    "AddResult",
    "AssembledMessage",
    "Assembler",
    "GAP",
    "group_key",
    "message_text",
    "parse_group_key",
]

GAP = " "
"""Joins the texts of the runs of consecutive parts of a message released incomplete."""

AddKind = Literal["single", "held", "complete", "duplicate", "overflow"]

_STORE_RETRY_S = 1.0  # expire(): delay before retrying a group whose store call failed


# --------------------------------------------------------------------------------------------
# results


@dataclass
class AssembledMessage:
    """A whole message, ready to classify once."""

    key: str | None  # None for a single-part message
    client_id: str
    parts: list[HeldPart]  # sorted by seqnum; parts[i].pdu: the original encoded submit_sm
    pdus: list[Pdu]  # decoded parts, same order as ``parts``
    text: str  # the whole decoded text, UDH stripped
    complete: bool  # False when released (timeout, reference reuse) with parts missing
    total: int
    missing: list[int] = field(default_factory=list)  # seqnums that never arrived

    @property
    def proxy_ids(self) -> list[str]:
        """The message ids the client was given for the parts, in seqnum order."""
        return [p.proxy_id for p in self.parts]

    @property
    def first_received_at(self) -> float:
        return min((p.received_at for p in self.parts), default=0.0)


@dataclass
class AddResult:
    """What :meth:`Assembler.add` did with one submit_sm.

    ``kind``:

    * ``"single"``: not a part (or a total of 1): ``message`` is the whole message;
    * ``"held"``: a part, stored; answer it (ROK, ``proxy_id``) now, the message comes later;
    * ``"complete"``: this part completed its message: ``message`` has every part;
    * ``"duplicate"``: a part already held (or recently assembled): answer it again with
      ``proxy_id``, the id the first copy was given; nothing else to do;
    * ``"overflow"``: ``max_pending`` parts are held: not stored; answer it with a temporary
      error (RTHROTTLED / RMSGQFUL) so that the client retries later.

    ``proxy_id`` is the message id to answer this submit_sm with (None for ``"overflow"``).
    """

    kind: AddKind
    message: AssembledMessage | None = None
    proxy_id: str | None = None
    key: str | None = None


# --------------------------------------------------------------------------------------------
# keys


def _esc(s: str) -> str:
    return s.replace("%", "%25").replace("|", "%7C")


def _unesc(s: str) -> str:
    return s.replace("%7C", "|").replace("%7c", "|").replace("%25", "%")


def group_key(
    client_id: str, source_addr: str, destination_addr: str, reference: int, total: int
) -> str:
    """The store key of a multipart group: ``client|source|destination|reference|total``
    (``%`` and ``|`` inside the strings are percent-escaped, so the key is unambiguous)."""
    return f"{_esc(client_id)}|{_esc(source_addr)}|{_esc(destination_addr)}|{int(reference)}|{int(total)}"


def parse_group_key(key: str) -> tuple[str, str, str, int, int] | None:
    """Inverse of :func:`group_key`; None if ``key`` is not one."""
    fields = key.split("|")
    if len(fields) != 5:
        return None
    try:
        return (
            _unesc(fields[0]),
            _unesc(fields[1]),
            _unesc(fields[2]),
            int(fields[3]),
            int(fields[4]),
        )
    except ValueError:
        return None


# --------------------------------------------------------------------------------------------
# text (sans-I/O)


def _data_coding(pdu: Pdu) -> int:
    try:
        return int(pdu.params.get("data_coding", 0) or 0) & 0xFF
    except (TypeError, ValueError):
        return 0


def _payload(pdu: Pdu) -> bytes:
    try:
        return message_body(pdu)
    except Exception:  # defensive: odd field types in a hand-built Pdu
        return b""


def _decode_run(pdus: Sequence[Pdu], smsc_default: str) -> str:
    if not pdus:
        return ""
    codings = {_data_coding(p) for p in pdus}
    if len(codings) == 1:
        return decode_text(b"".join(_payload(p) for p in pdus), codings.pop(), smsc_default)
    return "".join(decode_text(_payload(p), _data_coding(p), smsc_default) for p in pdus)


def message_text(
    pdus: Sequence[Pdu],
    seqnums: Sequence[int] | None = None,
    smsc_default: str = Alphabet.GSM7,
) -> str:
    """The text of a message from its part PDUs (sorted by seqnum). Never raises.

    Payloads of consecutive seqnums are joined before decoding (characters split across parts
    decode right); runs separated by a missing seqnum are decoded apart and joined with
    :data:`GAP`. Without ``seqnums`` the parts are taken as consecutive.
    """
    if seqnums is None:
        return _decode_run(pdus, smsc_default)
    runs: list[list[Pdu]] = []
    prev: int | None = None
    for seq, pdu in zip(seqnums, pdus, strict=False):
        if prev is None or seq != prev + 1:
            runs.append([])
        runs[-1].append(pdu)
        prev = seq
    return GAP.join(_decode_run(r, smsc_default) for r in runs)


def _digest(pdu: Pdu) -> bytes:
    """Identity of a part's content: data_coding + user data (UDH included)."""
    try:
        data = message_data(pdu)
    except Exception:
        data = b""
    h = hashlib.blake2b(digest_size=16)
    h.update(bytes((_data_coding(pdu),)))
    h.update(data)
    return h.digest()


# --------------------------------------------------------------------------------------------
# in-memory index


@dataclass
class _Group:
    key: str
    client_id: str
    total: int
    first_at: float
    deadline: float
    gen: int
    parts: dict[int, tuple[str, bytes | None]] = field(default_factory=dict)  # seq -> (id, digest)


@dataclass
class _Done:
    expires_at: float
    parts: dict[int, tuple[str, bytes | None]]


class _KeyLocks:
    """One asyncio.Lock per key, dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, list[Any]] = {}  # key -> [lock, users]

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        entry = self._locks.get(key)
        if entry is None:
            entry = self._locks[key] = [asyncio.Lock(), 0]
        entry[1] += 1
        try:
            async with entry[0]:
                yield
        finally:
            entry[1] -= 1
            if entry[1] == 0:
                self._locks.pop(key, None)

    async def acquire(self, key: str) -> None:
        """Take the key's lock without a context manager; pair with :meth:`release`."""
        entry = self._locks.get(key)
        if entry is None:
            entry = self._locks[key] = [asyncio.Lock(), 0]
        entry[1] += 1
        try:
            await entry[0].acquire()
        except BaseException:
            entry[1] -= 1
            if entry[1] == 0:
                self._locks.pop(key, None)
            raise

    def release(self, key: str) -> None:
        entry = self._locks.get(key)
        if entry is None:
            return
        entry[0].release()
        entry[1] -= 1
        if entry[1] == 0:
            self._locks.pop(key, None)

    def __len__(self) -> int:
        return len(self._locks)


class _Metrics:
    def __init__(self, metrics: Any) -> None:
        self.events = getattr(metrics, "assembler_events", None)
        self.parts = getattr(metrics, "assembler_pending_parts", None)
        self.messages = getattr(metrics, "assembler_pending_messages", None)

    def event(self, name: str, n: int = 1) -> None:
        if self.events is not None:
            try:
                self.events.labels(name).inc(n)
            except Exception:  # pragma: no cover - metrics must never break the data path
                log.debug("assembler metrics failed", exc_info=True)

    def pending(self, parts: int, messages: int) -> None:
        try:
            if self.parts is not None:
                self.parts.set(parts)
            if self.messages is not None:
                self.messages.set(messages)
        except Exception:  # pragma: no cover
            log.debug("assembler metrics failed", exc_info=True)


class _RateLimitedLog:
    def __init__(self, interval_s: float = 10.0) -> None:
        self.interval_s = interval_s
        self._last = -1e18
        self._suppressed = 0

    def warning(self, msg: str, *args: Any) -> None:
        t = time.monotonic()
        if t - self._last < self.interval_s:
            self._suppressed += 1
            return
        if self._suppressed:
            msg += " (%d similar suppressed)"
            args = (*args, self._suppressed)
        self._last = t
        self._suppressed = 0
        log.warning(msg, *args)


# --------------------------------------------------------------------------------------------
# the assembler


class Assembler:
    """Holds the parts of multipart messages until they are complete (see module docstring).

    Times (``now``) are wall-clock seconds (``time.time()`` by default), because they are
    stored with the parts and must survive a restart.
    """

    def __init__(
        self,
        store: Store,
        *,
        timeout_s: float = 60.0,
        max_pending: int = 10000,
        metrics: Any = None,
        smsc_default: str = Alphabet.GSM7,
        defer_release: bool = False,
    ) -> None:
        if timeout_s <= 0:
            raise ValueError("timeout_s must be > 0")
        if max_pending < 1:
            raise ValueError("max_pending must be >= 1")
        self.store = store
        self.timeout_s = float(timeout_s)
        self.max_pending = int(max_pending)
        self.smsc_default = smsc_default
        self._metrics = _Metrics(metrics)
        self._groups: dict[str, _Group] = {}
        self._heap: list[tuple[float, int, str]] = []  # (deadline, gen, key), lazy deletion
        self._gen = itertools.count(1)
        self._held = 0  # parts in self._groups
        self._reserved = 0  # parts being written (counted against max_pending)
        self._released: list[AssembledMessage] = []  # flushed early, handed out by expire()
        self._released_at: float | None = None
        self._done: OrderedDict[str, _Done] = OrderedDict()
        self._locks = _KeyLocks()
        self._bad_udh_log = _RateLimitedLog()
        # defer_release: a completed (or expired) message keeps its parts in the store and its
        # key locked until the caller has carried out the verdict and calls release(key). A
        # crash in between leaves a complete group in the store, which restore() hands out
        # again; a retransmitted part waits on the lock and then sees the outcome.
        self.defer_release = defer_release
        self._unreleased: set[str] = set()

    # -- introspection --------------------------------------------------------------------------

    def pending_messages(self) -> int:
        """Groups currently held (incomplete messages)."""
        return len(self._groups)

    def pending_parts(self) -> int:
        """Parts currently held, all groups together (what ``max_pending`` bounds)."""
        return self._held

    def next_deadline(self) -> float | None:
        """When :meth:`expire` next has work (wall clock), or None when nothing is held."""
        if self._released:
            return self._released_at
        self._drop_stale_heads()
        return self._heap[0][0] if self._heap else None

    # -- add ------------------------------------------------------------------------------------

    async def add(
        self,
        client_id: str,
        pdu: Pdu,
        proxy_id: str,
        now: float | None = None,
        *,
        raw: bytes | None = None,
    ) -> AddResult:
        """Take one submit_sm of ``client_id`` that the caller will answer with ``proxy_id``.

        ``raw`` is the PDU as received (header included); without it ``pdu.encode()`` is kept
        (the codec re-encodes a decoded PDU byte for byte). Never raises for a malformed
        message; store errors propagate (nothing changed, the caller answers a temporary
        error and the client retries).
        """
        now = time.time() if now is None else float(now)
        info = self._concat(client_id, pdu)
        if info is None:
            self._metrics.event("single")
            return AddResult("single", self._single(client_id, pdu, proxy_id, now, raw), proxy_id)

        src = str(pdu.params.get("source_addr", "") or "")
        dst = str(pdu.params.get("destination_addr", "") or "")
        key = group_key(client_id, src, dst, info.reference, info.total)
        digest = _digest(pdu)
        await self._locks.acquire(key)
        result: AddResult | None = None
        try:
            result = await self._add_part(key, client_id, info, pdu, proxy_id, now, raw, digest)
            return result
        finally:
            if key not in self._unreleased:
                self._locks.release(key)

    async def release(self, key: str, delete: bool = True) -> None:
        """``defer_release``: the verdict on the message of ``key`` has been carried out;
        delete its parts from the store and let other parts of that key through."""
        if key not in self._unreleased:
            return
        try:
            if delete:
                await self.store.part_delete(key)
        except Exception:
            # the parts stay stored: after a restart the message would be handled again
            log.exception("assembler: cannot delete the parts of %s", key)
        finally:
            self._unreleased.discard(key)
            self._locks.release(key)

    async def reopen(self, key: str, seqnum: int) -> None:
        """``defer_release``: the completing part ``seqnum`` was refused with a temporary
        error; hold the other parts again (same timeout) so that its resubmission completes
        the message once more, and release the key."""
        if key not in self._unreleased:
            return
        try:
            held = [p for p in await self.store.part_list(key) if p.seqnum != seqnum]
            await self.store.part_delete(key)
            for p in held:
                await self.store.part_put(p)
            self._done.pop(key, None)
            if held:
                group = self._new_group(key, _client_of(key, held), held[0].total,
                                        min(p.received_at for p in held))
                for p in held:
                    group.parts[p.seqnum] = (p.proxy_id, _stored_digest(p))
                    self._held += 1
                self._update_gauges()
        except Exception:
            log.exception("assembler: cannot reopen %s", key)
        finally:
            self._unreleased.discard(key)
            self._locks.release(key)

    def _concat(self, client_id: str, pdu: Pdu) -> ConcatInfo | None:
        try:
            info = concat_info(pdu)
        except Exception:  # defensive: a hand-built Pdu with odd field types
            info = None
        try:
            udhi = int(pdu.params.get("esm_class", 0) or 0) & ESM_UDHI
            if udhi:
                split_udh(message_data(pdu))
        except Exception as exc:
            self._metrics.event("broken_udh")
            self._bad_udh_log.warning(
                "client %s: %s seq %s with a malformed UDH (%s): %s",
                client_id,
                pdu.name if isinstance(pdu, Pdu) else "pdu",
                getattr(pdu, "sequence_number", "?"),
                exc,
                "using its SAR TLVs" if info is not None else "taken as a single message",
            )
        return info

    def _single(
        self, client_id: str, pdu: Pdu, proxy_id: str, now: float, raw: bytes | None
    ) -> AssembledMessage:
        part = HeldPart("", 1, 1, self._raw(pdu, raw), proxy_id, now, {"client": client_id})
        return AssembledMessage(
            key=None,
            client_id=client_id,
            parts=[part],
            pdus=[pdu],
            text=message_text([pdu], smsc_default=self.smsc_default),
            complete=True,
            total=1,
            missing=[],
        )

    @staticmethod
    def _raw(pdu: Pdu, raw: bytes | None) -> bytes:
        if raw is not None:
            return bytes(raw)
        try:
            return pdu.encode()
        except Exception as exc:  # a hand-built Pdu that cannot be encoded
            log.error("cannot encode %r for the assembler: %s", pdu, exc)
            return b""

    async def _add_part(
        self,
        key: str,
        client_id: str,
        info: ConcatInfo,
        pdu: Pdu,
        proxy_id: str,
        now: float,
        raw: bytes | None,
        digest: bytes,
        *,
        retry: bool = True,
    ) -> AddResult:
        seq = info.seqnum
        group = self._groups.get(key)

        if group is not None and seq in group.parts:
            held_id, held_digest = group.parts[seq]
            if held_digest is None or held_digest == digest:
                self._metrics.event("duplicate")
                return AddResult("duplicate", None, held_id, key)
            # same reference reused before the old message completed: release the old one
            await self._release_conflict(group, now)
            group = None

        if group is None:
            done = self._recent(key, now)
            if done is not None:
                prior = done.parts.get(seq)
                if prior is not None and (prior[1] is None or prior[1] == digest):
                    self._metrics.event("duplicate")
                    return AddResult("duplicate", None, prior[0], key)
                # a new message reusing the reference: forget the old one
                self._done.pop(key, None)

        if group is not None and len(group.parts) + 1 >= info.total:
            return await self._complete(group, client_id, pdu, seq, proxy_id, now, raw)

        # a part to hold
        if self._held + self._reserved >= self.max_pending:
            self._metrics.event("overflow")
            return AddResult("overflow", None, None, key)
        part = HeldPart(
            key, seq, info.total, self._raw(pdu, raw), proxy_id, now, {"client": client_id}
        )
        self._reserved += 1
        try:
            stored = await self.store.part_put(part)
        finally:
            self._reserved -= 1
        if not stored:
            # The store holds this (key, seq) although the index does not (an add() cancelled
            # while writing, or a store shared with another process): adopt what the store
            # has and decide again.
            if not retry:
                raise StoreError(f"part_put({key!r}, {seq}) refused and the part is not listed")
            await self._adopt(key, client_id, info.total, now)
            return await self._add_part(
                key, client_id, info, pdu, proxy_id, now, raw, digest, retry=False
            )
        if group is None:
            group = self._new_group(key, client_id, info.total, now)
        group.parts[seq] = (proxy_id, digest)
        self._held += 1
        self._update_gauges()
        self._metrics.event("held")
        return AddResult("held", None, proxy_id, key)

    def _new_group(self, key: str, client_id: str, total: int, first_at: float) -> _Group:
        gen = next(self._gen)
        deadline = first_at + self.timeout_s
        group = _Group(key, client_id, total, first_at, deadline, gen)
        self._groups[key] = group
        heapq.heappush(self._heap, (deadline, gen, key))
        return group

    async def _adopt(self, key: str, client_id: str, total: int, now: float) -> None:
        held = await self.store.part_list(key)
        if not held:
            return
        group = self._groups.get(key)
        if group is None:
            first = min(p.received_at for p in held)
            group = self._new_group(key, client_id, total, first)
        n = 0
        for p in held:
            if p.seqnum not in group.parts:
                group.parts[p.seqnum] = (p.proxy_id, _stored_digest(p))
                self._held += 1
                n += 1
        self._update_gauges()
        log.warning("assembler index out of step with the store for %s: adopted %d part(s)", key, n)

    async def _complete(
        self,
        group: _Group,
        client_id: str,
        pdu: Pdu,
        seq: int,
        proxy_id: str,
        now: float,
        raw: bytes | None,
    ) -> AddResult:
        key = group.key
        held = await self.store.part_list(key)
        current = HeldPart(
            key, seq, group.total, self._raw(pdu, raw), proxy_id, now, {"client": client_id}
        )
        if self.defer_release:
            await self.store.part_put(current)  # the whole message is in the store now
            self._unreleased.add(key)
        else:
            await self.store.part_delete(key)
        self._forget(group)
        parts = [p for p in held if p.seqnum != seq] + [current]
        msg = self._build(key, group.client_id, group.total, parts, {seq: pdu})
        self._remember(key, group, now, extra=(seq, proxy_id, _digest(pdu)))
        self._metrics.event("complete")
        if not msg.complete:
            log.warning(
                "assembler: %s completed in the index but the store lacks seqnum(s) %s",
                key,
                msg.missing,
            )
        return AddResult("complete", msg, proxy_id, key)

    async def _release_conflict(self, group: _Group, now: float) -> None:
        held = await self.store.part_list(group.key)
        await self.store.part_delete(group.key)
        self._forget(group)
        msg = self._build(group.key, group.client_id, group.total, held, {})
        self._metrics.event("conflict")
        log.info(
            "client %s reused the reference of incomplete message %s (missing %s): released",
            group.client_id,
            group.key,
            msg.missing,
        )
        if not self._released:
            self._released_at = now
        self._released.append(msg)

    # -- expiry ---------------------------------------------------------------------------------

    async def expire(self, now: float | None = None) -> list[AssembledMessage]:
        """Release the groups whose first part is ``timeout_s`` old (and those flushed by a
        reused reference): removed from the store, returned to be classified on their own
        text (``complete`` False, ``missing`` the absent seqnums). Never raises."""
        now = time.time() if now is None else float(now)
        out, self._released, self._released_at = self._released, [], None
        retry: list[tuple[float, int, str]] = []
        while self._heap and self._heap[0][0] <= now:
            deadline, gen, key = heapq.heappop(self._heap)
            group = self._groups.get(key)
            if group is None or group.gen != gen or group.deadline != deadline:
                continue
            await self._locks.acquire(key)
            try:
                group = self._groups.get(key)
                if group is None or group.gen != gen or group.deadline != deadline:
                    continue  # completed, re-created or re-armed while we waited
                try:
                    held = await self.store.part_list(key)
                    if not self.defer_release:
                        await self.store.part_delete(key)
                except Exception:
                    log.exception("assembler: cannot release %s from the store; retrying", key)
                    group.deadline = now + _STORE_RETRY_S
                    retry.append((group.deadline, gen, key))
                    continue
                self._forget(group)
                msg = self._build(key, group.client_id, group.total, held, {})
                self._remember(key, group, now)
                out.append(msg)
                if self.defer_release:
                    self._unreleased.add(key)  # the lock stays held until release(key)
                self._metrics.event("expired")
            finally:
                if key not in self._unreleased:
                    self._locks.release(key)
        for item in retry:
            heapq.heappush(self._heap, item)
        return out

    # -- restart --------------------------------------------------------------------------------

    async def restore(self) -> int:
        """Rebuild the index from the groups held in the store (after a restart); their
        timeouts run from their first part's ``received_at``. Returns how many groups were
        loaded (groups already indexed are left alone)."""
        loaded = 0
        for key, first_at in await self.store.part_groups():
            if key in self._groups:
                continue
            async with self._locks.hold(key):
                if key in self._groups:
                    continue
                held = await self.store.part_list(key)
                if not held:
                    continue
                total = max(p.total for p in held)
                client_id = _client_of(key, held)
                group = self._new_group(key, client_id, total, float(first_at))
                for p in held:
                    if p.seqnum not in group.parts:
                        group.parts[p.seqnum] = (p.proxy_id, _stored_digest(p))
                        self._held += 1
                if len(group.parts) >= total:
                    # complete in the store (cannot happen through add()): release it now
                    group.deadline = float(first_at)
                    heapq.heappush(self._heap, (group.deadline, group.gen, key))
                loaded += 1
        self._update_gauges()
        if loaded:
            log.info("assembler: restored %d held message(s), %d part(s)", loaded, self._held)
        return loaded

    # -- internals ------------------------------------------------------------------------------

    def _forget(self, group: _Group) -> None:
        if self._groups.get(group.key) is group:
            del self._groups[group.key]
            self._held -= len(group.parts)
            self._update_gauges()

    def _remember(
        self,
        key: str,
        group: _Group,
        now: float,
        extra: tuple[int, str, bytes] | None = None,
    ) -> None:
        parts = dict(group.parts)
        if extra is not None:
            parts[extra[0]] = (extra[1], extra[2])
        self._done[key] = _Done(now + self.timeout_s, parts)
        self._done.move_to_end(key)
        while len(self._done) > self.max_pending:
            self._done.popitem(last=False)

    def _recent(self, key: str, now: float) -> _Done | None:
        # drop expired entries from the front (insertion order ~ time order)
        while self._done:
            k, d = next(iter(self._done.items()))
            if d.expires_at > now:
                break
            self._done.popitem(last=False)
        d = self._done.get(key)
        if d is not None and d.expires_at <= now:
            self._done.pop(key, None)
            return None
        return d

    def _drop_stale_heads(self) -> None:
        while self._heap:
            deadline, gen, key = self._heap[0]
            group = self._groups.get(key)
            if group is not None and group.gen == gen and group.deadline == deadline:
                return
            heapq.heappop(self._heap)

    def _build(
        self,
        key: str,
        client_id: str,
        total: int,
        held: list[HeldPart],
        decoded: dict[int, Pdu],
    ) -> AssembledMessage:
        parts: list[HeldPart] = []
        pdus: list[Pdu] = []
        seen: set[int] = set()
        for p in sorted(held, key=lambda p: p.seqnum):
            if p.seqnum in seen:
                continue
            pdu = decoded.get(p.seqnum)
            if pdu is None:
                try:
                    pdu = decode_pdu(p.pdu)
                except Exception as exc:
                    log.error(
                        "assembler: stored part %s #%d does not decode: %s", key, p.seqnum, exc
                    )
                    continue
            seen.add(p.seqnum)
            parts.append(p)
            pdus.append(pdu)
        missing = [s for s in range(1, total + 1) if s not in seen]
        seqnums = [p.seqnum for p in parts]
        return AssembledMessage(
            key=key,
            client_id=client_id,
            parts=parts,
            pdus=pdus,
            text=message_text(pdus, seqnums, self.smsc_default),
            complete=not missing,
            total=total,
            missing=missing,
        )

    def _update_gauges(self) -> None:
        self._metrics.pending(self._held, len(self._groups))


def _stored_digest(part: HeldPart) -> bytes | None:
    try:
        return _digest(decode_pdu(part.pdu))
    except Exception:
        return None  # cannot tell: any copy of this seqnum counts as a duplicate


def _client_of(key: str, held: list[HeldPart]) -> str:
    for p in held:
        c = p.meta.get("client") if isinstance(p.meta, dict) else None
        if isinstance(c, str):
            return c
    parsed = parse_group_key(key)
    return parsed[0] if parsed else ""
