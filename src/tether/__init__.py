"""tether: a WebSocket toolkit for Python.

One RFC 6455 + RFC 7692 engine, server and client, asyncio-native, with a
compiled hot path; several ways of talking WebSocket on top of it.

Start here::

    import tether

    async def echo(ws):                       # a server handler
        async for message in ws:
            await ws.send(message)

    async with tether.serve(echo, "127.0.0.1", 8765):
        async with tether.connect("ws://127.0.0.1:8765/") as ws:   # a client
            await ws.send("hello")
            assert await ws.recv() == "hello"

What to call next: :func:`serve`, :func:`connect`, the
:class:`Connection` methods (``recv``, ``send``, ``ping``, ``close``), and the
exception tree in :mod:`tether.exceptions`.
"""

from __future__ import annotations

from tether import sync
from tether.aio.client import ClientConnection, connect
from tether.aio.connection import Connection
from tether.aio.options import Options
from tether.aio.proxy import ProxyError
from tether.aio.reconnect import Attempt, OutgoingQueue, OutgoingQueueFull, Retry
from tether.aio.server import Server, ServerConnection, Upgrade, serve
from tether.exceptions import (
    ConcurrencyError,
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionClosedOK,
    HandshakeTimeout,
    InvalidHandshake,
    InvalidMessage,
    InvalidRequest,
    InvalidResponse,
    InvalidState,
    InvalidStatus,
    InvalidURI,
    NegotiationError,
    PayloadTooBig,
    ProtocolError,
    TetherError,
    WebSocketBufferFull,
)
from tether.faces.callbacks import Data, WebSocket, web_socket_upgrader
from tether.faces.channel import (
    ChannelEvent,
    Handler,
    HttpServer,
    UserEvent,
    WebSocketApp,
    WebSocketChannel,
    WebSocketClient,
    WebSocketConfig,
    WebSocketFrame,
)
from tether.faces.request import WebSocketEvent, WebSocketResponse, basic_request
from tether.hub import Hub
from tether.protocol.connection import State
from tether.protocol.deflate import DeflateOptions
from tether.protocol.frames import Close, CloseCode, Opcode
from tether.protocol.handshake import Headers, Request, Response
from tether.routing import Routes

__version__ = "0.1.0"

__all__ = [
    "Attempt",
    "ChannelEvent",
    "ClientConnection",
    "Close",
    "CloseCode",
    "ConcurrencyError",
    "Connection",
    "ConnectionClosed",
    "ConnectionClosedError",
    "ConnectionClosedOK",
    "Data",
    "DeflateOptions",
    "Handler",
    "HandshakeTimeout",
    "Headers",
    "HttpServer",
    "Hub",
    "InvalidHandshake",
    "InvalidMessage",
    "InvalidRequest",
    "InvalidResponse",
    "InvalidState",
    "InvalidStatus",
    "InvalidURI",
    "NegotiationError",
    "Opcode",
    "Options",
    "OutgoingQueue",
    "OutgoingQueueFull",
    "PayloadTooBig",
    "ProtocolError",
    "ProxyError",
    "Request",
    "Response",
    "Retry",
    "Routes",
    "Server",
    "ServerConnection",
    "State",
    "TetherError",
    "Upgrade",
    "UserEvent",
    "WebSocket",
    "WebSocketApp",
    "WebSocketBufferFull",
    "WebSocketChannel",
    "WebSocketClient",
    "WebSocketConfig",
    "WebSocketEvent",
    "WebSocketFrame",
    "WebSocketResponse",
    "basic_request",
    "connect",
    "serve",
    "sync",
    "web_socket_upgrader",
]
