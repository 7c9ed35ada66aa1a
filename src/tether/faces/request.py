"""The request-builder face: describe a request, then open a WebSocket with it
(sttp's ``basicRequest ... openWebsocket``, seed 002).

::

    from tether import basic_request
    from tether.faces.request import WebSocketEvent, WebSocketFrame

    response = await (
        basic_request.get("ws://127.0.0.1:8765/")
        .header("Authorization", "Bearer abc")
        .subprotocols("chat")
        .timeout(5)
        .open_websocket()
    )
    ws = response.result                     # a WebSocket (see below)
    await ws.send(WebSocketFrame.text("Hello!"))
    print("RECEIVED:", await ws.receive_text())
    await ws.close()

A request description (:class:`WebSocketRequest`) is immutable: every
builder method returns a new one, so a base request can be shared and
specialised. :meth:`WebSocketRequest.open_websocket` performs the opening
handshake and returns a :class:`WebSocketResponse` with the 101's ``status``
and ``headers`` and the ``result`` its *handler* made of the connection:

* :class:`HighLevelHandler` (the default): a :class:`WebSocket` with
  ``receive()`` (frames, or a :class:`WebSocketEvent.Close`), ``send(frame,
  is_continuation=False)``, ``receive_text()``, ``receive_binary()``,
  ``send_text()``, ``send_binary()``, ``close()``;
* :class:`MessageStreamHandler`: a :class:`MessageStream`, an async iterator
  of whole messages (plus ``send`` and ``close``);
* anything with the same two members (see :class:`WebSocketHandler`).

Frames and events are frozen dataclasses, ready for ``match``::

    match await ws.receive():
        case WebSocketFrame.Text(text, is_final): ...
        case WebSocketFrame.Binary(data, is_final): ...
        case WebSocketEvent.Close(code, reason): ...

Names: this module's ``WebSocketFrame`` and ``WebSocket`` are this face's;
the channel face has a ``WebSocketFrame`` of its own (``tether.WebSocketFrame``)
and the callback face the top-level ``tether.WebSocket``. Import these from
``tether.faces.request``; only :data:`basic_request`, :class:`WebSocketEvent`
and :class:`WebSocketResponse` are also exported by ``tether``.

The buffer
----------
Each :class:`WebSocket` reads the connection as fast as frames arrive into a
buffer of at most ``buffer_capacity`` events (1024 by default; ``None`` for no
bound, which lets a fast peer fill your memory). When a frame arrives and the
buffer is full, the socket fails: it is closed with **1008 (policy
violation)**, RFC 6455 section 7.4.1's code for "a message that violates its
policy" when no more specific code fits (1009 is about one message's size,
1011 about a failure of our own; here the peer is fine and the policy is
"do not send more than the reader keeps up with"), and the next
``receive*()`` raises :class:`~tether.exceptions.WebSocketBufferFull` with the
``capacity``. Events buffered at that moment are dropped.

Errors: a refused upgrade raises :class:`~tether.exceptions.InvalidStatus`
(``.status``, ``.response.headers``, ``.response.body``); the other
exceptions are those of :func:`tether.connect` and
:class:`~tether.aio.connection.Connection`.

What to call next: :data:`basic_request`, :meth:`WebSocketRequest.get`,
:meth:`WebSocketRequest.open_websocket`.
"""

from __future__ import annotations

import asyncio
import collections
import re
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar, overload

from tether.aio.client import ClientConnection
from tether.aio.client import connect as async_connect
from tether.aio.options import make_options
from tether.exceptions import (
    ConcurrencyError,
    ConnectionClosed,
    ConnectionClosedOK,
    WebSocketBufferFull,
)
from tether.protocol.events import Fragment
from tether.protocol.events import Ping as PingEvent
from tether.protocol.events import Pong as PongEvent
from tether.protocol.http import Headers

__all__ = [
    "HighLevelHandler",
    "MessageStream",
    "MessageStreamHandler",
    "WebSocket",
    "WebSocketEvent",
    "WebSocketFrame",
    "WebSocketHandler",
    "WebSocketRequest",
    "WebSocketResponse",
    "basic_request",
]

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)

