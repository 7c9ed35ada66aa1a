"""The future that recv() waits on (tether.aio.waiter): the Python class and
its compiled twin behave alike, as a future to asyncio, and wake the waiting
task inside the read that completes it."""

from __future__ import annotations

import asyncio
import contextvars
from typing import Any

import pytest

from conftest import feed, masked, open_connection
from tether.aio import waiter as waiter_module
from tether.aio.waiter import PyWaiter
from tether.protocol import accel
from tether.protocol.frames import build_frame

IMPLEMENTATIONS: list[Any] = [PyWaiter]
if accel.SPEEDUPS:
    from tether import _speedups

    IMPLEMENTATIONS.append(_speedups.Waiter)


@pytest.fixture(params=IMPLEMENTATIONS, ids=lambda cls: cls.__module__)
def make(request: pytest.FixtureRequest) -> Any:
    cls = request.param

    def make() -> Any:
        return cls(asyncio.get_running_loop())

    return make


def test_the_connection_uses_the_compiled_waiter_with_the_speedups() -> None:
    assert (waiter_module.Waiter is not PyWaiter) is accel.SPEEDUPS


async def waiting_task(waiter: Any, log: list[Any]) -> asyncio.Task[None]:
    """A task that awaits ``waiter`` and logs what it got; returned once it
    waits."""

    async def wait() -> None:
        try:
            log.append(("resumed", await waiter))
        except BaseException as exc:
            log.append(("raised", exc))
            raise

    task = asyncio.create_task(wait())
    await asyncio.sleep(0)
    assert not task.done() and not waiter.done()
    return task


async def in_callback(fn: Any) -> None:
    """Run fn() as a loop callback (outside any task) and wait for it."""
    loop = asyncio.get_running_loop()
    ran = loop.create_future()

    def run() -> None:
        try:
            fn()
        except BaseException as exc:
            ran.set_exception(exc)
        else:
            ran.set_result(None)

    loop.call_soon(run)
    await ran


async def test_wake_runs_the_waiting_task_inside_the_callback(make: Any) -> None:
    waiter, log = make(), []
    task = await waiting_task(waiter, log)

    def read() -> None:
        assert waiter.resolve("message") is True
        assert log == []
        waiter.wake()
        log.append("wake returned")

    await in_callback(read)
    assert log == [("resumed", "message"), "wake returned"]
    assert task.done()
    assert waiter.resolve("again") is False


async def test_inside_a_running_task_wake_schedules_the_step(make: Any) -> None:
    waiter, log = make(), []
    task = await waiting_task(waiter, log)
    waiter.resolve("message")
    waiter.wake()  # the test's own task is running: asyncio forbids a nested step
    assert log == []
    await task
    assert log == [("resumed", "message")]


async def test_set_result_wakes_on_the_next_turn_as_asyncio_does(make: Any) -> None:
    waiter, log = make(), []
    task = await waiting_task(waiter, log)

    def complete() -> None:
        waiter.set_result(b"\x00")
        log.append("set_result returned")

    await in_callback(complete)
    await task
    assert log == ["set_result returned", ("resumed", b"\x00")]
    with pytest.raises(asyncio.InvalidStateError, match="invalid state"):
        waiter.set_result(b"twice")


async def test_set_exception_raises_in_the_task(make: Any) -> None:
    waiter, log = make(), []
    task = await waiting_task(waiter, log)
    error = ConnectionError("gone")
    waiter.set_exception(error)
    with pytest.raises(ConnectionError, match="gone"):
        await task
    assert waiter.exception() is error
    with pytest.raises(TypeError):
        make().set_exception("not an exception")
    with pytest.raises(asyncio.InvalidStateError):
        waiter.set_exception(error)


async def test_cancelling_the_task_cancels_the_waiter(make: Any) -> None:
    waiter, log = make(), []
    task = await waiting_task(waiter, log)
    task.cancel("stop")
    with pytest.raises(asyncio.CancelledError):
        await task
    assert waiter.cancelled() and waiter.done()
    assert waiter.cancel() is False
    assert waiter.resolve("late") is False
    with pytest.raises(asyncio.CancelledError, match="stop"):
        waiter.result()
    with pytest.raises(asyncio.CancelledError):
        waiter.exception()
    assert isinstance(log[0][1], asyncio.CancelledError)


async def test_a_cancel_after_resolve_is_the_task_s_to_deliver(make: Any) -> None:
    # As with asyncio's future: once the result is in, Task.cancel() cannot
    # cancel the waiter, and the task's step raises CancelledError instead.
    waiter, log = make(), []
    task = await waiting_task(waiter, log)
    waiter.resolve("message")
    task.cancel()
    await in_callback(waiter.wake)
    assert task.cancelled()
    assert waiter.result() == "message"


