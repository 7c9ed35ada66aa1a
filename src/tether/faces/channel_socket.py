""":class:`WebSocketChannel`: one connection seen as a stream of
:class:`~tether.faces.channel_events.ChannelEvent` values.

The channel is a thin skin over an engine
:class:`~tether.aio.connection.Connection`: receiving is the connection's
``recv()`` (with the engine's ``fragments`` and ``control_frames`` options
when the config asks for frames or control frames), each result wrapped in a
``ChannelEvent.Read``; sending is the connection's ``send()``, ``ping()``,
``pong()`` and ``close()``. Nothing here parses or builds a frame.

What to call next: :meth:`WebSocketChannel.receive_all` (the seed's
``channel.receiveAll``), :meth:`WebSocketChannel.send`.
"""

from __future__ import annotations

import asyncio
import collections
import inspect
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

from tether.aio.connection import Connection
from tether.exceptions import ConnectionClosed, ConnectionClosedError, InvalidState
from tether.faces.channel_config import WebSocketConfig
from tether.faces.channel_events import (
    _REGISTERED,
    _UNREGISTERED,
    Binary,
    ChannelEvent,
    Close,
    Continuation,
    ExceptionCaught,
    Ping,
    Pong,
    Read,
    Text,
    UserEvent,
    UserEventTriggered,
    WebSocketFrame,
)
from tether.protocol import events as engine_events
from tether.protocol.connection import State
from tether.protocol.frames import Close as EngineClose

__all__ = ["EventHandler", "WebSocketChannel", "run_channel_app"]

#: What ``receive_all`` calls for each event: a plain or an async function.
EventHandler = Callable[[ChannelEvent], Awaitable[Any] | Any]

Sendable = ChannelEvent | WebSocketFrame | str | bytes


