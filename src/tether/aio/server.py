"""The asyncio server: :func:`serve`, :class:`Server` and the upgrade decision.

::

    async def echo(ws):
        async for message in ws:
            await ws.send(message)

    async with tether.serve(echo, "127.0.0.1", 8765) as server:
        await server.serve_forever()

``handler`` is either an async function of the connection (it runs as one
task per connection; when it returns, the connection is closed with 1000; if
it raises, with 1011), or an *app*: any object with a
``__tether_dispatch__(connection, request)`` method that returns a
:class:`~tether.protocol.handshake.Response` (a plain HTTP answer: routes,
404, 403...) or an :class:`Upgrade` (accept the WebSocket), or an awaitable of
either. :class:`~tether.routing.Routes` and every face's app are such objects.

What to call next: :meth:`Server.close` (sends 1001 to every client and waits
for the closing handshakes), :meth:`Server.wait_closed`.
"""

from __future__ import annotations

import asyncio
import inspect
import socket
import ssl as ssl_module
from collections.abc import Awaitable, Callable, Generator, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from tether.aio import transports
from tether.aio.connection import Connection
from tether.aio.options import Options, make_options
from tether.aio.timers import Timers
from tether.exceptions import InvalidMessage, InvalidRequest
from tether.protocol.connection import State
from tether.protocol.handshake import Headers, Request, Response, ServerHandshake

if TYPE_CHECKING:  # pragma: no cover
    from tether.aio.connection import Cancellable

__all__ = ["Server", "ServerConnection", "Upgrade", "serve"]

HeadersLike = Headers | Mapping[str, str] | Iterable[tuple[str, str]]
Handler = Callable[[Connection], Awaitable[Any] | None]


class Upgrade:
    """The decision to accept a WebSocket upgrade.

    ``handler(connection)`` runs once the 101 is sent: an async function runs
    as a task; a plain function runs at once (it installs callbacks, as the
    callback faces do). ``headers`` are added to the 101 response.
    ``options`` overrides the server's :class:`~tether.aio.options.Options`
    for this connection (limits, compression, subprotocols...).
    """

    __slots__ = ("handler", "headers", "options")

    def __init__(
        self,
        handler: Handler,
        headers: HeadersLike | None = None,
        options: Options | None = None,
    ) -> None:
        self.handler = handler
        self.headers = _header_items(headers)
        self.options = options


def _header_items(headers: HeadersLike | None) -> list[tuple[str, str]]:
    if headers is None:
        return []
    if isinstance(headers, Headers):
        return headers.items()
    if isinstance(headers, Mapping):
        return list(headers.items())
    return list(headers)


Decision = Response | Upgrade
Dispatch = Callable[[Connection, Request], Decision | Awaitable[Decision]]