async def test_other_callbacks_are_scheduled_in_order_never_run_early(make: Any) -> None:
    waiter, log = make(), []
    marker = contextvars.ContextVar("marker", default="unset")
    context = contextvars.copy_context()
    context.run(marker.set, "theirs")
    waiter.add_done_callback(
        lambda w: log.append(("first", w.result(), marker.get())), context=context
    )
    waiter.add_done_callback(lambda w: log.append(("second", marker.get())))
    waiter.add_done_callback(log.append)
    assert waiter.remove_done_callback(log.append) == 1
    assert waiter.remove_done_callback(log.append) == 0

    def read() -> None:
        waiter.resolve(1)
        waiter.wake()
        log.append("wake returned")

    await in_callback(read)
    await asyncio.sleep(0)
    assert log == ["wake returned", ("first", 1, "theirs"), ("second", "unset")]
    # A callback added once the waiter is done is scheduled at once.
    waiter.add_done_callback(lambda w: log.append("late"))
    await asyncio.sleep(0)
    assert log[-1] == "late"


async def test_a_lone_callback_that_is_not_a_task_is_scheduled(make: Any) -> None:
    waiter, log = make(), []
    waiter.add_done_callback(lambda w: log.append("callback"))
    waiter.add_done_callback(log.append)
    waiter.remove_done_callback(log.append)  # one left, the lambda

    def read() -> None:
        waiter.resolve(None)
        waiter.wake()
        log.append("wake returned")

    await in_callback(read)
    await asyncio.sleep(0)
    assert log == ["wake returned", "callback"]


async def test_the_early_step_runs_in_the_task_s_context(make: Any) -> None:
    var = contextvars.ContextVar("var", default="loop")
    waiter, seen = make(), []

    async def wait() -> None:
        var.set("task")
        await waiter
        seen.append((var.get(), asyncio.current_task() is task))

    task = asyncio.create_task(wait())
    await asyncio.sleep(0)

    def read() -> None:
        waiter.resolve(None)
        waiter.wake()
        seen.append(var.get())

    await in_callback(read)
    assert seen == [("task", True), "loop"]


class _Task(asyncio.Task):  # type: ignore[type-arg]
    """A task whose bound methods pass for its wake-up."""

    def boom(self, waiter: Any) -> None:
        raise ValueError("from the step")

    def interrupt(self, waiter: Any) -> None:
        raise KeyboardInterrupt


async def test_an_exception_from_the_early_step_goes_to_the_loop_handler(make: Any) -> None:
    loop = asyncio.get_running_loop()
    reports: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda loop, context: reports.append(context))
    task = _Task(asyncio.sleep(0))
    try:
        waiter = make()
        waiter.add_done_callback(task.boom)

        def read() -> None:
            waiter.resolve(None)
            waiter.wake()

        await in_callback(read)
        assert len(reports) == 1
        assert isinstance(reports[0]["exception"], ValueError)
        assert reports[0]["future"] is waiter
        assert "Exception in callback" in reports[0]["message"]

        waiter = make()
        waiter.add_done_callback(task.interrupt)
        waiter.resolve(None)

        def interrupted() -> None:
            with pytest.raises(KeyboardInterrupt):
                waiter.wake()

        await in_callback(interrupted)
        assert len(reports) == 1
    finally:
        loop.set_exception_handler(None)
        await task


async def test_on_a_loop_other_than_asyncio_s_wake_schedules(make: Any) -> None:
    class OtherLoop:
        """A loop that is not an asyncio.BaseEventLoop (uvloop's is not)."""

        def __init__(self) -> None:
            self.scheduled: list[Any] = []

        def call_soon(self, fn: Any, *args: Any, context: Any = None) -> None:
            self.scheduled.append((fn, args, context))

    other = OtherLoop()
    waiter = type(make())(other)
    task = _Task(asyncio.sleep(0))
    context = contextvars.copy_context()
    waiter.add_done_callback(task.boom, context=context)

    def read() -> None:
        waiter.resolve(1)
        waiter.wake()

    await in_callback(read)
    assert other.scheduled == [(task.boom, (waiter,), context)]
    await task


