"""The callback face: a ``WebSocket`` you drive with event listeners and
callbacks, and ``web_socket_upgrader`` to serve it.

Two styles share one class, as the seeds describe them.

The event-listener style (a TypeScript ``WebSocket``, seed 003)::

    from tether import Data, WebSocket

    ws = WebSocket("ws://127.0.0.1:8765/")          # starts connecting at once
    ws.add_event_listener("open", lambda: ws.send("Hello, Server!"))
    ws.add_event_listener("message", lambda message: print("Received:", message))
    ws.add_event_listener("error", lambda error: print("Error:", error))
    ws.add_event_listener("close", lambda reason: print("Closed:", reason))
    ws.send(Data.from_string("some message"))        # binary; queued until open

The callback style (Vapor, seed 004)::

    ws = await WebSocket.connect("ws://127.0.0.1:8765/")   # returns once open
    ws.on_text(lambda ws, text: print("Server echo:", text))
    ws.send("Hello, world!")
    code = await ws.on_close                                 # the close code

and the server side::

    def should_upgrade(request):
        if request.url_path == "/deny":
            return None                  # refused: 403
        return {}                        # extra headers for the 101

    def on_upgrade(ws, request):
        ws.send("Connected")
        ws.on_text(lambda ws, text: ws.send(text[::-1]))

    await tether.serve(web_socket_upgrader(should_upgrade, on_upgrade), "127.0.0.1", 8765)

Where callbacks run
-------------------
Every listener and callback runs on the event loop that owns the
connection, one at a time, in the order the events arrived:

* made in async code (a running loop in this thread), that is the running
  loop: no thread is started, and callbacks run between your coroutines'
  ``await`` points. State shared between callbacks and coroutines of the same
  loop needs no lock, but a callback must not block (no ``time.sleep``, no
  blocking I/O): while it runs, no other connection of that loop is served.
* made in plain synchronous code (no running loop), ``WebSocket(url)`` starts
  one background thread with its own loop, and the callbacks run *there*, on
  that thread, concurrently with your code. State your callbacks share with
  the rest of your program then needs the usual care (a ``threading.Lock``, a
  ``queue.Queue``). The thread ends when the socket has closed and the close
  listeners have run. It is a daemon thread: at interpreter exit, sockets
  still open are closed with 1001 (going away); to keep a script alive until
  the socket closes, call ``ws.on_close.wait()``.
* on a server, callbacks run on the server's loop, for every client: two
  clients' callbacks never run at the same time, but they interleave, so
  state shared between connections must be consistent at every callback's
  end (Vapor's warning about race conditions applies across threads; here
  there is one loop per server, so the race is between callbacks, not
  inside one).

Choices made
------------
* Sending before the socket is open **queues** the message; queued messages
  are sent, in order, as soon as the connection opens (before the ``open``
  listeners run), and dropped if it never opens. Sending on a closing or
  closed socket raises :class:`~tether.exceptions.ConnectionClosed`; on one
  that never opened, :class:`~tether.exceptions.InvalidState`.
* A listener or callback that raises: the exception goes to the ``error``
  listeners (``onerror(error)``), is logged once, and the connection is closed
  with 1011 (internal error), because the application's state is no longer
  known to be sound. Messages still arriving are then dropped.
* ``error`` also fires when the connection cannot open (the exception:
  ``OSError``, :class:`~tether.exceptions.InvalidStatus`...) and when it closes
  without a clean closing handshake (a :class:`~tether.exceptions.ConnectionClosedError`),
  always before ``close``.
* The ``onopen``-style property of an event is called before the listeners
  added with :meth:`WebSocket.add_event_listener`, which run in the order
  they were added; adding the same listener twice has no effect.
* Messages that arrive while no message callback is set are dropped (as in a
  browser); the callbacks of ``await WebSocket.connect()`` and of
  ``on_upgrade`` are installed before the first message is delivered, as long
  as you set them before your next ``await``.
* From synchronous code, your thread and the socket's run at the same time,
  so the socket may open before your next line has added its listeners. To
  give the result a browser gives (where nothing can happen before your
  script's current turn ends): an ``open`` listener added after the socket
  opened is called at once, and incoming messages wait (in the engine's
  bounded queue) until the first message callback is set.

What to call next: :class:`WebSocket`, :meth:`WebSocket.connect`,
:func:`web_socket_upgrader`, :class:`Data`.
"""

from __future__ import annotations

import asyncio
import atexit
import base64
import binascii
import concurrent.futures
import inspect
import logging
import os
import threading
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any, Literal, TypeVar

from tether.aio.client import connect as async_connect
from tether.aio.connection import Connection
from tether.aio.options import Options, make_options
from tether.aio.server import Upgrade
from tether.exceptions import ConnectionClosed, ConnectionClosedError, InvalidState
from tether.protocol.connection import State
from tether.protocol.events import Ping, Pong
from tether.protocol.http import Headers, Request, Response
from tether.sync import LoopThread

