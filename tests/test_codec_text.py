"""Tests of smpp_proxy.text (GSM 03.38, UCS-2, data_coding handling)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smpp_proxy.text import (
    GSM7_BASIC,
    GSM7_EXTENSION,
    Alphabet,
    alphabet,
    decode_text,
    encode_text,
    gsm7_decode,
    gsm7_encode,
    gsm7_pack,
    gsm7_unpack,
    is_gsm7,
    septet_length,
)

GSM_CHARS = "".join(c for i, c in enumerate(GSM7_BASIC) if i != 0x1B) + "".join(
    GSM7_EXTENSION.values()
)
gsm_text = st.text(alphabet=GSM_CHARS, max_size=200)


def naive_pack(septets: bytes, fill_bits: int = 0) -> bytes:
    """Independent reference: bit string, LSB first (no septets: no octets)."""
    if not septets:
        return b""
    bits = [0] * fill_bits
    for s in septets:
        bits += [(s >> i) & 1 for i in range(7)]
    bits += [0] * (-len(bits) % 8)
    return bytes(sum(bits[i + j] << j for j in range(8)) for i in range(0, len(bits), 8))


# ---------------------------------------------------------------------------------------------
# GSM 03.38 unpacked
# ---------------------------------------------------------------------------------------------


def test_basic_table_positions():
    assert gsm7_encode("@") == b"\x00"
    assert gsm7_encode("£$¥") == b"\x01\x02\x03"
    assert gsm7_encode("\n\r") == b"\x0a\x0d"
    assert gsm7_encode("_") == b"\x11"
    assert gsm7_encode("ΔΩ") == b"\x10\x15"
    assert gsm7_encode("¤") == b"\x24"
    assert gsm7_encode("¡¿") == b"\x40\x60"
    assert gsm7_encode("ÄÖÑÜ§") == b"\x5b\x5c\x5d\x5e\x5f"
    assert gsm7_encode("äöñüà") == b"\x7b\x7c\x7d\x7e\x7f"
    assert gsm7_encode("Hello, World 123!") == b"Hello, World 123!"
    assert gsm7_decode(b"\x00\x01\x02\x03\x04") == "@£$¥è"


def test_extension_table():
    assert gsm7_encode("€") == b"\x1b\x65"
    assert (
        gsm7_encode("[]{}~\\^|")
        == b"\x1b\x3c\x1b\x3e\x1b\x28\x1b\x29\x1b\x3d\x1b\x2f\x1b\x14\x1b\x40"
    )
    assert gsm7_encode("\x0c") == b"\x1b\x0a"  # form feed
    assert gsm7_decode(b"\x1b\x65 \x1b\x3c\x1b\x3e") == "€ []"
    assert septet_length("€") == 2
    assert septet_length("a€[b") == 6
    assert septet_length("") == 0
    assert septet_length("@" * 160) == 160


def test_not_representable():
    for s in ["`", "\t", "ç", "Привет", "😀", "\xa0", "€\u200b"]:
        assert not is_gsm7(s)
        with pytest.raises(ValueError):
            gsm7_encode(s)
        with pytest.raises(ValueError):
            septet_length(s)
    assert is_gsm7("")
    assert is_gsm7("Ça coûte 5€ [promo]") is False  # û is not in GSM 03.38
    assert is_gsm7("Ça coute 5€ [promo]")


def test_decode_is_tolerant():
    # unknown escape -> character of the default table; ESC ESC / trailing ESC -> space
    assert gsm7_decode(b"\x1b\x41") == "A"
    assert gsm7_decode(b"a\x1b\x1bb") == "a b"
    assert gsm7_decode(b"abc\x1b") == "abc "
    assert gsm7_decode(b"\x1b") == " "
    # octets >= 0x80 are not septets
    assert gsm7_decode(b"a\x80\xffb") == "a\ufffd\ufffdb"
    assert gsm7_decode(b"\x1b\x9b") == " "
    assert gsm7_decode(b"") == ""
    assert gsm7_decode(bytearray(b"ab")) == "ab"


@settings(max_examples=200, deadline=None)
@given(gsm_text)
def test_gsm7_round_trip(text):
    enc = gsm7_encode(text)
    assert len(enc) == septet_length(text)
    assert max(enc, default=0) < 0x80
    assert gsm7_decode(enc) == text
    assert is_gsm7(text)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_gsm7_decode_never_raises(data):
    assert isinstance(gsm7_decode(data), str)


# ---------------------------------------------------------------------------------------------
# GSM 03.38 packed
# ---------------------------------------------------------------------------------------------


def test_pack_known_vectors():
    assert gsm7_pack(b"hellohello").hex().upper() == "E8329BFD4697D9EC37"
    assert gsm7_unpack(bytes.fromhex("E8329BFD4697D9EC37")) == b"hellohello"
    # 3GPP TS 23.038 CR padding example: "1234567" (8n-1 characters)
    assert gsm7_pack(b"1234567").hex().upper() == "31D98C56B3DD00"
    assert gsm7_pack(b"1234567", pad_cr=True).hex().upper() == "31D98C56B3DD1A"
    assert gsm7_pack(b"12345678").hex().upper() == "31D98C56B3DD70"


def test_pack_boundaries_7_8_160():
    seven = gsm7_encode("abcdefg")
    eight = gsm7_encode("abcdefgh")
    full = gsm7_encode("x" * 160)
    assert len(gsm7_pack(seven)) == 7  # 49 bits -> 7 octets, 7 spare bits
    assert len(gsm7_pack(eight)) == 7  # 56 bits exactly
    assert len(gsm7_pack(full)) == 140  # a full single SMS
    assert len(gsm7_pack(gsm7_encode("x" * 153), fill_bits=1)) == 134  # + 6-octet UDH = 140
    assert gsm7_unpack(gsm7_pack(eight)) == eight
    assert gsm7_unpack(gsm7_pack(full)) == full
    assert gsm7_unpack(gsm7_pack(full), septet_count=160) == full


def test_cr_padding_ambiguity():
    """8n-1 characters leave 7 spare bits that read as an extra septet.

    Zero padding reads as a final '@' (indistinguishable from a real '@'); CR padding is
    recognised and dropped. With the septet count known there is no ambiguity.
    """
    seven = gsm7_encode("abcdefg")
    zero_padded = gsm7_pack(seven)
    assert gsm7_unpack(zero_padded) == seven + b"\x00"  # the documented ambiguity
    assert gsm7_decode(gsm7_unpack(zero_padded)) == "abcdefg@"
    assert gsm7_unpack(zero_padded, septet_count=7) == seven
    cr_padded = gsm7_pack(seven, pad_cr=True)
    assert gsm7_unpack(cr_padded) == seven
    assert gsm7_unpack(cr_padded, septet_count=7) == seven
    # a real final '@' of an 8-character message stays
    assert gsm7_unpack(gsm7_pack(gsm7_encode("abcdefg@"))) == gsm7_encode("abcdefg@")
    # a wanted final CR on an octet boundary is doubled by the sender (CR CR means CR)
    with_cr = gsm7_encode("abcdefg\r")
    packed = gsm7_pack(with_cr, pad_cr=True)
    assert len(packed) == 8
    assert gsm7_unpack(packed) == with_cr + b"\r"
    # pad_cr changes nothing when there are no 7 spare bits
    assert gsm7_pack(gsm7_encode("abc"), pad_cr=True) == gsm7_pack(gsm7_encode("abc"))


def test_fill_bits():
    udh = bytes.fromhex("050003CC0201")  # 6 octets -> 1 fill bit
    text = gsm7_encode("Hello")
    packed = gsm7_pack(text, fill_bits=1)
    assert packed == naive_pack(text, 1)
    user_data = udh + packed
    assert gsm7_unpack(user_data[6:], septet_count=5, fill_bits=1) == text
    with pytest.raises(ValueError):
        gsm7_pack(text, fill_bits=7)
    with pytest.raises(ValueError):
        gsm7_unpack(packed, fill_bits=-1)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200).map(lambda b: bytes(x & 0x7F for x in b)), st.integers(0, 6))
def test_pack_matches_reference_and_round_trips(septets, fill):
    packed = gsm7_pack(septets, fill_bits=fill)
    assert packed == naive_pack(septets, fill)
    assert gsm7_unpack(packed, septet_count=len(septets), fill_bits=fill) == septets
    unpacked = gsm7_unpack(packed, fill_bits=fill)
    # without the count: the septets, possibly followed by one padding septet ('@'),
    # or minus a final CR that landed exactly on the padding position
    assert unpacked in (septets, septets + b"\x00", septets[:-1])
    packed_cr = gsm7_pack(septets, fill_bits=fill, pad_cr=True)
    assert gsm7_unpack(packed_cr, fill_bits=fill) in (septets, septets + b"\r")


def test_unpack_edge_cases():
    assert gsm7_unpack(b"") == b""
    assert gsm7_unpack(b"\x01", fill_bits=6) == b""  # only 2 bits of data
    assert gsm7_unpack(b"\x41") == b"\x41"
    assert gsm7_unpack(gsm7_pack(b"abc"), septet_count=100) == b"abc"


# ---------------------------------------------------------------------------------------------
# data_coding
# ---------------------------------------------------------------------------------------------


def test_ucs2_emoji_surrogate_pairs():
    text = "Hi 😀👍🏽 Привет 中文"
    data = encode_text(text, 0x08)
    assert data == text.encode("utf-16-be")
    assert data[6:10] == b"\xd8\x3d\xde\x00"  # U+1F600 as a surrogate pair
    assert decode_text(data, 0x08) == text


def test_ucs2_broken():
    assert decode_text(b"\x00A\x00", 0x08) == "A\ufffd"  # odd length
    assert decode_text(b"\xd8\x3d\x00A", 0x08) == "\ufffdA"  # high surrogate, no low
    assert decode_text(b"\xde\x00\x00A", 0x08) == "\ufffdA"  # lone low surrogate
    assert decode_text(b"\x00A\xd8\x3d", 0x08) == "A\ufffd"  # truncated pair at the end
    assert decode_text(b"", 0x08) == ""
    with pytest.raises(ValueError):
        encode_text("\ud83d", 0x08)  # lone surrogate in str


@pytest.mark.parametrize(
    "data, dc, expected",
    [
        (b"@\x00\x1b\x65", 0x00, "¡@€"),  # SMSC default = GSM 03.38 unpacked
        (b"Hello", 0x01, "Hello"),
        (b"Hi\x80", 0x01, "Hi\ufffd"),  # IA5 is 7-bit
        (b"caf\xe9", 0x03, "café"),
        (b"\x00\xff", 0x02, "\x00\xff"),
        (b"\x00\xff", 0x04, "\x00\xff"),
        ("Привет".encode("iso8859-5"), 0x06, "Привет"),
        ("שלום".encode("iso8859-8"), 0x07, "שלום"),
        ("日本語".encode("iso2022_jp"), 0x0A, "日本語"),
        ("日本語".encode("shift_jis"), 0x05, "日本語"),
        ("한국어".encode("euc_kr"), 0x0E, "한국어"),
        (b"\x00H\x00i", 0x08, "Hi"),
        (b"Hi\x00", 0xF0, "Hi@"),  # GSM coding group, class 0, GSM 7-bit
        (b"Hi\x00", 0xF1, "Hi@"),
        (b"\xe9", 0xF4, "é"),  # bit 2: 8-bit data
        (b"\xe9", 0xF6, "é"),
        (b"Hi", 0x10, "Hi"),  # general data coding: 00 -> GSM 7-bit
        (b"\xe9", 0x14, "é"),  # 01 -> 8-bit
        (b"\x00H\x00i", 0x18, "Hi"),  # 10 -> UCS2
        (b"\x00H\x00i", 0x19, "Hi"),
        (b"Hi", 0xC0, "Hi"),  # MWI discard, GSM 7
        (b"\x00H", 0xE8, "H"),  # MWI store, UCS2
    ],
)
def test_decode_text_codings(data, dc, expected):
    assert decode_text(data, dc) == expected


def test_decode_text_default_alphabet_fallbacks():
    # octets >= 0x80 cannot be GSM septets: UTF-8 if valid, else Latin-1
    assert decode_text("Grüße €".encode(), 0x00) == "Grüße €"
    assert decode_text(b"Gr\xfc\xdfe", 0x00) == "Grüße"
    assert decode_text(b"@", 0x00, smsc_default="latin-1") == "@"
    assert decode_text(b"@\xe9", 0x00, smsc_default="latin-1") == "@é"
    assert decode_text(b"@\xe9", 0x00, smsc_default="ascii") == "@\ufffd"


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=100), st.integers(0, 255))
def test_decode_text_never_raises(data, dc):
    assert isinstance(decode_text(data, dc), str)


def test_alphabet():
    assert alphabet(0x00) == Alphabet.GSM7
    assert alphabet(0x08) == Alphabet.UCS2
    assert alphabet(0x0B) == Alphabet.RESERVED
    assert alphabet(0x2C) == Alphabet.COMPRESSED
    assert alphabet(0x1C) == Alphabet.RESERVED
    assert alphabet(0x4A) == Alphabet.UCS2  # automatic deletion group
    assert alphabet(0x90) == Alphabet.RESERVED
    assert alphabet(0xD3) == Alphabet.GSM7
    assert alphabet(0xF7) == Alphabet.BINARY


def test_encode_text():
    assert encode_text("@€", 0x00) == b"\x00\x1b\x65"
    assert encode_text("@", 0x00, smsc_default="latin-1") == b"@"
    assert encode_text("café", 0x03) == b"caf\xe9"
    assert encode_text("Hi", 0x01) == b"Hi"
    assert encode_text("Hi", 0xF0) == b"Hi"
    assert encode_text("Привет", 0x06) == "Привет".encode("iso8859-5")
    for text, dc in [("café", 0x01), ("€", 0x03), ("😀", 0x00), ("x", 0x2C), ("x", 0x0B)]:
        with pytest.raises(ValueError):
            encode_text(text, dc)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=50), st.sampled_from([0x00, 0x01, 0x03, 0x06, 0x07, 0x08, 0xF0, 0x18]))
def test_encode_decode_text_round_trip(text, dc):
    try:
        data = encode_text(text, dc)
    except ValueError:
        return
    assert decode_text(data, dc) == text
