"""The channel face (tether.faces.channel*): events, config, server and client,
over real loopback sockets, with the `websockets` library as the peer."""

from __future__ import annotations

import asyncio
import logging
import pickle
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import websockets
from websockets.asyncio.client import connect as ws_connect
from websockets.asyncio.server import serve as ws_serve

import tether
from tether import (
    ChannelEvent,
    Handler,
    HttpServer,
    UserEvent,
    WebSocketApp,
    WebSocketChannel,
    WebSocketConfig,
    WebSocketFrame,
)
from tether.aio.reconnect import Retry
from tether.exceptions import (
    ConnectionClosedError,
    HandshakeTimeout,
    InvalidState,
    InvalidStatus,
)
from tether.faces.channel import Server
from tether.faces.channel_config import INHERIT
from tether.faces.channel_events import Text

Registered = ChannelEvent.Registered
Unregistered = ChannelEvent.Unregistered
Read = ChannelEvent.Read
HandshakeComplete = ChannelEvent.UserEventTriggered(UserEvent.HandshakeComplete)

TIMEOUT = 10


def url(server: tether.Server, path: str = "/") -> str:
    return f"ws://127.0.0.1:{server.port}{path}"


async def logged(caplog: pytest.LogCaptureFixture, text: str) -> list[logging.LogRecord]:
    """The records whose exception mentions ``text``, once there is one (the
    server logs after it closed the connection, so the client may be first)."""
    for _ in range(200):
        found = [r for r in caplog.records if r.exc_info and text in str(r.exc_info[1])]
        if found:
            return found
        await asyncio.sleep(0.01)
    return []


class Recorder:
    """A channel app that records every event and runs an optional reaction."""

    def __init__(
        self, react: Callable[[WebSocketChannel, ChannelEvent], Any] | None = None
    ) -> None:
        self.events: list[ChannelEvent] = []
        self.react = react
        self.done = asyncio.Event()
        self.channels: list[WebSocketChannel] = []

    async def __call__(self, channel: WebSocketChannel) -> str:
        self.channels.append(channel)

        async def on_event(event: ChannelEvent) -> None:
            self.events.append(event)
            if self.react is not None:
                result = self.react(channel, event)
                if asyncio.iscoroutine(result):
                    await result

        try:
            await channel.receive_all(on_event)
        finally:
            self.done.set()
        return "finished"


@pytest.fixture
async def served() -> AsyncIterator[Callable[..., Any]]:
    """served(app, **serve_kwargs) -> a running tether server (closed at the end)."""
    servers: list[tether.Server] = []

    async def start(app: Any, **kwargs: Any) -> tether.Server:
        server = await tether.serve(app, "127.0.0.1", 0, **kwargs)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()
        await asyncio.wait_for(server.wait_closed(), TIMEOUT)


# ---------------------------------------------------------------------------
# Events and frames


def describe(event: ChannelEvent) -> str:
    match event:
        case ChannelEvent.Read(WebSocketFrame.Text("foo")):
            return "foo!"
        case ChannelEvent.Read(WebSocketFrame.Text(text, False)):
            return f"partial {text}"
        case ChannelEvent.Read(WebSocketFrame.Text(text)):
            return f"text {text}"
        case ChannelEvent.Read(WebSocketFrame.Binary(data)):
            return f"binary {data!r}"
        case ChannelEvent.Read(WebSocketFrame.Continuation(data, is_final)):
            return f"continuation {data!r} {is_final}"
        case ChannelEvent.Read(WebSocketFrame.Close(status, reason)):
            return f"close {status} {reason}"
        case ChannelEvent.Read(WebSocketFrame.Ping(data)):
            return f"ping {data!r}"
        case ChannelEvent.Read(WebSocketFrame.Pong(data)):
            return f"pong {data!r}"
        case ChannelEvent.UserEventTriggered(UserEvent.HandshakeComplete):
            return "handshake complete"
        case ChannelEvent.UserEventTriggered(UserEvent.HandshakeTimeout):
            return "handshake timeout"
        case ChannelEvent.ExceptionCaught(cause):
            return f"error {cause}"
        case ChannelEvent.Registered:
            return "registered"
        case ChannelEvent.Unregistered:
            return "unregistered"
    return "unknown"


