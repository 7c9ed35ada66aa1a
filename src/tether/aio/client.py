"""The asyncio client: :func:`connect`.

::

    async with tether.connect("ws://127.0.0.1:8765/") as ws:
        await ws.send("hello")
        print(await ws.recv())

``connect(...)`` is awaitable (it returns the open
:class:`~tether.aio.connection.Connection`) and an async context manager (it
closes the connection on exit).

Failures raise :class:`~tether.exceptions.InvalidURI`, ``OSError`` (could
not reach the server), :class:`~tether.exceptions.InvalidStatus` (the server
refused the upgrade: look at ``.response``), another
:class:`~tether.exceptions.InvalidHandshake`, or
:class:`~tether.exceptions.HandshakeTimeout` after ``open_timeout``.
"""

from __future__ import annotations

import asyncio
import ssl as ssl_module
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin

from tether.aio import transports
from tether.aio.connection import Connection
from tether.aio.options import Options, make_options
from tether.aio.proxy import Proxy, open_via_proxy, proxy_for
from tether.exceptions import HandshakeTimeout, InvalidHandshake, InvalidMessage, InvalidStatus
from tether.protocol.handshake import ClientHandshake, Headers
from tether.protocol.uri import WSURI, parse_uri

if TYPE_CHECKING:  # pragma: no cover
    from tether.aio.reconnect import Attempt, OutgoingQueue, Reconnecting, Retry

__all__ = ["ClientConnection", "connect"]


class ClientConnection(Connection):
    """The client side of a connection: sends the upgrade request, checks the
    answer, then speaks WebSocket."""

    __slots__ = ("_hs", "_opened")

    def __init__(self, options: Options, handshake: ClientHandshake) -> None:
        super().__init__(options, True)
        self._hs: ClientHandshake | None = handshake
        self._opened: asyncio.Future[None] = self._loop.create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        assert self._hs is not None and self.transport is not None
        self.request = self._hs.request()
        self.transport.write(self.request.serialize())

    def _handshake_data(self, data: bytes) -> None:
        hs = self._hs
        if hs is None:
            return
        try:
            response = hs.receive_data(data)
            if response is None:
                return
            self._handshake_done(hs, response)
        except InvalidHandshake as exc:
            self._handshake_failed(exc)

    def _handshake_done(self, hs: ClientHandshake, response: Any) -> None:
        self.response = response
        negotiated = hs.check(response)
        core = self._make_core(negotiated)
        self.subprotocol = negotiated.subprotocol
        leftover = hs.leftover
        self._hs = None
        self._open(core, leftover)
        if not self._opened.done():
            self._opened.set_result(None)
        if leftover:
            self.data_received(leftover)

    def _handshake_failed(self, exc: BaseException) -> None:
        self._hs = None
        if not self._opened.done():
            self._opened.set_exception(exc)
        if self.transport is not None:
            self.transport.close()

    def _handshake_lost(self, exc: Exception | None) -> None:
        hs = self._hs
        if hs is None:
            if not self._opened.done():
                self._opened.set_exception(
                    exc or InvalidMessage("connection closed during the opening handshake")
                )
            return
        try:
            response = hs.receive_eof()
            if response is None:
                raise InvalidMessage("connection closed during the opening handshake")
            self._handshake_done(hs, response)
        except InvalidHandshake as error:
            if exc is not None:
                error.__cause__ = exc
            self._handshake_failed(error)


async def _open_connection(
    uri: str | WSURI,
    options: Options,
    *,
    follow_redirects: bool = False,
    max_redirects: int = 10,
    **kwargs: Any,
) -> ClientConnection:
    """Open a connection to ``uri`` within ``open_timeout`` (DNS, TCP, proxy,
    TLS, the handshake, and every redirect followed)."""
    wsuri = uri if isinstance(uri, WSURI) else parse_uri(uri)
    first = wsuri

    async def follow() -> ClientConnection:
        nonlocal wsuri
        args = kwargs
        for hop in range(max_redirects + 1):
            try:
                return await _open_once(wsuri, options, **args)
            except InvalidStatus as exc:
                location = exc.response.headers.get("Location")
                if not follow_redirects or exc.status not in _REDIRECTS or location is None:
                    raise
                if hop == max_redirects:
                    raise InvalidHandshake(
                        f"too many redirects from {first}: more than {max_redirects}"
                    ) from exc
                if args.get("sock") is not None:
                    raise InvalidHandshake(
                        f"cannot follow the redirect to {location}: sock= is used up"
                    ) from exc
                target = redirect_target(wsuri, location)
                options.logger.info("%s redirects (%d) to %s", wsuri, exc.status, target)
                args = _redirect_args(wsuri, target, args)
                wsuri = target
        raise AssertionError("unreachable")  # pragma: no cover

    timeout = options.open_timeout
    try:
        return await asyncio.wait_for(follow(), timeout)
    except asyncio.TimeoutError:
        raise HandshakeTimeout(
            f"timed out after {timeout} s opening the connection to {wsuri}"
        ) from None


