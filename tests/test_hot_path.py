"""The per-message path of tether.aio.Connection: get_buffer, buffer_updated
and send_nowait. Compiled (tether._speedups.ConnectionBase) with the speedups,
Python otherwise; the suite runs both ways and every outcome here must be the
same. Each test drives one branch where the compiled path hands over to the
Python one (or must not)."""

from __future__ import annotations

import asyncio
import enum
from typing import Any

import pytest

from conftest import RecordingTransport, feed, masked, open_connection
from tether.aio import connection as aio_connection
from tether.aio.connection import Connection
from tether.aio.options import make_options
from tether.exceptions import ConnectionClosed, InvalidState
from tether.protocol import accel
from tether.protocol.connection import Connection as Core
from tether.protocol.connection import Side
from tether.protocol.deflate import DeflateOptions, DeflateParams, PerMessageDeflate
from tether.protocol.frames import apply_mask, build_frame


def collect(ws: Connection) -> list[Any]:
    got: list[Any] = []
    ws.set_message_handler(got.append)
    return got


def test_the_compiled_path_runs_with_the_speedups() -> None:
    assert aio_connection.COMPILED is accel.SPEEDUPS
    if accel.SPEEDUPS:
        from tether import _speedups

        assert Connection.buffer_updated is _speedups.ConnectionBase.__dict__["buffer_updated"]
        assert Connection.send_nowait is _speedups.ConnectionBase.__dict__["send_nowait"]
    else:
        assert Connection.buffer_updated is Connection._py_buffer_updated


async def test_a_read_of_several_messages_asks_the_transport_to_gather_the_replies() -> None:
    """The transport is told before the replies of a read that brought
    several messages (tether's transport then sends them in one go), and
    not for a read of one; on both the compiled and the Python path (a
    control frame in the read takes the Python one)."""
    ws, transport = open_connection()
    ws.set_message_handler(ws.send_nowait)
    feed(ws, masked(0x81, b"one"))
    assert transport.gathers == 0
    feed(ws, masked(0x81, b"one") + masked(0x82, b"two"))
    assert transport.gathers == 1
    feed(ws, masked(0x81, b"one") + masked(0x89, b"ping"))
    assert transport.gathers == 2
    assert transport.written == [
        build_frame(0x81, b"one"),
        build_frame(0x81, b"one"),
        build_frame(0x82, b"two"),
        build_frame(0x81, b"one"),
        build_frame(0x8A, b"ping"),
    ]


async def test_whole_messages_of_one_read_reach_the_handler_in_order() -> None:
    ws, transport = open_connection()
    got: list[Any] = []

    def echo(message: Any) -> None:
        got.append(message)
        ws.send_nowait(message)

    ws.set_message_handler(echo)
    feed(ws, masked(0x81, "héllo".encode()) + masked(0x82, b"\x00\xff") + masked(0x81, b""))
    assert got == ["héllo", b"\x00\xff", ""]
    assert transport.written == [
        build_frame(0x81, "héllo".encode()),
        build_frame(0x82, b"\x00\xff"),
        build_frame(0x81, b""),
    ]


async def test_more_messages_in_one_read_than_one_batch_holds() -> None:
    ws, _ = open_connection()
    got = collect(ws)
    feed(ws, b"".join(masked(0x82, bytes([i])) for i in range(40)))
    assert got == [bytes([i]) for i in range(40)]
    feed(ws, masked(0x81, b"after"))
    assert got[-1] == "after"


async def test_frames_split_across_reads_at_every_byte() -> None:
    data = masked(0x81, b"one") + masked(0x82, bytes(300)) + masked(0x81, b"three")
    for cut in range(1, len(data)):
        ws, _ = open_connection()
        got = collect(ws)
        feed(ws, data[:cut])
        feed(ws, data[cut:])
        assert got == ["one", bytes(300), "three"], cut


async def test_a_ping_between_messages_is_answered_between_their_replies() -> None:
    ws, transport = open_connection()
    ws.set_message_handler(ws.send_nowait)
    feed(ws, masked(0x81, b"a") + masked(0x89, b"p") + masked(0x81, b"b"))
    assert transport.written == [
        build_frame(0x81, b"a"),
        build_frame(0x8A, b"p"),
        build_frame(0x81, b"b"),
    ]