def test_events_match_like_the_seed() -> None:
    F = WebSocketFrame
    assert describe(Read(F.Text("foo"))) == "foo!"
    assert describe(Read(F.text("hi"))) == "text hi"
    assert describe(Read(F.text("hi", is_final=False))) == "partial hi"
    assert describe(Read(F.binary(b"\x00"))) == "binary b'\\x00'"
    assert describe(Read(F.continuation("x", True))) == "continuation 'x' True"
    assert describe(Read(F.close(1001, "bye"))) == "close 1001 bye"
    assert describe(Read(F.close())) == "close 1000 None"
    assert describe(Read(F.ping(b"p"))) == "ping b'p'"
    assert describe(Read(F.pong())) == "pong b''"
    assert describe(HandshakeComplete) == "handshake complete"
    timeout = ChannelEvent.UserEventTriggered(UserEvent.HandshakeTimeout)
    assert describe(timeout) == "handshake timeout"
    assert describe(ChannelEvent.ExceptionCaught(ValueError("x"))) == "error x"
    assert describe(Registered) == "registered"
    assert describe(Unregistered) == "unregistered"


def test_events_are_values() -> None:
    F = WebSocketFrame
    assert F.text("a") == F.Text("a") == Text("a", True)
    assert F.text("a") != F.text("a", False)
    assert Read(F.text("a")) == Read(F.Text("a"))
    assert isinstance(Read(F.text("a")), ChannelEvent)
    assert isinstance(Registered, ChannelEvent)
    assert isinstance(F.pong(), WebSocketFrame)
    assert F.text("a").text == "a"
    assert repr(Registered) == "ChannelEvent.Registered"
    assert repr(Unregistered) == "ChannelEvent.Unregistered"
    assert repr(UserEvent.HandshakeComplete) == "UserEvent.HandshakeComplete"
    assert pickle.loads(pickle.dumps(Unregistered)) is Unregistered
    with pytest.raises(AttributeError):
        F.text("a").text = "b"  # type: ignore[misc]


# ---------------------------------------------------------------------------
# Config


def test_config_maps_onto_options() -> None:
    config = WebSocketConfig(
        subprotocols=["chat"],
        handshake_timeout=3.0,
        close_timeout=2.0,
        max_size=1000,
        max_fragments=7,
        max_queue=4,
        write_limit=4096,
        ping_interval=1.5,
        ping_timeout=2.5,
        compression=None,
        auto_pong=False,
        max_line=1000,
        max_headers=10,
        max_request=5000,
        max_body=100,
        forward_pong_frames=True,
        fragments=True,
    )
    options = config.to_options()
    assert options.subprotocols == ["chat"]
    assert options.open_timeout == 3.0
    assert options.close_timeout == 2.0
    assert (options.max_size, options.max_fragments, options.max_queue) == (1000, 7, 4)
    assert options.write_limit == 4096
    assert (options.ping_interval, options.ping_timeout) == (1.5, 2.5)
    assert options.compression is None
    assert options.auto_pong is False
    assert (options.max_line, options.max_headers, options.max_request) == (1000, 10, 5000)
    assert options.max_body == 100
    assert options.control_frames is True
    assert options.fragments is True


def test_config_inherits_what_it_leaves_unset() -> None:
    base = tether.Options(max_size=123, ping_interval=None)
    assert WebSocketConfig().to_options(base) is base  # nothing set: the server's own
    options = WebSocketConfig(max_queue=3).to_options(base)
    assert (options.max_size, options.ping_interval, options.max_queue) == (123, None, 3)
    assert options.control_frames is False
    assert WebSocketConfig().subprotocols is INHERIT
    assert repr(INHERIT) == "INHERIT"
    assert WebSocketConfig(forward_close_frames=True).to_options().control_frames is True
    assert WebSocketConfig(forward_ping_frames=True).control_frames is True
    merged = WebSocketConfig(fragments=True).merged_over(WebSocketConfig(max_size=5))
    assert merged.fragments is True and merged.max_size == 5
    assert WebSocketConfig(max_size=9).merged_over(WebSocketConfig(max_size=5)).max_size == 9
    assert WebSocketConfig().replace(max_size=1).max_size == 1


def test_config_is_validated_at_once() -> None:
    with pytest.raises(ValueError):
        WebSocketConfig(max_size=0)
    with pytest.raises(ValueError):
        WebSocketConfig(handshake_timeout=-1)
    with pytest.raises(TypeError):
        WebSocketConfig(subprotocols="chat")
    with pytest.raises(TypeError):
        WebSocketConfig(compression="brotli")


# ---------------------------------------------------------------------------
# Serving


