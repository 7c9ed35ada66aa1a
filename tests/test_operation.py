"""recv() and send(message): what they return (an Operation, a coroutine
without a Python frame, with the speedups; a coroutine otherwise) behaves
as the coroutine would: nothing runs before it is awaited, asyncio takes it
as a coroutine, cancellation and abandonment leave the connection usable,
and every case the compiled start does not handle goes to the Python
twins (_py_recv, _py_send)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from typing import Any

import pytest

from conftest import feed, masked, open_connection
from tether.exceptions import (
    ConcurrencyError,
    ConnectionClosed,
    ConnectionClosedError,
    InvalidState,
)
from tether.protocol import accel
from tether.protocol.frames import build_frame

compiled_only = pytest.mark.skipif(not accel.SPEEDUPS, reason="the compiled path only")


async def in_callback(fn: Any) -> None:
    """Run fn from a loop callback, as a transport's read runs."""
    done = asyncio.get_running_loop().create_future()

    def run() -> None:
        fn()
        done.set_result(None)

    asyncio.get_running_loop().call_soon(run)
    await done


# ---------------------------------------------------------------------------
# Alike with and without the speedups.


async def test_nothing_is_sent_or_awaited_before_the_await() -> None:
    ws, transport = open_connection()
    sending = ws.send(b"later")
    receiving = ws.recv()
    assert asyncio.iscoroutine(sending) and asyncio.iscoroutine(receiving)
    assert transport.written == [] and ws._waiter is None
    await sending
    assert transport.written == [build_frame(0x82, b"later")]
    receiving.close()  # never awaited: nothing to undo
    assert ws._waiter is None


async def test_a_send_never_awaited_warns_as_a_coroutine_does_and_sends_nothing() -> None:
    ws, transport = open_connection()
    with pytest.warns(RuntimeWarning, match="was never awaited"):
        ws.send(b"lost")  # type: ignore[unused-coroutine]
        gc.collect()
    assert transport.written == []


async def test_recv_returns_a_queued_message_at_once_and_waits_for_the_next() -> None:
    ws, _ = open_connection()
    feed(ws, masked(0x81, b"queued"))
    assert await ws.recv() == "queued"
    task = asyncio.create_task(ws.recv())
    await asyncio.sleep(0)
    assert ws._waiter is not None
    await in_callback(lambda: feed(ws, masked(0x82, b"next")))
    assert await task == b"next"
    assert ws._waiter is None


async def test_a_second_recv_raises_concurrency_error_and_the_first_still_gets_its_message() -> (
    None
):
    ws, _ = open_connection()
    first = asyncio.create_task(ws.recv())
    await asyncio.sleep(0)
    with pytest.raises(ConcurrencyError, match="already waiting"):
        await ws.recv()
    await in_callback(lambda: feed(ws, masked(0x82, b"one")))
    assert await first == b"one"


async def test_recv_with_a_message_handler_raises_invalid_state() -> None:
    ws, _ = open_connection()
    ws.set_message_handler(lambda message: None)
    with pytest.raises(InvalidState, match="message handler"):
        await ws.recv()


async def test_wait_for_times_out_and_the_next_recv_gets_the_message() -> None:
    ws, _ = open_connection()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(ws.recv(), 0.01)
    assert ws._waiter is None
    await in_callback(lambda: feed(ws, masked(0x82, b"after")))
    assert await asyncio.wait_for(ws.recv(), 1) == b"after"


async def test_an_abandoned_recv_frees_the_connection_for_the_next() -> None:
    ws, _ = open_connection()
    receiving = ws.recv()
    # Drive it by hand to its wait, then drop it: as a coroutine's frame
    # would run its `finally`, the connection forgets the waiter.
    waiter = receiving.send(None)
    assert ws._waiter is waiter
    del receiving
    gc.collect()
    assert ws._waiter is None
    feed(ws, masked(0x82, b"kept"))
    assert await ws.recv() == b"kept"


async def test_closing_a_waiting_recv_frees_the_connection() -> None:
    ws, _ = open_connection()
    receiving = ws.recv()
    receiving.send(None)
    receiving.close()
    assert ws._waiter is None
    with pytest.raises(RuntimeError, match="cannot reuse already awaited coroutine"):
        receiving.send(None)


