"""The callback face as a client: the event-listener ``WebSocket`` (seed 003),
``Data``, and Vapor's callbacks (seed 004), against tether's server and the
`websockets` library's server, from async code and from synchronous code."""

from __future__ import annotations

import asyncio
import logging
import pathlib
import ssl
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from websockets.asyncio.server import serve as ws_serve

import tether
from faces_support import (
    KINDS,
    serve,
    serve_in_thread,
    settled_thread_count,
    wait_for_thread_count,
)
from tether import ConnectionClosed, ConnectionClosedError, Data, InvalidState, InvalidStatus
from tether import WebSocket as TetherWebSocket
from tether.faces.callbacks import CloseFuture, WebSocket

TIMEOUT = 10


@pytest.fixture(params=KINDS)
async def base(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    async with serve(request.param) as url:
        yield url


class Recorder:
    """Records the events of a WebSocket, and lets a test wait for them."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []
        self.changed = threading.Condition()

    def __call__(self, name: str) -> Callable[..., None]:
        def record(*args: Any) -> None:
            with self.changed:
                self.events.append((name, args[0] if len(args) == 1 else args))
                self.changed.notify_all()

        return record

    def listen(self, ws: WebSocket) -> Recorder:
        for name in ("open", "error", "message", "close"):
            ws.add_event_listener(name, self(name))  # type: ignore[arg-type]
        return self

    def names(self) -> list[str]:
        return [name for name, _ in self.events]

    def of(self, name: str) -> list[Any]:
        return [value for event, value in self.events if event == name]

    async def until(self, predicate: Callable[[Recorder], bool]) -> None:
        deadline = time.monotonic() + TIMEOUT
        while not predicate(self):
            assert time.monotonic() < deadline, f"timed out; events: {self.events}"
            await asyncio.sleep(0.01)

    def wait(self, predicate: Callable[[Recorder], bool]) -> None:
        with self.changed:
            assert self.changed.wait_for(lambda: predicate(self), TIMEOUT), self.events


# ----------------------------------------------------------------------
# Data


def test_data_constructors_and_readers(tmp_path: pathlib.Path) -> None:
    assert Data.from_string("héllo").get_bytes() == "héllo".encode()
    assert Data.from_string("héllo", encoding="latin-1").get_bytes() == b"h\xe9llo"
    assert Data.from_bytes(b"\x00\x01").get_bytes() == b"\x00\x01"
    assert Data.from_bytes([1, 2, 255]).get_bytes() == b"\x01\x02\xff"
    assert Data.from_bytes(bytearray(b"ab")) == Data(b"ab")
    assert Data.from_base64_string("aGk=") == Data(b"hi")
    assert Data(b"hi").to_base64_string() == "aGk="
    assert Data.from_string("é").to_raw_string() == "é"
    assert Data(b"\xe9").to_raw_string("latin-1") == "é"
    path = tmp_path / "blob.bin"
    path.write_bytes(b"\x00file\xff")
    assert Data.from_file(path).get_bytes() == b"\x00file\xff"
    assert Data.from_file(str(path)) == Data.from_file(path)
    assert bytes(Data(b"xy")) == b"xy"
    assert "2 bytes" in repr(Data(b"xy"))
    assert "..." in repr(Data(bytes(100)))


def test_data_equality_and_len() -> None:
    assert Data(b"a") == Data.from_string("a")
    assert Data(b"a") != Data(b"b")
    assert Data(b"a") != b"a"  # a Data equals only a Data
    assert hash(Data(b"a")) == hash(Data.from_bytes(b"a"))
    assert len(Data(b"abc")) == 3 and len(Data()) == 0
    assert {Data(b"x"), Data(b"x")} == {Data(b"x")}


def test_data_bad_input(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ValueError, match="base64"):
        Data.from_base64_string("not base64!")
    with pytest.raises(FileNotFoundError):
        Data.from_file(tmp_path / "missing")
    with pytest.raises(UnicodeDecodeError):
        Data(b"\xff").to_raw_string()


# ----------------------------------------------------------------------
# The seed's examples, translated (async code: no thread)


async def test_seed_event_listeners(base: str) -> None:
    """The TS example: open -> send, message, error, close listeners."""
    before = set(threading.enumerate())
    ws = TetherWebSocket(base + "/socket")
    log = Recorder()

    def on_open() -> None:
        log("open")()
        ws.send("Hello, Server!")

    ws.add_event_listener("open", on_open)
    ws.add_event_listener("message", log("message"))
    ws.add_event_listener("error", log("error"))
    ws.add_event_listener("close", log("close"))
    await log.until(lambda r: "message" in r.names())
    assert set(threading.enumerate()) <= before  # no thread from async code
    # "Closing the WebSocket Connection" with a custom reason.
    future = ws.close(1000, "Closing connection after test")
    assert future is ws.on_close
    assert await asyncio.wait_for(ws.on_close, TIMEOUT) == 1000
    assert log.events == [
        ("open", ()),
        ("message", "Hello, Server!"),
        ("close", log.of("close")[0]),
    ]
    assert ws.state is tether.State.CLOSED


async def test_seed_binary_data(base: str) -> None:
    """Sending Data.from_string(...) sends binary; binary arrives as Data."""
    ws = WebSocket(base + "/")
    log = Recorder().listen(ws)
    ws.add_event_listener("open", lambda: ws.send(Data.from_string("some message")))
    await log.until(lambda r: bool(r.of("message")))
    message = log.of("message")[0]
    assert isinstance(message, Data)
    assert message.get_bytes() == b"some message"
    ws.send(b"raw")
    ws.send(bytearray(b"ba"))
    ws.send(memoryview(b"mv"))
    await log.until(lambda r: len(r.of("message")) == 4)
    assert log.of("message")[1:] == [Data(b"raw"), Data(b"ba"), Data(b"mv")]
    await asyncio.wait_for(ws.close(), TIMEOUT)


# ----------------------------------------------------------------------
# Properties and listeners


async def test_event_properties_run_before_listeners_in_order(base: str) -> None:
    ws = WebSocket(base + "/")
    order: list[str] = []
    assert ws.onopen is None and ws.onmessage is None
    ws.onmessage = lambda message: order.append(f"property {message}")
    ws.add_event_listener("message", lambda message: order.append(f"first {message}"))
    second = lambda message: order.append(f"second {message}")  # noqa: E731
    ws.add_event_listener("message", second)
    ws.add_event_listener("message", second)  # added once only
    removed = lambda message: order.append("removed")  # noqa: E731
    ws.add_event_listener("message", removed)
    ws.remove_event_listener("message", removed)
    ws.remove_event_listener("message", removed)  # not there: nothing
    opened = asyncio.Event()
    ws.onopen = opened.set
    assert ws.onopen == opened.set
    closed: list[str] = []
    errors: list[BaseException] = []
    ws.onclose = closed.append
    ws.onerror = errors.append
    ws.send("x")
    await asyncio.wait_for(opened.wait(), TIMEOUT)
    deadline = time.monotonic() + TIMEOUT
    while len(order) < 3 and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert order == ["property x", "first x", "second x"]
    ws.onmessage = None
    assert ws.onmessage is None
    await asyncio.wait_for(ws.close(), TIMEOUT)
    assert closed == [""] and errors == []


def test_listener_arguments_are_checked() -> None:
    ws = WebSocket.__new__(WebSocket)
    ws._url = "ws://127.0.0.1:9/"
    ws._setup()
    with pytest.raises(ValueError, match="unknown event 'data'"):
        ws.add_event_listener("data", print)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown event"):
        ws.remove_event_listener("opened", print)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="callable"):
        ws.add_event_listener("open", "not callable")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="onmessage must be callable"):
        ws.onmessage = 42  # type: ignore[assignment]
    with pytest.raises(TypeError, match="str, bytes or Data"):
        ws.send(42)  # type: ignore[arg-type]
    with pytest.raises(AttributeError):
        ws.url = "ws://elsewhere/"  # type: ignore[misc]
    assert ws.url == "ws://127.0.0.1:9/"


async def test_url_state_and_handshake_properties(base: str) -> None:
    ws = WebSocket(base + "/path", subprotocols=None)
    assert ws.url == base + "/path"
    assert ws.state is tether.State.CONNECTING
    assert ws.connection is None and ws.request is None and ws.response is None
    assert ws.subprotocol is None and ws.close_code is None and ws.ping_interval is None
    opened = asyncio.Event()
    ws.onopen = opened.set
    await asyncio.wait_for(opened.wait(), TIMEOUT)
    assert ws.state is tether.State.OPEN
    assert ws.request is not None and ws.request.path == "/path"
    assert ws.response is not None and ws.response.status == 101
    assert ws.buffered_amount == 0
    assert ws.close_code is None
    assert "OPEN" in repr(ws)
    await asyncio.wait_for(ws.close(), TIMEOUT)
    assert ws.close_code == 1000 and ws.close_reason == ""


async def test_sending_before_open_is_queued_in_order(base: str) -> None:
    ws = WebSocket(base + "/")
    log = Recorder().listen(ws)
    ws.add_event_listener("open", lambda: ws.send("c"))
    ws.send("a")
    ws.send(Data(b"b"))
    assert ws.buffered_amount == 2
    await log.until(lambda r: len(r.of("message")) == 3)
    assert log.of("message") == ["a", Data(b"b"), "c"]
    await asyncio.wait_for(ws.close(), TIMEOUT)


# ----------------------------------------------------------------------
# Closing and bad input


async def test_close_rejects_bad_codes_and_long_reasons(base: str) -> None:
    ws = WebSocket(base + "/")
    with pytest.raises(ValueError, match=r"1000, 1001, 1002 or 1003, not 1005.*never sent"):
        ws.close(1005)
    for code in (999, 1004, 1006, 1008, 3000, 4000):
        with pytest.raises(ValueError, match="close code must be"):
            ws.close(code)
    with pytest.raises(ValueError, match="at most 123 bytes of UTF-8, not 124"):
        ws.close(1000, "é" * 62)
    with pytest.raises(ValueError, match="not 124"):
        ws.close(1000, "x" * 124)
    opened = asyncio.Event()
    ws.onopen = opened.set
    await asyncio.wait_for(opened.wait(), TIMEOUT)
    assert ws.state is tether.State.OPEN  # the bad calls changed nothing
    ws.close(1001, "é" * 61 + "x")  # 123 bytes: fine
    assert await asyncio.wait_for(ws.on_close, TIMEOUT) == 1001
    ws.close()  # closing a closed socket does nothing
    ws.close(1002, "again")
    assert ws.close_code == 1001


@pytest.mark.parametrize("code", [1000, 1001, 1002, 1003])
async def test_close_codes_of_the_seed(base: str, code: int) -> None:
    ws = await WebSocket.connect(base + "/")
    assert await asyncio.wait_for(ws.close(code), TIMEOUT) == code


async def test_sending_on_a_closed_socket_raises(base: str) -> None:
    ws = await WebSocket.connect(base + "/")
    ws.close()
    with pytest.raises(ConnectionClosed):
        ws.send("closing")  # closing already
    await asyncio.wait_for(ws.on_close, TIMEOUT)
    with pytest.raises(ConnectionClosed):
        ws.send("closed")
    with pytest.raises(ConnectionClosed):
        ws.send_ping()


async def test_refused_upgrade_fires_error_then_close(base: str) -> None:
    ws = WebSocket(base + "/deny")
    log = Recorder().listen(ws)
    ws.send("dropped")
    assert await asyncio.wait_for(ws.on_close, TIMEOUT) == 1006
    assert log.names() == ["error", "close"]
    error = log.of("error")[0]
    assert isinstance(error, InvalidStatus) and error.status == 403
    assert ws.state is tether.State.CLOSED
    assert ws.close_code == 1006 and ws.close_reason == "the connection never opened"
    assert ws.buffered_amount == 0
    with pytest.raises(InvalidState):
        ws.send("too late")
    with pytest.raises(InvalidState):
        ws.send_ping()
    with pytest.raises(InvalidState):
        ws.ping_interval = 1


async def test_unreachable_server_fires_error() -> None:
    probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    ws = WebSocket(f"ws://127.0.0.1:{port}/")
    log = Recorder().listen(ws)
    assert await asyncio.wait_for(ws.on_close, TIMEOUT) == 1006
    assert log.names() == ["error", "close"]
    assert isinstance(log.of("error")[0], OSError)


async def test_close_while_connecting(base: str) -> None:
    ws = WebSocket(base + "/")
    log = Recorder().listen(ws)
    ws.send("never sent")
    ws.close()
    assert await asyncio.wait_for(ws.on_close, TIMEOUT) == 1006
    assert log.names() == ["close"]
    assert ws.state is tether.State.CLOSED


async def test_a_raising_listener_fails_the_socket_with_1011(
    base: str, caplog: pytest.LogCaptureFixture
) -> None:
    ws = WebSocket(base + "/")
    log = Recorder().listen(ws)

    def explode(message: Any) -> None:
        raise RuntimeError(f"boom on {message}")

    ws.onopen = lambda: ws.send("hi")
    ws.onmessage = explode
    with caplog.at_level(logging.ERROR, logger="tether"):
        assert await asyncio.wait_for(ws.on_close, TIMEOUT) == 1011
    errors = log.of("error")
    assert len(errors) == 1 and str(errors[0]) == "boom on hi"
    assert log.names()[-1] == "close"
    assert "message" not in log.names()  # the listeners after the failing one did not run
    assert sum("closing with 1011" in r.getMessage() for r in caplog.records) == 1


async def test_a_raising_open_listener_and_error_listener(
    base: str, caplog: pytest.LogCaptureFixture
) -> None:
    ws = WebSocket(base + "/")
    closed: list[str] = []

    def bad_open() -> None:
        raise ValueError("bad open")

    def bad_error(error: BaseException) -> None:
        raise RuntimeError("bad error listener")

    ws.onopen = bad_open
    ws.onerror = bad_error
    ws.onclose = closed.append
    with caplog.at_level(logging.ERROR, logger="tether"):
        assert await asyncio.wait_for(ws.on_close, TIMEOUT) == 1011
    assert closed == ["internal error"] or closed == [""]
    messages = [r.getMessage() for r in caplog.records]
    assert any("error listener" in m for m in messages)


async def test_abnormal_closure_fires_error_then_close(base: str) -> None:
    ws = await WebSocket.connect(base + "/")
    log = Recorder().listen(ws)
    ws.send("cmd:drop")
    assert await asyncio.wait_for(ws.on_close, TIMEOUT) == 1006
    assert log.names() == ["error", "close"]
    assert isinstance(log.of("error")[0], ConnectionClosedError)


async def test_server_close_code_and_reason(base: str) -> None:
    ws = await WebSocket.connect(base + "/")
    reasons: list[str] = []
    ws.onclose = reasons.append
    ws.send("cmd:close:1001:going")
    assert await asyncio.wait_for(ws.on_close, TIMEOUT) == 1001
    assert reasons == ["going"] and ws.close_reason == "going"


# ----------------------------------------------------------------------
# Vapor's client callbacks


async def test_vapor_client_on_text_and_on_close(base: str) -> None:
    """The Vapor client example: onText, send, wait for onClose."""
    ws = await WebSocket.connect(base + "/")
    echoed: list[str] = []

    @ws.on_text
    def _(ws: WebSocket, text: str) -> None:
        echoed.append(text)
        ws.close()

    ws.send("Hello, world!")
    code = await asyncio.wait_for(ws.on_close, TIMEOUT)
    assert (code, echoed) == (1000, ["Hello, world!"])
    assert ws.on_close.done() and ws.on_close.code == 1000
    assert "1000" in repr(ws.on_close)


async def test_vapor_on_binary_and_replies_through_the_argument(base: str) -> None:
    ws = await WebSocket.connect(base + "/")
    received: list[bytes] = []

    def on_binary(sock: WebSocket, data: bytes) -> None:
        received.append(data)
        if len(received) == 1:
            sock.send(data + b"!")
        else:
            sock.close()

    assert ws.on_binary(on_binary) is on_binary
    ws.send(b"\x00")
    assert await asyncio.wait_for(ws.on_close, TIMEOUT) == 1000
    assert received == [b"\x00", b"\x00!"]


async def test_messages_sent_at_once_reach_callbacks_set_after_connect(base: str) -> None:
    ws = await WebSocket.connect(base + "/")
    ws.send("cmd:flood:5")
    await asyncio.sleep(0.2)  # the flood arrives before any callback is set...
    # ...and is dropped (as in a browser): only callbacks set before the next
    # await after connect() are guaranteed to see the first messages.
    got: list[str] = []
    ws.on_text(lambda ws, text: got.append(text))
    ws.send("late")
    deadline = time.monotonic() + TIMEOUT
    while not got and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert got == ["late"]
    await asyncio.wait_for(ws.close(), TIMEOUT)


async def test_callbacks_set_right_after_connect_see_the_first_message() -> None:
    async def greeter(ws: tether.Connection) -> None:
        await ws.send("Connected")
        await ws.wait_closed()

    async with tether.serve(greeter, "127.0.0.1", 0) as server:
        ws = await WebSocket.connect(f"ws://127.0.0.1:{server.port}/")
        first = asyncio.get_running_loop().create_future()
        ws.on_text(lambda ws, text: first.done() or first.set_result(text))
        assert await asyncio.wait_for(first, TIMEOUT) == "Connected"
        await asyncio.wait_for(ws.close(), TIMEOUT)


async def test_a_server_that_sends_and_closes_at_once() -> None:
    """The greeting and the close may both arrive before delivery starts:
    the greeting is still delivered, then the close."""

    async def quick(ws: tether.Connection) -> None:
        await ws.send("bye-bye")

    async with tether.serve(quick, "127.0.0.1", 0) as server:
        for _ in range(5):
            ws = await WebSocket.connect(f"ws://127.0.0.1:{server.port}/")
            texts: list[str] = []
            ws.on_text(lambda ws, text, texts=texts: texts.append(text))
            assert await asyncio.wait_for(ws.on_close, TIMEOUT) == 1000
            assert texts == ["bye-bye"]


async def test_cancelling_connect_gives_up_cleanly() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)
        await asyncio.sleep(5)
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        attempt = asyncio.ensure_future(WebSocket.connect(f"ws://127.0.0.1:{port}/"))
        await asyncio.sleep(0.1)
        attempt.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(attempt, TIMEOUT)
    finally:
        server.close()
        await server.wait_closed()


async def test_connect_with_host_port_path(base: str) -> None:
    port = int(base.rsplit(":", 1)[1])
    ws = await WebSocket.connect(host="127.0.0.1", port=port, path="/where")
    assert ws.url == f"ws://127.0.0.1:{port}/where"
    assert ws.request is not None and ws.request.path == "/where"
    await asyncio.wait_for(ws.close(), TIMEOUT)
    with pytest.raises(TypeError, match="url or host"):
        await WebSocket.connect()
    with pytest.raises(TypeError, match="not both"):
        await WebSocket.connect(base + "/", host="127.0.0.1")


@pytest.mark.parametrize("kind", KINDS)
async def test_connect_with_tls(
    kind: str, server_ssl: ssl.SSLContext, client_ssl: ssl.SSLContext
) -> None:
    async with serve(kind, ssl=server_ssl) as base:
        port = int(base.rsplit(":", 1)[1])
        ws = await WebSocket.connect(host="127.0.0.1", port=port, tls=True, ssl=client_ssl)
        assert ws.url.startswith("wss://127.0.0.1:")
        got = asyncio.get_running_loop().create_future()
        ws.on_text(lambda ws, text: got.set_result(text))
        ws.send("secure")
        assert await asyncio.wait_for(got, TIMEOUT) == "secure"
        await asyncio.wait_for(ws.close(), TIMEOUT)
    with pytest.raises(TypeError):
        await WebSocket.connect(host="::1", port=1, tls=True, bad_option=1)


async def test_connect_failure_raises_with_the_status(base: str) -> None:
    with pytest.raises(InvalidStatus) as info:
        await asyncio.wait_for(WebSocket.connect(base + "/deny"), TIMEOUT)
    assert info.value.status == 403


async def test_send_ping_and_on_pong(base: str) -> None:
    ws = await WebSocket.connect(base + "/")
    pongs = asyncio.Queue[bytes]()
    ws.on_pong(lambda ws, data: pongs.put_nowait(data))
    ws.send_ping(b"are you there")
    assert await asyncio.wait_for(pongs.get(), TIMEOUT) == b"are you there"
    # Messages still reach on_text once the reader has taken over.
    texts = asyncio.Queue[str]()
    ws.on_text(lambda ws, text: texts.put_nowait(text))
    ws.send("still here")
    assert await asyncio.wait_for(texts.get(), TIMEOUT) == "still here"
    await asyncio.wait_for(ws.close(), TIMEOUT)


async def test_on_ping(base: str) -> None:
    ws = await WebSocket.connect(base + "/")
    pings = asyncio.Queue[bytes]()
    texts = asyncio.Queue[str]()
    ws.on_ping(lambda ws, data: pings.put_nowait(data))
    ws.on_text(lambda ws, text: texts.put_nowait(text))
    ws.send("cmd:ping")
    assert await asyncio.wait_for(pings.get(), TIMEOUT) == b"srv"
    assert await asyncio.wait_for(texts.get(), TIMEOUT) == "pong ok"  # tether answered
    await asyncio.wait_for(ws.close(), TIMEOUT)


async def test_a_raising_on_ping_fails_with_1011(base: str) -> None:
    ws = await WebSocket.connect(base + "/")

    def bad(ws: WebSocket, data: bytes) -> None:
        raise RuntimeError("bad ping callback")

    ws.on_ping(bad)
    ws.send("cmd:ping")
    assert await asyncio.wait_for(ws.on_close, TIMEOUT) == 1011


async def test_ping_interval_keeps_a_healthy_connection_open(base: str) -> None:
    ws = await WebSocket.connect(base + "/", ping_interval=None)
    assert ws.ping_interval is None
    pongs = asyncio.Queue[bytes]()
    ws.on_pong(lambda ws, data: pongs.put_nowait(data))
    ws.ping_interval = 0.05
    assert ws.ping_interval == 0.05
    for _ in range(3):  # keepalive pings, answered
        await asyncio.wait_for(pongs.get(), TIMEOUT)
    assert ws.state is tether.State.OPEN
    ws.ping_interval = None
    with pytest.raises(ValueError, match="positive"):
        ws.ping_interval = 0
    await asyncio.wait_for(ws.close(), TIMEOUT)


async def test_ping_interval_without_pong_closes_with_1006() -> None:
    async def hold(ws: tether.Connection) -> None:
        await ws.wait_closed()

    # A server that never answers pings.
    async with tether.serve(hold, "127.0.0.1", 0, auto_pong=False) as server:
        ws = await WebSocket.connect(f"ws://127.0.0.1:{server.port}/", ping_interval=None)
        reasons: list[str] = []
        ws.onclose = reasons.append
        ws.ping_interval = 0.1
        assert await asyncio.wait_for(ws.on_close, TIMEOUT) == 1006
        assert ws.close_code == 1006
        assert "no pong" in reasons[0] and "0.1 s" in reasons[0]


async def test_ping_interval_option_at_connect() -> None:
    async def hold(ws: tether.Connection) -> None:
        await ws.wait_closed()

    async with tether.serve(hold, "127.0.0.1", 0, auto_pong=False) as server:
        url = f"ws://127.0.0.1:{server.port}/"
        ws = await WebSocket.connect(url, ping_interval=0.1, ping_timeout=0.1)
        assert ws.ping_interval == 0.1
        assert await asyncio.wait_for(ws.on_close, TIMEOUT) == 1006


async def test_close_future_cannot_be_waited_on_its_own_loop(base: str) -> None:
    ws = await WebSocket.connect(base + "/")
    assert isinstance(ws.on_close, CloseFuture)
    with pytest.raises(RuntimeError, match="own event loop"):
        ws.on_close.wait(0.1)
    assert ws.on_close.code is None and not ws.on_close.done()
    assert "pending" in repr(ws.on_close)
    await asyncio.wait_for(ws.close(), TIMEOUT)
    assert ws.on_close.wait(0) == 1000  # done: fine anywhere


async def test_no_thread_and_the_callbacks_run_on_the_loop(base: str) -> None:
    before = set(threading.enumerate())
    ws = await WebSocket.connect(base + "/")
    where: list[threading.Thread] = []
    ws.on_text(lambda ws, text: where.append(threading.current_thread()))
    ws.send("x")
    deadline = time.monotonic() + TIMEOUT
    while not where and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert where == [threading.current_thread()]
    assert set(threading.enumerate()) <= before
    await asyncio.wait_for(ws.close(), TIMEOUT)


async def test_a_foreign_server_close_frame_with_1003() -> None:
    async def refuse_binary(ws: Any) -> None:
        async for message in ws:
            if isinstance(message, bytes):
                await ws.close(1003, "text only")

    async with ws_serve(refuse_binary, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        ws = await WebSocket.connect(f"ws://127.0.0.1:{port}/")
        reasons: list[str] = []
        errors: list[BaseException] = []
        ws.onclose = reasons.append
        ws.onerror = errors.append
        ws.send(Data(b"\x00"))
        assert await asyncio.wait_for(ws.on_close, TIMEOUT) == 1003
        assert reasons == ["text only"]
        assert errors == []  # a clean closing handshake, whatever its code


# ----------------------------------------------------------------------
# From synchronous code: a background thread that ends with the socket


@pytest.mark.parametrize("kind", KINDS)
def test_sync_code_event_listeners_on_a_thread_that_ends(kind: str) -> None:
    with serve_in_thread(kind) as base:
        threads = settled_thread_count()
        ws = WebSocket(base + "/")
        log = Recorder().listen(ws)
        where: list[threading.Thread] = []
        ws.onopen = lambda: where.append(threading.current_thread())
        ws.send("queued before open")
        ws.send(Data.from_string("bin"))
        log.wait(lambda r: len(r.of("message")) == 2)
        assert threading.active_count() == threads + 1
        assert where[0] is not threading.main_thread()
        assert ws.buffered_amount == 0  # asked on the socket's thread
        assert log.of("message") == ["queued before open", Data(b"bin")]
        ws.close(1000, "done")
        assert ws.on_close.wait(TIMEOUT) == 1000
        assert wait_for_thread_count(threads) == threads
        assert log.names()[-1] == "close"
        with pytest.raises(ConnectionClosed):
            ws.send("after the thread ended")
        ws.close()  # nothing


@pytest.mark.parametrize("kind", KINDS)
def test_sync_code_thread_ends_when_the_server_closes(kind: str) -> None:
    with serve_in_thread(kind) as base:
        threads = settled_thread_count()
        ws = WebSocket(base + "/")
        ws.send("cmd:close:1000:bye")
        assert ws.on_close.wait(TIMEOUT) == 1000
        assert wait_for_thread_count(threads) == threads


def test_sync_code_refused_upgrade_and_wait_timeout() -> None:
    with serve_in_thread("tether") as base:
        threads = settled_thread_count()
        ws = WebSocket(base + "/deny")
        assert ws.on_close.wait(TIMEOUT) == 1006
        assert wait_for_thread_count(threads) == threads
        ok = WebSocket(base + "/")
        with pytest.raises(TimeoutError):
            ok.on_close.wait(0.05)
        ok.close()
        assert ok.on_close.wait(TIMEOUT) == 1000
        assert wait_for_thread_count(threads) == threads


def test_sync_code_ping_interval_and_on_pong_cross_threads() -> None:
    with serve_in_thread("websockets") as base:
        ws = WebSocket(base + "/", ping_interval=None)
        opened = threading.Event()
        ws.onopen = opened.set
        assert opened.wait(TIMEOUT)
        pongs: list[bytes] = []
        got = threading.Event()
        ws.on_pong(lambda ws, data: (pongs.append(data), got.set()))
        ws.send_ping(b"x")
        assert got.wait(TIMEOUT) and pongs == [b"x"]
        ws.ping_interval = 5
        assert ws.ping_interval == 5
        ws.close()
        assert ws.on_close.wait(TIMEOUT) == 1000


def test_sync_code_late_open_listener_runs_and_messages_wait() -> None:
    """In a script, the socket may open before the next line adds its
    listeners: a late open listener runs at once, and messages wait for
    the first message callback."""
    with serve_in_thread("tether") as base:
        ws = WebSocket(base + "/")
        deadline = time.monotonic() + TIMEOUT
        while ws.state is not tether.State.OPEN and time.monotonic() < deadline:
            time.sleep(0.01)
        ws.send("cmd:flood:3")
        time.sleep(0.2)  # the messages arrive while no message callback is set
        opened = threading.Event()
        also: list[str] = []
        ws.onopen = opened.set
        ws.add_event_listener("open", lambda: also.append("open"))
        assert opened.wait(TIMEOUT) and also == ["open"]
        log = Recorder()
        ws.add_event_listener("message", log("message"))
        log.wait(lambda r: len(r.of("message")) == 3)
        assert log.of("message") == ["m0", "m1", "m2"]
        ws.close()
        assert ws.on_close.wait(TIMEOUT) == 1000
        # After the close, a late open listener is not called.
        late: list[str] = []
        ws.add_event_listener("open", lambda: late.append("open"))
        assert late == []


def test_sync_code_raising_late_open_listener() -> None:
    with serve_in_thread("tether") as base:
        ws = WebSocket(base + "/")
        deadline = time.monotonic() + TIMEOUT
        while ws.state is not tether.State.OPEN and time.monotonic() < deadline:
            time.sleep(0.01)

        def bad() -> None:
            raise RuntimeError("late and broken")

        errors: list[BaseException] = []
        ws.onerror = errors.append
        ws.onopen = bad
        assert ws.on_close.wait(TIMEOUT) == 1011
        assert [str(e) for e in errors] == ["late and broken"]


def test_sockets_left_open_are_closed_at_exit() -> None:
    from tether.faces import callbacks

    with serve_in_thread("tether") as base:
        ws = WebSocket(base + "/")
        opened = threading.Event()
        ws.onopen = opened.set
        assert opened.wait(TIMEOUT)
        assert ws in set(callbacks._threaded)
        callbacks._close_threaded_sockets()  # what atexit runs
        assert ws.on_close.done() and ws.close_code == 1001
