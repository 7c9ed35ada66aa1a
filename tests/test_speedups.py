"""The compiled hot path, tether._speedups, against its pure-Python twins.

Every function of the C extension must give the same result as its twin in
tether.protocol.frames, byte for byte, down to the (code, reason) of a framing
error and the order in which the rules are checked. Hypothesis drives both with
the same inputs and compares.

The extension must build where the tests run: if it cannot be imported, every
test here fails. Set TETHER_NO_SPEEDUPS=1 to test a pure-Python install; these
tests are then skipped.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import random
import threading
import tracemalloc
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tether.protocol import frames as pure

SKIP_REASON = "TETHER_NO_SPEEDUPS is set: the compiled tether._speedups is not under test"
IMPORT_ERROR: ImportError | None = None
sp: Any = None

if os.environ.get("TETHER_NO_SPEEDUPS"):
    pytestmark = pytest.mark.skip(reason=SKIP_REASON)
else:
    try:
        from tether import _speedups as sp
    except ImportError as exc:  # pragma: no cover - the build is broken
        IMPORT_ERROR = exc


@pytest.fixture(autouse=True, scope="module")
def _require_speedups() -> None:
    if IMPORT_ERROR is not None:  # pragma: no cover - the build is broken
        pytest.fail(
            f"tether._speedups cannot be imported ({IMPORT_ERROR}): build it with a C "
            "compiler (pip install -e .), or set TETHER_NO_SPEEDUPS=1 to test without it",
            pytrace=False,
        )


# Every masking kernel this machine runs (word loop, SSE2, AVX2...).
KERNELS: tuple[str, ...] = sp._kernels() if sp is not None else ("none",)


@contextlib.contextmanager
def using_kernel(name: str) -> Iterator[None]:
    previous = sp._use_kernel(name)
    try:
        yield
    finally:
        sp._use_kernel(previous)


# ---------------------------------------------------------------------------
# Strategies.

BOUNDARY_LENGTHS = [
    *range(0, 10), 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 128, 129,
    125, 126, 65535, 65536, 65537, 70_000,
]  # fmt: skip
lengths = st.one_of(st.sampled_from(BOUNDARY_LENGTHS), st.integers(0, 300), st.integers(0, 70_000))
masks = st.binary(min_size=4, max_size=4)


@st.composite
def payloads(draw: st.DrawFn, sizes: st.SearchStrategy[int] = lengths) -> bytes:
    # Random bytes from a drawn seed: cheap for Hypothesis even at 70,000 bytes.
    n = draw(sizes)
    return random.Random(draw(st.integers(0, 2**32 - 1))).randbytes(n)


KINDS = ["bytes", "bytearray", "memoryview", "unaligned"]
kinds = st.sampled_from(KINDS)


def as_kind(data: bytes, kind: str, offset: int = 3) -> bytes | bytearray | memoryview:
    """``data`` as another bytes-like type; "unaligned" starts at an odd address."""
    if kind == "bytearray":
        return bytearray(data)
    if kind == "memoryview":
        return memoryview(data)
    if kind == "unaligned":
        return memoryview(b"\xa5" * offset + data)[offset:]
    return data


def encode(
    first_byte: int,
    payload: bytes,
    mask: bytes | None,
    form: str = "min",
    big_length: int = 0,
) -> bytes:
    """A frame on the wire, with any length encoding, valid or not.

    ``form``: "min" (what build_frame writes), "16" or "64" (non-minimal but
    legal), "msb" (a 64-bit length of ``big_length``, MSB set by the caller).
    """
    n = len(payload)
    mask_bit = 0x80 if mask is not None else 0
    head = bytes([first_byte])
    if form == "msb":
        head += bytes([mask_bit | 127]) + big_length.to_bytes(8, "big")
    elif form == "64" or (form == "16" and n >= 65536) or n >= 65536:
        head += bytes([mask_bit | 127]) + n.to_bytes(8, "big")
    elif form == "16" or n >= 126:
        head += bytes([mask_bit | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([mask_bit | n])
    if mask is None:
        return head + payload
    return head + mask + pure.apply_mask(payload, mask)


VALID_OPCODES = [0, 1, 2, 8, 9, 10]


@st.composite
def wire_frames(draw: st.DrawFn, masked: bool) -> bytes:
    """One frame, usually valid for a peer of the given ``masked`` side."""
    opcode = draw(st.one_of(st.sampled_from(VALID_OPCODES), st.integers(0, 15)))
    fin = draw(st.booleans()) if opcode < 8 else draw(st.sampled_from([True, True, False]))
    rsv = draw(st.sampled_from([0, 0, 0x40, 0x10, 0x20, 0x70]))
    first_byte = (0x80 if fin else 0) | rsv | opcode
    if opcode >= 8:
        payload = draw(payloads(st.one_of(st.integers(0, 125), st.sampled_from([125, 126, 127]))))
    else:
        payload = draw(payloads())
    with_mask = masked if draw(st.integers(0, 9)) else not masked
    mask = draw(masks) if with_mask else None
    form = draw(st.sampled_from(["min", "min", "min", "16", "64", "msb"]))
    big_length = draw(st.integers(2**63, 2**64 - 1)) if form == "msb" else 0
    return encode(first_byte, payload, mask, form, big_length)


max_frames = st.one_of(
    st.sampled_from(
        [0, 1, 125, 126, 127, 65535, 65536, 65537, 2**20, 2**63 - 1, 2**63, 2**64, 10**30, -1,
         -(2**70)]
    ),
    st.integers(0, 70_000),
)  # fmt: skip
rsv_alloweds = st.one_of(
    st.sampled_from([0, 0x40, 0x70, 0x10, 0x20, 0x30, -1, ~0x40, 0xFF]),
    st.integers(-(2**70), 2**70),
)


@st.composite
def streams(draw: st.DrawFn) -> tuple[bytes, bool]:
    """A stream of several frames (and maybe some trailing junk)."""
    masked = draw(st.booleans())
    parts = draw(st.lists(wire_frames(masked), min_size=1, max_size=5))
    junk = draw(st.sampled_from([b"", b"", b"\x81", b"\x82\xfe\x01", b"\xff" * 12]))
    return b"".join(parts) + junk, masked


ScanResult = tuple[list[tuple[int, bytes]], int, "tuple[int, str] | None"]


def same_scan(
    buf: bytes | bytearray | memoryview, pos: int, masked: bool, max_frame: int, rsv: int
) -> ScanResult:
    """Run both scanners on the same input; assert identical results."""
    want = pure.scan_frames(buf, pos, masked, max_frame, rsv)  # type: ignore[arg-type]
    got = sp.scan_frames(buf, pos, masked, max_frame, rsv)
    assert type(got) is tuple
    assert len(got) == 3
    assert got == want
    frames, new_pos, error = got
    assert type(frames) is list
    assert type(new_pos) is int
    for first_byte, payload in frames:
        assert type(first_byte) is int
        assert type(payload) is bytes
    if error is not None:
        assert type(error) is tuple
        assert type(error[0]) is int
        assert type(error[1]) is str
    return got  # type: ignore[no-any-return]


# ---------------------------------------------------------------------------
# apply_mask


@pytest.mark.parametrize("kernel", KERNELS)
@settings(deadline=None)
@given(data=payloads(), mask=masks, kind=kinds, offset=st.integers(1, 31))
def test_apply_mask_matches_pure(
    kernel: str, data: bytes, mask: bytes, kind: str, offset: int
) -> None:
    with using_kernel(kernel):
        got = sp.apply_mask(as_kind(data, kind, offset), mask)
        assert type(got) is bytes
        assert got == pure.apply_mask(data, mask)
        assert sp.apply_mask(got, bytearray(mask)) == data


@pytest.mark.parametrize("kernel", KERNELS)
def test_apply_mask_every_small_length_and_offset(kernel: str) -> None:
    data = bytes(range(256)) * 2
    mask = b"\x12\x34\x56\x78"
    with using_kernel(kernel):
        for offset in range(8):
            for n in range(260):
                view = memoryview(data)[offset : offset + n]
                assert sp.apply_mask(view, mask) == pure.apply_mask(view, mask)


def test_apply_mask_keywords_and_empty() -> None:
    assert sp.apply_mask(data=b"abcd", mask=b"\x01\x02\x03\x04") == b"````"
    assert sp.apply_mask(b"", b"1234") == b""
    assert type(sp.apply_mask(bytearray(), b"1234")) is bytes


@pytest.mark.parametrize("mask", [b"", b"\x01", b"abc", b"abcde", b"12345678"])
@pytest.mark.parametrize("data", [b"", b"payload", bytes(70_000)])
def test_wrong_mask_length_raises_value_error(mask: bytes, data: bytes) -> None:
    with pytest.raises(ValueError, match="mask must be 4 bytes"):
        sp.apply_mask(data, mask)
    with pytest.raises(ValueError, match="mask must be 4 bytes"):
        sp.build_frame(0x82, data, mask)
    with pytest.raises(ValueError, match="mask must be 4 bytes"):
        sp.build_frame(0x82, data, bytearray(mask))


class Unbool:
    def __bool__(self) -> bool:
        raise ZeroDivisionError


@pytest.mark.parametrize(
    ("call", "exc"),
    [
        (lambda: sp.apply_mask("text", b"1234"), TypeError),
        (lambda: sp.apply_mask(b"data", None), TypeError),
        (lambda: sp.apply_mask(b"data", "1234"), TypeError),
        (lambda: sp.apply_mask(b"data"), TypeError),
        (lambda: sp.apply_mask(b"data", b"1234", b"1234"), TypeError),
        (lambda: sp.apply_mask(b"data", mask=b"1234", data=b"x"), TypeError),
        (lambda: sp.apply_mask(b"data", b"1234", nope=1), TypeError),
        (lambda: sp.build_frame(256, b""), ValueError),
        (lambda: sp.build_frame(-1, b""), ValueError),
        (lambda: sp.build_frame(1.0, b""), TypeError),
        (lambda: sp.build_frame(0x81, "text"), TypeError),
        (lambda: sp.build_frame(0x81), TypeError),
        (lambda: sp.scan_frames(b"", "0", True, 10, 0), TypeError),
        (lambda: sp.scan_frames(b"", 0, Unbool(), 10, 0), ZeroDivisionError),
        (lambda: sp._use_kernel("no such kernel"), ValueError),
        (lambda: sp._use_kernel(None), TypeError),
        (lambda: sp.scan_frames(b"", -1, True, 10, 0), ValueError),
        (lambda: sp.scan_frames(b"", 0, True, 1.5, 0), TypeError),
        (lambda: sp.scan_frames(b"", 0, True, 10, None), TypeError),
        (lambda: sp.scan_frames("text", 0, True, 10, 0), TypeError),
        (lambda: sp.scan_frames(b"", 0, True, 10), TypeError),
    ],
)
def test_bad_arguments(call: Callable[[], object], exc: type[Exception]) -> None:
    with pytest.raises(exc):
        call()


def test_apply_mask_in_threads() -> None:
    """Large buffers are masked with the GIL released; threads stay correct."""
    data = random.Random(1).randbytes(sp.NOGIL_THRESHOLD * 4 + 3)
    masks_ = [bytes([i, i + 1, i + 2, i + 3]) for i in range(8)]
    expected = [pure.apply_mask(data, m) for m in masks_]
    results: list[bytes | None] = [None] * len(masks_)

    def work(i: int) -> None:
        for _ in range(5):
            results[i] = sp.apply_mask(data, masks_[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(masks_))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == expected


# ---------------------------------------------------------------------------
# build_frame


@settings(deadline=None)
@given(
    first_byte=st.integers(0, 255),
    payload=payloads(),
    mask=st.none() | masks,
    kind=kinds,
)
def test_build_frame_matches_pure(
    first_byte: int, payload: bytes, mask: bytes | None, kind: str
) -> None:
    got = sp.build_frame(first_byte, as_kind(payload, kind), mask)
    assert type(got) is bytes
    assert got == pure.build_frame(first_byte, payload, mask)


@pytest.mark.parametrize("n", [0, 125, 126, 65535, 65536])
def test_build_frame_keywords_and_length_boundaries(n: int) -> None:
    payload = bytes(range(256)) * (n // 256) + bytes(range(n % 256))
    mask = b"\xde\xad\xbe\xef"
    assert sp.build_frame(first_byte=0x82, payload=payload) == pure.build_frame(0x82, payload)
    assert sp.build_frame(0x82, payload, mask=mask) == pure.build_frame(0x82, payload, mask)
    assert sp.build_frame(0x82, payload, None) == pure.build_frame(0x82, payload, None)
    header = 2 + (2 if n >= 126 else 0) + (6 if n >= 65536 else 0)
    assert len(sp.build_frame(0x82, payload, mask)) == header + 4 + n


@settings(deadline=None)
@given(
    opcode=st.sampled_from(VALID_OPCODES),
    fin=st.booleans(),
    payload=payloads(),
    mask=st.none() | masks,
)
def test_build_then_scan_round_trip(
    opcode: int, fin: bool, payload: bytes, mask: bytes | None
) -> None:
    if opcode >= 8:
        fin, payload = True, payload[:125]
    first_byte = (0x80 if fin else 0) | opcode
    wire = sp.build_frame(first_byte, payload, mask)
    frames, pos, error = same_scan(wire, 0, mask is not None, 2**20, 0)
    assert (frames, pos, error) == ([(first_byte, payload)], len(wire), None)


# ---------------------------------------------------------------------------
# scan_frames


@settings(deadline=None, max_examples=300)
@given(
    stream=streams(),
    prefix=st.binary(max_size=12),
    cut=st.integers(0, 2**31),
    kind=kinds,
    max_frame=max_frames,
    rsv=rsv_alloweds,
)
def test_scan_frames_matches_pure(
    stream: tuple[bytes, bool],
    prefix: bytes,
    cut: int,
    kind: str,
    max_frame: int,
    rsv: int,
) -> None:
    data, masked = stream
    # Truncate the stream anywhere (or not at all), after a prefix to skip.
    data = prefix + data[: cut % (len(data) + 2)]
    same_scan(as_kind(data, kind), len(prefix), masked, max_frame, rsv)


@settings(deadline=None, max_examples=200)
@given(
    stream=streams(),
    splits=st.lists(st.integers(0, 2**31), max_size=8),
    compact=st.booleans(),
    max_frame=max_frames,
    rsv=rsv_alloweds,
)
def test_scan_frames_incremental_matches_pure(
    stream: tuple[bytes, bool],
    splits: list[int],
    compact: bool,
    max_frame: int,
    rsv: int,
) -> None:
    """Feed the stream in pieces, as a connection receives it."""
    data, masked = stream
    cuts = sorted({s % (len(data) + 1) for s in splits} | {0, len(data)})
    buf = bytearray()
    pos = 0
    received: list[tuple[int, bytes]] = []
    for start, stop in itertools.pairwise(cuts):
        buf += data[start:stop]  # also proves the buffer export was released
        frames, pos, error = same_scan(buf, pos, masked, max_frame, rsv)
        received += frames
        if error is not None:
            break
        if compact:
            del buf[:pos]
            pos = 0
    # Receiving in pieces gives the frames of receiving all at once.
    whole, _, whole_error = same_scan(data, 0, masked, max_frame, rsv)
    assert received == whole
    if whole_error is not None:
        assert error == whole_error


@settings(deadline=None, max_examples=300)
@given(
    stream=streams(),
    cut=st.integers(0, 2**31),
    junk=st.binary(max_size=16),
    max_frame=max_frames,
    rsv=rsv_alloweds,
    direct=st.booleans(),
)
def test_scan_frames_end_and_direct_events_match_pure(
    stream: tuple[bytes, bool],
    cut: int,
    junk: bytes,
    max_frame: int,
    rsv: int,
    direct: bool,
) -> None:
    """``end`` scans a prefix of a reused buffer (what lies beyond is never
    read); ``events`` takes the leading whole messages. Both twins agree,
    and together events + frames hold what a plain scan returns."""
    data, masked = stream
    end = cut % (len(data) + 1)
    buf = bytearray(data[:end] + junk)
    results = []
    for scan in (pure.scan_frames, sp.scan_frames):
        events: list[object] | None = [] if direct else None
        result = scan(buf, 0, masked, max_frame, rsv, end, events)
        results.append((result, events))
    assert results[0] == results[1]
    (frames, pos, error), events = results[1]
    plain_frames, plain_pos, plain_error = same_scan(bytes(data[:end]), 0, masked, max_frame, rsv)
    assert (pos, error) == (plain_pos, plain_error)
    delivered = len(events or [])
    assert frames == plain_frames[delivered:]
    for (first_byte, payload), event in zip(plain_frames, events or [], strict=False):
        assert first_byte in (0x81, 0x82)
        assert event == (payload.decode() if first_byte == 0x81 else payload)


def test_scan_frames_direct_events_stop_at_the_first_other_frame() -> None:
    wire = (
        encode(0x82, b"bin", M)
        + encode(0x81, "é".encode(), M)
        + encode(0x81, b"\xff", M)  # invalid UTF-8: left to the state machine
        + encode(0x82, b"after", M)
    )
    for scan in (pure.scan_frames, sp.scan_frames):
        events: list[object] = []
        frames, pos, error = scan(wire, 0, True, 100, 0, None, events)
        assert events == [b"bin", "é"]
        assert frames == [(0x81, b"\xff"), (0x82, b"after")]
        assert (pos, error) == (len(wire), None)
        events = []
        frames, _, _ = scan(
            encode(0x89, b"", M) + encode(0x82, b"x", M), 0, True, 100, 0, events=events
        )
        assert events == [] and frames == [(0x89, b""), (0x82, b"x")]
        with pytest.raises(ValueError, match="end must be within"):
            scan(wire, 0, True, 100, 0, len(wire) + 1)
    with pytest.raises(TypeError, match="events must be a list"):
        sp.scan_frames(wire, 0, True, 100, 0, None, ())


M = b"\x01\x02\x03\x04"  # a masking key
MSB = (2**63).to_bytes(8, "big")

# (wire bytes, masked, max_frame, rsv_allowed, expected error or None)
RULES: list[tuple[bytes, bool, int, int, tuple[int, str] | None]] = [
    (b"\xc1\x00", False, 100, 0, (1002, "reserved bits must be 0")),
    (b"\xc1\x00", False, 100, 0x40, None),
    (b"\xa1\x00", False, 100, 0x40, (1002, "reserved bits must be 0")),
    (b"\x91\x00", False, 100, 0x70, None),
    (b"\xf3\x80", False, 100, 0, (1002, "reserved bits must be 0")),  # rsv before opcode
    *[(bytes([0x80 | op, 0]), False, 100, 0, (1002, f"reserved opcode {op}"))
      for op in (3, 4, 5, 6, 7, 11, 12, 13, 14, 15)],
    (b"\x83\x80", False, 100, 0, (1002, "reserved opcode 3")),  # opcode before masking
    (b"\x81\x80" + M, False, 100, 0,
     (1002, "incorrect masking: client frames must be masked, server frames must not")),
    (b"\x81\x00", True, 100, 0,
     (1002, "incorrect masking: client frames must be masked, server frames must not")),
    (b"\x89\x7e\x00\x7e", False, 1000, 0, (1002, "control frame too long")),
    (b"\x09\x7e\x00\x7e", False, 1000, 0, (1002, "control frame too long")),  # length first
    (b"\x09\x00", False, 1000, 0, (1002, "fragmented control frame")),
    (b"\x08\x80" + M, True, 1000, 0, (1002, "fragmented control frame")),
    (b"\x88\x7e\x00\x7e", False, 10, 0, (1002, "control frame too long")),  # before 1009
    (b"\x82\x7f" + MSB, False, 10, 0,
     (1002, "payload length with the most significant bit set")),
    (b"\x89\x7f" + MSB, False, 10, 0,
     (1002, "payload length with the most significant bit set")),  # before control rules
    (b"\x82\x7f" + (2**63 - 1).to_bytes(8, "big"), False, 10, 0,
     (1009, f"frame of {2**63 - 1} bytes exceeds limit of 10 bytes")),
    (b"\x82\x7f" + (2**63 - 1).to_bytes(8, "big"), False, 2**64, 0, None),
    (b"\x82\x0b" + bytes(11), False, 10, 0, (1009, "frame of 11 bytes exceeds limit of 10 bytes")),
    (b"\x82\x8b" + M, True, 10, 0, (1009, "frame of 11 bytes exceeds limit of 10 bytes")),
    (b"\x82\x0a" + bytes(10), False, 10, 0, None),
    (b"\x82\x00", False, -1, 0, (1009, "frame of 0 bytes exceeds limit of -1 bytes")),
    (b"\x82\x00", False, True, 0, None),
    (b"\x82\x02", False, True, 0, (1009, "frame of 2 bytes exceeds limit of True bytes")),
    (b"\x82\x7e\xff\xff", False, 65534, 0,
     (1009, "frame of 65535 bytes exceeds limit of 65534 bytes")),  # before the payload
    (b"\x82\x7e\x00\x01", False, 10, 0, None),  # non-minimal lengths are accepted
    (b"\x82\x7f", False, 10, 0, None),  # incomplete 64-bit length: no verdict yet
    (b"\x82\x7f" + MSB[:7], False, 10, 0, None),
    (b"\x89\x7e\x00", False, 10, 0, None),  # incomplete 16-bit length
    (b"\x82\x85" + M[:3], True, 10, 0, None),  # incomplete mask
]  # fmt: skip


@pytest.mark.parametrize(("wire", "masked", "max_frame", "rsv", "expected"), RULES)
def test_scan_frames_rules(
    wire: bytes, masked: bool, max_frame: int, rsv: int, expected: tuple[int, str] | None
) -> None:
    # A valid frame first, unless the limit is too small for it.
    good = encode(0x81, b"hi", M if masked else None) if max_frame >= 2 else b""
    for kind in KINDS:
        frames, pos, error = same_scan(as_kind(good + wire, kind), 0, masked, max_frame, rsv)
        assert error == expected
        if expected is not None:
            # The valid frames before the bad one are returned; pos is at it.
            assert frames == ([(0x81, b"hi")] if good else [])
            assert pos == len(good)


def test_scan_frames_positions() -> None:
    wire = encode(0x82, b"abc", None) + encode(0x89, b"", None) + b"\x81\x05he"
    assert same_scan(wire, 0, False, 100, 0) == ([(0x82, b"abc"), (0x89, b"")], 7, None)
    assert same_scan(wire, 5, False, 100, 0) == ([(0x89, b"")], 7, None)
    assert same_scan(wire, len(wire), False, 100, 0) == ([], len(wire), None)
    assert same_scan(wire, len(wire) + 5, False, 100, 0) == ([], len(wire) + 5, None)
    assert same_scan(b"", 0, True, 100, 0) == ([], 0, None)
    assert sp.scan_frames(
        buf=wire, pos=0, masked=False, max_frame=100, rsv_allowed=0
    ) == pure.scan_frames(wire, 0, False, 100, 0)


@pytest.mark.parametrize("count", [63, 64, 65, 200, 1000])
def test_scan_frames_many_frames(count: int) -> None:
    rng = random.Random(count)
    sent = [(0x82, rng.randbytes(rng.randrange(0, 40))) for _ in range(count)]
    wire = b"".join(encode(b0, p, M) for b0, p in sent)
    assert same_scan(wire, 0, True, 100, 0) == (sent, len(wire), None)
    # An error after many frames returns them all.
    assert same_scan(wire + b"\x8f\x80", 0, True, 100, 0) == (
        sent,
        len(wire),
        (1002, "reserved opcode 15"),
    )


def test_scan_frames_large_payloads_without_the_gil() -> None:
    payload = random.Random(2).randbytes(sp.NOGIL_THRESHOLD * 3 + 1)
    for mask in (None, M):
        wire = encode(0x82, payload, mask) * 3
        frames, pos, error = same_scan(bytearray(wire), 0, mask is not None, 2**20, 0)
        assert frames == [(0x82, payload)] * 3
        assert (pos, error) == (len(wire), None)


def assert_no_growth(run: Callable[[], None], warmup: int) -> None:
    """``run`` 2000 times after ``warmup`` times: traced memory grows < 64 KiB."""
    for _ in range(warmup):
        run()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(2000):
            run()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 64 * 1024


def test_no_reference_leaks() -> None:
    """Every path, errors included, frees what it allocates."""
    wire = encode(0x81, b"hello", M) * 20
    bad = [rule[0] for rule in RULES if rule[4] is not None]
    buf = bytearray(wire)

    def run() -> None:
        sp.apply_mask(buf, M)
        sp.build_frame(0x81, buf, M)
        sp.build_frame(0x81, b"x", None)
        sp.scan_frames(buf, 0, True, 1000, 0)
        for b in bad:
            sp.scan_frames(b, 0, False, 10, 0)
            sp.scan_frames(b, 0, True, 10, 0)
        for call in (
            lambda: sp.apply_mask(buf, b"123"),
            lambda: sp.build_frame(300, buf),
            lambda: sp.scan_frames(buf, -1, True, 10, 0),
            lambda: sp.scan_frames(buf, 0, True, 10, "x"),
        ):
            with contextlib.suppress(ValueError, TypeError):
                call()

    assert_no_growth(run, warmup=200)
    buf += b"!"  # no buffer export left behind


def test_accel_picks_the_extension() -> None:
    from tether.protocol import accel

    assert accel.SPEEDUPS is True
    assert accel.apply_mask is sp.apply_mask
    assert accel.build_frame is sp.build_frame
    assert accel.scan_frames is sp.scan_frames


def test_signatures_match_the_pure_twins() -> None:
    import inspect

    for name in ("apply_mask", "build_frame", "scan_frames"):
        c_params = list(inspect.signature(getattr(sp, name)).parameters)
        py_params = list(inspect.signature(getattr(pure, name)).parameters)
        assert c_params == py_params


# ---------------------------------------------------------------------------
# PayloadSink: the payload of a frame assembled over several reads.


@settings(max_examples=150, deadline=None)
@given(
    data=payloads(),
    mask=st.one_of(st.none(), masks),
    cuts=st.lists(st.integers(1, 70_000), max_size=8),
    modes=st.lists(st.sampled_from(["feed", "into"]), min_size=1, max_size=8),
    kind=kinds,
)
def test_payload_sink_matches_pure(
    data: bytes, mask: bytes | None, cuts: list[int], modes: list[str], kind: str
) -> None:
    """Fed in any pieces, by copy or by reading into its buffer, both twins
    assemble the unmasked payload, and agree on every intermediate state."""
    wire = data if mask is None else pure.apply_mask(data, mask)
    sinks = [sp.PayloadSink(len(data), mask), pure.PayloadSink(len(data), mask)]
    pos = step = 0
    while pos < len(wire):
        n = cuts[step % len(cuts)] if cuts else len(wire)
        mode = modes[step % len(modes)]
        step += 1
        chunk = wire[pos : pos + n]
        # The last piece may carry the start of the next frame: not consumed.
        extra = b"next" if pos + len(chunk) == len(wire) else b""
        for sink in sinks:
            if mode == "feed":
                assert sink.feed(as_kind(chunk + extra, kind), 0) == len(chunk)
            else:
                target = sink.buffer()
                assert len(target) == len(wire) - pos
                target[: len(chunk)] = chunk
                del target
                sink.written(len(chunk))
        pos += len(chunk)
        assert [s.filled for s in sinks] == [pos, pos]
        assert sinks[0].peek(0, pos) == sinks[1].peek(0, pos) == data[:pos]
    assert sinks[0].take() == sinks[1].take() == data


def test_payload_sink_view_outlives_take() -> None:
    """A transport may still hold the buffer it read into when the payload is
    handed out: the view keeps its own reference, nothing dangles."""
    sink = sp.PayloadSink(8)
    view = sink.buffer()
    view[:8] = b"12345678"
    sink.written(8)
    payload = sink.take()
    del sink
    assert payload == b"12345678" and bytes(view) == b"12345678"
    view.release()


def test_payload_sink_frees_what_it_allocates() -> None:
    def run() -> None:
        sink = sp.PayloadSink(1000, M)
        sink.feed(bytes(600))
        view = sink.buffer()
        view[:400] = bytes(400)
        view.release()
        sink.written(400)
        sink.peek(0, 1000)
        sink.take()
        sp.PayloadSink(70_000)  # dropped unfinished

    assert_no_growth(run, warmup=100)