# RFC 9110 section 5.6.2: token = 1*tchar.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")

#: Default bound of a WebSocket's buffer of incoming events.
BUFFER_CAPACITY = 1024


# ----------------------------------------------------------------------
# Frames and events


class WebSocketFrame:
    """The frames this face sends and receives (a namespace).

    ``Text(payload, is_final=True)`` and ``Binary(payload, is_final=True)``
    are data frames: ``is_final=False`` on every frame of a fragmented message
    but the last. Received continuation frames arrive as the type of their
    message (``Text`` or ``Binary``). ``Ping(payload)`` and ``Pong(payload)``
    are control frames; ``Close(status_code, reason)`` can be sent to start
    the closing handshake. The lower-case functions build them.
    """

    @dataclass(frozen=True, slots=True)
    class Text:
        """A text frame (a whole message when ``is_final`` and not a
        continuation)."""

        payload: str
        is_final: bool = True

    @dataclass(frozen=True, slots=True)
    class Binary:
        """A binary frame."""

        payload: bytes
        is_final: bool = True

    @dataclass(frozen=True, slots=True)
    class Ping:
        """A ping (at most 125 bytes)."""

        payload: bytes = b""

    @dataclass(frozen=True, slots=True)
    class Pong:
        """A pong (at most 125 bytes)."""

        payload: bytes = b""

    @dataclass(frozen=True, slots=True)
    class Close:
        """A close frame to send (received closes are :class:`WebSocketEvent.Close`)."""

        status_code: int = 1000
        reason: str = ""

    @staticmethod
    def text(payload: str, is_final: bool = True) -> WebSocketFrame.Text:
        """A text frame."""
        return WebSocketFrame.Text(payload, is_final)

    @staticmethod
    def binary(payload: bytes, is_final: bool = True) -> WebSocketFrame.Binary:
        """A binary frame."""
        return WebSocketFrame.Binary(bytes(payload), is_final)

    @staticmethod
    def ping(payload: bytes = b"") -> WebSocketFrame.Ping:
        """A ping frame."""
        return WebSocketFrame.Ping(bytes(payload))

    @staticmethod
    def pong(payload: bytes = b"") -> WebSocketFrame.Pong:
        """A pong frame."""
        return WebSocketFrame.Pong(bytes(payload))

    @staticmethod
    def close(status_code: int = 1000, reason: str = "") -> WebSocketFrame.Close:
        """A close frame."""
        return WebSocketFrame.Close(status_code, reason)


#: What :meth:`WebSocket.receive` returns when it is not a close.
Incoming = WebSocketFrame.Text | WebSocketFrame.Binary | WebSocketFrame.Ping | WebSocketFrame.Pong
Outgoing = Incoming | WebSocketFrame.Close


class WebSocketEvent:
    """Events of the socket other than frames (a namespace)."""

    @dataclass(frozen=True, slots=True)
    class Close:
        """The peer's close frame arrived: its ``code`` (1005 if it had none)
        and ``reason``."""

        code: int
        reason: str = ""


# ----------------------------------------------------------------------
# The high-level WebSocket


