"""What flows through a channel: :class:`WebSocketFrame` and :class:`ChannelEvent`.

These are plain frozen dataclasses with ``__match_args__``, so that a channel
handler reads like the ZIO HTTP original::

    match event:
        case ChannelEvent.Read(WebSocketFrame.Text("foo")):
            await channel.send(ChannelEvent.Read(WebSocketFrame.text("bar")))
        case ChannelEvent.UserEventTriggered(UserEvent.HandshakeComplete):
            await channel.send(WebSocketFrame.text("Greetings!"))
        case ChannelEvent.Unregistered:
            ...

``ChannelEvent.Registered`` and ``ChannelEvent.Unregistered`` are single
values (write them without parentheses in a ``case``); every other event and
every frame is a class (write it with parentheses, positional fields in the
order shown).

The lifecycle of one connection, as a channel delivers it:

1. ``Registered``: the channel is attached to a live connection; always the
   first event.
2. ``UserEventTriggered(UserEvent.HandshakeComplete)``: the opening
   handshake succeeded (the 101 was sent, or received); the channel can send.
   A client whose handshake timed out gets
   ``UserEventTriggered(UserEvent.HandshakeTimeout)`` instead, then
   ``Unregistered``.
3. ``Read(frame)`` for each message (or frame, with ``fragments=True``;
   pings, pongs and the peer's close frame only when the config forwards
   them).
4. ``ExceptionCaught(cause)`` if the connection broke (no closing handshake,
   a protocol error, a keepalive timeout) or the handler itself raised.
5. ``Unregistered``: the connection is closed; always the last event,
   exactly once.

What to call next: :class:`~tether.faces.channel.WebSocketChannel` delivers
these events and sends frames.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import ClassVar

__all__ = ["ChannelEvent", "UserEvent", "WebSocketFrame"]


# ---------------------------------------------------------------------------
# Frames


class _FrameType(type):
    """The metaclass of :class:`WebSocketFrame`: it holds the lower-case
    constructors, so that ``WebSocketFrame.text("hi")`` works while
    ``frame.text`` stays the field of a :class:`Text` frame."""

    def text(cls, text: str, is_final: bool = True) -> Text:
        """A text frame (a whole text message unless ``is_final=False``)."""
        return Text(text, is_final)

    def binary(cls, data: bytes, is_final: bool = True) -> Binary:
        """A binary frame (a whole binary message unless ``is_final=False``)."""
        return Binary(bytes(data), is_final)

    def continuation(cls, data: str | bytes, is_final: bool) -> Continuation:
        """The next frame of a fragmented message."""
        return Continuation(data, is_final)

    def close(cls, status: int = 1000, reason: str | None = None) -> Close:
        """A close frame: sending it starts the closing handshake."""
        return Close(status, reason)

    def ping(cls, data: bytes = b"") -> Ping:
        """A ping frame (at most 125 bytes)."""
        return Ping(bytes(data))

    def pong(cls, data: bytes = b"") -> Pong:
        """A pong frame (at most 125 bytes)."""
        return Pong(bytes(data))


class WebSocketFrame(metaclass=_FrameType):
    """A WebSocket frame, as the channel face sees it (RFC 6455 section 5).

    The subclasses are reachable as attributes, for ``match`` statements:
    ``WebSocketFrame.Text(text, is_final=True)``,
    ``WebSocketFrame.Binary(data, is_final=True)``,
    ``WebSocketFrame.Continuation(data, is_final)``,
    ``WebSocketFrame.Close(status=1000, reason=None)``,
    ``WebSocketFrame.Ping(data=b"")`` and ``WebSocketFrame.Pong(data=b"")``.
    The lower-case constructors (``WebSocketFrame.text("hi")``,
    ``.binary``, ``.continuation``, ``.close``, ``.ping``, ``.pong``) build
    the same objects, as in the seed.
    """

    __slots__ = ()

    Text: ClassVar[type[Text]]
    Binary: ClassVar[type[Binary]]
    Continuation: ClassVar[type[Continuation]]
    Close: ClassVar[type[Close]]
    Ping: ClassVar[type[Ping]]
    Pong: ClassVar[type[Pong]]


@dataclass(frozen=True, slots=True)
class Text(WebSocketFrame):
    """A text frame. ``is_final=False``: the first frame of a fragmented text
    message, continued by :class:`Continuation` frames."""

    text: str
    is_final: bool = True


@dataclass(frozen=True, slots=True)
class Binary(WebSocketFrame):
    """A binary frame; ``is_final=False`` starts a fragmented binary message."""

    data: bytes
    is_final: bool = True


@dataclass(frozen=True, slots=True)
class Continuation(WebSocketFrame):
    """A later frame of a fragmented message (RFC 6455 section 5.4).

    ``data`` is a ``str`` when the message is a text message (the UTF-8
    decoded so far; it may be empty when a character spans two frames), else
    ``bytes``.
    """

    data: str | bytes
    is_final: bool


@dataclass(frozen=True, slots=True)
class Close(WebSocketFrame):
    """A close frame: ``status`` is the close code (RFC 6455 section 7.4),
    ``reason`` the optional UTF-8 reason (at most 123 bytes)."""

    status: int = 1000
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Ping(WebSocketFrame):
    """A ping frame."""

    data: bytes = b""


@dataclass(frozen=True, slots=True)
class Pong(WebSocketFrame):
    """A pong frame."""

    data: bytes = b""


WebSocketFrame.Text = Text
WebSocketFrame.Binary = Binary
WebSocketFrame.Continuation = Continuation
WebSocketFrame.Close = Close
WebSocketFrame.Ping = Ping
WebSocketFrame.Pong = Pong


# ---------------------------------------------------------------------------
# Events


class UserEvent(enum.Enum):
    """The events of ``ChannelEvent.UserEventTriggered``."""

    #: The opening handshake succeeded: the channel is open.
    HandshakeComplete = "HandshakeComplete"
    #: (Client) the opening handshake did not finish within ``handshake_timeout``.
    HandshakeTimeout = "HandshakeTimeout"

    def __repr__(self) -> str:
        return f"UserEvent.{self.name}"


class ChannelEvent:
    """Something that happened on a channel (the base class of every event).

    ``ChannelEvent.Read(frame)``, ``ChannelEvent.UserEventTriggered(event)``,
    ``ChannelEvent.ExceptionCaught(cause)``, and the two values
    ``ChannelEvent.Registered`` and ``ChannelEvent.Unregistered``. See the
    module documentation for the order in which a channel delivers them.
    """

    __slots__ = ()

    Read: ClassVar[type[Read]]
    UserEventTriggered: ClassVar[type[UserEventTriggered]]
    ExceptionCaught: ClassVar[type[ExceptionCaught]]
    Registered: ClassVar[ChannelEvent]
    Unregistered: ClassVar[ChannelEvent]


@dataclass(frozen=True, slots=True)
class Read(ChannelEvent):
    """A frame arrived (when received) or is to be written (when sent)."""

    frame: WebSocketFrame


@dataclass(frozen=True, slots=True)
class UserEventTriggered(ChannelEvent):
    """A :class:`UserEvent` happened (the handshake completed or timed out)."""

    event: UserEvent


@dataclass(frozen=True, slots=True)
class ExceptionCaught(ChannelEvent):
    """An error: the connection broke (``cause`` is then the
    :class:`~tether.exceptions.ConnectionClosedError`, whose ``__cause__``
    says why), or the handler raised ``cause``."""

    cause: BaseException


class _Lifecycle(ChannelEvent):
    """The class of the two singleton events Registered and Unregistered."""

    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return f"ChannelEvent.{self._name}"

    def __reduce__(self) -> str:
        return f"_{self._name.upper()}"


_REGISTERED = _Lifecycle("Registered")
_UNREGISTERED = _Lifecycle("Unregistered")

ChannelEvent.Read = Read
ChannelEvent.UserEventTriggered = UserEventTriggered
ChannelEvent.ExceptionCaught = ExceptionCaught
ChannelEvent.Registered = _REGISTERED
ChannelEvent.Unregistered = _UNREGISTERED