class WebSocketChannel:
    """A WebSocket connection as a channel of events (ZIO HTTP's
    ``WebSocketChannel``).

    You get one as the argument of the function given to
    :meth:`Handler.web_socket <tether.faces.channel.Handler.web_socket>`,
    on the server and on the client alike. Receive with :meth:`receive_all`
    (or :meth:`receive`, or ``async for event in channel``); send with
    :meth:`send` and :meth:`send_all`; end with :meth:`shutdown`.

    ``request`` and ``response`` are the opening handshake;
    ``connection`` is the engine connection underneath (``ping()``,
    ``latency``, ``buffered_amount``...).
    """

    __slots__ = (
        "_closed_by_app",
        "_config",
        "_connection",
        "_ended",
        "_failure",
        "_fragmented",
        "_pending",
        "_unregistered",
    )

    def __init__(
        self,
        connection: Connection | None,
        config: WebSocketConfig = WebSocketConfig.default,
        *,
        user_event: UserEvent = UserEvent.HandshakeComplete,
    ) -> None:
        self._connection = connection
        self._config = config
        self._pending: collections.deque[ChannelEvent] = collections.deque(
            (_REGISTERED, UserEventTriggered(user_event))
        )
        # Without a connection (a client whose handshake timed out) the
        # stream is just Registered, UserEventTriggered(...), Unregistered.
        self._ended = connection is None
        if connection is None:
            self._pending.append(_UNREGISTERED)
        self._unregistered = False
        self._failure: BaseException | None = None
        self._closed_by_app = False
        self._fragmented: _FragmentedSend | None = None

    # ------------------------------------------------------------------
    # What the handshake said

    @property
    def connection(self) -> Connection:
        """The engine connection (raises :class:`InvalidState` if the
        handshake never completed)."""
        if self._connection is None:
            raise InvalidState("this channel has no connection: the opening handshake failed")
        return self._connection

    @property
    def config(self) -> WebSocketConfig:
        """The settings this channel was made with."""
        return self._config

    @property
    def request(self) -> Any:
        """The HTTP upgrade request (a :class:`tether.Request`), or ``None``."""
        return self._connection.request if self._connection is not None else None

    @property
    def response(self) -> Any:
        """The HTTP upgrade response (a :class:`tether.Response`), or ``None``."""
        return self._connection.response if self._connection is not None else None

    @property
    def subprotocol(self) -> str | None:
        """The negotiated subprotocol, or ``None``."""
        return self._connection.subprotocol if self._connection is not None else None

    @property
    def remote_address(self) -> Any:
        """The peer's address."""
        return self._connection.remote_address if self._connection is not None else None

    @property
    def close_code(self) -> int | None:
        """The close code once closed (RFC 6455 section 7.1.5), else ``None``."""
        return self._connection.close_code if self._connection is not None else None

    @property
    def close_reason(self) -> str | None:
        """The close reason once closed, else ``None``."""
        return self._connection.close_reason if self._connection is not None else None

    @property
    def is_open(self) -> bool:
        """Whether frames can be sent now."""
        connection = self._connection
        return connection is not None and connection.state is State.OPEN

    # ------------------------------------------------------------------
    # Receiving

    async def receive(self) -> ChannelEvent:
        """The next event. After ``Unregistered`` (the last one) it raises the
        :class:`~tether.exceptions.ConnectionClosed` that ended the connection
        (or :class:`InvalidState` for a channel that never opened)."""
        pending = self._pending
        if pending:
            return self._deliver(pending.popleft())
        connection = self._connection
        if self._ended or connection is None:
            closed = connection.closed_exception if connection is not None else None
            raise closed or InvalidState("the channel has ended")
        config = self._config
        while True:
            try:
                item = await connection.recv()
            except ConnectionClosed as exc:
                return self._deliver(self._end(exc))
            kind = type(item)
            if kind is str:
                return Read(Text(item))  # type: ignore[arg-type]
            if kind is bytes:
                return Read(Binary(item))  # type: ignore[arg-type]
            event = _engine_event(item, config)
            if event is not None:
                return event

    def _deliver(self, event: ChannelEvent) -> ChannelEvent:
        if event is _UNREGISTERED:
            self._unregistered = True
        return event

    def _end(self, closed: ConnectionClosed) -> ChannelEvent:
        """The connection closed: ``ExceptionCaught`` if it broke, then
        ``Unregistered``."""
        self._ended = True
        self._stop_fragments()
        if self._failure is None and _broke(closed):
            self._pending.append(_UNREGISTERED)
            return ExceptionCaught(closed)
        return _UNREGISTERED

    def __aiter__(self) -> AsyncIterator[ChannelEvent]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[ChannelEvent]:
        while not self._unregistered:
            yield await self.receive()

    async def receive_all(self, handler: EventHandler) -> None:
        """Call ``handler(event)`` for every event, in order, until
        ``Unregistered`` (included), then return.

        ``handler`` may be a plain or an async function; an async one is
        awaited before the next event is read, so its sends happen in order.
        If it raises, the channel first delivers ``ExceptionCaught(exc)`` to
        it, closes the connection with 1011 (internal error), delivers
        ``Unregistered``, and re-raises ``exc`` (which the app runner logs
        once). Returns at once if the channel already ended.
        """
        while not self._unregistered:
            event = await self.receive()
            try:
                result = handler(event)
                if inspect.isawaitable(result):
                    await result
            except Exception as exc:
                await self._handler_failed(handler, exc)
                raise

    async def _handler_failed(self, handler: EventHandler, exc: Exception) -> None:
        self._failure = exc
        await _call_quietly(handler, ExceptionCaught(exc), exc)
        await self._fail()
        self._ended = True
        self._pending.clear()
        if not self._unregistered:
            self._unregistered = True
            await _call_quietly(handler, _UNREGISTERED, exc)

    async def _fail(self) -> None:
        """Close with 1011 (RFC 6455 7.4.1: "a server is terminating the
        connection because it encountered an unexpected condition")."""
        self._stop_fragments()
        connection = self._connection
        if connection is not None and connection.state is State.OPEN:
            await connection.close(1011, "internal error")

    # ------------------------------------------------------------------
    # Sending

    async def send(self, message: Sendable) -> None:
        """Send a frame: ``ChannelEvent.Read(frame)`` as in the seed, a bare
        :class:`WebSocketFrame`, or a ``str`` / ``bytes`` message.

        ``Text``/``Binary`` send a message (or, with ``is_final=False``, the
        first frame of a fragmented one, continued with ``Continuation``
        frames); ``Close(status, reason)`` runs the closing handshake (and
        waits for it); ``Ping`` sends a ping without waiting for its pong;
        ``Pong`` an unsolicited pong. Waits while the peer reads slowly.
        Raises :class:`~tether.exceptions.ConnectionClosed` once closed.
        """
        frame = message.frame if isinstance(message, Read) else message
        connection = self.connection
        kind = type(frame)
        if kind is str or kind is bytes:
            self._check_no_fragments()
            await connection.send(frame)  # type: ignore[arg-type]
        elif kind is Text or kind is Binary:
            data = frame.text if kind is Text else frame.data  # type: ignore[union-attr]
            self._check_no_fragments()
            if frame.is_final:  # type: ignore[union-attr]
                await connection.send(data)
            else:
                self._fragmented = _FragmentedSend(connection, kind is Text)
                await self._fragmented.push(data, False)
        elif kind is Continuation:
            fragmented = self._fragmented
            if fragmented is None:
                raise InvalidState("Continuation frame without a fragmented message in progress")
            assert isinstance(frame, Continuation)
            fragmented.check(frame.data)
            if frame.is_final:
                self._fragmented = None
            await fragmented.push(frame.data, frame.is_final)
        elif kind is Close:
            assert isinstance(frame, Close)
            await self.shutdown(frame.status, frame.reason or "")
        elif kind is Ping:
            assert isinstance(frame, Ping)
            await _send_ping(connection, frame.data)
        elif kind is Pong:
            assert isinstance(frame, Pong)
            await connection.pong(frame.data)
        else:
            raise TypeError(f"cannot send {message!r}: send a WebSocketFrame or Read(frame)")

    async def send_all(self, messages: Iterable[Sendable] | AsyncIterable[Sendable]) -> None:
        """:meth:`send` each item, in order."""
        if isinstance(messages, AsyncIterable):
            async for message in messages:
                await self.send(message)
        else:
            for message in messages:
                await self.send(message)

    async def shutdown(self, code: int = 1000, reason: str = "") -> None:
        """Close the connection (1000 by default) and wait until it is
        closed. The events still to come end with ``Unregistered``. Does
        nothing on a channel that is already closed."""
        self._closed_by_app = True
        self._stop_fragments()
        connection = self._connection
        if connection is not None:
            await connection.close(code, reason)

    def _check_no_fragments(self) -> None:
        if self._fragmented is not None:
            raise InvalidState(
                "a fragmented message is in progress: finish it with a final Continuation"
            )

    def _stop_fragments(self) -> None:
        fragmented, self._fragmented = self._fragmented, None
        if fragmented is not None:
            fragmented.cancel()

    def __repr__(self) -> str:
        return f"<WebSocketChannel {self._connection!r}>"


