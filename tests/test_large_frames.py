"""Large frames that arrive in pieces, and large messages both ways: the same
events as when everything arrives at once."""

from __future__ import annotations

import asyncio
import random

import pytest

import tether
from tether.protocol.connection import Connection, Side
from tether.protocol.frames import build_frame


def _stream(seed: int) -> tuple[bytes, list[object]]:
    rng = random.Random(seed)
    frames, expected = [], []
    for _ in range(6):
        size = rng.choice([0, 10, 125, 126, 20000, 65536, 70000, 300000])
        payload = rng.randbytes(size)
        kind = rng.choice(["binary", "text", "fragmented"])
        mask = rng.randbytes(4)
        if kind == "binary":
            frames.append(build_frame(0x82, payload, mask))
            expected.append(payload)
        elif kind == "text":
            text = payload.hex()[:size]
            frames.append(build_frame(0x81, text.encode(), mask))
            expected.append(text)
        else:
            half = size // 2
            frames.append(build_frame(0x02, payload[:half], mask))
            frames.append(build_frame(0x89, b"ping", mask))
            frames.append(build_frame(0x80, payload[half:], mask))
            expected.append(("ping", b"ping"))
            expected.append(payload)
    return b"".join(frames), expected


def _events(core: Connection) -> list[object]:
    out: list[object] = []
    for event in core.events_received():
        if type(event).__name__ == "Ping":
            out.append(("ping", event.data))  # type: ignore[attr-defined]
        else:
            out.append(event)
    return out


@pytest.mark.parametrize("seed", range(8))
def test_pieces_give_the_same_events(seed: int) -> None:
    data, expected = _stream(seed)
    whole = Connection(Side.SERVER, max_size=None)
    whole.receive_data(data)
    assert _events(whole) == expected
    rng = random.Random(seed)
    pieces = Connection(Side.SERVER, max_size=None)
    got: list[object] = []
    pos = 0
    while pos < len(data):
        step = rng.choice([1, 7, 1000, 16384, 65536, 200000])
        chunk = data[pos : pos + step]
        # The transport may hand over bytearray or memoryview too.
        pieces.receive_data(rng.choice([bytes, bytearray, memoryview])(chunk))  # type: ignore[arg-type]
        got += _events(pieces)
        pos += step
    assert got == expected
    assert pieces.error is None and not pieces._buf


def test_oversized_frame_in_pieces_fails_with_1009() -> None:
    core = Connection(Side.SERVER, max_size=100000)
    frame = build_frame(0x82, bytes(100001), b"abcd")
    core.receive_data(frame[:30000])
    core.receive_data(frame[30000:])
    assert core.error is not None and core.error.code == 1009


def test_invalid_frame_after_a_chunked_frame_is_caught() -> None:
    core = Connection(Side.SERVER, max_size=None)
    frame = build_frame(0x82, bytes(50000), b"abcd")
    core.receive_data(frame[:20000])
    core.receive_data(frame[20000:] + b"\x83\x80abcd")  # reserved opcode 3
    assert core.events_received() == [bytes(50000)]
    assert core.error is not None and core.error.code == 1002