async def test_event_order_on_the_server(served: Callable[..., Any]) -> None:
    recorder = Recorder()
    server = await served(Handler.web_socket(recorder))
    async with ws_connect(url(server)) as ws:
        await ws.send("hello")
        await ws.send(b"\x01\x02")
        await ws.close()
    await asyncio.wait_for(recorder.done.wait(), TIMEOUT)
    assert recorder.events == [
        Registered,
        HandshakeComplete,
        Read(WebSocketFrame.text("hello")),
        Read(WebSocketFrame.binary(b"\x01\x02")),
        Unregistered,
    ]
    channel = recorder.channels[0]
    assert channel.request.path == "/"
    assert channel.response.status == 101
    assert channel.close_code == 1000
    assert not channel.is_open
    with pytest.raises(tether.ConnectionClosed):
        await channel.receive()
    await channel.receive_all(lambda event: pytest.fail("no event after Unregistered"))


async def test_send_forms_and_async_iteration(served: Callable[..., Any]) -> None:
    async def app(channel: WebSocketChannel) -> None:
        async for event in channel:
            if event == HandshakeComplete:
                await channel.send(ChannelEvent.Read(WebSocketFrame.text("read event")))
                await channel.send(WebSocketFrame.text("bare frame"))
                await channel.send(WebSocketFrame.binary(b"bytes frame"))
                await channel.send("plain str")
                await channel.send(b"plain bytes")
                await channel.send_all([WebSocketFrame.text("all 1"), "all 2"])

                async def more() -> AsyncIterator[str]:
                    yield "async 1"
                    yield "async 2"

                await channel.send_all(more())
                with pytest.raises(TypeError):
                    await channel.send(Registered)
                await channel.send(WebSocketFrame.close(4000, "done"))

    server = await served(Handler.web_socket(app))
    received = []
    async with ws_connect(url(server)) as ws:
        with pytest.raises(websockets.ConnectionClosedError):
            while True:
                received.append(await asyncio.wait_for(ws.recv(), TIMEOUT))
        assert ws.close_code == 4000 and ws.close_reason == "done"
    assert received == [
        "read event",
        "bare frame",
        b"bytes frame",
        "plain str",
        b"plain bytes",
        "all 1",
        "all 2",
        "async 1",
        "async 2",
    ]


async def test_app_returning_closes_with_1000(served: Callable[..., Any]) -> None:
    async def app(channel: WebSocketChannel) -> None:
        await channel.send("bye")

    server = await served(Handler.web_socket(app))
    async with ws_connect(url(server)) as ws:
        assert await ws.recv() == "bye"
        with pytest.raises(websockets.ConnectionClosedOK):
            await ws.recv()
        assert ws.close_code == 1000


async def test_forward_close_frames(served: Callable[..., Any]) -> None:
    forwarding = Recorder()
    plain = Recorder()
    config = WebSocketConfig(forward_close_frames=True)
    server = await served(
        tether.Routes()
        .get("/forward", Handler.web_socket(forwarding, config))
        .get("/plain", Handler.web_socket(plain))
    )
    for path in ("/forward", "/plain"):
        async with ws_connect(url(server, path)) as ws:
            await ws.close(4001, "see you")
    await asyncio.wait_for(forwarding.done.wait(), TIMEOUT)
    await asyncio.wait_for(plain.done.wait(), TIMEOUT)
    assert forwarding.events[-2:] == [Read(WebSocketFrame.close(4001, "see you")), Unregistered]
    assert plain.events[-2:] == [HandshakeComplete, Unregistered]
    # The engine answered the close frame either way (RFC 6455 5.5.1).
    assert forwarding.channels[0].close_code == plain.channels[0].close_code == 4001


async def test_forward_ping_and_pong_frames(served: Callable[..., Any]) -> None:
    async def react(channel: WebSocketChannel, event: ChannelEvent) -> None:
        if event == Read(WebSocketFrame.text("ping me")):
            await channel.send(WebSocketFrame.ping(b"from server"))
        elif event == Read(WebSocketFrame.pong(b"from server")):
            await channel.send("got pong")

    recorder = Recorder(react)
    config = WebSocketConfig(forward_ping_frames=True, forward_pong_frames=True)
    server = await served(Handler.web_socket(recorder, config))
    async with ws_connect(url(server), ping_interval=None) as ws:
        pong = await ws.ping(b"from client")
        await asyncio.wait_for(pong, TIMEOUT)  # the engine answered it
        await ws.send("ping me")
        assert await asyncio.wait_for(ws.recv(), TIMEOUT) == "got pong"
    await asyncio.wait_for(recorder.done.wait(), TIMEOUT)
    assert Read(WebSocketFrame.ping(b"from client")) in recorder.events
    assert Read(WebSocketFrame.pong(b"from server")) in recorder.events