class ServerConnection(Connection):
    """The server side of a connection: runs the opening handshake, then the app."""

    __slots__ = ("_hs", "_open_handle", "_server", "_task")

    def __init__(self, server: Server) -> None:
        super().__init__(server.options, False)
        self._server = server
        self._hs: ServerHandshake | None = None
        self._open_handle: Cancellable | None = None
        self._task: asyncio.Task[Any] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        server = self._server
        server._connections.add(self)
        if server._closing:
            self.abort()
            return
        self._hs = server._handshake()
        timeout = self.options.open_timeout
        if timeout:
            self._open_handle = self._later(timeout, self._open_timed_out)

    def _later(self, delay: float, callback: Callable[[], Any]) -> Cancellable:
        # One queue per delay for all of the server's connections.
        timers = self._server._timers
        if timers is None:  # a connection made without start() (tests)
            return super()._later(delay, callback)
        return timers.later(delay, callback)

    def _open_timed_out(self) -> None:
        self._open_handle = None
        if self.core is None and self.transport is not None:
            self.options.logger.info("opening handshake timed out from %s", self.remote_address)
            self.transport.abort()

    def _handshake_data(self, data: bytes) -> None:
        hs = self._hs
        if hs is None or self.request is not None:
            # Bytes after the request head while the app decides: keep them
            # for the WebSocket protocol (a client may pipeline frames).
            if hs is not None:
                hs.leftover += data
            return
        try:
            request = hs.receive_data(data)
        except InvalidMessage as exc:
            self._respond(hs.reject(exc.status, f"Failed to open a WebSocket connection: {exc}.\n"))
            return
        if request is None:
            return
        self.request = request
        try:
            decision = self._server._dispatch(self, request)
        except Exception as exc:
            self._dispatch_failed(exc)
            return
        if type(decision) is not Upgrade and inspect.isawaitable(decision):
            # Stop reading while the app decides (bytes that arrive anyway
            # are kept for the WebSocket protocol, see above). A decision
            # made at once needs no pause: nothing can arrive meanwhile, and
            # each pause/resume costs two epoll_ctl calls per handshake.
            assert self.transport is not None
            self.transport.pause_reading()
            self._task = self._loop.create_task(self._await_decision(decision))
        else:
            self._decide(decision, False)

    async def _await_decision(self, decision: Awaitable[Decision]) -> None:
        try:
            result = await decision
        except Exception as exc:
            self._dispatch_failed(exc)
            return
        self._task = None
        self._decide(result, True)

    def _dispatch_failed(self, exc: Exception) -> None:
        self.options.logger.error("error while handling the upgrade request", exc_info=exc)
        assert self._hs is not None
        self._respond(self._hs.reject(500, "Failed to open a WebSocket connection.\n"))

    def _respond(self, response: Response) -> None:
        """Answer with a plain HTTP response and close the TCP connection."""
        self.response = response
        if self._open_handle is not None:
            self._open_handle.cancel()
            self._open_handle = None
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(response.serialize())
            self.transport.close()

    def _decide(self, decision: Decision, paused: bool) -> None:
        """Answer the upgrade request; ``paused``: reading was paused for an
        asynchronous decision and must resume."""
        if self.transport is None or self.transport.is_closing():
            return
        if isinstance(decision, Response):
            self._respond(decision)
            return
        hs = self._hs
        request = self.request
        assert hs is not None and request is not None
        options = decision.options or self.options
        if options is not self.options:
            self.options = options
            hs = self._server._handshake(options, hs)
        try:
            response, negotiated = hs.accept(request, decision.headers)
        except InvalidRequest as exc:
            self._respond(
                hs.reject(
                    exc.status, f"Failed to open a WebSocket connection: {exc}.\n", exc.headers
                )
            )
            return
        process_response = self._server._process_response
        if process_response is not None:
            try:
                replaced = process_response(self, request, response)
            except Exception as exc:
                self._dispatch_failed(exc)
                return
            if replaced is not None:
                if replaced.status != 101:
                    self._respond(replaced)
                    return
                response = replaced
        core = self._make_core(negotiated)
        self.response = response
        self.subprotocol = negotiated.subprotocol
        if self._open_handle is not None:
            self._open_handle.cancel()
            self._open_handle = None
        leftover = hs.leftover
        self._hs = None
        request.headers.compact()
        transport = self.transport
        transport.write(response.serialize())
        self._open(core, leftover)
        try:
            result = decision.handler(self)
        except Exception as exc:
            self._handler_failed(exc)
            result = None
        if result is not None and inspect.isawaitable(result):
            self._task = self._loop.create_task(self._run(result))
        if leftover:
            self.data_received(leftover)
        if paused:
            transport.resume_reading()

    async def _run(self, handler: Awaitable[Any]) -> None:
        try:
            await handler
        except asyncio.CancelledError:
            self.abort()
            raise
        except Exception as exc:
            if self._closed_exc is None or not isinstance(exc, type(self._closed_exc)):
                self.options.logger.error("error in connection handler", exc_info=exc)
            self._fail(1011, "internal error")
        else:
            if self.core is not None and self.core.close_sent is None and self._closed_exc is None:
                self.core.send_close(1000, "")
                self._flush()
        finally:
            self._task = None

    def _handshake_lost(self, exc: Exception | None) -> None:
        if self._open_handle is not None:
            self._open_handle.cancel()
            self._open_handle = None
        if self._task is not None:
            self._task.cancel()
        self._hs = None
        self._server._connections.discard(self)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._server._connections.discard(self)