def test_on_uvloop_recv_is_woken_through_the_loop() -> None:
    uvloop = pytest.importorskip("uvloop")

    async def main() -> list[Any]:
        ws, _ = open_connection()
        log: list[Any] = []

        async def receive() -> None:
            log.append(await ws.recv())

        task = asyncio.create_task(receive())
        await asyncio.sleep(0)

        def read() -> None:
            feed(ws, masked(0x82, b"m"))
            log.append("read returned")

        await in_callback(read)
        await task
        return log

    loop = uvloop.new_event_loop()
    try:
        assert loop.run_until_complete(main()) == ["read returned", b"m"]
    finally:
        loop.close()


async def test_it_is_a_future_to_asyncio(make: Any) -> None:
    waiter = make()
    assert asyncio.isfuture(waiter)
    assert waiter.get_loop() is asyncio.get_running_loop()
    assert "pending" in repr(waiter)
    with pytest.raises(asyncio.InvalidStateError, match="Result is not ready"):
        waiter.result()
    with pytest.raises(asyncio.InvalidStateError, match="Exception is not set"):
        waiter.exception()
    assert waiter._asyncio_future_blocking is False
    waiter._asyncio_future_blocking = True
    assert waiter._asyncio_future_blocking is True
    # A done waiter is awaited without a suspension.
    waiter.resolve((1, 2))
    assert "finished" in repr(waiter)
    assert await waiter == (1, 2)
    assert waiter.exception() is None
    # Awaited with a bare iteration, a pending waiter yields itself once.
    pending = make()
    steps = iter(pending.__await__())
    assert next(steps) is pending
    with pytest.raises(RuntimeError, match="await wasn't used with future"):
        next(steps)
    done = make()
    done.resolve((3, 4))
    with pytest.raises(StopIteration) as stop:
        next(iter(done.__await__()))
    assert stop.value.value == (3, 4)


async def test_wait_for_times_out_and_cancels_the_waiter(make: Any) -> None:
    waiter = make()

    async def wait() -> Any:
        return await waiter

    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(wait(), 0.01)
    assert waiter.cancelled()


# ---------------------------------------------------------------------------
# The connection wakes recv() in the read that completes it.


async def test_recv_resumes_inside_the_read_and_its_reply_is_written_there() -> None:
    ws, transport = open_connection()
    log: list[Any] = []

    async def echo() -> None:
        for _ in range(3):
            message = await ws.recv()
            log.append(message)
            ws.send_nowait(message)

    task = asyncio.create_task(echo())
    await asyncio.sleep(0)

    def read(data: bytes) -> None:
        feed(ws, data)
        log.append(len(transport.written))

    await in_callback(lambda: read(masked(0x82, b"one")))
    assert log == [b"one", 1]
    # Two messages in one read: the first wakes the task as the read ends, the
    # second was queued behind it and recv() takes it without waiting.
    await in_callback(lambda: read(masked(0x82, b"two") + masked(0x82, b"three")))
    assert log == [b"one", 1, b"two", b"three", 3]
    await task
    assert transport.written[1:] == [build_frame(0x82, b"two"), build_frame(0x82, b"three")]


async def test_a_read_inside_a_task_wakes_recv_on_the_next_turn() -> None:
    ws, _ = open_connection()
    task = asyncio.create_task(ws.recv())
    await asyncio.sleep(0)
    feed(ws, masked(0x82, b"x"))  # from the test's task: the step cannot nest
    assert not task.done()
    assert await task == b"x"


async def test_a_cancelled_recv_leaves_the_message_queued() -> None:
    ws, _ = open_connection()
    task = asyncio.create_task(ws.recv())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await in_callback(lambda: feed(ws, masked(0x82, b"kept")))
    assert await ws.recv() == b"kept"


async def test_a_closed_connection_wakes_recv_with_the_close() -> None:
    ws, _ = open_connection()
    task = asyncio.create_task(ws.recv())
    await asyncio.sleep(0)
    close = masked(0x88, b"\x03\xe8bye")
    await in_callback(lambda: feed(ws, close))
    ws.connection_lost(None)
    with pytest.raises(Exception, match="1000"):
        await task


async def test_a_recv_that_times_out_loses_no_message() -> None:
    ws, _ = open_connection()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):
            await ws.recv()
    await in_callback(lambda: feed(ws, masked(0x82, b"after")))
    async with asyncio.timeout(1):
        assert await ws.recv() == b"after"
    # A recv() in a task of its own, raced against another with asyncio.wait.
    receiving = asyncio.create_task(ws.recv())
    other = asyncio.create_task(asyncio.sleep(10))
    await asyncio.sleep(0)
    await in_callback(lambda: feed(ws, masked(0x82, b"raced")))
    done, _ = await asyncio.wait({receiving, other}, return_when=asyncio.FIRST_COMPLETED)
    other.cancel()
    assert done == {receiving} and receiving.result() == b"raced"