async def test_pongs_are_dropped_by_default(served: Callable[..., Any]) -> None:
    async def react(channel: WebSocketChannel, event: ChannelEvent) -> None:
        if event == HandshakeComplete:
            await channel.send(WebSocketFrame.ping(b"1"))
            await asyncio.wait_for(channel.connection.ping(b"2"), TIMEOUT)
            await channel.send(WebSocketFrame.pong(b"unsolicited"))
            await channel.send("pinged")

    recorder = Recorder(react)
    server = await served(Handler.web_socket(recorder))
    async with ws_connect(url(server)) as ws:
        assert await asyncio.wait_for(ws.recv(), TIMEOUT) == "pinged"
    await asyncio.wait_for(recorder.done.wait(), TIMEOUT)
    assert recorder.events == [Registered, HandshakeComplete, Unregistered]


async def test_fragments_in_and_out(served: Callable[..., Any]) -> None:
    async def react(channel: WebSocketChannel, event: ChannelEvent) -> None:
        if event == Read(WebSocketFrame.Continuation(b"", True)):
            await channel.send(WebSocketFrame.text("frag", is_final=False))
            await channel.send(WebSocketFrame.continuation("men", False))
            await channel.send(WebSocketFrame.continuation("ted", True))
            await channel.send(WebSocketFrame.binary(b"a", is_final=False))
            await channel.send(WebSocketFrame.continuation(b"b", True))
            with pytest.raises(InvalidState):
                await channel.send(WebSocketFrame.continuation(b"c", True))
            await channel.send(WebSocketFrame.text("x", is_final=False))
            with pytest.raises(InvalidState):
                await channel.send("whole message while fragmenting")
            with pytest.raises(TypeError):
                await channel.send(WebSocketFrame.continuation(b"bytes in a text message", True))
            await channel.send(WebSocketFrame.continuation("y", True))  # still in progress
            await channel.send("still fine")

    recorder = Recorder(react)
    server = await served(Handler.web_socket(recorder, WebSocketConfig(fragments=True)))
    async with ws_connect(url(server), compression=None) as ws:
        await ws.send(["one", "two"])
        await ws.send([b"x", b"y", b""])
        assert await asyncio.wait_for(ws.recv(), TIMEOUT) == "fragmented"
        assert await asyncio.wait_for(ws.recv(), TIMEOUT) == b"ab"
        assert await asyncio.wait_for(ws.recv(), TIMEOUT) == "xy"
        assert await asyncio.wait_for(ws.recv(), TIMEOUT) == "still fine"
    await asyncio.wait_for(recorder.done.wait(), TIMEOUT)
    F = WebSocketFrame
    assert recorder.events[2:7] == [
        Read(F.text("one", is_final=False)),
        Read(F.continuation("two", False)),
        Read(F.continuation("", True)),
        Read(F.binary(b"x", is_final=False)),
        Read(F.continuation(b"y", False)),
    ]


async def test_engine_settings_through_the_config(served: Callable[..., Any]) -> None:
    recorder = Recorder()
    config = WebSocketConfig(
        subprotocols=["chat.v2", "chat.v1"],
        compression=None,
        max_size=100,
        forward_pong_frames=True,
        ping_interval=0.05,
    )
    server = await served(Handler.web_socket(recorder, config))
    async with ws_connect(url(server), subprotocols=["chat.v1"]) as ws:
        assert ws.subprotocol == "chat.v1"
        assert ws.response.headers.get("Sec-WebSocket-Extensions") is None  # compression off
        # Keepalive: the server's pings come, the client answers, the channel sees the pongs.
        for _ in range(100):
            if any(isinstance(e, ChannelEvent.Read) for e in recorder.events):
                break
            await asyncio.sleep(0.02)
        await ws.send("x" * 101)
        with pytest.raises(websockets.ConnectionClosedError):
            await asyncio.wait_for(ws.recv(), TIMEOUT)
        assert ws.close_code == 1009  # max_size
    await asyncio.wait_for(recorder.done.wait(), TIMEOUT)
    assert any(
        isinstance(e, ChannelEvent.Read) and isinstance(e.frame, WebSocketFrame.Pong)
        for e in recorder.events
    )
    assert recorder.channels[0].subprotocol == "chat.v1"
    # A protocol-level failure (1009 from our side) is delivered as an error.
    assert isinstance(recorder.events[-2], ChannelEvent.ExceptionCaught)
    assert recorder.events[-1] is Unregistered