class Server:
    """A running WebSocket server. Made by :func:`serve`.

    ``sockets`` are the listening sockets; ``connections`` the open ones.
    What to call next: :meth:`close` then :meth:`wait_closed`, or use
    ``async with serve(...)`` which does both.
    """

    def __init__(
        self,
        handler: Any,
        options: Options,
        *,
        origins: Sequence[str | None] | None = None,
        process_request: Callable[..., Any] | None = None,
        process_response: Callable[..., Any] | None = None,
        server_header: str | None = "tether",
    ) -> None:
        self.options = options
        self._origins = origins
        self._server_header = server_header
        self._process_request = process_request
        self._process_response = process_response
        self._app_dispatch: Dispatch = _as_dispatch(handler)
        self._connections: set[ServerConnection] = set()
        self._closing = False
        self._server: asyncio.base_events.Server | None = None
        self._closed: asyncio.Event = asyncio.Event()
        self._timers: Timers | None = None
        self.handler = handler

    def _handshake(
        self, options: Options | None = None, previous: ServerHandshake | None = None
    ) -> ServerHandshake:
        options = options or self.options
        hs = ServerHandshake(
            subprotocols=options.subprotocols,
            compression=options.compression,
            origins=self._origins,
            server_header=self._server_header,
            max_line=options.max_line,
            max_headers=options.max_headers,
            max_request=options.max_request,
        )
        if previous is not None:
            hs.leftover = previous.leftover
        return hs

    def _dispatch(self, connection: Connection, request: Request) -> Decision | Awaitable[Decision]:
        hook = self._process_request
        if hook is None:
            return self._app_dispatch(connection, request)
        return self._dispatch_with_hook(hook, connection, request)

    def _dispatch_with_hook(
        self, hook: Callable[..., Any], connection: Connection, request: Request
    ) -> Decision | Awaitable[Decision]:
        result = hook(connection, request)
        if inspect.isawaitable(result):
            return self._await_hook(result, connection, request)
        return self._apply_hook(result, connection, request)

    async def _await_hook(
        self, result: Awaitable[Any], connection: Connection, request: Request
    ) -> Decision:
        decision = self._apply_hook(await result, connection, request)
        if inspect.isawaitable(decision):
            return await decision
        return decision

    def _apply_hook(
        self, result: Any, connection: Connection, request: Request
    ) -> Decision | Awaitable[Decision]:
        if result is None:
            return self._app_dispatch(connection, request)
        if isinstance(result, Response):
            return result
        extra = _header_items(result)
        decision = self._app_dispatch(connection, request)
        if inspect.isawaitable(decision):
            return self._add_headers_async(decision, extra)
        return _add_headers(decision, extra)

    async def _add_headers_async(
        self, decision: Awaitable[Decision], extra: list[tuple[str, str]]
    ) -> Decision:
        return _add_headers(await decision, extra)

    # ------------------------------------------------------------------

    async def start(
        self,
        host: str | Sequence[str] | None = None,
        port: int | None = None,
        *,
        sock: socket.socket | None = None,
        unix: str | None = None,
        ssl: ssl_module.SSLContext | None = None,
        reuse_port: bool | None = None,
        backlog: int = 1024,
    ) -> Server:
        """Start listening. :func:`serve` calls this for you."""
        loop = asyncio.get_running_loop()
        self._timers = Timers(loop)
        if unix is not None:
            self._server = await loop.create_unix_server(
                self._factory, unix, ssl=ssl, backlog=backlog
            )
        elif sock is not None:
            self._server = await transports.create_server(
                loop, self._factory, sock=sock, ssl=ssl, backlog=backlog
            )
        else:
            self._server = await transports.create_server(
                loop,
                self._factory,
                host,
                port or 0,
                ssl=ssl,
                reuse_port=reuse_port,
                backlog=backlog,
            )
        return self

    def _factory(self) -> ServerConnection:
        return ServerConnection(self)

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        """The listening sockets."""
        return tuple(self._server.sockets) if self._server is not None else ()

    @property
    def port(self) -> int:
        """The port of the first listening socket (handy with ``port=0``)."""
        return int(self.sockets[0].getsockname()[1])

    @property
    def connections(self) -> set[ServerConnection]:
        """The connections in progress (handshaking or open)."""
        return set(self._connections)

    def close(self, code: int = 1001, reason: str = "server shutting down") -> None:
        """Stop accepting, send a close frame (1001 by default) to every open
        connection, and drop handshakes in progress. Then await
        :meth:`wait_closed`."""
        if self._closing:
            return
        self._closing = True
        if self._server is not None:
            self._server.close()
        asyncio.get_running_loop().create_task(self._shutdown(code, reason))

    async def _shutdown(self, code: int, reason: str) -> None:
        for connection in list(self._connections):
            if connection.core is None:
                connection.abort()
            elif connection.state is State.OPEN and connection.core.close_sent is None:
                connection.core.send_close(code, reason)
                connection._flush()
        waits = [c.wait_closed() for c in list(self._connections) if c.core is not None]
        if waits:
            timeout = self.options.close_timeout
            done = asyncio.gather(*waits, return_exceptions=True)
            try:
                await asyncio.wait_for(done, None if timeout is None else timeout + 1)
            except asyncio.TimeoutError:
                for connection in list(self._connections):
                    connection.abort()
        tasks = [c._task for c in list(self._connections) if c._task is not None]
        for connection in list(self._connections):
            if connection._task is not None and connection._task not in tasks:
                tasks.append(connection._task)
        if tasks:
            await asyncio.wait(tasks, timeout=self.options.close_timeout)
            for task in tasks:
                task.cancel()
        if self._server is not None:
            await self._server.wait_closed()
        self._closed.set()

    async def wait_closed(self) -> None:
        """Wait until :meth:`close` has finished (every connection closed)."""
        await self._closed.wait()

    async def serve_forever(self) -> None:
        """Serve until :meth:`close` is called or the task is cancelled."""
        try:
            await self._closed.wait()
        except asyncio.CancelledError:
            self.close()
            await asyncio.shield(self._closed.wait())
            raise

    async def __aenter__(self) -> Server:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()
        await self.wait_closed()