async def _call_quietly(handler: EventHandler, event: ChannelEvent, exc: Exception) -> None:
    """Deliver ``event`` after ``handler`` raised ``exc``; a second error is
    kept as the context of the first, not raised."""
    try:
        result = handler(event)
        if inspect.isawaitable(result):
            await result
    except Exception as secondary:
        if secondary is not exc:
            exc.__context__ = secondary


def _broke(closed: ConnectionClosed) -> bool:
    """Whether a close is an error worth an ``ExceptionCaught``: no close
    frame came (1006: the network or a timeout), or the protocol broke. A
    close frame from the peer, whatever its code, is a close, not an error."""
    return isinstance(closed, ConnectionClosedError) and (
        closed.rcvd is None or closed.__cause__ is not None
    )


def _engine_event(item: Any, config: WebSocketConfig) -> ChannelEvent | None:
    """The channel event for an engine event other than a whole message, or
    ``None`` for one the config drops."""
    kind = type(item)
    if kind is engine_events.Fragment:
        if item.first:
            frame: WebSocketFrame = (
                Text(item.data, item.fin) if item.text else Binary(item.data, item.fin)
            )
        else:
            frame = Continuation(item.data, item.fin)
        return Read(frame)
    if kind is EngineClose:
        if config.forward_close_frames:
            return Read(Close(item.code, item.reason or None))
        return None
    if kind is engine_events.Ping:
        return Read(Ping(item.data)) if config.forward_ping_frames else None
    if kind is engine_events.Pong:
        return Read(Pong(item.data)) if config.forward_pong_frames else None
    raise AssertionError(f"unexpected engine event {item!r}")  # pragma: no cover


