"""The request-builder face (sttp, seed 002) against tether's server and the
`websockets` library's server."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator
from typing import Any

import pytest

import tether
from faces_support import KINDS, serve
from tether import (
    ConcurrencyError,
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionClosedOK,
    HandshakeTimeout,
    InvalidState,
    InvalidStatus,
    WebSocketBufferFull,
    WebSocketEvent,
    WebSocketResponse,
    basic_request,
)
from tether.faces.request import (
    HighLevelHandler,
    MessageStream,
    MessageStreamHandler,
    WebSocket,
    WebSocketFrame,
    WebSocketRequest,
)

TIMEOUT = 10


@pytest.fixture(params=KINDS)
async def base(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    async with serve(request.param, subprotocols=["chat"]) as url:
        yield url


async def open_ws(url: str, **kwargs: Any) -> WebSocket:
    response = await asyncio.wait_for(basic_request.get(url).open_websocket(**kwargs), TIMEOUT)
    return response.result


# ----------------------------------------------------------------------
# The seed's example, translated


async def test_seed_send_receive_close(base: str) -> None:
    """sttp: ws.send(WebSocketFrame.text("Hello!")), receiveText(), close()."""
    response = await basic_request.get(base + "/").open_websocket()
    ws: WebSocket = response.result
    await ws.send(WebSocketFrame.text("Hello!"))
    received = await asyncio.wait_for(ws.receive_text(), TIMEOUT)
    assert received == "Hello!"
    await asyncio.wait_for(ws.close(), TIMEOUT)
    assert ws.connection.close_code == 1000
    assert not ws.is_open


# ----------------------------------------------------------------------
# The request description


def test_request_builders_return_new_immutable_descriptions() -> None:
    a = basic_request.get("ws://127.0.0.1:1/x")
    b = a.header("X-Token", "1")
    c = b.headers({"X-A": "a", "X-B": "b"})
    d = c.subprotocols("chat", "v2").timeout(3).compression(None).options(max_size=10)
    assert basic_request.uri is None
    assert a.uri == "ws://127.0.0.1:1/x" and a.http_method == "GET"
    assert a.header_items == () and b.header_items == (("X-Token", "1"),)
    assert c.header_items == (("X-Token", "1"), ("X-A", "a"), ("X-B", "b"))
    assert d.subprotocol_list == ("chat", "v2")
    assert d.open_timeout == 3 and c.open_timeout == 10.0
    assert d.compression_setting is None and c.compression_setting == "deflate"
    assert d.engine_options == (("max_size", 10),)
    assert b.header("x-token", "2", replace_existing=True).header_items == (("x-token", "2"),)
    assert c.headers([("X-A", "z")], replace_existing=True).header_items[-1] == ("X-A", "z")
    with pytest.raises(AttributeError, match="immutable"):
        a.uri = "ws://elsewhere/"  # type: ignore[misc]
    # Equal descriptions compare and hash equal.
    assert basic_request.get("ws://h/") == basic_request.get("ws://h/")
    assert hash(basic_request.get("ws://h/")) == hash(basic_request.get("ws://h/"))
    assert basic_request.get("ws://h/") != basic_request.get("ws://h/").timeout(1)
    assert basic_request != "GET"
    assert "ws://127.0.0.1:1/x" in repr(a)


def test_request_method() -> None:
    post = basic_request.method("post", "ws://h/")
    assert post.http_method == "POST" and post.uri == "ws://h/"
    assert post.method("get").uri == "ws://h/"
    with pytest.raises(ValueError, match="invalid HTTP method"):
        basic_request.method("GE T")


def test_request_builders_reject_bad_values() -> None:
    with pytest.raises(ValueError):
        basic_request.header("Bad Name", "x")
    with pytest.raises(ValueError):
        basic_request.header("X-Ok", "line\r\nbreak")
    with pytest.raises(ValueError, match="unique"):
        basic_request.subprotocols("chat", "chat")
    with pytest.raises(ValueError, match="token"):
        basic_request.subprotocols("two words")
    with pytest.raises(ValueError):
        basic_request.timeout(-1)
    with pytest.raises(TypeError):
        basic_request.compression("gzip")
    with pytest.raises(TypeError, match="unknown option"):
        basic_request.options(no_such_option=1)


async def test_open_websocket_refuses_bad_requests() -> None:
    with pytest.raises(ValueError, match="no URI"):
        await basic_request.open_websocket()
    with pytest.raises(ValueError, match="GET"):
        await basic_request.method("POST", "ws://127.0.0.1:9/").open_websocket()
    with pytest.raises(ValueError, match="buffer_capacity"):
        await basic_request.get("ws://127.0.0.1:9/").open_websocket(buffer_capacity=0)


async def test_response_and_request_options_reach_the_server(base: str) -> None:
    request = (
        basic_request.get(base + "/path?q=1")
        .header("X-Token", "secret")
        .subprotocols("chat")
        .timeout(5)
    )
    response = await asyncio.wait_for(request.open_websocket(), TIMEOUT)
    assert isinstance(response, WebSocketResponse)
    assert response.status == 101
    assert response.headers["Sec-WebSocket-Protocol"] == "chat"
    assert "permessage-deflate" in response.headers["Sec-WebSocket-Extensions"]
    ws = response.result
    assert ws.subprotocol == "chat"
    await ws.send_text("cmd:headers")
    seen = json.loads(await asyncio.wait_for(ws.receive_text(), TIMEOUT))
    assert seen == {"token": "secret", "path": "/path?q=1", "subprotocol": "chat"}
    await ws.close()


async def test_compression_off(base: str) -> None:
    response = await basic_request.get(base + "/").compression(None).open_websocket()
    assert "Sec-WebSocket-Extensions" not in response.headers
    await response.result.send_text("plain")
    assert await asyncio.wait_for(response.result.receive_text(), TIMEOUT) == "plain"
    await response.result.close()


async def test_timeout_applies_to_the_handshake() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)
        await asyncio.sleep(5)
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        request = basic_request.get(f"ws://127.0.0.1:{port}/").timeout(0.2)
        with pytest.raises(HandshakeTimeout):
            await asyncio.wait_for(request.open_websocket(), TIMEOUT)
    finally:
        server.close()
        await server.wait_closed()


# ----------------------------------------------------------------------
# Receiving


async def test_receive_frames_and_fragments(base: str) -> None:
    ws = await open_ws(base + "/")
    await ws.send_text("one")
    assert await ws.receive() == WebSocketFrame.Text("one", True)
    await ws.send_binary(b"\x00\xff")
    match await ws.receive():
        case WebSocketFrame.Binary(payload, is_final):
            assert (payload, is_final) == (b"\x00\xff", True)
        case other:
            pytest.fail(f"unexpected {other!r}")
    await ws.send_text("cmd:fragments")
    frames = []
    while not frames or not frames[-1].is_final:
        frames.append(await asyncio.wait_for(ws.receive(), TIMEOUT))
    assert all(isinstance(f, WebSocketFrame.Text) for f in frames)
    assert frames[0].is_final is False
    assert "".join(f.payload for f in frames) == "abcd"
    # receive_binary() assembles the binary message that follows.
    assert await asyncio.wait_for(ws.receive_binary(), TIMEOUT) == b"\x01\x02"
    await ws.close()


async def test_receive_text_and_binary_skip_the_other_kind(base: str) -> None:
    ws = await open_ws(base + "/")
    await ws.send_binary(b"skip me")
    await ws.send_text("text")
    assert await asyncio.wait_for(ws.receive_text(), TIMEOUT) == "text"
    await ws.send_text("skip me")
    await ws.send_binary(b"bin")
    assert await asyncio.wait_for(ws.receive_binary(), TIMEOUT) == b"bin"
    await ws.send_text("cmd:fragments")
    assert await asyncio.wait_for(ws.receive_message(), TIMEOUT) == "abcd"
    assert await asyncio.wait_for(ws.receive_message(), TIMEOUT) == b"\x01\x02"
    await ws.close()


async def test_receive_close_event_then_again(base: str) -> None:
    ws = await open_ws(base + "/")
    await ws.send_text("cmd:close:4000:bye")
    event = await asyncio.wait_for(ws.receive(), TIMEOUT)
    assert event == WebSocketEvent.Close(4000, "bye")
    match event:
        case WebSocketEvent.Close(code, reason):
            assert (code, reason) == (4000, "bye")
    assert await ws.receive() == event
    with pytest.raises(ConnectionClosedError) as info:
        await ws.receive_text()
    assert info.value.code == 4000


async def test_receive_text_raises_closed_ok_after_normal_close(base: str) -> None:
    ws = await open_ws(base + "/")
    await ws.send_text("cmd:close:1000:done")
    with pytest.raises(ConnectionClosedOK):
        await asyncio.wait_for(ws.receive_text(), TIMEOUT)
    with pytest.raises(ConnectionClosedOK):
        await asyncio.wait_for(ws.receive_binary(), TIMEOUT)


async def test_receive_raises_when_the_connection_breaks(base: str) -> None:
    ws = await open_ws(base + "/")
    await ws.send_text("cmd:drop")
    with pytest.raises(ConnectionClosedError) as info:
        await asyncio.wait_for(ws.receive(), TIMEOUT)
    assert info.value.code == 1006


async def test_concurrent_receive_is_refused(base: str) -> None:
    ws = await open_ws(base + "/")
    first = asyncio.ensure_future(ws.receive())
    await asyncio.sleep(0)
    with pytest.raises(ConcurrencyError):
        await ws.receive()
    await ws.send_text("x")
    assert await asyncio.wait_for(first, TIMEOUT) == WebSocketFrame.Text("x")
    await ws.close()


# ----------------------------------------------------------------------
# Sending


async def test_send_fragments_with_is_continuation(base: str) -> None:
    ws = await open_ws(base + "/")
    await ws.send(WebSocketFrame.text("Hel", is_final=False))
    await ws.send(WebSocketFrame.text("lo ", is_final=False), is_continuation=True)
    await ws.send(WebSocketFrame.text("there"), is_continuation=True)
    assert await asyncio.wait_for(ws.receive_text(), TIMEOUT) == "Hello there"
    await ws.send(WebSocketFrame.binary(b"\x01", is_final=False))
    await ws.send(WebSocketFrame.binary(b"\x02", is_final=True), is_continuation=True)
    assert await asyncio.wait_for(ws.receive_binary(), TIMEOUT) == b"\x01\x02"
    await ws.close()


async def test_send_misuse(base: str) -> None:
    ws = await open_ws(base + "/")
    with pytest.raises(ValueError, match="continuation"):
        await ws.send(WebSocketFrame.ping(b""), is_continuation=True)
    with pytest.raises(TypeError, match="WebSocketFrame"):
        await ws.send("not a frame")  # type: ignore[arg-type]
    await ws.send(WebSocketFrame.text("a", is_final=False))
    with pytest.raises(InvalidState):
        await ws.send_text("interleaved")
    await ws.send(WebSocketFrame.text("b"), is_continuation=True)
    assert await asyncio.wait_for(ws.receive_text(), TIMEOUT) == "ab"
    await ws.close()


async def test_ping_pong_frames(base: str) -> None:
    ws = await open_ws(base + "/")
    await ws.send(WebSocketFrame.ping(b"hi"))
    assert await asyncio.wait_for(ws.receive(control_frames=True), TIMEOUT) == (
        WebSocketFrame.Pong(b"hi")
    )
    # Without control_frames, pongs are skipped.
    await ws.send(WebSocketFrame.ping(b"again"))
    await ws.send_text("after")
    assert await asyncio.wait_for(ws.receive(), TIMEOUT) == WebSocketFrame.Text("after")
    # The server pings: tether answers, and receive() can show it.
    await ws.send_text("cmd:ping")
    assert await asyncio.wait_for(ws.receive(control_frames=True), TIMEOUT) == (
        WebSocketFrame.Ping(b"srv")
    )
    assert await asyncio.wait_for(ws.receive_text(), TIMEOUT) == "pong ok"
    # An unsolicited pong is allowed (RFC 6455 5.5.3).
    await ws.send(WebSocketFrame.pong(b"beat"))
    await ws.send(WebSocketFrame.close(1000, "bye"))
    event = await asyncio.wait_for(ws.receive(), TIMEOUT)
    assert isinstance(event, WebSocketEvent.Close) and event.code == 1000


@pytest.mark.parametrize("pong_on_ping", [True, False])
async def test_pong_on_ping_without_auto_pong(base: str, pong_on_ping: bool) -> None:
    request = basic_request.get(base + "/").options(auto_pong=False)
    ws = (await asyncio.wait_for(request.open_websocket(), TIMEOUT)).result
    await ws.send_text("cmd:ping")
    answer = await asyncio.wait_for(ws.receive_text(pong_on_ping=pong_on_ping), TIMEOUT)
    assert answer == ("pong ok" if pong_on_ping else "no pong")
    await ws.send_text("cmd:ping")
    await ws.send_binary(b"end")
    # receive_binary() meets the ping, then skips the text answer.
    assert await asyncio.wait_for(ws.receive_binary(pong_on_ping=pong_on_ping), TIMEOUT) == b"end"
    await ws.send_text("cmd:ping")
    answer = await asyncio.wait_for(ws.receive_message(pong_on_ping=pong_on_ping), TIMEOUT)
    assert answer == ("pong ok" if pong_on_ping else "no pong")
    await ws.close()


async def test_sending_on_a_closed_socket_raises(base: str) -> None:
    ws = await open_ws(base + "/")
    await ws.close()
    await ws.close()  # closing again does nothing
    with pytest.raises(ConnectionClosed):
        await ws.send_text("late")
    with pytest.raises(ConnectionClosed):
        await ws.send(WebSocketFrame.text("late", is_final=False))
    with pytest.raises(ConnectionClosed):
        await ws.send(WebSocketFrame.ping())


# ----------------------------------------------------------------------
# Bad input: refused upgrade, buffer overflow


async def test_refused_upgrade_carries_status_headers_and_body(base: str) -> None:
    with pytest.raises(InvalidStatus) as info:
        await asyncio.wait_for(basic_request.get(base + "/deny").open_websocket(), TIMEOUT)
    assert info.value.status == 403
    assert info.value.response.body == b"denied\n"
    assert info.value.response.headers["Content-Type"].startswith("text/plain")


async def test_buffer_overflow_fails_with_1008_and_raises(base: str) -> None:
    ws = await open_ws(base + "/", buffer_capacity=4)
    await ws.send_text("cmd:flood:50")
    await asyncio.wait_for(ws.connection.wait_closed(), TIMEOUT)
    with pytest.raises(WebSocketBufferFull) as info:
        await ws.receive()
    assert info.value.capacity == 4
    closed = ws.connection.closed_exception
    assert closed is not None and closed.sent is not None
    assert closed.sent.code == 1008
    assert ws.connection.close_code == 1008  # the server echoed it
    with pytest.raises(WebSocketBufferFull):
        await ws.receive_text()
    with pytest.raises(WebSocketBufferFull):
        await ws.receive()


async def test_overflow_while_waiting_wakes_the_receiver(base: str) -> None:
    ws = await open_ws(base + "/", buffer_capacity=1)

    async def receive_late() -> Any:
        await asyncio.sleep(0.5)  # let the flood arrive first
        return await ws.receive()

    await ws.send_text("cmd:flood:20")
    with pytest.raises(WebSocketBufferFull):
        await asyncio.wait_for(receive_late(), TIMEOUT)


async def test_unbounded_buffer(base: str) -> None:
    ws = await open_ws(base + "/", buffer_capacity=None)
    await ws.send_text("cmd:flood:300")
    await asyncio.sleep(0.3)
    received = [await asyncio.wait_for(ws.receive_text(), TIMEOUT) for _ in range(300)]
    assert received == [f"m{i}" for i in range(300)]
    await ws.close()


# ----------------------------------------------------------------------
# Handlers


async def test_message_stream_handler(base: str) -> None:
    response = await asyncio.wait_for(
        basic_request.get(base + "/").open_websocket(MessageStreamHandler()), TIMEOUT
    )
    stream = response.result
    assert isinstance(stream, MessageStream)
    await stream.send("a")
    await stream.send(b"b")
    await stream.send("cmd:fragments")
    await stream.send("cmd:close:1000:")
    received = []

    async def collect() -> None:
        async for message in stream:
            received.append(message)

    await asyncio.wait_for(collect(), TIMEOUT)
    assert received == ["a", b"b", "abcd", b"\x01\x02"]
    await stream.close()


async def test_message_stream_raises_on_error_close(base: str) -> None:
    stream = (await basic_request.get(base + "/").open_websocket(MessageStreamHandler())).result
    await stream.send("cmd:close:4001:nope")
    with pytest.raises(ConnectionClosedError):
        async for _ in stream:
            pass


async def test_custom_handler_gets_the_connection(base: str) -> None:
    class RawHandler:
        options: dict[str, Any] = {}

        def open(self, connection: tether.ClientConnection, capacity: int | None) -> Any:
            return (connection, capacity)

    response = await basic_request.get(base + "/").open_websocket(RawHandler(), 7)
    connection, capacity = response.result
    assert capacity == 7
    await connection.send("raw")
    assert await asyncio.wait_for(connection.recv(), TIMEOUT) == "raw"
    await connection.close()


async def test_a_failing_handler_aborts_the_connection(base: str) -> None:
    class Broken:
        options: dict[str, Any] = {}

        def open(self, connection: tether.ClientConnection, capacity: int | None) -> Any:
            self.connection = connection
            raise RuntimeError("nope")

    broken = Broken()
    with pytest.raises(RuntimeError, match="nope"):
        await basic_request.get(base + "/").open_websocket(broken)
    await asyncio.wait_for(broken.connection.wait_closed(), TIMEOUT)


def test_default_handler_options() -> None:
    assert HighLevelHandler.options == {"fragments": True, "control_frames": True}
    assert isinstance(basic_request, WebSocketRequest)


async def test_no_thread_is_started(base: str) -> None:
    before = set(threading.enumerate())
    ws = await open_ws(base + "/")
    await ws.send_text("x")
    assert await asyncio.wait_for(ws.receive_text(), TIMEOUT) == "x"
    assert set(threading.enumerate()) <= before
    assert "OPEN" in repr(ws)
    await ws.close()
    assert "CLOSED" in repr(ws)