def _add_headers(decision: Decision, extra: list[tuple[str, str]]) -> Decision:
    if isinstance(decision, Upgrade):
        decision.headers = decision.headers + extra
    return decision


def _as_dispatch(handler: Any) -> Dispatch:
    dispatch = getattr(handler, "__tether_dispatch__", None)
    if dispatch is not None:
        return dispatch  # type: ignore[no-any-return]
    if not callable(handler):
        raise TypeError(f"handler must be an async function or an app, not {handler!r}")

    def upgrade(connection: Connection, request: Request) -> Decision:
        return Upgrade(handler)

    return upgrade


class serve:
    """Start a WebSocket server: ``await serve(...)`` or ``async with serve(...)``.

    ``handler`` is an async function of the connection, or an app (see the
    module docs). ``host``/``port`` as for :meth:`asyncio.loop.create_server`
    (``port=0`` picks a free port: read it from ``server.port``); or
    ``sock=`` a listening socket, or ``unix=`` a path. ``ssl`` serves
    ``wss://``. ``origins`` lists the allowed ``Origin`` values (``None`` in the
    list allows requests without one); others get 403. ``process_request(
    connection, request)`` runs before the app: return a ``Response`` to answer
    with it, headers (a dict or list of pairs) to add them to the 101, or
    ``None``; it may be async. ``process_response(connection, request,
    response)`` may return a replacement for the 101. Every other keyword is a
    field of :class:`~tether.aio.options.Options` (``max_size``,
    ``compression``, ``ping_interval``...).
    """

    def __init__(
        self,
        handler: Any,
        host: str | Sequence[str] | None = None,
        port: int | None = None,
        *,
        sock: socket.socket | None = None,
        unix: str | None = None,
        ssl: ssl_module.SSLContext | None = None,
        reuse_port: bool | None = None,
        backlog: int = 1024,
        origins: Sequence[str | None] | None = None,
        process_request: Callable[..., Any] | None = None,
        process_response: Callable[..., Any] | None = None,
        server_header: str | None = "tether",
        options: Options | None = None,
        **kwargs: Any,
    ) -> None:
        self._options = make_options(options, **kwargs)
        self._handler = handler
        self._start_args = dict(
            host=host,
            port=port,
            sock=sock,
            unix=unix,
            ssl=ssl,
            reuse_port=reuse_port,
            backlog=backlog,
        )
        self._server_args = dict(
            origins=origins,
            process_request=process_request,
            process_response=process_response,
            server_header=server_header,
        )
        self._server: Server | None = None

    async def _start(self) -> Server:
        server = Server(self._handler, self._options, **self._server_args)  # type: ignore[arg-type]
        self._server = await server.start(**self._start_args)  # type: ignore[arg-type]
        return self._server

    def __await__(self) -> Generator[Any, None, Server]:
        return self._start().__await__()

    async def __aenter__(self) -> Server:
        return await self._start()

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()