async def test_a_fragmented_message_then_a_whole_one_in_the_same_read() -> None:
    ws, _ = open_connection()
    got = collect(ws)
    feed(ws, masked(0x01, b"ab") + masked(0x80, b"cd"))
    feed(ws, masked(0x01, b"ef"))  # the next read starts inside a fragmented message
    feed(ws, masked(0x80, b"gh") + masked(0x82, b"x"))
    assert got == ["abcd", "efgh", b"x"]


async def test_a_handler_error_fails_with_1011_and_the_batch_still_reaches_it() -> None:
    ws, transport = open_connection()
    calls: list[Any] = []

    def handler(message: Any) -> None:
        calls.append(message)
        raise RuntimeError("boom")

    ws.set_message_handler(handler)
    feed(ws, masked(0x81, b"1") + masked(0x81, b"2"))
    assert calls == ["1", "2"]
    assert transport.written[0][:4] == b"\x88\x10\x03\xf3"  # close 1011 "internal error"


async def test_a_base_exception_in_the_handler_propagates() -> None:
    class Stop(BaseException):
        pass

    def handler(message: Any) -> None:
        raise Stop

    ws, _ = open_connection()
    ws.set_message_handler(handler)
    with pytest.raises(Stop):
        feed(ws, masked(0x81, b"x"))


async def test_a_framing_error_after_a_message_closes_after_its_reply() -> None:
    ws, transport = open_connection()
    ws.set_message_handler(ws.send_nowait)
    feed(ws, masked(0x81, b"ok") + masked(0x8F, b""))  # reserved opcode 15
    assert transport.written[0] == build_frame(0x81, b"ok")
    assert transport.written[1][:4] == b"\x88\x14\x03\xea"  # 1002
    with pytest.raises(ConnectionClosed, match="reserved opcode 15"):
        ws.send_nowait("late")


async def test_a_message_over_max_size_fails_with_1009() -> None:
    ws, transport = open_connection(Core(Side.SERVER, max_size=10))
    collect(ws)
    feed(ws, masked(0x82, bytes(11)))
    assert transport.written[0][2:4] == b"\x03\xf1"  # 1009


async def test_a_waiting_recv_gets_the_message_and_the_rest_is_queued() -> None:
    ws, _ = open_connection()
    task = asyncio.ensure_future(ws.recv())
    await asyncio.sleep(0)
    feed(ws, masked(0x81, b"first") + masked(0x82, b"second"))
    assert await task == "first"
    assert ws.recv_nowait() == b"second"


async def test_a_message_for_a_cancelled_recv_is_queued() -> None:
    ws, _ = open_connection()
    task = asyncio.ensure_future(ws.recv())
    await asyncio.sleep(0)
    assert ws._waiter is not None
    ws._waiter.cancel()  # as wait_for does on a timeout, before the task runs
    feed(ws, masked(0x81, b"kept"))
    with pytest.raises(asyncio.CancelledError):
        await task
    assert ws.recv_nowait() == "kept"


async def test_send_nowait_frames_what_the_python_path_frames() -> None:
    class Colour(str, enum.Enum):
        RED = "red"

    ws, transport = open_connection()
    big = bytes(range(256)) * 300  # past the writelines threshold
    for message in ["text", "", Colour.RED, b"bin", bytearray(b"ba"), big]:
        ws.send_nowait(message)
    assert transport.written == [
        build_frame(0x81, b"text"),
        build_frame(0x81, b""),
        build_frame(0x81, b"red"),
        build_frame(0x82, b"bin"),
        build_frame(0x82, b"ba"),
        build_frame(0x82, big),
    ]
    with pytest.raises(UnicodeEncodeError):
        ws.send_nowait("\ud800")
    assert len(transport.written) == 6