#: Statuses whose ``Location`` is followed with ``follow_redirects=True``.
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


def redirect_target(uri: WSURI, location: str) -> WSURI:
    """The WebSocket URI a ``Location`` header points to, resolved against
    ``uri`` (``http``/``https`` map to ``ws``/``wss``). Refuses a redirect
    from ``wss://`` to ``ws://``, which would drop TLS."""
    base = f"{'https' if uri.secure else 'http'}://{uri.host_header}{uri.resource}"
    target = urljoin(base, location.strip())
    scheme, sep, rest = target.partition("://")
    mapped = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(scheme.lower())
    if not sep or mapped is None:
        raise InvalidHandshake(f"cannot follow a redirect to {location!r}: not a ws/http URL")
    new = parse_uri(f"{mapped}://{rest}")
    if uri.secure and not new.secure:
        raise InvalidHandshake(f"refusing to follow a redirect from {uri} to {new}: drops TLS")
    return new


def _redirect_args(old: WSURI, new: WSURI, args: dict[str, Any]) -> dict[str, Any]:
    """The connect arguments for a redirect: to another host or port, the
    ``host``/``port``/``unix`` overrides and the ``Authorization`` and
    ``Cookie`` headers are dropped."""
    if (old.host, old.port, old.secure) == (new.host, new.port, new.secure):
        return args
    args = dict(args, host=None, port=None, unix=None, server_hostname=None)
    headers = args.get("additional_headers")
    if headers is not None:
        pairs = headers.items() if isinstance(headers, (Mapping, Headers)) else headers
        args["additional_headers"] = [
            (name, value)
            for name, value in pairs
            if name.lower() not in ("authorization", "cookie")
        ]
    return args


async def _open_once(
    wsuri: WSURI,
    options: Options,
    *,
    additional_headers: Headers | Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
    origin: str | None = None,
    user_agent: str | None = "tether/0.1",
    ssl: ssl_module.SSLContext | bool | None = None,
    unix: str | None = None,
    host: str | None = None,
    port: int | None = None,
    server_hostname: str | None = None,
    sock: Any = None,
    proxy: str | Proxy | bool | None = True,
    proxy_ssl: ssl_module.SSLContext | None = None,
    happy_eyeballs_delay: float | None = 0.25,
) -> ClientConnection:
    """One connection and one handshake, without a timeout."""
    if isinstance(additional_headers, Headers):
        additional_headers = additional_headers.items()
    handshake = ClientHandshake(
        wsuri,
        subprotocols=options.subprotocols,
        compression=options.compression,
        additional_headers=additional_headers,
        origin=origin,
        user_agent=user_agent,
        max_line=options.max_line,
        max_headers=options.max_headers,
        max_request=options.max_request,
        max_body=options.max_body,
    )
    loop = asyncio.get_running_loop()
    ssl_context: ssl_module.SSLContext | None
    if wsuri.secure:
        if ssl is False:
            raise ValueError("ssl=False was given for a wss:// URI; use ws://")
        ssl_context = (
            ssl if isinstance(ssl, ssl_module.SSLContext) else (ssl_module.create_default_context())
        )
        if server_hostname is None:
            server_hostname = wsuri.host
    else:
        if isinstance(ssl, ssl_module.SSLContext):
            raise ValueError("ssl= was given for a ws:// URI; use wss://")
        ssl_context = None
        server_hostname = None

    def factory() -> ClientConnection:
        return ClientConnection(options, handshake)

    # A proxy is used for host names and IP addresses only: never with an
    # explicit socket, a Unix socket, or a host/port override.
    via = None
    if unix is None and sock is None and host is None and port is None:
        via = proxy_for(wsuri, proxy)
    if unix is not None:
        _, protocol = await loop.create_unix_connection(
            factory, unix, ssl=ssl_context, server_hostname=server_hostname
        )
    elif sock is not None:
        _, protocol = await transports.create_connection(
            loop, factory, sock=sock, ssl=ssl_context, server_hostname=server_hostname
        )
    elif via is not None:
        _, protocol = await open_via_proxy(
            via,
            wsuri,
            factory,
            ssl=ssl_context,
            server_hostname=server_hostname,
            proxy_ssl=proxy_ssl,
            user_agent=user_agent,
            happy_eyeballs_delay=happy_eyeballs_delay,
        )
    else:
        # Every address the name resolves to is tried; with a
        # happy_eyeballs_delay, in parallel, staggered by that delay
        # (RFC 8305), IPv6 and IPv4 interleaved.
        _, protocol = await transports.create_connection(
            loop,
            factory,
            host or wsuri.host,
            port or wsuri.port,
            ssl=ssl_context,
            server_hostname=server_hostname,
            happy_eyeballs_delay=happy_eyeballs_delay,
        )
    assert isinstance(protocol, ClientConnection)
    try:
        await protocol._opened
    except BaseException:
        protocol.abort()
        raise
    return protocol


