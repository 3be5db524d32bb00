"""Character sets of SMS user data: GSM 03.38 (3GPP TS 23.038), ASCII, Latin-1, UCS-2 ...

GSM 7-bit default alphabet comes in two forms:

* unpacked: one septet per octet, as SMPP carries it for ``data_coding`` 0 (SMSC default
  alphabet) on most SMSCs. Characters of the extension table take two septets: the escape
  0x1B followed by the extension code.
* packed: septets packed LSB first into octets (as on the air interface, and on some SMSCs).
  ``gsm7_pack`` / ``gsm7_unpack`` convert between the two forms. ``fill_bits`` is the number of
  padding bits that precede the first septet when a User Data Header precedes the text (so the
  text starts on a septet boundary, see :func:`smpp_proxy.udh.fill_bits`).

CR padding (3GPP TS 23.038 section 6.1.2.3.1): when 8n-1 characters are packed, the last octet
has 7 spare bits, which a receiver that does not know the septet count reads as a final '@'
(0x00). Senders may avoid that by putting a CR (0x0D) there. ``gsm7_pack(..., pad_cr=True)``
does so (and doubles a wanted final CR that would end on an octet boundary);
``gsm7_unpack(data)`` without ``septet_count`` drops such a final CR. A sender that pads with
zero bits instead produces a final '@' that is indistinguishable from a real one, so it is kept:
pass ``septet_count`` whenever it is known.

``decode_text`` never raises (replacement characters instead): it feeds the classifier and the
logs with whatever the peer sent. ``encode_text`` raises ``ValueError`` when the text cannot be
represented in the requested coding.
"""

from __future__ import annotations

import codecs

__all__ = [
    "GSM7_BASIC",
    "GSM7_EXTENSION",
    "decode_text",
    "encode_text",
    "gsm7_decode",
    "gsm7_encode",
    "gsm7_pack",
    "gsm7_unpack",
    "is_gsm7",
    "septet_length",
    "Alphabet",
    "alphabet",
]

REPLACEMENT = "\ufffd"
ESC = 0x1B

# GSM 03.38 default alphabet, indexed by septet. 0x1B is the escape to the extension table
# (shown as NBSP only as a placeholder; it is never produced by decoding).
GSM7_BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅå"
    "Δ_ΦΓΛΩΠΨΣΘΞ\xa0ÆæßÉ"
    " !\"#¤%&'()*+,-./"
    "0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNO"
    "PQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmno"
    "pqrstuvwxyzäöñüà"
)
assert len(GSM7_BASIC) == 128

# Extension table: septet following the escape -> character.
GSM7_EXTENSION = {
    0x0A: "\x0c",  # form feed (page break)
    0x14: "^",
    0x28: "{",
    0x29: "}",
    0x2F: "\\",
    0x3C: "[",
    0x3D: "~",
    0x3E: "]",
    0x40: "|",
    0x65: "€",
}

# character -> unpacked septets
_ENCODE: dict[int, str] = {}
for _i, _ch in enumerate(GSM7_BASIC):
    if _i != ESC:
        _ENCODE[ord(_ch)] = chr(_i)
for _i, _ch in GSM7_EXTENSION.items():
    _ENCODE[ord(_ch)] = "\x1b" + chr(_i)
del _i, _ch

_GSM7_CHARS = frozenset(chr(c) for c in _ENCODE)
_GSM7_EXT_CHARS = frozenset(GSM7_EXTENSION.values())

# septet (as a latin-1 code point) -> character, for str.translate; bytes >= 0x80 are not
# septets and become U+FFFD.
_DECODE_TABLE = {i: GSM7_BASIC[i] for i in range(128)}
_DECODE_TABLE.update({i: REPLACEMENT for i in range(128, 256)})


# extension code (after an escape) -> character: the extension table, else the default table's
# character for that code, else (escape, octets >= 0x80) a space.
_ESCAPED = tuple(
    GSM7_EXTENSION.get(i, GSM7_BASIC[i] if i < 128 and i != ESC else " ") for i in range(256)
)


