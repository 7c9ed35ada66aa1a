"""Frames: Hypothesis round-trips through build_frame and scan_frames, for the
pure-Python and (when built) the compiled functions."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tether.exceptions import ProtocolError
from tether.protocol import accel
from tether.protocol import frames as pure
from tether.protocol.frames import (
    Close,
    CloseCode,
    check_close_code,
    frame_header,
    parse_close,
    serialize_close,
)

IMPLEMENTATIONS = [pytest.param(pure, id="pure")]
if accel.SPEEDUPS:
    from tether import _speedups  # type: ignore[attr-defined]

    IMPLEMENTATIONS.append(pytest.param(_speedups, id="compiled"))

BOUNDARY_SIZES = [0, 1, 125, 126, 127, 65535, 65536, 70000]
DATA_OPCODES = [0x0, 0x1, 0x2]
CONTROL_OPCODES = [0x8, 0x9, 0xA]


def payloads() -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.binary(max_size=300),
        st.sampled_from(BOUNDARY_SIZES).map(
            lambda n: bytes(range(256)) * (n // 256) + bytes(n % 256)
        ),
    )


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@settings(max_examples=150, deadline=None)
@given(
    frames=st.lists(
        st.tuples(
            st.sampled_from(DATA_OPCODES + CONTROL_OPCODES),
            st.booleans(),
            payloads(),
        ),
        min_size=1,
        max_size=5,
    ),
    masked=st.booleans(),
    mask=st.binary(min_size=4, max_size=4),
    split=st.integers(min_value=0, max_value=200_000),
)
def test_round_trip(impl, frames, masked, mask, split) -> None:
    wire = b""
    expected = []
    for opcode, fin, payload in frames:
        if opcode >= 8:
            fin = True
            payload = payload[:125]
        first = opcode | (0x80 if fin else 0)
        wire += impl.build_frame(first, payload, mask if masked else None)
        expected.append((first, payload))
    # Split the stream anywhere: the first part yields a prefix of the frames.
    cut = split % (len(wire) + 1)
    got, pos, err = impl.scan_frames(wire[:cut], 0, masked, 1 << 40, 0)
    assert err is None
    assert got == expected[: len(got)]
    rest, end, err = impl.scan_frames(wire[pos:], 0, masked, 1 << 40, 0)
    assert err is None and end == len(wire) - pos
    assert got + rest == expected


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize("size", BOUNDARY_SIZES)
def test_length_encoding(impl, size) -> None:
    data = impl.build_frame(0x82, bytes(size))
    header = {True: 2, False: 4 if size < 65536 else 10}[size < 126]
    assert len(data) == header + size
    assert frame_header(data, 0) == (0x82, size, header, None)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_apply_mask(impl) -> None:
    mask = b"\x37\xfa\x21\x3d"
    data = b"Hello"
    masked = impl.apply_mask(data, mask)
    assert masked == b"\x7f\x9f\x4d\x51\x58"  # RFC 6455 section 5.7 example
    assert impl.apply_mask(masked, mask) == data
    assert impl.apply_mask(b"", mask) == b""


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize(
    ("wire", "masked", "error"),
    [
        (b"\x83\x80xxxx", True, (1002, "reserved opcode 3")),
        (b"\xc1\x80xxxx", True, (1002, "reserved bits must be 0")),
        (
            b"\x81\x00",
            True,
            (1002, "incorrect masking: client frames must be masked, server frames must not"),
        ),
        (b"\x89\x7e\x00\x7e", False, (1002, "control frame too long")),
        (b"\x09\x00", False, (1002, "fragmented control frame")),
        (
            b"\x82\x7f" + (1 << 63).to_bytes(8, "big"),
            False,
            (1002, "payload length with the most significant bit set"),
        ),
        (b"\x82\x7e\x01\x00", False, (1009, "frame of 256 bytes exceeds limit of 255 bytes")),
    ],
)
def test_scan_errors(impl, wire, masked, error) -> None:
    frames, pos, err = impl.scan_frames(wire, 0, masked, 255, 0)
    assert (frames, pos, err) == ([], 0, error)


def test_rfc_examples() -> None:
    # RFC 6455 section 5.7: unmasked "Hello", masked "Hello", ping "Hello".
    assert pure.build_frame(0x81, b"Hello") == b"\x81\x05\x48\x65\x6c\x6c\x6f"
    assert pure.build_frame(0x81, b"Hello", b"\x37\xfa\x21\x3d") == (
        b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58"
    )
    frames, _, _ = pure.scan_frames(b"\x01\x03\x48\x65\x6c\x80\x02\x6c\x6f", 0, False, 100, 0)
    assert frames == [(0x01, b"Hel"), (0x80, b"lo")]


def test_close_payloads() -> None:
    assert parse_close(b"") == Close(CloseCode.NO_STATUS_RCVD, "")
    assert parse_close(struct.pack("!H", 4000) + b"ok") == Close(4000, "ok")
    assert serialize_close(Close(1000, "bye")) == b"\x03\xe8bye"
    assert serialize_close(Close(1005)) == b""
    with pytest.raises(ProtocolError):
        parse_close(b"\x03")
    for code in (999, 1004, 1005, 1006, 1015, 1016, 2999, 5000):
        assert not check_close_code(code)
    for code in (1000, 1003, 1007, 1014, 3000, 4999):
        assert check_close_code(code)
    assert str(Close(1000, "bye")) == "1000 (OK) bye"
    assert str(Close(3001)) == "3001 (registered)"
    assert str(Close(4001)) == "4001 (private use)"
    assert str(Close(1100)) == "1100 (unknown)"


def test_frame_header_incomplete() -> None:
    assert frame_header(b"\x81", 0) is None
    assert frame_header(b"\x81\x7e\x00", 0) is None
    assert frame_header(b"\x81\x7f\x00", 0) is None
    assert frame_header(b"\x81\x85\x00", 0) is None
    assert frame_header(b"\x81\x85abcd", 0) == (0x81, 5, 6, b"abcd")


# ---------------------------------------------------------------------------
# PayloadSink (the pure twin; tests/test_speedups.py compares the C one)


def test_payload_sink_feed_and_read_into() -> None:
    from tether.protocol.frames import PayloadSink, apply_mask

    payload = bytes(range(256)) * 40 + b"xyz"
    masked = apply_mask(payload, b"\x01\x02\x03\x04")
    sink = PayloadSink(len(payload), b"\x01\x02\x03\x04")
    assert sink.feed(masked[:1001]) == 1001  # phase 1 afterwards
    view = sink.buffer()
    assert len(view) == len(payload) - 1001
    view[:3000] = masked[1001:4001]
    sink.written(3000)
    assert sink.peek(0, 4001) == payload[:4001]
    assert sink.remaining == len(payload) - 4001
    with pytest.raises(ValueError, match="incomplete: 4001 of"):
        sink.take()
    assert sink.feed(masked + b"next frame", 4001) == len(payload) - 4001
    assert sink.take() == payload
    with pytest.raises(ValueError, match="already taken"):
        sink.feed(b"x")


# Every PayloadSink in use: the pure one, and the compiled one when it is on.
SINKS = sorted({pure.PayloadSink, accel.PayloadSink}, key=lambda cls: cls.__module__)


@pytest.mark.parametrize("cls", SINKS, ids=lambda cls: cls.__module__)
def test_payload_sink_rejects_bad_input(cls: type) -> None:
    with pytest.raises(ValueError, match="mask must be 4 bytes"):
        cls(10, b"abc")
    with pytest.raises(ValueError, match="size must be >= 0"):
        cls(-1)
    sink = cls(4, b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="start out of range"):
        sink.feed(b"ab", 3)
    with pytest.raises(ValueError, match="more bytes written"):
        sink.written(5)
    with pytest.raises(ValueError, match="outside the filled"):
        sink.peek(0, 1)
    with pytest.raises(ValueError, match="incomplete: 0 of 4"):
        sink.take()
    sink.feed(b"abcd")
    assert (sink.size, sink.filled, sink.remaining) == (4, 4, 0)
    with pytest.raises(BufferError, match="no room left"):
        sink.buffer()
    assert sink.take() == b"\x60\x60\x60\x60"  # "abcd" unmasked
    with pytest.raises(ValueError, match="already taken"):
        sink.take()
    with pytest.raises(ValueError, match="already taken"):
        sink.buffer()
    with pytest.raises(ValueError, match="already taken"):
        sink.feed(b"x")
    with pytest.raises(ValueError, match="already taken"):
        sink.written(0)