async def test_a_client_masks_with_fresh_keys_or_its_mask_source() -> None:
    ws, transport = open_connection(Core(Side.CLIENT))
    ws.send_nowait("hi")
    ws.send_nowait("hi")
    keys = [frame[2:6] for frame in transport.written]
    for frame in transport.written:
        assert frame[:2] == b"\x81\x82"
        assert apply_mask(frame[6:], frame[2:6]) == b"hi"
    assert keys[0] != keys[1]

    ws, transport = open_connection(Core(Side.CLIENT, mask_source=lambda n: b"abcd"[:n]))
    ws.send_nowait(b"xy")
    assert transport.written == [build_frame(0x82, b"xy", b"abcd")]

    ws, transport = open_connection(Core(Side.CLIENT, mask_source=lambda n: b"abc"))
    with pytest.raises(ValueError, match="mask must be 4 bytes, got 3"):
        ws.send_nowait("x")
    assert transport.written == []


async def test_send_nowait_refuses_before_the_handshake_and_after_the_close() -> None:
    ws = Connection(make_options(ping_interval=None, close_timeout=None), False)
    ws.connection_made(RecordingTransport())  # type: ignore[arg-type]
    with pytest.raises(InvalidState, match="handshake"):
        ws.send_nowait("early")
    ws, transport = open_connection()
    ws.close_nowait()
    with pytest.raises(ConnectionClosed):
        ws.send_nowait("late")
    assert len(transport.written) == 1  # the close frame only


async def test_a_fragmented_send_in_progress_refuses_a_whole_message() -> None:
    ws, _ = open_connection()
    ws.send_fragment("part", fin=False)
    with pytest.raises(InvalidState, match="fragmented message is in progress"):
        ws.send_nowait("whole")


async def test_compressed_messages_take_the_python_path_both_ways() -> None:
    deflate = PerMessageDeflate(DeflateParams(), True, DeflateOptions(min_size=0))
    ws, transport = open_connection(Core(Side.SERVER, deflate=deflate))
    got = collect(ws)
    ws.send_nowait("z" * 100)
    assert transport.written[0][0] == 0xC1  # FIN + RSV1 + text
    frame = transport.written[0]
    feed(ws, masked(frame[0], frame[2:]))
    assert got == ["z" * 100]


async def test_a_core_of_another_class_takes_the_python_path() -> None:
    class Traced(Core):
        __slots__ = ()

    ws, transport = open_connection(Traced(Side.SERVER))
    ws.set_message_handler(ws.send_nowait)
    feed(ws, masked(0x81, b"same"))
    assert transport.written == [build_frame(0x81, b"same")]


@pytest.mark.skipif(not accel.SPEEDUPS, reason="the compiled path only")
def test_bind_core_refuses_a_class_without_those_slots() -> None:
    from tether import _speedups

    class NoSlots:
        _sink = property(lambda self: None)

    with pytest.raises(AttributeError):
        _speedups.bind_core(object, None)
    with pytest.raises(TypeError, match="is not a writable __slots__ entry"):
        _speedups.bind_core(NoSlots, None)
    with pytest.raises(TypeError, match="takes a class"):
        _speedups.bind_core(1, None)  # type: ignore[arg-type]


async def test_a_large_frame_is_read_into_its_payload() -> None:
    ws, _ = open_connection()
    got = collect(ws)
    payload = bytes(range(256)) * 1024  # 256 KiB
    frame = masked(0x82, payload)
    feed(ws, frame[:100_000])  # past a quarter of the frame: its payload sink starts
    with ws.get_buffer(-1) as buf:
        assert len(buf) == len(frame) - 100_000  # the rest of the payload, not the scratch
    for start in range(100_000, len(frame), 50_000):
        feed(ws, frame[start : start + 50_000])
    assert got == [payload]
    feed(ws, masked(0x81, b"next"))
    assert got[-1] == "next"


