"""User Data Header (3GPP TS 23.040 9.2.3.24) and concatenation info of SMPP messages.

A long message arrives either as parts whose short_message starts with a UDH (esm_class UDHI
bit 0x40) holding a concatenation IE (IEI 0x00, 8-bit reference, or 0x08, 16-bit reference),
or as parts carrying the SMPP sar_msg_ref_num / sar_total_segments / sar_segment_seqnum TLVs.
"""

from __future__ import annotations

from dataclasses import dataclass

from .constants import ESM_UDHI, Tag
from .pdu import Pdu

__all__ = [
    "ConcatInfo",
    "IEI_CONCAT_8",
    "IEI_CONCAT_16",
    "build_udh",
    "concat_info",
    "fill_bits",
    "message_body",
    "message_data",
    "split_udh",
]

IEI_CONCAT_8 = 0x00
IEI_CONCAT_16 = 0x08
IEI_PORT_8 = 0x04
IEI_PORT_16 = 0x05


@dataclass(frozen=True, slots=True)
class ConcatInfo:
    reference: int
    total: int
    seqnum: int
    ref_bits: int  # 8 or 16 (SAR TLVs: 16)


def split_udh(short_message: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """Split user data that starts with a UDH into ``([(iei, data), ...], payload)``.

    Raises ValueError when the UDHL points past the message or an IE is truncated.
    """
    sm = bytes(short_message)
    if not sm:
        raise ValueError("empty user data: no UDH length octet")
    udhl = sm[0]
    end = 1 + udhl
    if end > len(sm):
        raise ValueError(f"UDHL {udhl} exceeds the {len(sm) - 1} octets of user data")
    ies: list[tuple[int, bytes]] = []
    pos = 1
    while pos < end:
        if pos + 2 > end:
            raise ValueError("truncated information element header in UDH")
        iei = sm[pos]
        iel = sm[pos + 1]
        pos += 2
        if pos + iel > end:
            raise ValueError(f"information element 0x{iei:02x} length {iel} overruns the UDH")
        ies.append((iei, sm[pos : pos + iel]))
        pos += iel
    return ies, sm[end:]


def build_udh(ies: list[tuple[int, bytes]]) -> bytes:
    """Encode information elements as a UDH, UDHL octet included."""
    body = bytearray()
    for iei, data in ies:
        if not 0 <= iei <= 0xFF:
            raise ValueError(f"IEI {iei!r} out of range")
        if len(data) > 0xFF:
            raise ValueError(f"information element 0x{iei:02x} too long ({len(data)} octets)")
        body.append(iei)
        body.append(len(data))
        body += data
    if len(body) > 0xFF:
        raise ValueError(f"UDH too long ({len(body)} octets)")
    return bytes((len(body),)) + bytes(body)


def fill_bits(udh_length: int) -> int:
    """Fill bits between a UDH of ``udh_length`` octets (UDHL included) and GSM 7-bit packed
    text, so that the text starts on a septet boundary."""
    return (7 - (udh_length * 8) % 7) % 7


def message_data(pdu: Pdu) -> bytes:
    """The user data of a submit_sm / deliver_sm / data_sm ...: short_message, or the
    message_payload TLV when short_message is empty (UDH included, if any)."""
    sm = pdu.params.get("short_message") or b""
    if not sm:
        payload = pdu.get_tlv(Tag.MESSAGE_PAYLOAD)
        if payload:
            return bytes(payload)
    return bytes(sm)


def message_body(pdu: Pdu) -> bytes:
    """The user data without the UDH. A UDH that cannot be parsed is left in place."""
    data = message_data(pdu)
    if data and int(pdu.params.get("esm_class", 0)) & ESM_UDHI:
        try:
            return split_udh(data)[1]
        except ValueError:
            return data
    return data


def _valid(ref: int, total: int, seq: int, bits: int) -> ConcatInfo | None:
    if total < 2 or seq < 1 or seq > total:
        return None
    return ConcatInfo(ref, total, seq, bits)


def concat_info(pdu: Pdu) -> ConcatInfo | None:
    """Concatenation info of a message part, or None for a single-part message or nonsense.

    The UDH is looked at when the UDHI bit is set (the last concatenation IE wins, per 23.040
    9.2.3.24); the SAR TLVs otherwise, or when the UDH has no concatenation IE.
    """
    if int(pdu.params.get("esm_class", 0)) & ESM_UDHI:
        data = message_data(pdu)
        try:
            ies = split_udh(data)[0]
        except ValueError:
            ies = []
        found: tuple[int, bytes] | None = None
        for iei, d in ies:
            if (iei == IEI_CONCAT_8 and len(d) == 3) or (iei == IEI_CONCAT_16 and len(d) == 4):
                found = (iei, d)
        if found is not None:
            iei, d = found
            if iei == IEI_CONCAT_8:
                return _valid(d[0], d[1], d[2], 8)
            return _valid((d[0] << 8) | d[1], d[2], d[3], 16)

    ref = pdu.get_tlv(Tag.SAR_MSG_REF_NUM)
    total = pdu.get_tlv(Tag.SAR_TOTAL_SEGMENTS)
    seq = pdu.get_tlv(Tag.SAR_SEGMENT_SEQNUM)
    if ref is None or total is None or seq is None:
        return None
    if len(ref) != 2 or len(total) != 1 or len(seq) != 1:
        return None
    return _valid((ref[0] << 8) | ref[1], total[0], seq[0], 16)