async def test_large_messages_round_trip_both_ways() -> None:
    sizes = [0, 125, 65535, 65536, 1 << 20, 3 * (1 << 20) + 1]

    async def echo(ws: tether.Connection) -> None:
        async for message in ws:
            await ws.send(message)

    async with tether.serve(echo, "127.0.0.1", 0, compression=None, max_size=None) as server:
        uri = f"ws://127.0.0.1:{server.port}/"
        async with tether.connect(uri, compression=None, max_size=None) as ws:
            for size in sizes:
                payload = random.randbytes(size)
                await asyncio.wait_for(ws.send(payload), 10)
                assert await asyncio.wait_for(ws.recv(), 10) == payload
                ws.send_nowait(payload)
                assert await asyncio.wait_for(ws.recv(), 10) == payload
                text = "é" * (size // 2)
                await asyncio.wait_for(ws.send(text), 10)
                assert await asyncio.wait_for(ws.recv(), 10) == text


def _feed_like_a_buffered_transport(core: Connection, data: bytes, seed: int) -> list[object]:
    """Hand ``data`` over as asyncio.BufferedProtocol would: read into the
    core's own buffer while a large frame is arriving, else into a scratch
    buffer that is reused (and scribbled over) after every call."""
    rng = random.Random(seed)
    scratch = bytearray(300000)
    got: list[object] = []
    pos = 0
    while pos < len(data):
        step = rng.choice([1, 7, 1000, 16384, 65536, 200000])
        target = core.receive_buffer()
        if target is not None:
            n = min(step, len(target), len(data) - pos)
            target[:n] = data[pos : pos + n]
            core.receive_into(n)
        else:
            n = min(step, len(data) - pos)
            scratch[:n] = data[pos : pos + n]
            scratch[n : n + 8] = b"\x88\x80junk!"  # beyond `end`: never read
            core.receive_data(scratch, n)
            scratch[: n + 8] = bytes(n + 8)  # the next read overwrites the scratch
        got += _events(core)
        pos += n
    return got


@pytest.mark.parametrize("seed", range(8))
def test_reading_into_the_payload_gives_the_same_events(seed: int) -> None:
    data, expected = _stream(seed)
    core = Connection(Side.SERVER, max_size=None)
    assert _feed_like_a_buffered_transport(core, data, seed) == expected
    assert core.error is None and not core._buf and core.receive_buffer() is None


def test_client_reads_large_unmasked_frames_into_the_payload() -> None:
    payloads = [random.randbytes(n) for n in (5000, 70000, 300001)]
    data = b"".join(build_frame(0x82, p) for p in payloads)
    core = Connection(Side.CLIENT, max_size=None)
    assert _feed_like_a_buffered_transport(core, data, 3) == payloads


@pytest.mark.parametrize("buffered", [False, True])
def test_invalid_utf8_in_a_large_text_frame_fails_before_it_ends(buffered: bool) -> None:
    payload = b"a" * 40000 + b"\xff" + b"b" * 60000
    frame = build_frame(0x81, payload, b"wxyz")
    core = Connection(Side.SERVER, max_size=None)
    core.receive_data(frame[:26000])  # over a quarter: the payload sink takes over
    assert core.error is None
    if buffered:
        target = core.receive_buffer()
        assert target is not None and len(target) == len(frame) - 26000
        target[:20000] = frame[26000:46000]
        core.receive_into(20000)
    else:
        core.receive_data(frame[26000:46000])
    assert core.error is not None and core.error.code == 1007
    assert core.receive_buffer() is None  # nothing more is read
    core.receive_data(frame[46000:])
    assert core.events_received() == []


def test_large_text_frame_split_inside_a_character() -> None:
    text = "é" * 6000 + "€" * 3000
    frame = build_frame(0x81, text.encode(), b"abcd")
    core = Connection(Side.SERVER, max_size=None)
    for cut in range(0, len(frame), 4097):  # odd steps cut characters in half
        core.receive_data(frame[cut : cut + 4097])
    assert core.events_received() == [text]
    assert core.error is None


async def test_connections_sharing_the_read_buffer_keep_their_own_bytes() -> None:
    """Every connection of a thread reads into one scratch buffer: concurrent
    connections with frames cut across reads must not see each other's bytes."""

    async def echo(ws: tether.Connection) -> None:
        async for message in ws:
            await ws.send(message)

    async def client(uri: str, seed: int) -> None:
        rng = random.Random(seed)
        async with tether.connect(uri, compression=None, max_size=None) as ws:
            for _ in range(12):
                payload = rng.randbytes(rng.choice([3, 900, 5000, 70000, 400000]))
                await ws.send(payload)
                assert await ws.recv() == payload

    async with tether.serve(echo, "127.0.0.1", 0, compression=None, max_size=None) as server:
        uri = f"ws://127.0.0.1:{server.port}/"
        await asyncio.wait_for(asyncio.gather(*(client(uri, s) for s in range(4))), 30)


def test_an_announced_frame_is_not_allocated_before_a_quarter_arrives() -> None:
    """A peer that announces a 1 MiB frame and sends 10 bytes must not make us
    allocate 1 MiB: the payload sink waits for a quarter of the frame."""
    payload = random.randbytes(1 << 20)
    frame = build_frame(0x82, payload, b"abcd")
    core = Connection(Side.SERVER, max_size=None)
    core.receive_data(frame[:24])
    assert core.receive_buffer() is None and core._sink is None
    assert core._buf is not None and len(core._buf) == 24
    quarter = len(frame) // 4 + 1
    core.receive_data(frame[24:quarter])
    target = core.receive_buffer()
    assert target is not None and len(target) == len(frame) - quarter
    assert core._buf is None
    target[:] = frame[quarter:]
    core.receive_into(len(target))
    assert core.events_received() == [payload]