__all__ = [
    "CloseFuture",
    "Data",
    "WebSocket",
    "WebSocketUpgrader",
    "web_socket_upgrader",
]

EventType = Literal["open", "error", "message", "close"]
EVENT_TYPES: tuple[EventType, ...] = ("open", "error", "message", "close")
#: The close codes :meth:`WebSocket.close` accepts, as the seed types them.
CLOSE_CODES = (1000, 1001, 1002, 1003)

Listener = Callable[..., Any]
F = TypeVar("F", bound=Callable[..., Any])

logger = logging.getLogger("tether")


# ----------------------------------------------------------------------
# Data


class Data:
    """Immutable binary data, as the seed's ``Data`` class: what a binary
    message is delivered as, and one way to send one.

    ``Data.from_string("hi")``, ``Data.from_bytes(b"...")``,
    ``Data.from_base64_string("aGk=")``, ``Data.from_file(path)``; read it
    back with :meth:`get_bytes`, :meth:`to_base64_string`,
    :meth:`to_raw_string`, or ``bytes(data)``. Two ``Data`` are equal when
    their bytes are; ``len()`` is the number of bytes.
    """

    __slots__ = ("_bytes",)

    def __init__(self, data: bytes | bytearray | memoryview = b"") -> None:
        self._bytes = bytes(data)

    @classmethod
    def from_string(cls, text: str, encoding: str = "utf-8") -> Data:
        """The bytes of ``text`` in ``encoding``."""
        return cls(text.encode(encoding))

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview | Iterable[int]) -> Data:
        """A copy of ``data`` (bytes, or an iterable of ints 0-255)."""
        return cls(bytes(data))

    @classmethod
    def from_base64_string(cls, text: str) -> Data:
        """The bytes that ``text`` encodes in base64 (RFC 4648 section 4).
        Raises ``ValueError`` if ``text`` is not valid base64."""
        try:
            return cls(base64.b64decode(text, validate=True))
        except binascii.Error as exc:
            raise ValueError(f"not a valid base64 string: {exc}") from None

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> Data:
        """The content of the file at ``path`` (``OSError`` if unreadable)."""
        with open(path, "rb") as file:
            return cls(file.read())

    def get_bytes(self) -> bytes:
        """The bytes."""
        return self._bytes

    def to_base64_string(self) -> str:
        """The bytes in base64 (RFC 4648 section 4, with padding)."""
        return base64.b64encode(self._bytes).decode("ascii")

    def to_raw_string(self, encoding: str = "utf-8") -> str:
        """The bytes decoded as ``encoding`` (``UnicodeDecodeError`` if they
        are not valid in it)."""
        return self._bytes.decode(encoding)

    def __bytes__(self) -> bytes:
        return self._bytes

    def __len__(self) -> int:
        return len(self._bytes)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Data):
            return self._bytes == other._bytes
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._bytes)

    def __repr__(self) -> str:
        shown = self._bytes[:32]
        more = "..." if len(self._bytes) > 32 else ""
        return f"Data({shown!r}{more}, {len(self._bytes)} bytes)"


# ----------------------------------------------------------------------
# The close signal


class CloseFuture:
    """Completes with the close code once the connection has closed and the
    close listeners have run: ``code = await ws.on_close`` in async code,
    ``code = ws.on_close.wait(timeout)`` in synchronous code.

    The code is the one RFC 6455 section 7.1.5 defines: the code of the close
    frame received, 1005 if it had none, 1006 if none was received.
    """

    __slots__ = ("_future", "_owner")

    def __init__(self, owner: WebSocket) -> None:
        self._future: concurrent.futures.Future[int] = concurrent.futures.Future()
        self._owner = weakref.ref(owner)

    def __await__(self) -> Any:
        return asyncio.wrap_future(self._future).__await__()

    def wait(self, timeout: float | None = None) -> int:
        """Block until closed and return the code; :class:`TimeoutError` after
        ``timeout`` seconds. Not from a callback (that would wait forever)."""
        owner = self._owner()
        if owner is not None and owner._on_own_loop() and not self._future.done():
            raise RuntimeError("on_close.wait() on the socket's own event loop would block it")
        try:
            return self._future.result(timeout)
        except concurrent.futures.TimeoutError:
            raise TimeoutError(f"the socket did not close within {timeout} s") from None

    def done(self) -> bool:
        """Whether the connection has closed."""
        return self._future.done()

    @property
    def code(self) -> int | None:
        """The close code, or ``None`` while open."""
        return self._future.result() if self._future.done() else None

    def _set(self, code: int) -> None:
        if not self._future.done():
            self._future.set_result(code)

    def __repr__(self) -> str:
        return f"<CloseFuture {'code=' + str(self.code) if self.done() else 'pending'}>"