class _EncodeMap(dict):
    """str.translate mapping that rejects characters outside the GSM 7-bit alphabet."""

    def __missing__(self, key: int) -> str:
        raise ValueError(f"character {chr(key)!r} (U+{key:04X}) is not in the GSM 03.38 alphabet")


_ENCODE_MAP = _EncodeMap(_ENCODE)


# ---------------------------------------------------------------------------------------------
# GSM 03.38
# ---------------------------------------------------------------------------------------------


def is_gsm7(text: str) -> bool:
    """True if every character is in the GSM 03.38 default alphabet or its extension table."""
    return _GSM7_CHARS.issuperset(text)


def septet_length(text: str) -> int:
    """Number of septets ``text`` takes in GSM 7-bit (extension characters count 2).

    Raises ValueError if ``text`` is not representable.
    """
    if not _GSM7_CHARS.issuperset(text):
        bad = next(c for c in text if c not in _GSM7_CHARS)
        raise ValueError(f"character {bad!r} is not in the GSM 03.38 alphabet")
    return len(text) + sum(1 for c in text if c in _GSM7_EXT_CHARS)


def gsm7_encode(text: str) -> bytes:
    """Text -> unpacked GSM 7-bit septets (one per octet). ValueError if not representable."""
    return text.translate(_ENCODE_MAP).encode("latin-1")


def gsm7_decode(data: bytes) -> str:
    """Unpacked GSM 7-bit septets -> text. Never raises.

    An escape followed by a code that is not in the extension table gives the character of the
    default table for that code (3GPP TS 23.038 6.2.1.1); an escape followed by another escape,
    or at the very end, gives a space. Octets >= 0x80 (not septets) give U+FFFD.
    """
    raw = bytes(data)
    s = raw.decode("latin-1")
    if "\x1b" not in s:
        return s.translate(_DECODE_TABLE)
    if "\x1b\x1b" not in s and s[-1] != "\x1b":
        # every escape is followed by one extension code
        parts = s.split("\x1b")
        out = [parts[0].translate(_DECODE_TABLE)]
        for part in parts[1:]:
            out.append(_ESCAPED[ord(part[0])])
            out.append(part[1:].translate(_DECODE_TABLE))
        return "".join(out)
    out = []
    i = 0
    n = len(raw)
    while i < n:
        b = raw[i]
        i += 1
        if b != ESC:
            out.append(_DECODE_TABLE[b])
        elif i >= n:
            out.append(" ")
        else:
            out.append(_ESCAPED[raw[i]])
            i += 1
    return "".join(out)


def gsm7_pack(septets: bytes, fill_bits: int = 0, pad_cr: bool = False) -> bytes:
    """Pack septets (one per octet, high bit ignored) LSB first, after ``fill_bits`` zero bits.

    With ``pad_cr`` a CR fills 7 spare bits at the end (3GPP TS 23.038 6.1.2.3.1).
    """
    if not 0 <= fill_bits <= 6:
        raise ValueError("fill_bits must be in 0..6")
    septets = bytes(septets)
    if not septets:
        return b""
    if pad_cr:
        total = fill_bits + 7 * len(septets)
        if total % 8 == 1:  # 7 spare bits left in the last octet
            septets += b"\r"
        elif total % 8 == 0 and septets[-1] == 0x0D:
            # a wanted final CR ending on an octet boundary would be taken for padding
            septets += b"\r"
    out = bytearray()
    acc = 0
    nbits = fill_bits
    for s in septets:
        acc |= (s & 0x7F) << nbits
        nbits += 7
        if nbits >= 8:
            out.append(acc & 0xFF)
            acc >>= 8
            nbits -= 8
    if nbits:
        out.append(acc & 0xFF)
    return bytes(out)


