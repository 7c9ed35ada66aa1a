"""A synchronous client, for scripts and notebooks without an event loop.

::

    import tether.sync

    with tether.sync.connect("ws://127.0.0.1:8765/") as ws:
        ws.send("hello")
        print(ws.recv(timeout=5))      # "hello" from an echo server
        for message in ws:             # until the server closes normally
            print(message)

:func:`connect` takes the same keywords as :func:`tether.connect` (every field
of :class:`~tether.aio.options.Options`, ``additional_headers``, ``ssl``...)
and raises the same exceptions: :class:`~tether.exceptions.InvalidStatus` when
the server refuses the upgrade, :class:`~tether.exceptions.ConnectionClosed`
from ``recv()``/``send()`` once the connection is closed, and so on. The one
addition is the built-in :class:`TimeoutError` from ``recv(timeout=...)``.

How it works: each connection owns one :class:`LoopThread`, a background
thread running an asyncio event loop, and the ordinary asyncio connection
lives on that loop. Each call hops to that thread and waits for the answer.
The thread ends as soon as the socket closes, whoever closed it; messages
that arrived before the close can still be read afterwards. Keepalive pings
are answered by that thread even while your code is busy elsewhere.

This face is for code without an event loop: called from a coroutine, it
works but blocks that coroutine's loop while it waits; use
:func:`tether.connect` there (no thread).

What to call next: :func:`connect`, then :meth:`ClientConnection.send`,
:meth:`~ClientConnection.recv`, :meth:`~ClientConnection.close` (or use
``with``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any, TypeVar

from tether.aio.client import ClientConnection as AsyncClientConnection
from tether.aio.client import connect as async_connect
from tether.exceptions import ConnectionClosedOK, InvalidState
from tether.protocol.connection import State
from tether.protocol.http import Request, Response

__all__ = ["ClientConnection", "LoopThread", "connect"]

T = TypeVar("T")
Message = str | bytes


class LoopThread:
    """An asyncio event loop running on a thread of its own, for as long as
    one coroutine runs.

    :meth:`start` runs ``main()`` on a new daemon thread; the thread (and its
    loop) ends when ``main()`` returns. Meanwhile other threads run code on
    the loop with :meth:`call` (a plain function) and :meth:`submit` (a
    coroutine). Once the loop has stopped, :meth:`call` runs the function in
    the caller's thread and :meth:`submit` returns ``None``: code handed to
    them must then only look at state that no longer changes (a closed
    connection). Work still pending when ``main()`` returns is cancelled.

    Used by :mod:`tether.sync` and by the callback face's
    :class:`~tether.faces.callbacks.WebSocket` when it is made outside an
    event loop.
    """

    def __init__(self, name: str) -> None:
        self._lock = threading.Lock()
        self._alive = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Future[Any]] = set()
        self._main: Callable[[], Awaitable[Any]] | None = None
        self._started = threading.Event()
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The loop, once started (``None`` before :meth:`start`)."""
        return self._loop

    @property
    def alive(self) -> bool:
        """Whether the loop still accepts work."""
        return self._alive

    def in_thread(self) -> bool:
        """Whether the caller runs on the loop's own thread."""
        return threading.get_ident() == self.thread.ident

    def start(self, main: Callable[[], Awaitable[Any]]) -> None:
        """Start the thread and run ``main()`` on its loop; returns once the
        loop accepts work."""
        self._main = main
        self.thread.start()
        self._started.wait()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._wrapper(loop))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()

    async def _wrapper(self, loop: asyncio.AbstractEventLoop) -> None:
        with self._lock:
            self._loop = loop
            self._alive = True
        self._started.set()
        try:
            assert self._main is not None
            await self._main()
        finally:
            with self._lock:
                self._alive = False
            # Callbacks posted before the flag fell are already queued on the
            # loop, ahead of this task's wake-up: one pass runs them all.
            await asyncio.sleep(0)
            pending = list(self._tasks)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the loop and return its result (or raise its
        exception). On the loop's own thread, or once the loop has stopped,
        ``fn`` runs at once in the caller's thread."""
        if self.in_thread():
            return fn(*args)
        result: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                result.set_result(fn(*args))
            except BaseException as exc:
                result.set_exception(exc)

        with self._lock:
            posted = self._alive
            if posted:
                assert self._loop is not None
                self._loop.call_soon_threadsafe(run)
        if not posted:
            return fn(*args)
        return result.result()

    def submit(self, factory: Callable[[], Awaitable[T]]) -> concurrent.futures.Future[T] | None:
        """Run the coroutine ``factory()`` on the loop; returns a
        :class:`concurrent.futures.Future` of its result, or ``None`` if the
        loop has stopped. The future is cancelled if the loop stops first."""
        if self.in_thread():
            raise RuntimeError("submit() called from the loop's own thread would deadlock")
        result: concurrent.futures.Future[T] = concurrent.futures.Future()

        def done(task: asyncio.Future[T]) -> None:
            self._tasks.discard(task)
            if task.cancelled():
                result.cancel()
            elif task.exception() is not None:
                result.set_exception(task.exception())
            else:
                result.set_result(task.result())

        def start() -> None:
            try:
                task = asyncio.ensure_future(factory())
            except BaseException as exc:
                result.set_exception(exc)
                return
            self._tasks.add(task)
            task.add_done_callback(done)

        with self._lock:
            if not self._alive:
                return None
            assert self._loop is not None
            self._loop.call_soon_threadsafe(start)
        return result

    def join(self, timeout: float | None = None) -> None:
        """Wait until the thread has ended (unless called from it)."""
        if not self.in_thread() and self.thread.is_alive():
            self.thread.join(timeout)


