"""tether.aio.timers: the shared timer queues of a server's connections."""

from __future__ import annotations

import asyncio
from typing import Any

from tether.aio.timers import Timers


async def test_timers_fire_in_order_and_cancelled_ones_do_not() -> None:
    loop = asyncio.get_running_loop()
    timers = Timers(loop)
    fired: list[str] = []
    timers.later(0.02, lambda: fired.append("a"))
    cancelled = timers.later(0.02, lambda: fired.append("never"))
    timers.later(0.01, lambda: fired.append("short"))
    timers.later(0.02, lambda: fired.append("b"))
    cancelled.cancel()
    assert timers.pending == 4  # the cancelled one leaves when its time comes
    await asyncio.sleep(0.005)
    assert fired == []
    await asyncio.sleep(0.05)
    assert fired == ["short", "a", "b"]
    assert timers.pending == 0
    assert timers._queues == {}  # an empty queue is dropped, with its loop timer


async def test_one_loop_timer_per_delay() -> None:
    loop = asyncio.get_running_loop()
    timers = Timers(loop)
    before = len(loop._scheduled)  # type: ignore[attr-defined]
    for _ in range(1000):
        timers.later(0.05, lambda: None)
    timers.later(0.01, lambda: None)
    assert len(loop._scheduled) - before == 2  # type: ignore[attr-defined]
    await asyncio.sleep(0.08)
    assert timers.pending == 0


async def test_a_callback_may_set_the_next_timer_of_the_same_delay() -> None:
    loop = asyncio.get_running_loop()
    timers = Timers(loop)
    ticks: list[float] = []
    done = loop.create_future()

    def tick() -> None:
        ticks.append(loop.time())
        if len(ticks) < 3:
            timers.later(0.01, tick)
        else:
            done.set_result(None)

    timers.later(0.01, tick)
    await asyncio.wait_for(done, 2)
    assert len(ticks) == 3
    assert ticks[1] - ticks[0] >= 0.009 and ticks[2] - ticks[1] >= 0.009
    await asyncio.sleep(0)
    assert timers._queues == {}


async def test_a_failing_callback_is_reported_and_the_others_still_run() -> None:
    loop = asyncio.get_running_loop()
    errors: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    timers = Timers(loop)
    fired: list[int] = []

    def boom() -> None:
        raise RuntimeError("boom")

    timers.later(0.01, boom)
    timers.later(0.01, lambda: fired.append(1))
    await asyncio.sleep(0.05)
    assert fired == [1]
    assert len(errors) == 1
    assert isinstance(errors[0]["exception"], RuntimeError)