async def test_throw_into_a_waiting_recv_raises_there_and_frees_the_connection() -> None:
    ws, _ = open_connection()
    receiving = ws.recv()
    receiving.send(None)
    with pytest.raises(ValueError, match="thrown"):
        receiving.throw(ValueError("thrown"))
    assert ws._waiter is None
    fresh = ws.recv()
    with pytest.raises(KeyError):
        fresh.throw(KeyError)  # not started: raised at once, as a coroutine does
    with pytest.raises(RuntimeError, match="cannot reuse"):
        fresh.send(None)


async def test_send_and_recv_on_a_closed_connection_raise_when_awaited() -> None:
    ws, _ = open_connection()
    await in_callback(lambda: feed(ws, masked(0x88, b"\x03\xe8bye")))
    ws.connection_lost(None)
    sending = ws.send("late")  # no exception yet: nothing runs before the await
    with pytest.raises(ConnectionClosed):
        await sending
    with pytest.raises(ConnectionClosed, match="1000"):
        await ws.recv()


async def test_send_accepts_bytes_likes_and_fragments() -> None:
    ws, transport = open_connection()
    await ws.send(bytearray(b"ab"))
    await ws.send(memoryview(b"cd"))
    await ws.send(["e", "f"])
    assert transport.written[:2] == [build_frame(0x82, b"ab"), build_frame(0x82, b"cd")]
    assert b"".join(transport.written[2:]) == (
        build_frame(0x01, b"e") + build_frame(0x00, b"f") + build_frame(0x80, b"")
    )
    with pytest.raises(TypeError, match="cannot send int"):
        await ws.send(3)  # type: ignore[arg-type]


async def test_a_whole_message_waits_for_a_fragmented_one_on_its_way() -> None:
    ws, transport = open_connection()
    release = asyncio.Event()

    async def fragments() -> Any:
        yield b"a"
        await release.wait()
        yield b"b"

    fragmented = asyncio.create_task(ws.send(fragments()))
    await asyncio.sleep(0)
    whole = asyncio.create_task(ws.send(b"whole"))
    await asyncio.sleep(0)
    assert not whole.done()  # behind the fragmented message, not inside it
    release.set()
    await asyncio.wait_for(asyncio.gather(fragmented, whole), 1)
    assert transport.written[-1] == build_frame(0x82, b"whole")


async def test_send_waits_while_the_transport_is_paused() -> None:
    ws, transport = open_connection()
    ws.pause_writing()
    sending = asyncio.create_task(ws.send(b"x"))
    await asyncio.sleep(0)
    assert transport.written == [build_frame(0x82, b"x")]  # written, then waiting
    assert not sending.done()
    ws.resume_writing()
    await asyncio.wait_for(sending, 1)


async def test_run_coroutine_threadsafe_takes_send_and_recv() -> None:
    ws, transport = open_connection()
    loop = asyncio.get_running_loop()

    def in_thread() -> Any:
        asyncio.run_coroutine_threadsafe(ws.send(b"t"), loop).result(1)
        return asyncio.run_coroutine_threadsafe(ws.recv(), loop).result(1)

    thread = loop.run_in_executor(None, in_thread)
    while not transport.written:
        await asyncio.sleep(0.001)
    while ws._waiter is None:
        await asyncio.sleep(0.001)
    await in_callback(lambda: feed(ws, masked(0x82, b"back")))
    assert await asyncio.wait_for(thread, 2) == b"back"


async def test_async_for_ends_on_a_normal_close_while_waiting_and_after() -> None:
    ws, _ = open_connection()
    assert ws.__aiter__() is ws
    got: list[Any] = []

    async def consume() -> None:
        async for message in ws:
            got.append(message)

    task = asyncio.create_task(consume())
    await asyncio.sleep(0)
    await in_callback(lambda: feed(ws, masked(0x82, b"a")))
    await asyncio.sleep(0)
    await in_callback(lambda: feed(ws, masked(0x88, b"\x03\xe8")))
    ws.connection_lost(None)
    await asyncio.wait_for(task, 1)  # the waiting __anext__ ended the loop
    assert got == [b"a"]
    with pytest.raises(StopAsyncIteration):
        await ws.__anext__()  # closed before it starts: the Python twin


