"""The one error tree of tether.

Every exception that tether raises on purpose is one of these::

    TetherError
    ├── InvalidState              you used a connection in a state that forbids it
    ├── ConcurrencyError          two coroutines called recv() (or similar) at once
    ├── ConnectionClosed          the connection is closed; .rcvd / .sent say how
    │   ├── ConnectionClosedOK        closed cleanly with 1000 or 1001 (you or the peer)
    │   └── ConnectionClosedError     closed with an error code, or the network broke
    ├── InvalidHandshake          the opening handshake failed
    │   ├── InvalidMessage            the HTTP message was malformed or too large
    │   ├── InvalidRequest            (server) the upgrade request breaks RFC 6455;
    │   │                             carries the HTTP status to answer with
    │   ├── InvalidStatus             (client) the server answered something else
    │   │                             than 101; carries the whole response
    │   ├── InvalidResponse           (client) a 101 that breaks RFC 6455
    │   ├── NegotiationError          extensions or subprotocols could not be agreed
    │   └── HandshakeTimeout          the handshake took longer than open_timeout
    ├── InvalidURI                a ws:// or wss:// URI that cannot be used
    ├── ProtocolError             the peer broke RFC 6455 / RFC 7692; carries the
    │   │                         close code it is answered with (never escapes
    │   │                         the core: it becomes the cause of a
    │   │                         ConnectionClosedError)
    │   └── PayloadTooBig             a frame or message over max_size (1009)
    └── WebSocketBufferFull       a face's bounded receive buffer overflowed

What to call next: catch :class:`ConnectionClosed` around ``recv()``/``send()``
and look at ``.code`` and ``.reason``; catch :class:`InvalidHandshake` around
``connect()``; :class:`InvalidStatus` has ``.response`` with status, headers and
body.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from tether.protocol.frames import Close
    from tether.protocol.handshake import Response

__all__ = [
    "ConcurrencyError",
    "ConnectionClosed",
    "ConnectionClosedError",
    "ConnectionClosedOK",
    "HandshakeTimeout",
    "InvalidHandshake",
    "InvalidMessage",
    "InvalidRequest",
    "InvalidResponse",
    "InvalidState",
    "InvalidStatus",
    "InvalidURI",
    "NegotiationError",
    "PayloadTooBig",
    "ProtocolError",
    "TetherError",
    "WebSocketBufferFull",
]


class TetherError(Exception):
    """Base class of every exception tether raises on purpose."""


class InvalidState(TetherError, RuntimeError):
    """The operation is not allowed in the connection's current state.

    This is *your* misuse (sending after close, for example), raised at once.
    """


class ConcurrencyError(TetherError, RuntimeError):
    """Two coroutines used the same connection where only one may at a time
    (two concurrent ``recv()`` calls, for example)."""


class ConnectionClosed(TetherError):
    """The WebSocket connection is closed.

    ``rcvd`` is the close frame received from the peer (or ``None``), ``sent``
    the one we sent (or ``None``); ``rcvd_then_sent`` tells which came first
    when both exist. ``code`` and ``reason`` summarise them the way RFC 6455
    section 7.1.5 defines "the WebSocket Connection Close Code": 1006 when no
    close frame was received. ``__cause__`` holds the underlying error, if any
    (a :class:`ProtocolError`, an ``OSError``, a keepalive timeout...).
    """

    def __init__(
        self,
        rcvd: Close | None,
        sent: Close | None,
        rcvd_then_sent: bool | None = None,
        detail: str = "",
    ) -> None:
        self.rcvd = rcvd
        self.sent = sent
        self.rcvd_then_sent = rcvd_then_sent
        self.detail = detail
        super().__init__(str(self))

    @property
    def code(self) -> int:
        """The close code of the connection (1005 if the peer sent none, 1006
        if no close frame was received at all)."""
        # RFC 6455 section 7.1.5: "If _The WebSocket Connection is Closed_
        # and no Close control frame was received by the endpoint ..., _The
        # WebSocket Connection Close Code_ is considered to be 1006."
        if self.rcvd is not None:
            return self.rcvd.code
        return 1006

    @property
    def reason(self) -> str:
        """The close reason, or a description of why there is none."""
        if self.rcvd is not None:
            return self.rcvd.reason
        return self.detail

    def __str__(self) -> str:
        if self.rcvd is None and self.sent is None:
            text = "no close frame received or sent"
        elif self.rcvd is None:
            assert self.sent is not None
            text = f"sent {self.sent}; no close frame received"
        elif self.sent is None:
            text = f"received {self.rcvd}; no close frame sent"
        elif self.rcvd_then_sent:
            text = f"received {self.rcvd}; then sent {self.sent}"
        else:
            text = f"sent {self.sent}; then received {self.rcvd}"
        if self.detail:
            text = f"{text} ({self.detail})"
        return text


class ConnectionClosedOK(ConnectionClosed):
    """The connection closed cleanly: both close frames were exchanged with
    code 1000 (normal closure) or 1001 (going away), or 1005 (no code)."""


class ConnectionClosedError(ConnectionClosed):
    """The connection closed with an error code, or broke before the closing
    handshake completed. ``__cause__`` says why, when tether knows."""


class InvalidHandshake(TetherError):
    """The opening handshake failed."""


class InvalidMessage(InvalidHandshake):
    """An HTTP request or response was malformed, truncated or over a limit.

    ``status`` is the HTTP status a server answers with (400, 431...).
    """

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class InvalidRequest(InvalidHandshake):
    """(Server side) the upgrade request breaks RFC 6455.

    ``status`` is the HTTP status to answer with (400, 403, 426...), and
    ``headers`` extra response headers (``Sec-WebSocket-Version: 13`` on 426).
    """

    def __init__(
        self,
        message: str,
        status: int = 400,
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers or []


class InvalidStatus(InvalidHandshake):
    """(Client side) the server answered with a status other than 101.

    ``response`` is the whole :class:`~tether.protocol.handshake.Response`:
    ``response.status``, ``response.headers`` and ``response.body``.
    """

    def __init__(self, response: Response) -> None:
        self.response = response
        super().__init__(f"server rejected WebSocket connection: HTTP {response.status}")

    @property
    def status(self) -> int:
        return self.response.status


class InvalidResponse(InvalidHandshake):
    """(Client side) a 101 response that breaks RFC 6455 (a wrong
    ``Sec-WebSocket-Accept``, an extension or subprotocol we did not offer...)."""


class NegotiationError(InvalidHandshake):
    """Extensions or subprotocols could not be agreed on."""


class HandshakeTimeout(InvalidHandshake, TimeoutError):
    """The opening handshake did not complete within ``open_timeout``."""


class InvalidURI(TetherError, ValueError):
    """A URI that is not a usable ``ws://`` or ``wss://`` URI."""


class ProtocolError(TetherError):
    """The peer broke the protocol.

    ``code`` is the close code the connection is failed with (1002 protocol
    error, 1007 invalid data, 1009 too big, 1011 internal error...). Inside
    tether this never escapes ``receive_data()``: it is recorded as the cause
    of the later :class:`ConnectionClosedError`.
    """

    def __init__(self, reason: str, code: int = 1002) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class PayloadTooBig(ProtocolError):
    """A frame or message exceeded ``max_size`` (close code 1009)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason, 1009)


class WebSocketBufferFull(TetherError):
    """A face's bounded buffer of incoming events overflowed.

    The connection is then closed with 1008 (policy violation): the client
    broke the policy "read what you asked for". ``capacity`` is the bound.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        super().__init__(f"the buffer of incoming events is full ({capacity} events)")