def gsm7_unpack(data: bytes, septet_count: int | None = None, fill_bits: int = 0) -> bytes:
    """Unpack packed GSM 7-bit data into septets (one per octet).

    Without ``septet_count`` every whole septet is returned, except a final CR that exactly
    fills the last octet's spare bits (CR padding, see module docstring).
    """
    if not 0 <= fill_bits <= 6:
        raise ValueError("fill_bits must be in 0..6")
    total_bits = len(data) * 8 - fill_bits
    if total_bits < 0:
        return b""
    available = total_bits // 7
    if septet_count is None:
        count = available
    else:
        count = min(septet_count, available)
    out = bytearray(count)
    if not count:
        return b""
    acc = data[0] >> fill_bits  # the fill bits are the low bits of the first octet
    nbits = 8 - fill_bits
    k = 0
    idx = 1
    n = len(data)
    while True:
        while nbits >= 7 and k < count:
            out[k] = acc & 0x7F
            acc >>= 7
            nbits -= 7
            k += 1
        if k >= count or idx >= n:
            break
        acc |= data[idx] << nbits
        nbits += 8
        idx += 1
    if septet_count is None and out[-1] == 0x0D and fill_bits + 7 * count == n * 8:
        del out[-1]  # CR padding of 7 spare bits
    return bytes(out)


# ---------------------------------------------------------------------------------------------
# data_coding
# ---------------------------------------------------------------------------------------------


class Alphabet:
    GSM7 = "gsm7"
    ASCII = "ascii"
    LATIN1 = "latin-1"
    BINARY = "8bit"
    UCS2 = "ucs2"
    CYRILLIC = "iso8859-5"
    HEBREW = "iso8859-8"
    JIS = "jis"
    ISO2022JP = "iso2022-jp"
    KANJI_X0212 = "jis-x0212"
    KSC5601 = "ksc5601"
    PICTOGRAM = "pictogram"
    COMPRESSED = "compressed"
    RESERVED = "reserved"


_SMPP_CODINGS = {
    0x00: Alphabet.GSM7,  # SMSC default alphabet
    0x01: Alphabet.ASCII,  # IA5 (CCITT T.50) / ASCII (ANSI X3.4)
    0x02: Alphabet.BINARY,
    0x03: Alphabet.LATIN1,
    0x04: Alphabet.BINARY,
    0x05: Alphabet.JIS,  # JIS (X 0208-1990)
    0x06: Alphabet.CYRILLIC,
    0x07: Alphabet.HEBREW,
    0x08: Alphabet.UCS2,
    0x09: Alphabet.PICTOGRAM,
    0x0A: Alphabet.ISO2022JP,  # ISO-2022-JP (music codes)
    0x0D: Alphabet.KANJI_X0212,  # extended Kanji JIS (X 0212-1990)
    0x0E: Alphabet.KSC5601,  # KS C 5601
}

_GROUP_ALPHABET = (Alphabet.GSM7, Alphabet.BINARY, Alphabet.UCS2, Alphabet.RESERVED)


def alphabet(data_coding: int) -> str:
    """The :class:`Alphabet` designated by an SMPP data_coding value (GSM 03.38 coding groups
    included)."""
    dc = data_coding & 0xFF
    if dc < 0x10:
        return _SMPP_CODINGS.get(dc, Alphabet.RESERVED)
    hi = dc >> 4
    if hi <= 0x7:
        # 00xx xxxx general data coding / 01xx xxxx automatic deletion group:
        # bit 5 compressed, bits 3-2 alphabet
        if dc & 0x20:
            return Alphabet.COMPRESSED
        return _GROUP_ALPHABET[(dc >> 2) & 0x03]
    if hi == 0xF:  # data coding / message class: bit 2 -> 8-bit data, else GSM 7-bit
        return Alphabet.BINARY if dc & 0x04 else Alphabet.GSM7
    if hi in (0xC, 0xD):  # message waiting indication, discard / store, GSM 7-bit
        return Alphabet.GSM7
    if hi == 0xE:  # message waiting indication, store, UCS2
        return Alphabet.UCS2
    return Alphabet.RESERVED  # 1000..1011 reserved coding groups


def _codec(name: str, fallback: str = "latin-1"):
    try:
        return codecs.lookup(name).name
    except LookupError:  # pragma: no cover - minimal Python builds
        return fallback


_CP_JIS = _codec("shift_jis")
_CP_ISO2022JP = _codec("iso2022_jp")
_CP_ISO2022JP2 = _codec("iso2022_jp_2")
_CP_EUCKR = _codec("euc_kr")