async def test_async_for_raises_on_an_error_close() -> None:
    ws, _ = open_connection()
    feed(ws, masked(0x82, b"kept") + masked(0x88, b"\x03\xf3crash"))
    ws.connection_lost(None)
    got: list[Any] = []
    with pytest.raises(ConnectionClosedError, match="1011"):
        async for message in ws:
            got.append(message)
    assert got == [b"kept"]


# ---------------------------------------------------------------------------
# The Operation itself.


@compiled_only
async def test_recv_and_send_are_operations_named_as_their_methods() -> None:
    from tether import _speedups

    ws, _ = open_connection()
    receiving, sending = ws.recv(), ws.send(b"")
    assert type(receiving) is _speedups.Operation
    assert (receiving.__name__, receiving.__qualname__) == ("recv", "Connection.recv")
    assert (sending.__name__, sending.__qualname__) == ("send", "Connection.send")
    iterating = ws.__anext__()
    assert iterating.__qualname__ == "Connection.__anext__"
    iterating.close()
    assert "not started" in repr(receiving)
    task = asyncio.create_task(receiving)
    await asyncio.sleep(0)
    assert "Connection.recv" in repr(task)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert ws._waiter is None
    sending.close()


@compiled_only
async def test_the_operation_keeps_the_coroutine_protocol() -> None:
    ws, _ = open_connection()
    receiving = ws.recv()
    with pytest.raises(TypeError, match="just-started"):
        receiving.send(1)
    with pytest.raises(TypeError, match="1 to 3 arguments"):
        receiving.throw()
    receiving.close()
    with pytest.raises(TypeError, match="deriving from BaseException"):
        ws.recv().throw(3)
    with pytest.raises(TypeError, match="separate value"):
        ws.recv().throw(ValueError("x"), "y")
    with pytest.raises(ValueError, match="v"):
        ws.recv().throw(ValueError, "v")
    with pytest.raises(TypeError, match="traceback"):
        ws.recv().throw(ValueError, None, "not a traceback")
    # Delegated operations forward send, throw and close to the Python
    # coroutine.
    sending = ws.send(bytearray(b"x"))  # a bytes-like: _py_send
    with pytest.raises(StopIteration):
        sending.send(None)
    draining = ws.send(b"y")
    ws.pause_writing()
    waited = draining.send(None)  # _drain's future
    assert isinstance(waited, asyncio.Future)
    with pytest.raises(KeyError):
        draining.throw(KeyError("in the drain"))
    draining = ws.send(b"z")
    draining.send(None)
    assert draining.close() is None
    ws.resume_writing()


@compiled_only
async def test_queued_message_returns_through_stop_iteration() -> None:
    ws, _ = open_connection()
    feed(ws, masked(0x82, b"one") + masked(0x81, b"two"))
    receiving = ws.recv()
    with pytest.raises(StopIteration) as stop:
        receiving.send(None)
    assert stop.value.value == b"one"
    with pytest.raises(StopIteration) as stop:
        next(ws.recv().__await__())
    assert stop.value.value == "two"


@compiled_only
async def test_a_whole_message_after_a_fragmented_one_keeps_the_compiled_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tether.aio.connection import Connection

    ws, transport = open_connection()
    await ws.send(["a", "b"])  # creates the send lock
    assert ws._send_lock is not None and not ws._send_lock.locked()
    calls: list[Any] = []
    python_send = Connection._py_send

    def spy(self: Connection, message: Any) -> Any:
        calls.append(message)
        return python_send(self, message)

    monkeypatch.setattr(Connection, "_py_send", spy)
    await ws.send(b"fast")
    assert calls == [] and transport.written[-1] == build_frame(0x82, b"fast")
    await ws.send(bytearray(b"slow"))  # a bytes-like: the Python twin
    assert calls == [bytearray(b"slow")]
