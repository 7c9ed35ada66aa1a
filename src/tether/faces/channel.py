"""The channel face: ZIO HTTP's WebSocket model, in Python.

A :class:`WebSocketApp` is made from an async function of a
:class:`WebSocketChannel`; the channel delivers :class:`ChannelEvent` values
and sends :class:`WebSocketFrame` values::

    from tether import ChannelEvent, Handler, Routes, WebSocketFrame, UserEvent, HttpServer

    async def handle(channel):
        async def on_event(event):
            match event:
                case ChannelEvent.UserEventTriggered(UserEvent.HandshakeComplete):
                    await channel.send(ChannelEvent.Read(WebSocketFrame.text("Greetings!")))
                case ChannelEvent.Read(WebSocketFrame.Text("end")):
                    await channel.shutdown()
                case ChannelEvent.Read(WebSocketFrame.Text(text)):
                    await channel.send(ChannelEvent.Read(WebSocketFrame.text(text)))
        await channel.receive_all(on_event)

    app = Handler.web_socket(handle)
    routes = Routes().get("/subscriptions", app)
    await HttpServer.serve(routes, port=8080)              # or tether.serve(routes, ...)

    client = await app.connect("ws://127.0.0.1:8080/subscriptions")   # the same app as a client

Serving: an app is a valid :func:`tether.serve` handler and a valid route
target (it has ``__tether_dispatch__``). Each connection runs the function
once; when it returns the connection is closed with 1000; if it raises, the
connection is closed with 1011 and the error is logged once (see
:meth:`WebSocketChannel.receive_all` for the ``ExceptionCaught`` it gets
first). The server keeps serving the other connections.

Settings: :class:`WebSocketConfig`, given with :meth:`WebSocketApp.with_config`
(per app) or to :class:`HttpServer` (server-wide); every engine setting is
there.

What to call next: :meth:`WebSocketChannel.receive_all`,
:meth:`WebSocketApp.connect`, :class:`tether.routing.Routes`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from tether.aio.connection import Connection
from tether.aio.options import Options
from tether.aio.reconnect import Retry
from tether.aio.server import Upgrade
from tether.faces.channel_client import WebSocketClient
from tether.faces.channel_config import INHERIT, WebSocketConfig
from tether.faces.channel_events import ChannelEvent, UserEvent, WebSocketFrame
from tether.faces.channel_socket import EventHandler, WebSocketChannel, run_channel_app
from tether.faces.server_runner import HttpServer
from tether.protocol.http import Request

__all__ = [
    "INHERIT",
    "ChannelEvent",
    "ChannelHandler",
    "EventHandler",
    "Handler",
    "HttpServer",
    "Retry",
    "Server",
    "UserEvent",
    "WebSocketApp",
    "WebSocketChannel",
    "WebSocketClient",
    "WebSocketConfig",
    "WebSocketFrame",
]

#: The function an app is made of: ``async def handle(channel): ...``.
ChannelHandler = Callable[[WebSocketChannel], Awaitable[Any]]

#: ZIO HTTP's name for the server runner: ``Server.serve(routes)``,
#: ``Server.default``. At the top level of tether it is ``HttpServer``
#: (``tether.Server`` is the engine's running server).
Server = HttpServer


class WebSocketApp:
    """A WebSocket application: a function of a :class:`WebSocketChannel`,
    plus its :class:`WebSocketConfig`.

    Serve it (``tether.serve(app, ...)``, as a :class:`~tether.routing.Routes`
    target, or returned by a route handler: :meth:`to_response`), or run it
    as a client with :meth:`connect`.
    """

    __slots__ = ("_cache", "config", "handler")

    def __init__(
        self, handler: ChannelHandler, config: WebSocketConfig = WebSocketConfig.default
    ) -> None:
        self.handler = handler
        self.config = config
        self._cache: tuple[Options, Options] | None = None

    def with_config(self, config: WebSocketConfig) -> WebSocketApp:
        """The same app with other settings (a new app; this one is unchanged)."""
        return WebSocketApp(self.handler, config)

    def to_response(self) -> WebSocketApp:
        """What a route handler returns to accept the upgrade with this app,
        as ZIO's ``socketApp.toResponse``. (The app is its own response: a
        route handler may return the app itself too.)"""
        return self

    # ------------------------------------------------------------------
    # Serving

    def __tether_dispatch__(self, connection: Connection, request: Request) -> Upgrade:
        """Accept the upgrade: run the app on the connection once it is open.

        Called by the server (or by :class:`~tether.routing.Routes`) for each
        upgrade request that reaches this app.
        """
        return Upgrade(self._serve, options=self._options_for(connection.options))

    def _options_for(self, base: Options) -> Options | None:
        """The server's options with this app's settings applied (``None``:
        the server's, unchanged). Cached: one Options per server, not per
        connection."""
        cache = self._cache
        if cache is not None and cache[0] is base:
            return cache[1]
        options = self.config.to_options(base)
        self._cache = (base, options)
        return None if options is base else options

    async def _serve(self, connection: Connection) -> None:
        channel = WebSocketChannel(connection, self.config)
        try:
            await run_channel_app(self.handler, channel)
        except Exception as exc:
            # Logged here, once; the connection is already closed with 1011,
            # so the engine has nothing left to do or say.
            connection.options.logger.error(
                "error in WebSocket app handler (%s %s from %s)",
                getattr(connection.request, "method", "?"),
                getattr(connection.request, "path", "?"),
                connection.remote_address,
                exc_info=exc,
            )

    # ------------------------------------------------------------------
    # As a client

    def connect(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
        reconnect: bool | Retry = False,
        **kwargs: Any,
    ) -> WebSocketClient:
        """Run this app as a client of ``url``: ``client = await
        app.connect(url)`` or ``async with app.connect(url) as client``.

        ``headers`` are added to the upgrade request. ``reconnect=True`` (or
        a :class:`~tether.aio.reconnect.Retry`) reconnects when the
        connection drops, with the engine's capped exponential backoff and
        jitter, until :meth:`WebSocketClient.close` or until the app itself
        closes the connection (``channel.shutdown()``, a ``Close`` frame, or
        the handler returning). Other keywords go to
        :func:`tether.connect` (``origin``, ``ssl``, ``user_agent``, or an
        engine option, which wins over this app's config).
        """
        return WebSocketClient(
            self, url, headers=headers, reconnect=reconnect, connect_kwargs=kwargs
        )

    def __repr__(self) -> str:
        return f"WebSocketApp({self.handler!r})"


class Handler:
    """ZIO HTTP's ``Handler`` constructors, for the channel face."""

    __slots__ = ()

    @staticmethod
    def web_socket(
        handler: ChannelHandler, config: WebSocketConfig = WebSocketConfig.default
    ) -> WebSocketApp:
        """A :class:`WebSocketApp` running ``handler(channel)`` for each
        connection (the seed's ``Handler.webSocket``)."""
        return WebSocketApp(handler, config)