def _best_effort(data: bytes, *encodings: str) -> str:
    for enc in encodings:
        try:
            return data.decode(enc)
        except (UnicodeDecodeError, LookupError):
            continue
    try:
        return data.decode(encodings[0], "replace")
    except LookupError:  # pragma: no cover
        return data.decode("latin-1")


def _decode_default(data: bytes, smsc_default: str) -> str:
    if smsc_default == Alphabet.GSM7:
        if data.isascii():
            return gsm7_decode(data)
        # Octets >= 0x80 cannot be unpacked septets: the peer sent something else under
        # "SMSC default alphabet" (typically UTF-8 or Latin-1 from a misconfigured ESME).
        return _best_effort(data, "utf-8", "latin-1")
    if smsc_default == Alphabet.ASCII:
        return data.decode("ascii", "replace")
    return data.decode(smsc_default if smsc_default != Alphabet.BINARY else "latin-1", "replace")


def decode_text(data: bytes, data_coding: int, smsc_default: str = Alphabet.GSM7) -> str:
    """Best-effort text of user data (UDH already removed). Never raises.

    ``smsc_default`` is what data_coding 0 ("SMSC default alphabet") means for this SMSC:
    unpacked GSM 03.38 (the usual case), "ascii" or "latin-1".
    """
    try:
        data = bytes(data)
        alpha = alphabet(data_coding)
        if data_coding == 0:
            return _decode_default(data, smsc_default)
        if alpha == Alphabet.GSM7:
            if data.isascii():
                return gsm7_decode(data)
            return _best_effort(data, "utf-8", "latin-1")
        if alpha == Alphabet.UCS2:
            # UTF-16BE: surrogate pairs (emoji) decode to one code point; a lone surrogate or
            # an odd final octet becomes U+FFFD.
            return data.decode("utf-16-be", "replace")
        if alpha == Alphabet.ASCII:
            return data.decode("ascii", "replace")
        if alpha == Alphabet.CYRILLIC:
            return data.decode("iso8859-5", "replace")
        if alpha == Alphabet.HEBREW:
            return data.decode("iso8859-8", "replace")
        if alpha == Alphabet.JIS:
            return _best_effort(data, _CP_JIS, _CP_ISO2022JP)
        if alpha in (Alphabet.ISO2022JP, Alphabet.KANJI_X0212):
            return _best_effort(data, _CP_ISO2022JP, _CP_ISO2022JP2)
        if alpha == Alphabet.KSC5601:
            return _best_effort(data, _CP_EUCKR)
        # Latin-1, 8-bit binary, pictogram, compressed, reserved: Latin-1 maps every octet.
        return data.decode("latin-1")
    except Exception:  # pragma: no cover - defensive: this function must never raise
        return bytes(data).decode("latin-1", "replace")


def encode_text(text: str, data_coding: int, smsc_default: str = Alphabet.GSM7) -> bytes:
    """Encode ``text`` for ``data_coding`` (GSM 7-bit unpacked). ValueError if not representable."""
    alpha = alphabet(data_coding)
    if data_coding == 0:
        alpha = smsc_default
    if alpha == Alphabet.GSM7:
        return gsm7_encode(text)
    codec = {
        Alphabet.UCS2: "utf-16-be",
        Alphabet.ASCII: "ascii",
        Alphabet.LATIN1: "latin-1",
        Alphabet.BINARY: "latin-1",
        Alphabet.CYRILLIC: "iso8859-5",
        Alphabet.HEBREW: "iso8859-8",
        Alphabet.JIS: _CP_JIS,
        Alphabet.ISO2022JP: _CP_ISO2022JP,
        Alphabet.KANJI_X0212: _CP_ISO2022JP2,
        Alphabet.KSC5601: _CP_EUCKR,
        Alphabet.PICTOGRAM: "latin-1",
    }.get(alpha)
    if codec is None:
        raise ValueError(f"cannot encode text for data_coding 0x{data_coding:02x} ({alpha})")
    # UnicodeEncodeError is a ValueError (lone surrogates included for UTF-16).
    return text.encode(codec)
