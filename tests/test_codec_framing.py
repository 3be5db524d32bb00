"""Tests of smpp_proxy.framing."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smpp_proxy.framing import Framer, FramingError


def pdu(seq: int, body: bytes = b"", command_id: int = 0x15) -> bytes:
    return struct.pack(">IIII", 16 + len(body), command_id, 0, seq) + body


def feed_chunks(framer: Framer, stream: bytes, cuts: list[int]) -> list[bytes]:
    out: list[bytes] = []
    prev = 0
    for c in [*sorted(set(cuts)), len(stream)]:
        out += framer.feed(stream[prev:c])
        prev = c
    return out


pdu_list = st.lists(
    st.builds(
        pdu,
        st.integers(0, 0xFFFFFFFF),
        st.binary(max_size=300),
        st.sampled_from([0x04, 0x05, 0x15, 0x80000004]),
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=200, deadline=None)
@given(pdu_list, st.data())
def test_random_split_points(pdus, data):
    stream = b"".join(pdus)
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=30))
    framer = Framer(4096)
    assert feed_chunks(framer, stream, cuts) == pdus
    assert framer.buffered == 0


@settings(max_examples=50, deadline=None)
@given(pdu_list)
def test_one_byte_at_a_time(pdus):
    stream = b"".join(pdus)
    framer = Framer()
    out = []
    for i in range(len(stream)):
        out += framer.feed(stream[i : i + 1])
    assert out == pdus
    assert framer.buffered == 0


@settings(max_examples=100, deadline=None)
@given(pdu_list)
def test_all_at_once(pdus):
    framer = Framer()
    assert framer.feed(b"".join(pdus)) == pdus
    assert framer.feed(b"") == []


def test_partial_then_rest():
    a, b, c = pdu(1, b"x" * 100), pdu(2), pdu(3, b"yy")
    framer = Framer()
    assert framer.feed(a[:10]) == []
    assert framer.buffered == 10
    assert framer.feed(a[10:] + b + c[:3]) == [a, b]
    assert framer.buffered == 3
    assert framer.feed(bytearray(c[3:])) == [c]
    assert framer.feed(memoryview(a)) == [a]
    assert all(type(x) is bytes for x in framer.feed(a + b))


def test_large_stream_many_small_reads():
    # many PDUs through a buffer that never drains completely (compaction path)
    pdus = [pdu(i, bytes([i % 256]) * (i % 50)) for i in range(5000)]
    stream = b"".join(pdus)
    framer = Framer()
    out = []
    step = 7919  # never aligned with PDU boundaries
    for i in range(0, len(stream), step):
        out += framer.feed(stream[i : i + step])
    assert out == pdus


def test_max_size_boundary():
    framer = Framer(max_pdu_size=100)
    ok = pdu(1, b"z" * 84)
    assert len(ok) == 100
    assert framer.feed(ok) == [ok]
    with pytest.raises(FramingError) as ei:
        framer.feed(pdu(7, b"z" * 85))
    assert ei.value.command_length == 101
    assert ei.value.sequence_number == 7


@pytest.mark.parametrize("length", [0, 1, 15])
def test_undersize_command_length(length):
    framer = Framer()
    bad = struct.pack(">IIII", length, 0x15, 0, 4242)
    with pytest.raises(FramingError) as ei:
        framer.feed(pdu(1) + bad)
    assert ei.value.command_length == length
    assert ei.value.sequence_number == 4242


def test_oversize_after_valid_pdus_keeps_them():
    framer = Framer(1024)
    bad = struct.pack(">IIII", 0x7FFFFFFF, 0x04, 0, 99)
    assert framer.feed(pdu(1)) == [pdu(1)]
    with pytest.raises(FramingError) as ei:
        framer.feed(bad)
    assert (ei.value.command_length, ei.value.sequence_number) == (0x7FFFFFFF, 99)
    assert ei.value.pdus == []
    # good PDUs in the same read as the bad header come with the exception
    framer = Framer(1024)
    assert framer.feed(pdu(2)[:5]) == []
    with pytest.raises(FramingError) as ei:
        framer.feed(pdu(2)[5:] + pdu(3) + bad)
    assert ei.value.pdus == [pdu(2), pdu(3)]
    with pytest.raises(FramingError) as ei:  # sticky, without the PDUs this time
        framer.feed(b"")
    assert ei.value.pdus == [] and ei.value.sequence_number == 99


def test_error_waits_for_header_then_is_sticky():
    framer = Framer(1024)
    bad = struct.pack(">IIII", 5000, 0x04, 0, 0xABCDEF)
    # with fewer than 16 bytes buffered the error waits for the sequence number
    assert framer.feed(bad[:4]) == []
    assert framer.feed(bad[4:15]) == []
    with pytest.raises(FramingError) as ei:
        framer.feed(bad[15:])
    assert ei.value.sequence_number == 0xABCDEF
    with pytest.raises(FramingError):
        framer.feed(pdu(1))


@settings(max_examples=100, deadline=None)
@given(pdu_list, st.integers(0, 15) | st.integers(4097, 0xFFFFFFFF), st.data())
def test_invalid_length_random_splits(pdus, length, data):
    bad = struct.pack(">IIII", length, 0x04, 0, 31337) + b"garbage"
    stream = b"".join(pdus) + bad
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=20))
    framer = Framer(4096)
    got: list[bytes] = []
    with pytest.raises(FramingError) as ei:
        prev = 0
        for c in [*sorted(set(cuts)), len(stream)]:
            got += framer.feed(stream[prev:c])
            prev = c
    got += ei.value.pdus  # complete PDUs that preceded the bad header in the last feed
    assert got == pdus
    assert ei.value.command_length == length
    assert ei.value.sequence_number == 31337


def test_constructor_validation():
    with pytest.raises(ValueError):
        Framer(15)