# ----------------------------------------------------------------------
# Sockets made in synchronous code are closed at interpreter exit.

_threaded: weakref.WeakSet[WebSocket] = weakref.WeakSet()
_atexit_registered = False


def _close_threaded_sockets() -> None:
    for ws in list(_threaded):
        ws._close_now(1001, "going away")
    for ws in list(_threaded):
        if ws._thread is not None:
            ws._thread.join(2.0)


# ----------------------------------------------------------------------
# The WebSocket


class _EventProperty:
    """``ws.onopen``, ``ws.onmessage``...: one function per event (or
    ``None``), called before the listeners of that event."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.event = name[2:]
        self.__doc__ = f'The ``"{self.event}"`` event property: a function, or ``None``.'

    def __get__(self, ws: WebSocket | None, owner: type) -> Any:
        if ws is None:
            return self
        return ws._properties[self.event]

    def __set__(self, ws: WebSocket, value: Listener | None) -> None:
        if value is not None and not callable(value):
            raise TypeError(f"on{self.event} must be callable or None, not {value!r}")
        with ws._lock:
            ws._properties[self.event] = value
            opened = ws._open_dispatched
        if value is not None:
            ws._registered(self.event, value, opened)


class WebSocket:
    """A WebSocket driven by callbacks: event listeners (``onopen``,
    ``onmessage``... ``add_event_listener``) and Vapor-style callbacks
    (``on_text``, ``on_binary``, ``on_ping``, ``on_pong``, ``on_close``).

    ``WebSocket(url, **options)`` makes a client that starts connecting at
    once (``options``: every keyword of :func:`tether.connect`). In async
    code it lives on the running loop; in synchronous code on a background
    thread it owns (see the module docs, "Where callbacks run").
    ``await WebSocket.connect(url)`` returns one once it is open.
    :func:`web_socket_upgrader` hands server-side ones to ``on_upgrade``.

    Methods may be called from any thread. Read-only properties: ``url``,
    ``state``, ``request``, ``response``, ``subprotocol``,
    ``buffered_amount``, ``close_code``, ``close_reason``, ``connection``
    (the engine's :class:`~tether.aio.connection.Connection`, once open).
    """

    _loop: asyncio.AbstractEventLoop | None
    _connect_task: asyncio.Future[Any] | None

    def __init__(self, url: str, **options: Any) -> None:
        self._url = url
        self._setup()
        connector = async_connect(url, **options)  # checks the options at once
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._start_thread(connector)
        else:
            self._loop = loop
            self._connect_task = self._spawn(self._open(connector))

    def _setup(self) -> None:
        self._connection: Connection | None = None
        self._loop = None
        self._thread: LoopThread | None = None
        self._connect_task = None
        self._tasks: set[asyncio.Future[Any]] = set()
        self._properties: dict[str, Listener | None] = dict.fromkeys(EVENT_TYPES)
        self._listeners: dict[str, list[Listener]] = {name: [] for name in EVENT_TYPES}
        self._on_text: Callable[[WebSocket, str], Any] | None = None
        self._on_binary: Callable[[WebSocket, bytes], Any] | None = None
        self._on_ping: Callable[[WebSocket, bytes], Any] | None = None
        self._on_pong: Callable[[WebSocket, bytes], Any] | None = None
        self._pending: list[str | bytes] = []
        self._opened: concurrent.futures.Future[WebSocket] = concurrent.futures.Future()
        self._install_when_open = True
        self._delivery: Literal["none", "handler", "reader"] = "none"
        self._install_pending = False
        self._reader: asyncio.Future[Any] | None = None
        self._want_control = False
        self._failed = False
        self._close_dispatched = False
        self._close_requested = False
        self._finished: asyncio.Event | None = None
        # Registration (any thread) and the open event (the loop's thread)
        # agree on "was the open event dispatched yet?" under this lock.
        self._lock = threading.Lock()
        self._open_dispatched = False
        self._message_claimed = False
        self.on_close = CloseFuture(self)

    # ------------------------------------------------------------------
    # Making one

    @classmethod
    async def connect(
        cls,
        url: str | None = None,
        *,
        host: str | None = None,
        port: int | None = None,
        path: str = "/",
        tls: bool = False,
        **options: Any,
    ) -> WebSocket:
        """Connect and return the WebSocket once it is open (async code only).

        Give a ``url`` (``"ws://host:port/path"``), or ``host=`` with
        optional ``port=``, ``path=`` and ``tls=`` (``wss://``). ``options``
        are the keywords of :func:`tether.connect` (``ping_interval``,
        ``subprotocols``, ``ssl``...). Raises what :func:`tether.connect`
        raises: :class:`~tether.exceptions.InvalidStatus` (with ``.status``)
        when the server refuses, ``OSError``...

        Set your callbacks before your next ``await``: no message is delivered
        until then.
        """
        if url is None:
            if host is None:
                raise TypeError("connect() needs a url or host=")
            scheme = "wss" if tls else "ws"
            shown = f"[{host}]" if ":" in host else host
            url = f"{scheme}://{shown}{'' if port is None else f':{port}'}{path}"
        elif host is not None or port is not None:
            raise TypeError("give either a url or host=/port=/path=/tls=, not both")
        ws = cls.__new__(cls)
        ws._url = url
        ws._setup()
        ws._install_when_open = False
        # Until the caller has set its callbacks, a close waits for delivery
        # to start, so that messages received before it are not lost.
        ws._install_pending = True
        ws._loop = asyncio.get_running_loop()
        connector = async_connect(url, **options)
        ws._connect_task = ws._spawn(ws._open(connector))
        try:
            await asyncio.wrap_future(ws._opened)
        except asyncio.CancelledError:
            ws._close_on_loop(1000, "")
            if ws._connection is not None:
                ws._install_delivery()
            raise
        # Deliver messages once the caller has resumed and set its callbacks.
        ws._install_soon()
        return ws

    @classmethod
    def _accept(cls, connection: Connection, request: Request) -> WebSocket:
        """The server side of an accepted connection (see the upgrader)."""
        ws = cls.__new__(cls)
        host = request.host or "localhost"
        secure = connection.transport is not None and bool(
            connection.transport.get_extra_info("sslcontext")
        )
        ws._url = f"{'wss' if secure else 'ws'}://{host}{request.path}"
        ws._setup()
        ws._loop = asyncio.get_running_loop()
        ws._attach(connection)
        return ws

    def _start_thread(self, connector: async_connect) -> None:
        global _atexit_registered
        thread = self._thread = LoopThread(f"tether.WebSocket {self._url}")

        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._finished = asyncio.Event()
            task = self._connect_task = self._spawn(self._open(connector))
            await asyncio.wait({task})
            if self._connection is not None:
                await self._finished.wait()

        _threaded.add(self)
        if not _atexit_registered:
            _atexit_registered = True
            atexit.register(_close_threaded_sockets)
        thread.start(main)

    # ------------------------------------------------------------------
    # Properties

    @property
    def url(self) -> str:
        """The URL of the connection (read-only)."""
        return self._url

    @property
    def connection(self) -> Connection | None:
        """The engine's connection, once open (``None`` while connecting)."""
        return self._connection

    @property
    def state(self) -> State:
        """CONNECTING, OPEN, CLOSING or CLOSED (the seed's ``readyState``)."""
        if self._connection is None:
            return State.CLOSED if self._close_dispatched else State.CONNECTING
        return self._connection.state

    @property
    def request(self) -> Request | None:
        """The opening handshake's request."""
        return self._connection.request if self._connection is not None else None

    @property
    def response(self) -> Response | None:
        """The opening handshake's response (the 101)."""
        return self._connection.response if self._connection is not None else None

    @property
    def subprotocol(self) -> str | None:
        """The subprotocol agreed in the handshake, if any."""
        return self._connection.subprotocol if self._connection is not None else None

    @property
    def buffered_amount(self) -> int:
        """Bytes sent but not yet handed to the network (plus queued sends)."""
        return int(self._call(self._buffered_on_loop))

    def _buffered_on_loop(self) -> int:
        # On the loop's thread: a transport may refuse calls from others.
        queued = sum(len(m.encode() if isinstance(m, str) else m) for m in self._pending)
        conn = self._connection
        if conn is None or conn.state is State.CLOSED:
            return queued
        return queued + conn.buffered_amount

    @property
    def close_code(self) -> int | None:
        """The close code once closed (1006: no close frame received)."""
        if self._connection is None:
            return self.on_close.code
        return self._connection.close_code

    @property
    def close_reason(self) -> str | None:
        """The close reason once closed."""
        if self._connection is None:
            return None if self.on_close.code is None else "the connection never opened"
        return self._connection.close_reason

    onopen = _EventProperty()
    onerror = _EventProperty()
    onmessage = _EventProperty()
    onclose = _EventProperty()

    # ------------------------------------------------------------------
    # Event listeners (the seed's addEventListener / removeEventListener)

    def add_event_listener(self, event: EventType, listener: Listener) -> None:
        """Call ``listener`` on every ``event``: ``"open"`` -> ``listener()``,
        ``"error"`` -> ``listener(error)``, ``"message"`` ->
        ``listener(message)`` (``str``, or :class:`Data` for binary),
        ``"close"`` -> ``listener(reason)``. Several listeners run in the order
        they were added."""
        listeners = self._listeners_of(event)
        if not callable(listener):
            raise TypeError(f"listener must be callable, not {listener!r}")
        with self._lock:
            if listener in listeners:
                return
            listeners.append(listener)
            opened = self._open_dispatched
        self._registered(event, listener, opened)

    def _registered(self, event: str, listener: Listener, opened: bool) -> None:
        """A listener was added. On a socket run by its own thread, your code
        and the socket race: an ``open`` listener added after the open event
        is called at once (the result a browser would give), and messages
        wait until the first message callback is set."""
        if self._thread is None:
            return
        if event == "open" and opened:
            self._call(self._replay_open, listener)
        elif event == "message":
            self._claim_messages()

    def _replay_open(self, listener: Listener) -> None:
        conn = self._connection
        if conn is None or conn.state is not State.OPEN or self._failed:
            return
        try:
            listener()
        except Exception as exc:
            self._callback_failed(exc)

    def remove_event_listener(self, event: EventType, listener: Listener) -> None:
        """Stop calling ``listener`` on ``event`` (nothing if it was not added)."""
        listeners = self._listeners_of(event)
        if listener in listeners:
            listeners.remove(listener)

    def _listeners_of(self, event: str) -> list[Listener]:
        try:
            return self._listeners[event]
        except KeyError:
            raise ValueError(
                f"unknown event {event!r}: expected one of {', '.join(EVENT_TYPES)}"
            ) from None

    # ------------------------------------------------------------------
    # Vapor-style callbacks

    def on_text(self, callback: F) -> F:
        """Call ``callback(ws, text)`` for every text message (replaces the
        previous one; usable as a decorator)."""
        self._on_text = callback
        self._claim_messages()
        return callback

    def on_binary(self, callback: F) -> F:
        """Call ``callback(ws, data)`` (``bytes``) for every binary message."""
        self._on_binary = callback
        self._claim_messages()
        return callback

    def on_ping(self, callback: F) -> F:
        """Call ``callback(ws, payload)`` for every ping received (the pong is
        sent by tether, before the callback runs)."""
        self._on_ping = callback
        self._claim_control()
        return callback

    def on_pong(self, callback: F) -> F:
        """Call ``callback(ws, payload)`` for every pong received."""
        self._on_pong = callback
        self._claim_control()
        return callback

    @property
    def ping_interval(self) -> float | None:
        """Seconds between keepalive pings, or ``None`` for none.

        When a ping's pong has not arrived by the time the next ping is due,
        the connection is closed: on our side its code is 1006 and its reason
        says "keepalive timeout: no pong from the peer within ... s" (the
        peer is sent 1011). Setting it restarts the timer.
        """
        if self._connection is not None:
            return self._connection.options.ping_interval
        return None

    @ping_interval.setter
    def ping_interval(self, seconds: float | None) -> None:
        if seconds is not None and seconds <= 0:
            raise ValueError(f"ping_interval must be positive or None, not {seconds!r}")
        self._call(self._set_ping_interval, seconds)

    def _set_ping_interval(self, seconds: float | None) -> None:
        conn = self._connection
        if conn is None:
            raise InvalidState("ping_interval can be set once the socket is open")
        conn.set_keepalive(seconds, seconds)

    # ------------------------------------------------------------------
    # Sending and closing

    def send(self, message: str | bytes | bytearray | memoryview | Data) -> None:
        """Send a message: ``str`` as text; :class:`Data` and bytes as binary.

        Before the socket is open the message is queued (see the module
        docs). Raises :class:`~tether.exceptions.ConnectionClosed` once the
        socket is closing or closed, ``TypeError`` for anything else.
        """
        if isinstance(message, Data):
            payload: str | bytes = message.get_bytes()
        elif isinstance(message, (str, bytes)):
            payload = message
        elif isinstance(message, (bytearray, memoryview)):
            payload = bytes(message)
        else:
            raise TypeError(f"send() takes str, bytes or Data, not {type(message).__name__}")
        self._call(self._send_on_loop, payload)

    def _send_on_loop(self, payload: str | bytes) -> None:
        conn = self._connection
        if conn is None:
            if self._close_dispatched or self._close_requested:
                raise InvalidState("cannot send: the socket never opened and is closed")
            self._pending.append(payload)
            return
        conn.send_nowait(payload)

    def send_ping(self, data: bytes = b"") -> None:
        """Send a ping (at most 125 bytes); its pong goes to :meth:`on_pong`."""
        self._call(self._ping_on_loop, bytes(data))

    def _ping_on_loop(self, data: bytes) -> None:
        conn = self._connection
        if conn is None:
            raise InvalidState("cannot ping: the socket is not open")
        conn.ping_nowait(data)

    def close(self, code: int = 1000, reason: str | None = None) -> CloseFuture:
        """Start closing the socket and return :attr:`on_close` (await it, or
        ``.wait()``, to know when it is closed). Closing a closed socket does
        nothing.

        ``code`` is 1000 (normal), 1001 (going away), 1002 (protocol error)
        or 1003 (unsupported data), as the seed types it; ``reason`` at most
        123 bytes of UTF-8 (RFC 6455 section 5.5: a control frame's payload
        is at most 125 bytes, two of which hold the code). Both raise
        ``ValueError`` otherwise. For other codes, use
        ``await ws.connection.close(code, reason)``.
        """
        if code not in CLOSE_CODES:
            raise ValueError(
                f"close code must be 1000, 1001, 1002 or 1003, not {code!r}"
                + (" (1005 means 'no code' and is never sent)" if code == 1005 else "")
            )
        reason = reason or ""
        size = len(reason.encode("utf-8"))
        if size > 123:
            raise ValueError(f"close reason must be at most 123 bytes of UTF-8, not {size}")
        self._close_now(code, reason)
        return self.on_close

    def _close_now(self, code: int, reason: str) -> None:
        self._call(self._close_on_loop, code, reason)

    def _close_on_loop(self, code: int, reason: str) -> None:
        if self._close_requested or self._close_dispatched:
            return
        self._close_requested = True
        conn = self._connection
        if conn is None:
            # Still connecting: give up the attempt.
            if self._connect_task is not None:
                self._connect_task.cancel()
            self._never_opened(None)
            return
        self._start_closing(conn, code, reason)

    # ------------------------------------------------------------------
    # Running code on the socket's loop

    def _on_own_loop(self) -> bool:
        """Whether the caller runs on this socket's event loop."""
        if self._thread is not None:
            return self._thread.in_thread()
        try:
            return asyncio.get_running_loop() is self._loop
        except RuntimeError:
            return False

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self._thread is None:
            return fn(*args)
        return self._thread.call(fn, *args)

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Future[Any]:
        assert self._loop is not None
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Future[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            if not isinstance(exc, ConnectionClosed):
                self._logger().error("error in a WebSocket task", exc_info=exc)

    def _logger(self) -> logging.Logger | logging.LoggerAdapter[Any]:
        return self._connection.options.logger if self._connection is not None else logger

    # ------------------------------------------------------------------
    # Opening

    async def _open(self, connector: async_connect) -> None:
        try:
            conn = await connector
        except asyncio.CancelledError:
            self._never_opened(None)
            return
        except Exception as exc:
            self._never_opened(exc)
            return
        if self._close_requested:  # close() raced with the handshake
            await conn.close()
            self._never_opened(None)
            return
        self._attach(conn)
        pending, self._pending = self._pending, []
        for message in pending:
            conn.send_nowait(message)
        self._opened.set_result(self)
        if self._install_when_open:
            with self._lock:
                self._open_dispatched = True
                prop = self._properties["open"]
                listeners = tuple(self._listeners["open"])
                claimed = self._message_claimed
            try:
                if prop is not None:
                    prop()
                for listener in listeners:
                    listener()
            except Exception as exc:
                self._callback_failed(exc)
            if self._thread is None or claimed:
                self._install_delivery()

    def _never_opened(self, exc: BaseException | None) -> None:
        if self._close_dispatched:
            return
        self._pending.clear()
        if exc is not None:
            self._opened.set_exception(exc)
            self._dispatch("error", exc)
        else:
            self._opened.cancel()
        self._close_dispatched = True
        self._dispatch("close", str(exc) if exc is not None else "closed before opening")
        self.on_close._set(1006)
        _threaded.discard(self)

    def _attach(self, conn: Connection) -> None:
        self._connection = conn
        conn.add_close_callback(self._connection_closed)

    # ------------------------------------------------------------------
    # Delivering events

    def _claim_messages(self) -> None:
        """A message callback was set: on a socket run by its own thread,
        start delivering if the socket is open (see :meth:`_registered`)."""
        if self._thread is None:
            return
        with self._lock:
            first = not self._message_claimed
            self._message_claimed = True
            opened = self._open_dispatched
        if first and opened:
            self._call(self._install_delivery)

    def _claim_control(self) -> None:
        if not self._want_control:
            self._want_control = True
            self._call(self._switch_to_reader)
            self._claim_messages()

    def _switch_to_reader(self) -> None:
        if self._delivery == "handler":
            self._install_reader()

    def _install_delivery(self) -> None:
        """Start delivering incoming messages to the callbacks: synchronously
        from the engine (a message handler, no task) or, when ping/pong
        callbacks are set, from one reader task."""
        self._install_pending = False
        conn = self._connection
        if conn is None or self._delivery != "none" or self._close_dispatched:
            return
        if self._want_control:
            self._install_reader()
        else:
            self._delivery = "handler"
            if conn.state is not State.CLOSED:
                conn.set_message_handler(self._deliver)
            else:
                # Closed before delivery began: hand over what was queued.
                self._drain_closed(conn)

    def _install_soon(self) -> None:
        assert self._loop is not None
        self._install_pending = True
        self._loop.call_soon(self._install_delivery)

    def _install_reader(self) -> None:
        conn = self._connection
        assert conn is not None
        self._delivery = "reader"
        if not conn.options.control_frames:
            conn.options = conn.options.replace(control_frames=True)
        conn.set_message_handler(None)
        self._reader = self._spawn(self._read(conn))

    def _drain_closed(self, conn: Connection) -> None:
        while True:
            try:
                message = conn.recv_nowait()
            except ConnectionClosed:
                break
            if isinstance(message, (str, bytes)):
                self._deliver(message)
        self._connection_closed(conn)

    async def _read(self, conn: Connection) -> None:
        try:
            while True:
                event: Any = await conn.recv()
                kind = type(event)
                if kind is str or kind is bytes:
                    self._deliver(event)
                elif kind is Ping:
                    self._control(self._on_ping, event.data)
                elif kind is Pong:
                    self._control(self._on_pong, event.data)
        except ConnectionClosed:
            pass
        self._reader = None
        self._connection_closed(conn)

    def _deliver(self, message: str | bytes) -> None:
        if self._failed:
            return
        try:
            if type(message) is str:
                if self._on_text is not None:
                    self._on_text(self, message)
                self._dispatch_raising("message", message)
            else:
                if self._on_binary is not None:
                    self._on_binary(self, message)  # type: ignore[arg-type]
                self._dispatch_raising("message", Data(message))  # type: ignore[arg-type]
        except Exception as exc:
            self._callback_failed(exc)

    def _control(self, callback: Callable[[WebSocket, bytes], Any] | None, data: bytes) -> None:
        if callback is None or self._failed:
            return
        try:
            callback(self, data)
        except Exception as exc:
            self._callback_failed(exc)

    def _dispatch_raising(self, event: str, *args: Any) -> None:
        prop = self._properties[event]
        if prop is not None:
            prop(*args)
        for listener in tuple(self._listeners[event]):
            listener(*args)

    def _dispatch(self, event: str, *args: Any) -> None:
        """Run the listeners of ``event``; an exception in an open or message
        listener fails the socket, one in an error or close listener is logged."""
        try:
            self._dispatch_raising(event, *args)
        except Exception as exc:
            if event in ("open", "message"):
                self._callback_failed(exc)
            else:
                self._logger().error("error in a WebSocket %s listener", event, exc_info=exc)

    def _callback_failed(self, exc: Exception) -> None:
        """A callback raised: report it to the error listeners, log it, and
        close the connection with 1011 (internal error)."""
        if self._failed:
            return
        self._failed = True
        self._logger().error("error in a WebSocket callback; closing with 1011", exc_info=exc)
        self._dispatch("error", exc)
        conn = self._connection
        if conn is not None:
            self._close_requested = True
            self._start_closing(conn, 1011, "internal error")

    @staticmethod
    def _start_closing(conn: Connection, code: int, reason: str) -> None:
        """Send the close frame now (so that a send() right after fails), and
        let the engine complete the closing handshake (or time it out)."""
        conn.close_nowait(code, reason)

    def _connection_closed(self, conn: Connection) -> None:
        if self._close_dispatched:
            return
        if self._reader is not None and not self._reader.done():
            return  # the reader delivers what is queued, then calls back
        if self._delivery == "none" and self._install_pending:
            return  # _install_delivery() will deliver what is queued, then call back
        self._close_dispatched = True
        closed = conn.closed_exception
        if (
            isinstance(closed, ConnectionClosedError)
            and not self._failed
            and (closed.rcvd is None or closed.__cause__ is not None)
        ):
            self._dispatch("error", closed)
        self._dispatch("close", conn.close_reason or "")
        self.on_close._set(conn.close_code or 1006)
        if self._finished is not None:
            self._finished.set()
        _threaded.discard(self)

    def __repr__(self) -> str:
        return f"<tether.WebSocket {self.state.name} {self._url}>"


# ----------------------------------------------------------------------
# The server side


#: ``should_upgrade(request)``: extra headers (a dict, Headers or pairs) to
#: accept, ``None`` to refuse; or an awaitable of either.
ShouldUpgrade = Callable[[Request], Any]
#: ``on_upgrade(ws, request)``: returns ``None`` or an awaitable.
OnUpgrade = Callable[[WebSocket, Request], Any]
#: What a refused request gets: a Response, or a function of the request
#: returning one (or an awaitable of one).
Fallback = Response | Callable[[Request], Any]


class WebSocketUpgrader:
    """Decides WebSocket upgrades with two callbacks, as Vapor's upgrader.
    Made by :func:`web_socket_upgrader`; give it to :func:`tether.serve` as
    the handler, or to a route as its target."""

    def __init__(
        self,
        should_upgrade: ShouldUpgrade,
        on_upgrade: OnUpgrade,
        *,
        fallback: Fallback | None = None,
        options: Options | None = None,
        **option_kwargs: Any,
    ) -> None:
        self.should_upgrade = should_upgrade
        self.on_upgrade = on_upgrade
        self.fallback = fallback
        self._options = options
        self._option_kwargs = option_kwargs
        make_options(options, **option_kwargs)  # unknown or invalid options fail here
        self._derived: tuple[Options, Options] | None = None

    def _options_for(self, connection: Connection) -> Options:
        base = self._options or connection.options
        if not self._option_kwargs:
            return base
        derived = self._derived
        if derived is None or derived[0] is not base:
            derived = self._derived = (base, make_options(base, **self._option_kwargs))
        return derived[1]

    def __tether_dispatch__(self, connection: Connection, request: Request) -> Any:
        """Called by the server for every upgrade request."""
        decision = self.should_upgrade(request)
        if inspect.isawaitable(decision):
            return self._decide_later(decision, connection, request)
        return self._decide(decision, connection, request)

    async def _decide_later(
        self, decision: Awaitable[Any], connection: Connection, request: Request
    ) -> Response | Upgrade:
        result = self._decide(await decision, connection, request)
        if inspect.isawaitable(result):
            return await result  # type: ignore[no-any-return]
        return result  # type: ignore[no-any-return]

    def _decide(self, decision: Any, connection: Connection, request: Request) -> Any:
        if decision is None:
            return self._refuse(request)
        headers = Headers(decision)
        options: Options | None = self._options_for(connection)
        chosen = headers.get_all("Sec-WebSocket-Protocol")
        if chosen:
            # Choosing a subprotocol through the headers: let the engine
            # negotiate it, so that ws.subprotocol is set. RFC 6455 4.2.2:
            # the value "MUST be derived from the client's handshake".
            del headers["Sec-WebSocket-Protocol"]
            offered = [
                item.strip()
                for value in request.headers.get_all("Sec-WebSocket-Protocol")
                for item in value.split(",")
            ]
            if len(chosen) != 1 or chosen[0] not in offered:
                raise ValueError(
                    f"should_upgrade chose subprotocol {chosen!r}; the client offered {offered!r}"
                )
            options = make_options(options, subprotocols=[chosen[0]])
        if options is connection.options:
            options = None

        def start(conn: Connection) -> None:
            self._start(conn, request)

        return Upgrade(start, headers=headers.items(), options=options)

    def _refuse(self, request: Request) -> Any:
        fallback = self.fallback
        if fallback is None:
            return Response.text(
                "Forbidden: WebSocket upgrade refused.\n", 403, [("Connection", "close")]
            )
        if isinstance(fallback, Response):
            return fallback
        return fallback(request)

    def _start(self, conn: Connection, request: Request) -> None:
        ws = WebSocket._accept(conn, request)
        try:
            result = self.on_upgrade(ws, request)
        except Exception as exc:
            ws._callback_failed(exc)
            return
        if inspect.isawaitable(result):
            ws._spawn(self._finish_upgrade(ws, result))
            # Deliver messages once the coroutine has reached its first await
            # (by then it has set its callbacks).
            ws._install_soon()
        else:
            ws._install_delivery()

    @staticmethod
    async def _finish_upgrade(ws: WebSocket, awaitable: Awaitable[Any]) -> None:
        try:
            await awaitable
        except ConnectionClosed:
            pass
        except Exception as exc:
            ws._callback_failed(exc)


def web_socket_upgrader(
    should_upgrade: ShouldUpgrade,
    on_upgrade: OnUpgrade,
    *,
    fallback: Fallback | None = None,
    **options: Any,
) -> WebSocketUpgrader:
    """A WebSocket server app from two callbacks (Vapor's ``webSocketUpgrader``).

    ``should_upgrade(request)`` (sync or async) decides: ``None`` refuses
    (the client gets ``fallback``: a :class:`~tether.protocol.http.Response`,
    or a function of the request returning one; 403 by default), a dict (or
    :class:`~tether.protocol.http.Headers`, or pairs) of extra headers for the
    101 accepts; ``{}`` adds none. A ``Sec-WebSocket-Protocol`` header there
    chooses the subprotocol (one the client offered).

    ``on_upgrade(ws, request)`` (sync or async) then runs for each new client
    with a server-side :class:`WebSocket`: set its callbacks, send a greeting.
    Callbacks run on the server's event loop (see the module docs).
    ``options``: :class:`~tether.aio.options.Options` fields for these
    connections (``max_size``, ``ping_interval``...).

    Use the result as :func:`tether.serve`'s handler, or as a route target.
    """
    return WebSocketUpgrader(should_upgrade, on_upgrade, fallback=fallback, **options)