class connect:  # used like a function
    """Open a WebSocket connection: ``await connect(uri)`` or
    ``async with connect(uri) as ws``; or ``async for ws in connect(uri)`` for
    a new connection each time the previous one drops (see
    :mod:`tether.aio.reconnect`).

    Keywords: ``additional_headers``, ``origin``, ``user_agent``, ``ssl`` (an
    ``SSLContext`` for ``wss://``), ``unix`` (a Unix socket path), ``host`` and
    ``port`` (connect there instead of the URI's host), ``sock``, ``proxy``
    (a proxy URL, ``None`` for none, ``True``: from the environment, see
    :mod:`tether.aio.proxy`), ``proxy_ssl`` (TLS to an ``https://`` proxy),
    ``follow_redirects`` and ``max_redirects`` (follow 301, 302, 303, 307
    and 308 answers), ``happy_eyeballs_delay`` (seconds between attempts to
    the addresses of a name, RFC 8305; ``None``: one after the other), and
    every field of :class:`~tether.aio.options.Options` (``subprotocols``,
    ``compression``, ``max_size``, ``open_timeout``, ``ping_interval``...).
    For ``async for`` only: ``retry`` (a :class:`~tether.aio.reconnect.Retry`),
    ``outbox`` (an :class:`~tether.aio.reconnect.OutgoingQueue`) and
    ``on_attempt`` (called with each :class:`~tether.aio.reconnect.Attempt`).
    """

    def __init__(
        self,
        uri: str,
        *,
        additional_headers: Headers | Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
        origin: str | None = None,
        user_agent: str | None = "tether/0.1",
        ssl: ssl_module.SSLContext | bool | None = None,
        unix: str | None = None,
        host: str | None = None,
        port: int | None = None,
        server_hostname: str | None = None,
        sock: Any = None,
        proxy: str | Proxy | bool | None = True,
        proxy_ssl: ssl_module.SSLContext | None = None,
        follow_redirects: bool = False,
        max_redirects: int = 10,
        happy_eyeballs_delay: float | None = 0.25,
        retry: Retry | None = None,
        outbox: OutgoingQueue | None = None,
        on_attempt: Callable[[Attempt], Any] | None = None,
        options: Options | None = None,
        **kwargs: Any,
    ) -> None:
        self.uri = uri
        self.options = make_options(options, **kwargs)
        self._connect_args: dict[str, Any] = dict(
            additional_headers=additional_headers,
            origin=origin,
            user_agent=user_agent,
            ssl=ssl,
            unix=unix,
            host=host,
            port=port,
            server_hostname=server_hostname,
            sock=sock,
            proxy=proxy,
            proxy_ssl=proxy_ssl,
            follow_redirects=follow_redirects,
            max_redirects=max_redirects,
            happy_eyeballs_delay=happy_eyeballs_delay,
        )
        self.retry = retry
        self.outbox = outbox
        self.on_attempt = on_attempt
        self.connection: ClientConnection | None = None
        #: The iterator of the last ``async for`` over this object.
        self.reconnecting: Reconnecting | None = None

    @property
    def attempts(self) -> Sequence[Attempt]:
        """The connection attempts of ``async for`` so far (the last 100)."""
        return self.reconnecting.attempts if self.reconnecting is not None else ()

    async def _connect(self) -> ClientConnection:
        self.connection = await _open_connection(self.uri, self.options, **self._connect_args)
        return self.connection

    def __await__(self) -> Generator[Any, None, ClientConnection]:
        return self._connect().__await__()

    async def __aenter__(self) -> ClientConnection:
        return await self._connect()

    async def __aexit__(self, *exc_info: object) -> None:
        if self.connection is not None:
            await self.connection.close()

    def __aiter__(self) -> Reconnecting:
        """A new open connection each time the previous one drops, with
        backoff: see :mod:`tether.aio.reconnect`."""
        from tether.aio.reconnect import Reconnecting

        self.reconnecting = Reconnecting(self, self.retry, self.outbox, self.on_attempt)
        return self.reconnecting