class ClientConnection:
    """A WebSocket client connection used from synchronous code. Made by
    :func:`connect`.

    ``connection`` is the underlying asyncio
    :class:`~tether.aio.client.ClientConnection`. It lives on the background
    thread: read its plain attributes, but call its methods only through this
    object (its transport may refuse calls from other threads).
    ``request``, ``response``, ``subprotocol``, ``state``, ``close_code``,
    ``close_reason`` and ``remote_address`` mirror it.
    """

    def __init__(self, loop_thread: LoopThread, connection: AsyncClientConnection) -> None:
        self._thread = loop_thread
        self.connection = connection
        self._pending: asyncio.Future[Message] | None = None
        # Read on the loop's thread: a transport may refuse calls from others.
        self._remote_address = loop_thread.call(lambda: connection.remote_address)

    # Attributes of the underlying connection -------------------------------

    @property
    def request(self) -> Request | None:
        """The upgrade request that was sent."""
        return self.connection.request

    @property
    def response(self) -> Response | None:
        """The server's 101 response."""
        return self.connection.response

    @property
    def subprotocol(self) -> str | None:
        """The subprotocol the server chose, if any."""
        return self.connection.subprotocol

    @property
    def state(self) -> State:
        """OPEN, CLOSING or CLOSED."""
        return self.connection.state

    @property
    def close_code(self) -> int | None:
        """The close code once closed (RFC 6455 7.1.5), else ``None``."""
        return self.connection.close_code

    @property
    def close_reason(self) -> str | None:
        """The close reason once closed, else ``None``."""
        return self.connection.close_reason

    @property
    def remote_address(self) -> Any:
        """The server's address, as the socket reported it when connecting."""
        return self._remote_address

    @property
    def thread(self) -> threading.Thread:
        """The background thread that runs this connection's event loop."""
        return self._thread.thread

    # Calls ----------------------------------------------------------------

    def _run(self, factory: Callable[[], Awaitable[T]], dead: Callable[[], T]) -> T:
        """Run a coroutine on the loop; ``dead()`` answers instead once the
        loop has stopped (the connection is closed)."""
        future = self._thread.submit(factory)
        if future is None:
            return dead()
        try:
            return future.result()
        except concurrent.futures.CancelledError:
            return dead()

    def _closed(self) -> Exception:
        closed = self.connection.closed_exception
        return closed if closed is not None else InvalidState("the connection is not open")

    def send(self, message: Message | Iterable[Message]) -> None:
        """Send a message: ``str`` as text, ``bytes`` as binary, an iterable of
        either as one fragmented message. Waits while the peer reads slowly.
        Raises :class:`~tether.exceptions.ConnectionClosed` once closed."""

        def dead() -> None:
            raise self._closed()

        self._run(lambda: self.connection.send(message), dead)

    def recv(self, timeout: float | None = None) -> Message:
        """The next message (``str`` or ``bytes``), waiting at most ``timeout``
        seconds (``None``: no limit) before raising :class:`TimeoutError`.

        A message that arrives after a timeout is kept for the next call.
        Raises :class:`~tether.exceptions.ConnectionClosed` once the connection
        is closed and every message received before the close was returned.
        """
        return self._run(lambda: self._recv(timeout), self._recv_dead)

    async def _recv(self, timeout: float | None) -> Message:
        task = self._pending
        if task is None:
            task = self._pending = asyncio.ensure_future(self.connection.recv())
            # Mark a failure as seen: it is raised by the next recv() anyway.
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
        done, _ = await asyncio.wait({task}, timeout=timeout)
        if not done:
            raise TimeoutError(f"no message within {timeout} s")
        self._pending = None
        return task.result()

    def _recv_dead(self) -> Message:
        task, self._pending = self._pending, None
        if task is not None and task.done() and not task.cancelled():
            return task.result()
        message = self.connection.recv_nowait()
        if message is None:  # pragma: no cover - a closed connection raises
            raise self._closed()
        return message

    def __iter__(self) -> Iterator[Message]:
        """Messages until the connection closes: a normal close ends the loop,
        an error raises :class:`~tether.exceptions.ConnectionClosedError`."""
        while True:
            try:
                yield self.recv()
            except ConnectionClosedOK:
                return

    def ping(self, data: str | bytes | None = None) -> float:
        """Send a ping, wait for its pong, and return the round trip in seconds."""

        def dead() -> float:
            raise self._closed()

        return self._run(lambda: self.connection.ping(data), dead)

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the connection (the closing handshake, at most
        ``close_timeout`` seconds) and wait for the background thread to end.
        Closing a closed connection does nothing."""
        self._run(lambda: self.connection.close(code, reason), lambda: None)
        timeout = self.connection.options.close_timeout
        self._thread.join(None if timeout is None else timeout + 5)

    def __enter__(self) -> ClientConnection:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<tether.sync.ClientConnection {self.state.name} {self._remote_address}>"


def connect(uri: str, **options: Any) -> ClientConnection:
    """Open a WebSocket connection from synchronous code and return it once
    open. Use it as a context manager to close it on exit.

    Takes every keyword of :func:`tether.connect` and raises what it raises
    (:class:`~tether.exceptions.InvalidStatus`, ``OSError``,
    :class:`~tether.exceptions.HandshakeTimeout`...). Starts one background
    thread, which ends when the connection closes (or here, if opening fails).
    """
    connector = async_connect(uri, **options)  # checks the options here, at once
    opened: concurrent.futures.Future[AsyncClientConnection] = concurrent.futures.Future()

    async def main() -> None:
        try:
            connection = await connector
        except BaseException as exc:
            opened.set_exception(exc)
            return
        opened.set_result(connection)
        await connection.wait_closed()

    loop_thread = LoopThread(f"tether.sync {uri}")
    loop_thread.start(main)
    try:
        connection = opened.result()
    except Exception:
        loop_thread.join()
        raise
    return ClientConnection(loop_thread, connection)
