"""The future that ``recv()`` waits on, and the read that wakes its task.

A task that awaits an :class:`asyncio.Future` is woken through the loop:
``set_result`` schedules the task's step with ``call_soon``, and the step runs
on the loop's next turn, after one more poll of the selector. For a coroutine
that awaits each message in turn (``await ws.recv()``), that is a second turn
of the loop per message, with a system call and the loop's own Python, on top
of the turn that read the message.

A :class:`Waiter` is the future-like object that :meth:`Connection.recv
<tether.aio.Connection.recv>` waits on instead. The connection completes it
with :meth:`Waiter.resolve` while it handles a read, and calls
:meth:`Waiter.wake` when the read is handled: the waiting task's step runs
right there, inside the read's callback, provided that

- the only callback is a task's wake-up (the task awaiting the waiter),
- no other task is running on the loop (asyncio does not let a task step
  inside another), and
- the loop is asyncio's own (a :class:`asyncio.BaseEventLoop`). uvloop runs
  the callbacks that I/O made ready in the same iteration, without another
  poll, so there is no turn to save; measured there, the early step cost
  as much or more (the README's uvloop notes).

A task stepped early writes from inside the transport's read callback:
tether's compiled transport sends its first write at once when that read
was of one connection, and gathers the replies of a read of several, to
send them together when the read ends (tether/_transport.c).

Otherwise the callbacks are scheduled with ``call_soon``, as asyncio's own
future does. Everything else a task or asyncio asks of a future (``cancel``,
``result``, ``add_done_callback``, ``get_loop``, ``_asyncio_future_blocking``)
behaves as :class:`asyncio.Future` does. An exception that escapes an early
wake-up goes to the loop's exception handler, as one from a ``call_soon``
callback would; ``SystemExit`` and ``KeyboardInterrupt`` propagate.

``tether._speedups.Waiter`` is the compiled twin; :data:`Waiter` is whichever
this process uses (see :mod:`tether.protocol.accel`).
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any

from tether.protocol import accel

__all__ = ["PyWaiter", "Waiter"]

_PENDING, _DONE, _CANCELLED = 0, 1, 2
_current_task = asyncio.current_task
_Task = asyncio.Task
_BaseEventLoop = asyncio.BaseEventLoop

Callback = Callable[[Any], object]


class PyWaiter:
    """A one-shot future for one ``recv()``; see the module's docstring.

    The connection calls :meth:`resolve` then :meth:`wake`, or
    :meth:`set_result` / :meth:`set_exception` (which wake through
    ``call_soon`` at once); the awaiting task uses the rest.
    """

    __slots__ = (
        "_asyncio_future_blocking",
        "_callbacks",
        "_cancel_message",
        "_exception",
        "_loop",
        "_result",
        "_state",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._state = _PENDING
        self._result: Any = None
        self._exception: BaseException | None = None
        self._cancel_message: Any = None
        self._callbacks: list[tuple[Callback, contextvars.Context]] = []
        #: asyncio's marker of a future that a task may wait on.
        self._asyncio_future_blocking = False

    def __repr__(self) -> str:
        state = ("pending", "finished", "cancelled")[self._state]
        return f"<{type(self).__name__} {state}>"

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def done(self) -> bool:
        return self._state != _PENDING

    def cancelled(self) -> bool:
        return self._state == _CANCELLED

    def result(self) -> Any:
        """The message, or raise what the waiter was completed with."""
        if self._state == _CANCELLED:
            raise asyncio.CancelledError(
                *(() if self._cancel_message is None else (self._cancel_message,))
            )
        if self._state == _PENDING:
            raise asyncio.InvalidStateError("Result is not ready.")
        if self._exception is not None:
            raise self._exception
        return self._result

    def exception(self) -> BaseException | None:
        if self._state == _CANCELLED:
            self.result()
        if self._state == _PENDING:
            raise asyncio.InvalidStateError("Exception is not set.")
        return self._exception

    def add_done_callback(
        self, fn: Callback, *, context: contextvars.Context | None = None
    ) -> None:
        if context is None:
            context = contextvars.copy_context()
        if self._state != _PENDING:
            self._loop.call_soon(fn, self, context=context)
        else:
            self._callbacks.append((fn, context))

    def remove_done_callback(self, fn: Callback) -> int:
        kept = [entry for entry in self._callbacks if entry[0] != fn]
        removed = len(self._callbacks) - len(kept)
        self._callbacks[:] = kept
        return removed

    def cancel(self, msg: Any = None) -> bool:
        """Cancel the wait (``Task.cancel()`` calls this); False once done."""
        if self._state != _PENDING:
            return False
        self._state = _CANCELLED
        self._cancel_message = msg
        self._schedule()
        return True

    def resolve(self, result: Any) -> bool:
        """Complete with ``result`` without waking anyone yet: call
        :meth:`wake` next. False (and nothing changes) if already done."""
        if self._state != _PENDING:
            return False
        self._state = _DONE
        self._result = result
        return True

    def set_result(self, result: Any) -> None:
        if self._state != _PENDING:
            raise asyncio.InvalidStateError(f"invalid state: {self!r}")
        self.resolve(result)
        self._schedule()

    def set_exception(self, exception: BaseException) -> None:
        if self._state != _PENDING:
            raise asyncio.InvalidStateError(f"invalid state: {self!r}")
        if not isinstance(exception, BaseException):
            raise TypeError("set_exception() takes an exception instance")
        self._state = _DONE
        self._exception = exception
        self._schedule()

    def wake(self) -> None:
        """Run the waiting task's step now if it is the only callback, no task
        is running and the loop is asyncio's; otherwise schedule the
        callbacks."""
        callbacks = self._callbacks
        loop = self._loop
        if len(callbacks) != 1 or not isinstance(loop, _BaseEventLoop):
            self._schedule()
            return
        fn, context = callbacks[0]
        if not isinstance(getattr(fn, "__self__", None), _Task) or _current_task(loop):
            self._schedule()
            return
        callbacks.clear()
        try:
            context.run(fn, self)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            loop.call_exception_handler(
                {"message": f"Exception in callback {fn!r}", "exception": exc, "future": self}
            )

    def _schedule(self) -> None:
        callbacks = self._callbacks
        if callbacks:
            entries = callbacks[:]
            callbacks.clear()
            for fn, context in entries:
                self._loop.call_soon(fn, self, context=context)

    def __await__(self) -> Generator[Any, None, Any]:
        if self._state == _PENDING:
            self._asyncio_future_blocking = True
            yield self
        if self._state == _PENDING:
            raise RuntimeError("await wasn't used with future")
        return self.result()

    __iter__ = __await__


if TYPE_CHECKING:
    Waiter = PyWaiter
elif accel.SPEEDUPS:
    from tether._speedups import Waiter
else:
    Waiter = PyWaiter