class WebSocket:
    """An open WebSocket read frame by frame through a bounded buffer.

    Made by :class:`HighLevelHandler` (the default handler of
    :meth:`WebSocketRequest.open_websocket`). One task per socket reads the
    connection into the buffer; see the module docs for what happens when it
    overflows. ``connection`` is the engine's
    :class:`~tether.aio.client.ClientConnection`.
    """

    def __init__(self, connection: ClientConnection, buffer_capacity: int | None) -> None:
        self.connection = connection
        self.buffer_capacity = buffer_capacity
        self._buffer: collections.deque[Incoming] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None
        self._closed: ConnectionClosed | None = None
        self._error: WebSocketBufferFull | None = None
        self._closing: asyncio.Task[None] | None = None
        self._pump = asyncio.get_running_loop().create_task(self._read())

    @property
    def subprotocol(self) -> str | None:
        """The subprotocol the server chose, if any."""
        return self.connection.subprotocol

    @property
    def is_open(self) -> bool:
        """Whether frames may still be sent."""
        core = self.connection.core
        return self.connection.closed_exception is None and (
            core is not None and core.close_sent is None
        )

    # Reading -------------------------------------------------------------

    async def _read(self) -> None:
        connection = self.connection
        capacity = self.buffer_capacity
        buffer = self._buffer
        try:
            while True:
                event: Any = await connection.recv()
                if self._error is not None:
                    continue  # failed: drain until the close completes
                kind = type(event)
                item: Incoming
                if kind is str:
                    item = WebSocketFrame.Text(event)
                elif kind is bytes:
                    item = WebSocketFrame.Binary(event)
                elif kind is Fragment:
                    if event.text:
                        item = WebSocketFrame.Text(event.data, event.fin)
                    else:
                        item = WebSocketFrame.Binary(event.data, event.fin)
                elif kind is PingEvent:
                    item = WebSocketFrame.Ping(event.data)
                elif kind is PongEvent:
                    item = WebSocketFrame.Pong(event.data)
                else:
                    continue  # the Close event: the closed exception says it all
                if capacity is not None and len(buffer) >= capacity:
                    self._overflow(capacity)
                    continue
                buffer.append(item)
                self._wake()
        except ConnectionClosed as closed:
            self._closed = closed
            self._wake()

    def _overflow(self, capacity: int) -> None:
        self._error = WebSocketBufferFull(capacity)
        self._buffer.clear()
        self._wake()
        # RFC 6455 7.4.1: "1008 indicates that an endpoint is terminating the
        # connection because it has received a message that violates its policy."
        self._closing = asyncio.get_running_loop().create_task(
            self.connection.close(1008, f"receive buffer full ({capacity} events)")
        )

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def receive(self, control_frames: bool = False) -> Incoming | WebSocketEvent.Close:
        """The next frame, or :class:`WebSocketEvent.Close` once the peer's close
        frame has arrived (every later call returns it again).

        Data frames come as ``WebSocketFrame.Text``/``Binary`` with
        ``is_final``; with ``control_frames=True`` also ``Ping``/``Pong``
        (otherwise they are skipped: tether answers pings unless the request
        set ``auto_pong=False``). Raises
        :class:`~tether.exceptions.WebSocketBufferFull` after an overflow,
        :class:`~tether.exceptions.ConnectionClosedError` if the connection
        broke without a close frame, :class:`~tether.exceptions.ConcurrencyError`
        if another coroutine is already receiving.
        """
        while True:
            if self._error is not None:
                raise self._error
            buffer = self._buffer
            while buffer:
                item = buffer.popleft()
                if control_frames or not isinstance(
                    item, (WebSocketFrame.Ping, WebSocketFrame.Pong)
                ):
                    return item
            closed = self._closed
            if closed is not None:
                if closed.rcvd is not None:
                    return WebSocketEvent.Close(closed.rcvd.code, closed.rcvd.reason)
                raise closed
            if self._waiter is not None:
                raise ConcurrencyError("another coroutine is already receiving")
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            try:
                await waiter
            finally:
                self._waiter = None

    async def _receive_data(self, pong_on_ping: bool, want: tuple[type[Any], ...]) -> list[Any]:
        """The payloads of the frames of the next whole message whose frame
        type is in ``want`` (other messages and pongs are skipped)."""
        parts: list[Any] = []
        while True:
            event = await self.receive(control_frames=True)
            if isinstance(event, WebSocketEvent.Close):
                assert self._closed is not None
                raise self._closed
            if isinstance(event, WebSocketFrame.Ping):
                if pong_on_ping and not self.connection.options.auto_pong:
                    await self.send(WebSocketFrame.Pong(event.payload))
            elif isinstance(event, want):
                parts.append(event.payload)
                if event.is_final:
                    return parts

    async def receive_text(self, pong_on_ping: bool = True) -> str:
        """The next whole text message: fragments are joined, binary messages
        and pongs skipped, and pings answered when ``pong_on_ping`` (tether
        answers them already unless the request set ``auto_pong=False``).
        Raises :class:`~tether.exceptions.ConnectionClosed` once closed."""
        return "".join(await self._receive_data(pong_on_ping, (WebSocketFrame.Text,)))

    async def receive_binary(self, pong_on_ping: bool = True) -> bytes:
        """The next whole binary message (text messages are skipped); like
        :meth:`receive_text`."""
        return b"".join(await self._receive_data(pong_on_ping, (WebSocketFrame.Binary,)))

    async def receive_message(self, pong_on_ping: bool = True) -> str | bytes:
        """The next whole message, text (``str``) or binary (``bytes``); like
        :meth:`receive_text`."""
        parts = await self._receive_data(pong_on_ping, (WebSocketFrame.Text, WebSocketFrame.Binary))
        return "".join(parts) if isinstance(parts[0], str) else b"".join(parts)

    # Sending ---------------------------------------------------------------

    async def send(self, frame: Outgoing, is_continuation: bool = False) -> None:
        """Send one frame.

        To fragment a message yourself, send its first frame with
        ``is_final=False``, the next ones with ``is_continuation=True``, and
        the last with ``is_final=True`` as well (RFC 6455 section 5.4). A
        ``Close`` frame starts the closing handshake (as :meth:`close`).
        Raises :class:`~tether.exceptions.ConnectionClosed` once closing or
        closed, :class:`~tether.exceptions.InvalidState` when a fragmented
        message is interrupted by another one.
        """
        connection = self.connection
        if isinstance(frame, (WebSocketFrame.Text, WebSocketFrame.Binary)):
            payload = frame.payload
            fin = frame.is_final
            if not is_continuation and fin:
                await connection.send(payload)  # a whole message: may be compressed
                return
            data: str | bytes = payload if isinstance(payload, str) else bytes(payload)
            connection.send_fragment(data, fin=fin, continuation=is_continuation)
            await connection.drain()
            return
        if is_continuation:
            raise ValueError("only Text and Binary frames can be continuations")
        if isinstance(frame, WebSocketFrame.Ping):
            connection.ping_nowait(bytes(frame.payload))
        elif isinstance(frame, WebSocketFrame.Pong):
            await connection.pong(frame.payload)
        elif isinstance(frame, WebSocketFrame.Close):
            await self.close(frame.status_code, frame.reason)
        else:
            raise TypeError(f"cannot send {frame!r}: expected a WebSocketFrame")

    async def send_text(self, text: str) -> None:
        """Send a whole text message."""
        await self.send(WebSocketFrame.Text(text))

    async def send_binary(self, data: bytes) -> None:
        """Send a whole binary message."""
        await self.send(WebSocketFrame.Binary(bytes(data)))

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the connection (the closing handshake, at most
        ``close_timeout`` seconds). Closing a closed socket does nothing."""
        await self.connection.close(code, reason)
        await self._pump

    def __repr__(self) -> str:
        return f"<tether.faces.request.WebSocket {self.connection.state.name}>"


class MessageStream:
    """An open WebSocket read as an async iterator of whole messages::

        async for message in stream:     # str or bytes, until a normal close
            await stream.send(message)

    Made by :class:`MessageStreamHandler`. Pings are answered, fragments
    joined; the same bounded buffer as :class:`WebSocket` (``websocket``)
    applies. A normal close ends the loop; an abnormal one raises
    :class:`~tether.exceptions.ConnectionClosedError`, an overflow
    :class:`~tether.exceptions.WebSocketBufferFull`.
    """

    def __init__(self, websocket: WebSocket) -> None:
        self.websocket = websocket

    def __aiter__(self) -> AsyncIterator[str | bytes]:
        return self._messages()

    async def _messages(self) -> AsyncIterator[str | bytes]:
        while True:
            try:
                message = await self.websocket.receive_message()
            except ConnectionClosedOK:
                return
            yield message

    async def send(self, message: str | bytes) -> None:
        """Send a whole message: ``str`` as text, ``bytes`` as binary."""
        await self.websocket.connection.send(message)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the connection."""
        await self.websocket.close(code, reason)


