"""Delivery receipts: recognising them, finding the message id, rewriting it.

SMPP 3.4 Appendix B receipt text::

    id:IIIIIIIIII sub:SSS dlvrd:DDD submit date:YYMMDDhhmm done date:YYMMDDhhmm stat:DDDDDDD err:E text:...

SMSCs disagree on how the id is written: the id from submit_sm_resp may be hex ("0A1B2C") while
the receipt text has its decimal form ("660268"), with or without leading zeros, in either case.
``id_candidates`` produces every plausible spelling so the lookup succeeds whichever form the
upstream used; the stored id is kept exactly as the upstream gave it.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from .constants import ESM_RECEIPT_MASK, Tag
from .pdu import Pdu

_ID_RE = re.compile(rb"(?i)(\bid:)([^ \x00]*)")
_STAT_RE = re.compile(rb"(?i)\bstat:([A-Za-z]+)")
_ERR_RE = re.compile(rb"(?i)\berr:([0-9A-Za-z]+)")
_HEX_RE = re.compile(r"^[0-9A-Fa-f]+$")
_DEC_RE = re.compile(r"^[0-9]+$")


def is_receipt(pdu: Pdu) -> bool:
    """deliver_sm / data_sm carrying a delivery receipt or another delivery acknowledgement."""
    return bool(int(pdu.params.get("esm_class", 0)) & ESM_RECEIPT_MASK)


@dataclass(frozen=True)
class ReceiptInfo:
    message_id: str | None  # as written by the upstream
    stat: str | None
    err: str | None
    from_tlv: bool


def parse_receipt(pdu: Pdu) -> ReceiptInfo:
    tlv = pdu.get_tlv(Tag.RECEIPTED_MESSAGE_ID)
    text = _receipt_text(pdu)
    mid = None
    if tlv is not None:
        mid = tlv.rstrip(b"\x00").decode("latin-1").strip() or None
    if mid is None and text:
        m = _ID_RE.search(text)
        if m:
            mid = m.group(2).decode("latin-1") or None
    stat = err = None
    if text:
        m = _STAT_RE.search(text)
        stat = m.group(1).decode("latin-1").upper() if m else None
        m = _ERR_RE.search(text)
        err = m.group(1).decode("latin-1") if m else None
    if stat is None:
        state = pdu.get_tlv(Tag.MESSAGE_STATE)
        if state:
            stat = MESSAGE_STATES.get(state[0])
    return ReceiptInfo(mid, stat, err, tlv is not None)


def _receipt_text(pdu: Pdu) -> bytes:
    sm = pdu.params.get("short_message", b"") or b""
    if not sm:
        sm = pdu.get_tlv(Tag.MESSAGE_PAYLOAD) or b""
    return sm


def id_candidates(raw: str) -> list[str]:
    """Every spelling under which an upstream id may have been stored."""
    s = raw.strip()
    out: list[str] = []

    def add(x: str) -> None:
        if x and x not in out:
            out.append(x)

    add(s)
    add(s.lower())
    add(s.upper())
    stripped = s.lstrip("0") or "0"
    add(stripped)
    add(stripped.lower())
    add(stripped.upper())
    if _DEC_RE.match(s) and len(s) <= 40:
        n = int(s)
        h = format(n, "x")
        for form in (h, h.upper()):
            add(form)
            for width in (8, 10, 12, 16, 20):
                if len(form) < width:
                    add(form.zfill(width))
    if _HEX_RE.match(s) and len(s) <= 32:
        n = int(s, 16)
        d = str(n)
        add(d)
        for width in (10, 20):
            if len(d) < width:
                add(d.zfill(width))
    if _DEC_RE.match(stripped):
        for width in (10, 20):
            if len(stripped) < width:
                add(stripped.zfill(width))
    return out


def rewrite_receipt_id(pdu: Pdu, new_id: str) -> None:
    """Replace the message id in receipted_message_id and in the receipt text, in place."""
    if pdu.get_tlv(Tag.RECEIPTED_MESSAGE_ID) is not None:
        pdu.set_tlv(Tag.RECEIPTED_MESSAGE_ID, new_id.encode("latin-1") + b"\x00")
    new = new_id.encode("latin-1")
    sm = pdu.params.get("short_message", b"") or b""
    if sm:
        pdu.params["short_message"] = _ID_RE.sub(lambda m: m.group(1) + new, sm, count=1)
        return
    payload = pdu.get_tlv(Tag.MESSAGE_PAYLOAD)
    if payload:
        pdu.set_tlv(Tag.MESSAGE_PAYLOAD, _ID_RE.sub(lambda m: m.group(1) + new, payload, count=1))


MESSAGE_STATES = {
    1: "ENROUTE", 2: "DELIVRD", 3: "EXPIRED", 4: "DELETED", 5: "UNDELIV", 6: "ACCEPTD",
    7: "UNKNOWN", 8: "REJECTD",
}
STATE_CODES = {v: k for k, v in MESSAGE_STATES.items()}


def build_receipt(
    *,
    message_id: str,
    source_addr: str,
    source_addr_ton: int,
    source_addr_npi: int,
    destination_addr: str,
    dest_addr_ton: int,
    dest_addr_npi: int,
    stat: str,
    err: int | str,
    submitted_at: float,
    done_at: float | None = None,
    text: bytes = b"",
) -> Pdu:
    """A receipt deliver_sm the proxy synthesises itself (blocked or failed messages).

    Addressed like an SMSC receipt: from the original destination to the original source.
    """
    from .constants import CommandId

    done_at = time.time() if done_at is None else done_at
    fmt = "%y%m%d%H%M"
    dlvrd = "001" if stat == "DELIVRD" else "000"
    body = (
        f"id:{message_id} sub:001 dlvrd:{dlvrd} submit date:{time.strftime(fmt, time.localtime(submitted_at))} "
        f"done date:{time.strftime(fmt, time.localtime(done_at))} stat:{stat} err:{str(err)[:3]:0>3} text:"
    ).encode("latin-1") + text[:20]
    pdu = Pdu(
        int(CommandId.DELIVER_SM),
        params={
            "service_type": "",
            "source_addr_ton": dest_addr_ton,
            "source_addr_npi": dest_addr_npi,
            "source_addr": destination_addr,
            "dest_addr_ton": source_addr_ton,
            "dest_addr_npi": source_addr_npi,
            "destination_addr": source_addr,
            "esm_class": 0x04,
            "protocol_id": 0,
            "priority_flag": 0,
            "schedule_delivery_time": "",
            "validity_period": "",
            "registered_delivery": 0,
            "replace_if_present_flag": 0,
            "data_coding": 0,
            "sm_default_msg_id": 0,
            "short_message": body,
        },
    )
    pdu.set_tlv(Tag.RECEIPTED_MESSAGE_ID, message_id.encode("latin-1") + b"\x00")
    pdu.set_tlv(Tag.MESSAGE_STATE, bytes([STATE_CODES.get(stat, 7)]))
    return pdu