async def test_a_large_frame_asks_the_transport_to_wake_it_for_the_rest() -> None:
    """While a large frame's payload arrives, each read tells tether's
    transport how much is still missing (Transport.set_read_low_water), so
    the socket wakes the loop once a useful amount is in; the read that
    completes it, and reads of small messages, ask for nothing."""
    ws, transport = open_connection()
    got = collect(ws)
    payload = bytes(range(256)) * 1024  # 256 KiB: a 14-byte masked header
    frame = masked(0x82, payload)
    feed(ws, frame[:100_000])
    assert transport.low_water == [len(payload) - (100_000 - 14)]
    feed(ws, frame[100_000:200_000])
    assert transport.low_water[1:] == [len(frame) - 200_000]
    feed(ws, frame[200_000:])
    assert got == [payload]
    feed(ws, masked(0x81, b"next"))
    assert got[-1] == "next"
    assert len(transport.low_water) == 2


async def test_large_text_is_validated_while_it_arrives() -> None:
    ws, transport = open_connection()
    got = collect(ws)
    payload = b"a" * 150_000 + b"\xff" + b"a" * 150_000
    frame = masked(0x81, payload)
    feed(ws, frame[:100_000])
    assert transport.written == []
    feed(ws, frame[100_000:200_000])  # the invalid byte is in: fail now, not at the end
    assert transport.written[0][2:4] == b"\x03\xef"  # 1007
    feed(ws, frame[200_000:])
    assert got == []


def pattern(size: int) -> bytes:
    return bytes((i * 7 + i // 251) & 0xFF for i in range(size))


@pytest.mark.parametrize("size", [4096, 65535, 65536, 300_000])
@pytest.mark.parametrize("side", [Side.SERVER, Side.CLIENT])
async def test_large_binary_messages_in_pieces_arrive_and_echo_whole(size: int, side: Side) -> None:
    ws, transport = open_connection(Core(side))
    ws.set_message_handler(ws.send_nowait)
    payloads = [pattern(size), pattern(size)[::-1]]
    wire = b""
    for payload in payloads:
        wire += masked(0x82, payload) if side is Side.SERVER else build_frame(0x82, payload)
    # the first piece holds a quarter of the first frame plus a byte: the
    # payload sink starts on it; the second frame begins inside a later piece
    step = len(wire) // 8 + 1
    for start in range(0, len(wire), step):
        feed(ws, wire[start : start + step])
    assert len(transport.written) == 2
    for frame, payload in zip(transport.written, payloads, strict=True):
        if side is Side.SERVER:
            assert frame == build_frame(0x82, payload)
        else:  # masked with a fresh key, the 2- or 8-byte length as the size needs
            header = 4 if size < 65536 else 10
            assert frame[:2] == bytes((0x82, 0xFE if size < 65536 else 0xFF))
            assert int.from_bytes(frame[2:header], "big") == size
            assert apply_mask(frame[header + 4 :], frame[header : header + 4]) == payload


async def test_a_large_binary_message_takes_no_python_frame_of_the_core(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[str] = []

    def counted(cls: type, name: str) -> None:
        original = getattr(cls, name)

        def wrapper(self: Any, *args: Any) -> Any:
            calls.append(name)
            return original(self, *args)

        monkeypatch.setattr(cls, name, wrapper)

    counted(Core, "_after_scan")
    counted(Core, "_sink_progress")
    counted(Connection, "_py_send_nowait")
    ws, transport = open_connection()
    ws.set_message_handler(ws.send_nowait)
    payload = pattern(200_000)
    frame = masked(0x82, payload)
    for start in range(0, len(frame), 60_000):  # the first piece: past a quarter
        feed(ws, frame[start : start + 60_000])
    assert transport.written == [build_frame(0x82, payload)]
    if accel.SPEEDUPS:
        assert calls == []
    else:  # the same steps, in Python
        assert calls[0] == "_after_scan" and calls[-1] == "_sink_progress"


async def test_large_frames_of_a_fragmented_message_take_the_python_path() -> None:
    ws, _ = open_connection()
    got = collect(ws)
    first, rest = pattern(50_000), pattern(70_000)
    wire = masked(0x02, first) + masked(0x80, rest) + masked(0x82, first)
    for start in range(0, len(wire), 20_000):
        feed(ws, wire[start : start + 20_000])
    assert got == [first + rest, first]