# ----------------------------------------------------------------------
# Handlers


class WebSocketHandler(Protocol[T_co]):
    """What :meth:`WebSocketRequest.open_websocket` accepts as ``handler``:
    ``options``, the engine options the handler needs (merged over the
    request's), and ``open(connection, buffer_capacity)``, which makes the
    response's ``result`` from the open connection."""

    @property
    def options(self) -> Mapping[str, Any]: ...

    def open(self, connection: ClientConnection, buffer_capacity: int | None) -> T_co: ...


class HighLevelHandler:
    """The default handler: the result is a :class:`WebSocket`."""

    options: Mapping[str, Any] = {"fragments": True, "control_frames": True}

    def open(self, connection: ClientConnection, buffer_capacity: int | None) -> WebSocket:
        return WebSocket(connection, buffer_capacity)


class MessageStreamHandler:
    """A handler whose result is a :class:`MessageStream`: ``async for`` over
    whole messages."""

    options: Mapping[str, Any] = {"fragments": True, "control_frames": True}

    def open(self, connection: ClientConnection, buffer_capacity: int | None) -> MessageStream:
        return MessageStream(WebSocket(connection, buffer_capacity))


# ----------------------------------------------------------------------
# The response


@dataclass(frozen=True, slots=True)
class WebSocketResponse(Generic[T]):
    """What :meth:`WebSocketRequest.open_websocket` returns: the 101's
    ``status`` and ``headers``, and the handler's ``result`` (a
    :class:`WebSocket` with the default handler)."""

    status: int
    headers: Headers
    result: T