async def test_server_wide_config_and_compression(served: Callable[..., Any]) -> None:
    recorder = Recorder()
    server = await served(Handler.web_socket(recorder), compression="deflate", max_size=50)
    async with ws_connect(url(server)) as ws:
        assert "permessage-deflate" in ws.response.headers["Sec-WebSocket-Extensions"]
        await ws.send("y" * 51)
        with pytest.raises(websockets.ConnectionClosedError):
            await asyncio.wait_for(ws.recv(), TIMEOUT)
        assert ws.close_code == 1009  # the server's max_size: the app left it to INHERIT


async def test_broken_connection_is_an_exception_caught(served: Callable[..., Any]) -> None:
    recorder = Recorder()
    server = await served(Handler.web_socket(recorder))
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(
        b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    assert (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)).startswith(
        b"HTTP/1.1 101"
    )
    writer.transport.abort()  # no closing handshake
    await asyncio.wait_for(recorder.done.wait(), TIMEOUT)
    assert recorder.events[:2] == [Registered, HandshakeComplete]
    error = recorder.events[2]
    assert isinstance(error, ChannelEvent.ExceptionCaught)
    assert isinstance(error.cause, ConnectionClosedError) and error.cause.code == 1006
    assert recorder.events[3:] == [Unregistered]


async def test_handler_error_closes_1011_after_exception_caught(
    served: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    boom = RuntimeError("boom in the handler")

    def react(channel: WebSocketChannel, event: ChannelEvent) -> None:
        if event == Read(WebSocketFrame.text("boom")):
            raise boom
        if isinstance(event, ChannelEvent.ExceptionCaught):
            # Delivered first, while the connection is still open.
            assert channel.is_open
            assert channel.close_code is None

    recorders: list[Recorder] = []

    async def app(channel: WebSocketChannel) -> str:
        recorder = Recorder(react)
        recorders.append(recorder)
        return await recorder(channel)

    server = await served(Handler.web_socket(app))
    with caplog.at_level(logging.ERROR, "tether"):
        async with ws_connect(url(server)) as other, ws_connect(url(server)) as ws:
            await ws.send("boom")
            with pytest.raises(websockets.ConnectionClosedError):
                await asyncio.wait_for(ws.recv(), TIMEOUT)
            assert ws.close_code == 1011
            # The server keeps serving the other connection, and new ones.
            await other.send("still here")
            async with ws_connect(url(server)) as third:
                await third.send("hello")
    events = recorders[1].events
    assert events[-3:] == [
        Read(WebSocketFrame.text("boom")),
        ChannelEvent.ExceptionCaught(boom),
        Unregistered,
    ]
    records = await logged(caplog, "boom in the handler")
    assert len(records) == 1 and records[0].exc_info is not None
    assert records[0].exc_info[1] is boom
    assert "error in WebSocket app handler" in records[0].getMessage()


async def test_error_outside_receive_all_closes_1011(
    served: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    async def app(channel: WebSocketChannel) -> None:
        assert await channel.receive() is Registered
        raise ValueError("no reason")

    server = await served(Handler.web_socket(app))
    with caplog.at_level(logging.ERROR, "tether"):
        async with ws_connect(url(server)) as ws:
            with pytest.raises(websockets.ConnectionClosedError):
                await asyncio.wait_for(ws.recv(), TIMEOUT)
            assert ws.close_code == 1011
        assert len(await logged(caplog, "no reason")) == 1


async def test_peer_gone_while_sending_is_quiet(
    served: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    stopped = asyncio.Event()

    async def app(channel: WebSocketChannel) -> None:
        try:
            await channel.connection.wait_closed()
            await channel.send("too late")
        finally:
            stopped.set()

    server = await served(Handler.web_socket(app))
    with caplog.at_level(logging.ERROR, "tether"):
        async with ws_connect(url(server)):
            pass
        await asyncio.wait_for(stopped.wait(), TIMEOUT)
        await asyncio.sleep(0.05)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


# ---------------------------------------------------------------------------
# The app as a client


async def test_client_against_our_server(served: Callable[..., Any]) -> None:
    seen_headers: list[str | None] = []

    async def server_app(channel: WebSocketChannel) -> None:
        seen_headers.append(channel.request.headers.get("X-Token"))
        async for event in channel:
            match event:
                case ChannelEvent.Read(WebSocketFrame.Text(text)):
                    await channel.send(text.upper())

    server = await served(Handler.web_socket(server_app))

    async def react(channel: WebSocketChannel, event: ChannelEvent) -> None:
        match event:
            case ChannelEvent.UserEventTriggered(UserEvent.HandshakeComplete):
                await channel.send("hello")
            case ChannelEvent.Read(WebSocketFrame.Text("HELLO")):
                await channel.shutdown()

    recorder = Recorder(react)
    client = await Handler.web_socket(recorder).connect(url(server), headers={"X-Token": "t0k"})
    assert await asyncio.wait_for(client.wait(), TIMEOUT) == "finished"
    assert seen_headers == ["t0k"]
    assert recorder.events == [
        Registered,
        HandshakeComplete,
        Read(WebSocketFrame.text("HELLO")),
        Unregistered,
    ]
    assert client.connections == 1 and client.done and not client.reconnecting
    assert recorder.channels[0].close_code == 1000


async def test_client_against_websockets_server() -> None:
    async def handler(ws: Any) -> None:
        await ws.send(f"token={ws.request.headers.get('X-Token')}")
        async for message in ws:
            await ws.send(message[::-1])

    def process_request(connection: Any, request: Any) -> Any:
        if request.path == "/forbidden":
            return connection.respond(403, "Forbidden\n")
        return None

    async with ws_serve(handler, "127.0.0.1", 0, process_request=process_request) as server:
        port = server.sockets[0].getsockname()[1]

        async def react(channel: WebSocketChannel, event: ChannelEvent) -> None:
            match event:
                case ChannelEvent.Read(WebSocketFrame.Text("token=abc")):
                    await channel.send("stressed")
                case ChannelEvent.Read(WebSocketFrame.Text("desserts")):
                    await channel.send(WebSocketFrame.close(1000, "thanks"))

        recorder = Recorder(react)
        app = Handler.web_socket(recorder)
        async with app.connect(f"ws://127.0.0.1:{port}/", headers=[("X-Token", "abc")]) as client:
            await asyncio.wait_for(client.wait(), TIMEOUT)
        assert recorder.events[2:] == [
            Read(WebSocketFrame.text("token=abc")),
            Read(WebSocketFrame.text("desserts")),
            Unregistered,
        ]
        # A refused upgrade: a clear exception that carries the response.
        with pytest.raises(InvalidStatus) as info:
            await app.connect(f"ws://127.0.0.1:{port}/forbidden")
        assert info.value.response.status == 403
        assert b"Forbidden" in info.value.response.body
        assert "403" in str(info.value)
        # reconnect=True does not retry a 403: retrying cannot help.
        with pytest.raises(InvalidStatus):
            await asyncio.wait_for(
                app.connect(f"ws://127.0.0.1:{port}/forbidden", reconnect=True), TIMEOUT
            )


async def test_client_refused_by_our_server(served: Callable[..., Any]) -> None:
    server = await served(
        Handler.web_socket(Recorder()),
        process_request=lambda c, r: tether.Response(403, body=b"no"),
    )
    recorder = Recorder()
    with pytest.raises(InvalidStatus) as info:
        await Handler.web_socket(recorder).connect(url(server))
    assert info.value.status == 403
    assert recorder.events == []  # the app never ran


async def test_client_reconnects_after_the_server_restarts() -> None:
    connected = asyncio.Queue[WebSocketChannel]()

    async def server_app(channel: WebSocketChannel) -> None:
        await channel.send("hi")
        await channel.receive_all(lambda event: None)

    first = await tether.serve(Handler.web_socket(server_app), "127.0.0.1", 0)
    port = first.port

    async def react(channel: WebSocketChannel, event: ChannelEvent) -> None:
        if event == Read(WebSocketFrame.text("hi")):
            await connected.put(channel)

    recorder = Recorder(react)
    retry = Retry(initial=0.05, cap=0.2, factor=2.0)
    client = await Handler.web_socket(recorder).connect(f"ws://127.0.0.1:{port}/", reconnect=retry)
    try:
        await asyncio.wait_for(connected.get(), TIMEOUT)
        first.close()  # 1001 to the client; the port is free again
        await asyncio.wait_for(first.wait_closed(), TIMEOUT)
        await asyncio.sleep(0.3)  # the client retries while nobody listens
        second = await tether.serve(Handler.web_socket(server_app), "127.0.0.1", port)
        try:
            channel = await asyncio.wait_for(connected.get(), TIMEOUT)
            assert channel is client.channel and channel.is_open
        finally:
            await client.close()
            second.close()
            await asyncio.wait_for(second.wait_closed(), TIMEOUT)
    finally:
        await client.close()
    assert client.connections == 2
    assert client.done
    assert await client.wait() == "finished"
    # Registered ... Unregistered once per connection.
    cycles = [e for e in recorder.events if e in (Registered, Unregistered)]
    assert cycles == [Registered, Unregistered, Registered, Unregistered]
    failed = [a for a in client.attempts if a.outcome == "failed"]
    assert failed and all(isinstance(a.error, OSError) for a in failed)


async def test_client_close_while_waiting_to_reconnect() -> None:
    async def server_app(channel: WebSocketChannel) -> None:
        await channel.shutdown(1012, "restarting")  # the server closes: reconnect

    server = await tether.serve(Handler.web_socket(server_app), "127.0.0.1", 0)
    recorder = Recorder()
    client = await Handler.web_socket(recorder).connect(
        url(server), reconnect=Retry(initial=5, jitter=False)
    )
    await asyncio.wait_for(recorder.done.wait(), TIMEOUT)
    await asyncio.sleep(0.05)
    assert not client.done  # waiting 5 s before the next attempt
    await asyncio.wait_for(client.close(), TIMEOUT)
    assert client.done and await client.wait() is None
    server.close()
    await asyncio.wait_for(server.wait_closed(), TIMEOUT)


async def test_client_handler_error_is_raised_by_wait(
    served: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    server = await served(Handler.web_socket(lambda channel: channel.receive_all(print)))

    async def app(channel: WebSocketChannel) -> None:
        raise KeyError("client side")

    with caplog.at_level(logging.ERROR, "tether"):
        client = await Handler.web_socket(app).connect(url(server), reconnect=True)
        with pytest.raises(KeyError):
            await asyncio.wait_for(client.wait(), TIMEOUT)
    assert client.channel is not None and client.channel.close_code == 1011
    assert client.connections == 1  # no reconnection after our own failure
    assert len(await logged(caplog, "client side")) == 1


async def test_client_handshake_timeout_event() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)  # never answers the upgrade
        await asyncio.sleep(TIMEOUT)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        recorder = Recorder()
        app = Handler.web_socket(recorder, WebSocketConfig(handshake_timeout=0.1))
        with pytest.raises(HandshakeTimeout):
            await asyncio.wait_for(app.connect(f"ws://127.0.0.1:{port}/"), TIMEOUT)
        assert recorder.events == [
            Registered,
            ChannelEvent.UserEventTriggered(UserEvent.HandshakeTimeout),
            Unregistered,
        ]
        with pytest.raises(InvalidState):
            recorder.channels[0].connection  # noqa: B018
        assert recorder.channels[0].request is None and recorder.channels[0].close_code is None

        # With reconnect, each timed-out attempt is one such cycle.
        recorder = Recorder()
        app = Handler.web_socket(recorder, WebSocketConfig(handshake_timeout=0.05))
        retry = Retry(initial=0.01, cap=0.01, max_attempts=2)
        with pytest.raises(HandshakeTimeout):
            await asyncio.wait_for(app.connect(f"ws://127.0.0.1:{port}/", reconnect=retry), 10)
        timeouts = recorder.events.count(
            ChannelEvent.UserEventTriggered(UserEvent.HandshakeTimeout)
        )
        assert timeouts == 2
    finally:
        server.close()


# ---------------------------------------------------------------------------
# HttpServer (ZIO's Server)


async def test_http_server_serves_until_stopped() -> None:
    assert Server is HttpServer
    assert (HttpServer.default.host, HttpServer.default.port) == ("0.0.0.0", 8080)

    async def app(channel: WebSocketChannel) -> None:
        await channel.receive_all(lambda event: None)

    loop = asyncio.get_running_loop()
    ready: asyncio.Future[tether.Server] = loop.create_future()
    stop: asyncio.Future[None] = loop.create_future()
    runner = HttpServer(host="127.0.0.1", port=0, config=WebSocketConfig(max_size=10))
    task = asyncio.create_task(
        runner.serve(Handler.web_socket(app), ready=ready.set_result, stop=stop)
    )
    server = await asyncio.wait_for(ready, TIMEOUT)
    assert server.options.max_size == 10
    async with ws_connect(url(server)) as ws:
        stop.set_result(None)
        with pytest.raises(websockets.ConnectionClosedOK):
            await asyncio.wait_for(ws.recv(), TIMEOUT)
        assert ws.close_code == 1001  # going away: a graceful shutdown
    await asyncio.wait_for(task, TIMEOUT)


async def test_http_server_class_level_serve_and_cancel() -> None:
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[tether.Server] = loop.create_future()
    task = asyncio.create_task(
        HttpServer.serve(
            Handler.web_socket(lambda channel: channel.receive_all(print)),
            host="127.0.0.1",
            port=0,
            ready=ready.set_result,
            handle_signals=False,
        )
    )
    server = await asyncio.wait_for(ready, TIMEOUT)
    async with ws_connect(url(server)) as ws:
        task.cancel()
        with pytest.raises(websockets.ConnectionClosedOK):
            await asyncio.wait_for(ws.recv(), TIMEOUT)
        assert ws.close_code == 1001
    with pytest.raises(asyncio.CancelledError):
        await task


def test_app_is_a_route_target_and_its_own_response() -> None:
    app = WebSocketApp(lambda channel: channel.shutdown())
    assert app.to_response() is app
    assert hasattr(app, "__tether_dispatch__")
    other = app.with_config(WebSocketConfig(max_size=1))
    assert other.handler is app.handler and other.config.max_size == 1
    assert app.config is WebSocketConfig.default
    assert "WebSocketApp" in repr(app)


async def test_second_error_while_handling_the_first(
    served: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    def react(channel: WebSocketChannel, event: ChannelEvent) -> None:
        if event == Read(WebSocketFrame.text("boom")):
            raise RuntimeError("first")
        if isinstance(event, ChannelEvent.ExceptionCaught):
            raise RuntimeError("second")

    recorder = Recorder(react)
    server = await served(Handler.web_socket(recorder))
    with caplog.at_level(logging.ERROR, "tether"):
        async with ws_connect(url(server)) as ws:
            await ws.send("boom")
            with pytest.raises(websockets.ConnectionClosedError):
                await asyncio.wait_for(ws.recv(), TIMEOUT)
            assert ws.close_code == 1011
        records = await logged(caplog, "first")
    assert len(records) == 1 and records[0].exc_info is not None
    assert str(records[0].exc_info[1].__context__) == "second"
    assert recorder.events[-1] is Unregistered


async def test_ping_payload_in_use_and_shutdown_mid_fragment(served: Callable[..., Any]) -> None:
    outcome: list[str] = []

    async def app(channel: WebSocketChannel) -> None:
        await channel.send(WebSocketFrame.ping(b"same"))
        try:
            await channel.send(WebSocketFrame.ping(b"same"))  # its pong is still awaited
        except ValueError:
            outcome.append("payload in use")
        await channel.send(WebSocketFrame.text("half", is_final=False))
        await channel.shutdown(1001, "leaving mid-message")
        outcome.append(f"closed {channel.close_code}")
        with pytest.raises(tether.ConnectionClosed):
            await channel.send("after")

    server = await served(Handler.web_socket(app))
    # The peer does not answer pings (a raw socket), so the first one stays pending.
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(
        b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    data = b""
    while b"\x88" not in data.partition(b"\r\n\r\n")[2]:  # until the close frame
        chunk = await asyncio.wait_for(reader.read(4096), TIMEOUT)
        assert chunk
        data += chunk
    frames = data.partition(b"\r\n\r\n")[2]
    assert frames.startswith(b"\x89\x04same")  # the ping
    assert b"\x01\x04half" in frames  # the first frame of the message, not final
    writer.write(b"\x88\x82abcd" + bytes(b ^ m for b, m in zip(b"\x03\xe9", b"ab", strict=True)))
    await asyncio.wait_for(reader.read(), TIMEOUT)
    writer.close()
    for _ in range(200):
        if len(outcome) == 2:
            break
        await asyncio.sleep(0.01)
    assert outcome == ["payload in use", "closed 1001"]


async def test_wait_before_start() -> None:
    client = Handler.web_socket(lambda channel: None).connect("ws://127.0.0.1:1/")
    with pytest.raises(RuntimeError):
        await client.wait()
    assert not client.done and "new" in repr(client)
    await client.close()  # nothing to close
