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