# ----------------------------------------------------------------------
# The request description


_FIELDS = (
    "uri",
    "http_method",
    "header_items",
    "subprotocol_list",
    "open_timeout",
    "compression_setting",
    "engine_options",
)


class WebSocketRequest:
    """An immutable description of a WebSocket request. Start from
    :data:`basic_request`; each builder method returns a new description.

    Read it back through ``uri``, ``http_method``, ``header_items``,
    ``subprotocol_list``, ``open_timeout``, ``compression_setting`` and
    ``engine_options``.
    """

    __slots__ = _FIELDS

    uri: str | None
    http_method: str
    header_items: tuple[tuple[str, str], ...]
    subprotocol_list: tuple[str, ...]
    open_timeout: float | None
    compression_setting: Any
    engine_options: tuple[tuple[str, Any], ...]

    def __init__(self) -> None:
        self._set(
            uri=None,
            http_method="GET",
            header_items=(),
            subprotocol_list=(),
            open_timeout=make_options().open_timeout,
            compression_setting="deflate",
            engine_options=(),
        )

    def _set(self, **fields: Any) -> None:
        for name, value in fields.items():
            object.__setattr__(self, name, value)

    def _with(self, **changes: Any) -> WebSocketRequest:
        new = WebSocketRequest.__new__(WebSocketRequest)
        new._set(**{name: getattr(self, name) for name in _FIELDS})
        new._set(**changes)
        return new

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("a WebSocketRequest is immutable: its methods return new ones")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, WebSocketRequest):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        # A subset of the key: option values may be unhashable (lists).
        return hash((self.uri, self.http_method, self.header_items))

    def _key(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in _FIELDS)

    def __repr__(self) -> str:
        return f"<WebSocketRequest {self.http_method} {self.uri or '(no uri)'}>"

    # Builders -----------------------------------------------------------

    def get(self, uri: str) -> WebSocketRequest:
        """This request, as ``GET uri`` (a ``ws://`` or ``wss://`` URI)."""
        return self._with(uri=str(uri), http_method="GET")

    def method(self, name: str, uri: str | None = None) -> WebSocketRequest:
        """This request with another HTTP method (and maybe URI). Opening a
        WebSocket needs ``GET`` (RFC 6455 section 4.1: "The method of the
        request MUST be GET"); :meth:`open_websocket` refuses others."""
        if not name or not name.isascii() or not name.isalpha():
            raise ValueError(f"invalid HTTP method {name!r}")
        return self._with(http_method=name.upper(), uri=self.uri if uri is None else str(uri))

    def header(self, name: str, value: str, replace_existing: bool = False) -> WebSocketRequest:
        """This request with one more header (replacing any of the same name
        when ``replace_existing``). ``ValueError`` for an invalid name or value."""
        Headers([(name, value)])  # validates
        items = self.header_items
        if replace_existing:
            items = tuple(item for item in items if item[0].lower() != name.lower())
        return self._with(header_items=(*items, (name, value)))

    def headers(
        self,
        headers: Mapping[str, str] | Iterable[tuple[str, str]],
        replace_existing: bool = False,
    ) -> WebSocketRequest:
        """This request with more headers (a dict or ``(name, value)`` pairs)."""
        request = self
        pairs = headers.items() if isinstance(headers, Mapping) else headers
        for name, value in pairs:
            request = request.header(name, value, replace_existing)
        return request

    def subprotocols(self, *names: str) -> WebSocketRequest:
        """This request offering these subprotocols, in order of preference
        (HTTP tokens, each once)."""
        for name in names:
            if not isinstance(name, str) or not _TOKEN.fullmatch(name):
                raise ValueError(f"invalid subprotocol {name!r}: must be an HTTP token")
        if len(set(names)) != len(names):
            raise ValueError(f"subprotocols must be unique: {names!r}")
        return self._with(subprotocol_list=tuple(names))

    def timeout(self, seconds: float | None) -> WebSocketRequest:
        """This request with a limit on the opening handshake (``None``: none)."""
        make_options(open_timeout=seconds)
        return self._with(open_timeout=seconds)

    def compression(self, setting: Any) -> WebSocketRequest:
        """This request with permessage-deflate settings: ``"deflate"`` (the
        default), ``None`` (off), or a :class:`~tether.DeflateOptions`."""
        make_options(compression=setting)
        return self._with(compression_setting=setting)

    def options(self, **options: Any) -> WebSocketRequest:
        """This request with more engine options (any field of
        :class:`~tether.aio.options.Options`: ``max_size``,
        ``ping_interval``, ``auto_pong``...)."""
        make_options(**options)
        merged = {**dict(self.engine_options), **options}
        return self._with(engine_options=tuple(sorted(merged.items())))

    # Opening --------------------------------------------------------------

    @overload
    async def open_websocket(
        self, handler: None = None, buffer_capacity: int | None = BUFFER_CAPACITY
    ) -> WebSocketResponse[WebSocket]: ...

    @overload
    async def open_websocket(
        self, handler: WebSocketHandler[T], buffer_capacity: int | None = BUFFER_CAPACITY
    ) -> WebSocketResponse[T]: ...

    async def open_websocket(
        self,
        handler: WebSocketHandler[Any] | None = None,
        buffer_capacity: int | None = BUFFER_CAPACITY,
    ) -> WebSocketResponse[Any]:
        """Open the WebSocket this request describes.

        ``handler`` decides what the response's ``result`` is (a
        :class:`WebSocket` by default). ``buffer_capacity`` bounds the buffer
        of incoming events (``None``: unbounded; see the module docs).
        Raises :class:`~tether.exceptions.InvalidStatus` (status, headers and
        body of the answer) when the server refuses the upgrade, and what
        :func:`tether.connect` raises otherwise.
        """
        if self.uri is None:
            raise ValueError("this request has no URI: start from basic_request.get(uri)")
        if self.http_method != "GET":
            raise ValueError(
                f"a WebSocket is opened with GET (RFC 6455 section 4.1), not {self.http_method}"
            )
        if buffer_capacity is not None and buffer_capacity <= 0:
            raise ValueError(f"buffer_capacity must be positive or None, not {buffer_capacity!r}")
        chosen = handler if handler is not None else HighLevelHandler()
        options: dict[str, Any] = {
            "open_timeout": self.open_timeout,
            "compression": self.compression_setting,
            **dict(self.engine_options),
            **chosen.options,
        }
        if self.subprotocol_list:
            options["subprotocols"] = list(self.subprotocol_list)
        connection = await async_connect(
            self.uri, additional_headers=list(self.header_items), **options
        )
        try:
            result = chosen.open(connection, buffer_capacity)
        except BaseException:
            connection.abort()
            raise
        response = connection.response
        assert response is not None
        return WebSocketResponse(response.status, response.headers, result)


#: The empty request description every request starts from:
#: ``basic_request.get("ws://...")``.
basic_request = WebSocketRequest()