async def _send_ping(connection: Connection, data: bytes) -> None:
    """Send a ping now; its pong is awaited in the background (it updates
    ``connection.latency``), not by the caller."""
    task = asyncio.get_running_loop().create_task(connection.ping(data))
    # One pass of the loop runs the task up to its wait for the pong: the
    # ping is written, or the task failed (closed connection, payload
    # already waiting for its pong).
    await asyncio.sleep(0)
    if task.done():
        task.result()
    else:
        task.add_done_callback(_retrieve)


def _retrieve(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()


class _FragmentedSend:
    """A fragmented message sent frame by frame through the connection's
    ``send(async iterable)``: the engine keeps other messages from
    interleaving and applies backpressure; this feeds it one frame at a
    time. (The engine ends the message with an empty final frame.)"""

    __slots__ = ("_queue", "_task", "_text")

    def __init__(self, connection: Connection, text: bool) -> None:
        self._text = text
        self._queue: asyncio.Queue[str | bytes | None] = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(connection.send(self._frames()))

    async def _frames(self) -> AsyncIterator[str | bytes]:
        queue = self._queue
        while True:
            item = await queue.get()
            queue.task_done()
            if item is None:
                return
            yield item

    def check(self, data: str | bytes) -> None:
        """Raise ``TypeError`` unless ``data`` fits the message (the message
        stays in progress: RFC 6455 section 5.4 allows nothing else to be
        sent until it ends)."""
        if self._text != isinstance(data, str):
            kind = "str" if self._text else "bytes"
            raise TypeError(f"the frames of this fragmented message must carry {kind}")

    async def push(self, data: str | bytes, final: bool) -> None:
        queue = self._queue
        if data:
            queue.put_nowait(data)
        if final:
            queue.put_nowait(None)
            await self._task
            return
        # Wait until the engine took the frame (or failed): backpressure.
        joined = asyncio.ensure_future(queue.join())
        try:
            await asyncio.wait((joined, self._task), return_when=asyncio.FIRST_COMPLETED)
        finally:
            joined.cancel()
        if self._task.done():
            self._task.result()

    def cancel(self) -> None:
        if not self._task.done():
            self._task.cancel()
        self._task.add_done_callback(_retrieve)


async def run_channel_app(
    handler: Callable[[WebSocketChannel], Any], channel: WebSocketChannel
) -> Any:
    """Run ``handler(channel)`` to its end and return its result.

    When it returns, the connection is closed with 1000 (if it still is
    open). If it raises, the connection is closed with 1011 and the
    exception propagates (the caller logs it: once). A
    :class:`~tether.exceptions.ConnectionClosed` about this channel's own
    connection, raised once that connection is closed, is no error: it
    ends the app quietly (it returns ``None``).
    """
    connection = channel._connection
    try:
        result = handler(channel)
        if inspect.isawaitable(result):
            result = await result
    except ConnectionClosed:
        if connection is None or connection.state is State.OPEN:
            await channel._fail()
            raise
        return None
    except Exception:
        await channel._fail()
        raise
    if connection is not None and connection.state is State.OPEN:
        channel._closed_by_app = True
        await connection.close(1000, "")
    return result
