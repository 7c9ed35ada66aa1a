"""Timers for many connections that share the same delays.

A server sets the same few timers on every connection: the opening
handshake's deadline, the keepalive ping, the closing handshake's deadline.
Timers that share a delay expire in the order they were set, so a queue
(a deque) keeps them in order where asyncio's ``call_later`` keeps a heap of
``TimerHandle`` objects compared in Python; one loop timer per delay wakes
the queue's head. Setting one costs an append; cancelling one drops its
callback, and the entry leaves the queue when its time comes.

What to call next: nothing; :class:`tether.aio.server.ServerConnection`
sets its timers through :meth:`Timers.later`.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from typing import Any

__all__ = ["Timer", "Timers"]


class Timer:
    """One timer set with :meth:`Timers.later`; like asyncio's TimerHandle,
    :meth:`cancel` stops it."""

    __slots__ = ("callback", "when")

    def __init__(self, when: float, callback: Callable[[], Any]) -> None:
        self.when = when
        self.callback: Callable[[], Any] | None = callback

    def cancel(self) -> None:
        self.callback = None


class _Queue:
    __slots__ = ("delay", "entries", "handle")

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.entries: collections.deque[Timer] = collections.deque()
        self.handle: asyncio.TimerHandle | None = None


class Timers:
    """The timers of one loop (a server's): one queue per distinct delay."""

    __slots__ = ("_loop", "_queues")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._queues: dict[float, _Queue] = {}

    def later(self, delay: float, callback: Callable[[], Any]) -> Timer:
        """Call ``callback()`` in ``delay`` seconds, unless cancelled first."""
        queue = self._queues.get(delay)
        if queue is None:
            queue = self._queues[delay] = _Queue(delay)
        timer = Timer(self._loop.time() + delay, callback)
        queue.entries.append(timer)
        if queue.handle is None:
            queue.handle = self._loop.call_at(timer.when, self._expire, queue)
        return timer

    def _expire(self, queue: _Queue) -> None:
        # queue.handle stays set while the callbacks run: a timer they set
        # lands at the tail, and the queue is re-armed once, below.
        entries = queue.entries
        now = self._loop.time()
        # The loop may wake a little early (its clock resolution): what is
        # due within it is due now, as asyncio's own timers treat it.
        now += getattr(self._loop, "_clock_resolution", 0.0)
        while entries and entries[0].when <= now:
            callback = entries.popleft().callback
            if callback is None:
                continue
            try:
                callback()
            except Exception as exc:
                self._loop.call_exception_handler(
                    {"message": "Exception in a tether timer callback", "exception": exc}
                )
        if entries:
            queue.handle = self._loop.call_at(entries[0].when, self._expire, queue)
        else:
            queue.handle = None
            del self._queues[queue.delay]

    @property
    def pending(self) -> int:
        """Timers set and not yet expired (cancelled ones included until
        their time comes)."""
        return sum(len(queue.entries) for queue in self._queues.values())
