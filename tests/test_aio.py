"""The asyncio layer over real loopback sockets, client and server side."""

from __future__ import annotations

import asyncio
import logging
import os
import ssl

import pytest

import tether
from conftest import echo_handler
from tether import ConcurrencyError, ConnectionClosedError, ConnectionClosedOK, InvalidStatus


def url(server: tether.Server, path: str = "/") -> str:
    return f"ws://127.0.0.1:{server.port}{path}"


async def test_echo_text_binary_empty(echo_server: tether.Server) -> None:
    async with tether.connect(url(echo_server)) as ws:
        for message in ["hello", "", b"\x00\xff", b"", "é" * 1000]:
            await ws.send(message)
            assert await ws.recv() == message
        assert ws.state is tether.State.OPEN
    assert ws.state is tether.State.CLOSED
    assert ws.close_code == 1000


async def test_large_message(echo_server: tether.Server) -> None:
    big = bytes(range(256)) * 4096  # 1 MiB, the default max_size
    async with tether.connect(url(echo_server)) as ws:
        await ws.send(big)
        assert await ws.recv() == big


async def test_max_size_closes_with_1009() -> None:
    async with tether.serve(echo_handler, "127.0.0.1", 0, max_size=1000) as server:
        async with tether.connect(url(server)) as ws:
            await ws.send(bytes(1001))
            with pytest.raises(ConnectionClosedError) as info:
                await ws.recv()
            assert info.value.code == 1009


async def test_fragmented_send(echo_server: tether.Server) -> None:
    async with tether.connect(url(echo_server)) as ws:
        await ws.send(["frag", "men", "ted"])
        assert await ws.recv() == "fragmented"
        await ws.send([b"a", b"b"])
        assert await ws.recv() == b"ab"

        async def chunks():
            yield "x"
            yield "y"

        await ws.send(chunks())
        assert await ws.recv() == "xy"
        with pytest.raises(TypeError):
            await ws.send(["a", b"b"])


async def test_iteration_ends_on_normal_close() -> None:
    async def handler(ws: tether.Connection) -> None:
        await ws.send("one")
        await ws.send("two")

    async with tether.serve(handler, "127.0.0.1", 0) as server:
        async with tether.connect(url(server)) as ws:
            assert [m async for m in ws] == ["one", "two"]
            assert ws.close_code == 1000


async def test_handler_error_closes_with_1011(caplog: pytest.LogCaptureFixture) -> None:
    async def handler(ws: tether.Connection) -> None:
        message = await ws.recv()
        if message == "boom":
            raise RuntimeError("boom")
        await ws.send(message)

    async with tether.serve(handler, "127.0.0.1", 0) as server:
        with caplog.at_level(logging.ERROR, "tether"):
            async with tether.connect(url(server)) as ws:
                await ws.send("boom")
                with pytest.raises(ConnectionClosedError) as info:
                    await ws.recv()
                assert info.value.code == 1011
        assert len([r for r in caplog.records if "boom" in str(r.exc_info)]) == 1
        # The server keeps serving.
        async with tether.connect(url(server)) as ws:
            await ws.send("fine")
            assert await ws.recv() == "fine"


async def test_ping_latency(echo_server: tether.Server) -> None:
    async with tether.connect(url(echo_server)) as ws:
        latency = await asyncio.wait_for(ws.ping(), 5)
        assert 0 <= latency < 5
        latency = await asyncio.wait_for(ws.ping(b"custom"), 5)
        assert ws.latency == latency


async def test_concurrent_recv_raises(echo_server: tether.Server) -> None:
    async with tether.connect(url(echo_server)) as ws:
        first = asyncio.ensure_future(ws.recv())
        await asyncio.sleep(0)
        with pytest.raises(ConcurrencyError):
            await ws.recv()
        await ws.send("x")
        assert await first == "x"


async def test_send_after_close_raises(echo_server: tether.Server) -> None:
    ws = await tether.connect(url(echo_server))
    await ws.close()
    with pytest.raises(ConnectionClosedOK):
        await ws.send("late")
    with pytest.raises(ConnectionClosedOK):
        await ws.recv()
    await ws.close()  # closing twice does nothing


async def test_server_close_sends_1001() -> None:
    server = await tether.serve(echo_handler, "127.0.0.1", 0)
    ws = await tether.connect(url(server))
    server.close()
    await asyncio.wait_for(server.wait_closed(), 10)
    with pytest.raises(ConnectionClosedOK) as info:
        await ws.recv()
    assert info.value.code == 1001


async def test_process_request_rejects_with_any_response() -> None:
    def process_request(connection, request):
        if request.path == "/forbidden":
            return tether.Response(403, headers=tether.Headers([("X-Why", "no")]), body=b"go away")
        if request.path == "/extra":
            return {"X-Extra": "yes"}
        return None

    async with tether.serve(
        echo_handler, "127.0.0.1", 0, process_request=process_request
    ) as server:
        with pytest.raises(InvalidStatus) as info:
            await tether.connect(url(server, "/forbidden"))
        assert info.value.response.status == 403
        assert info.value.response.body == b"go away"
        assert info.value.response.headers["X-Why"] == "no"
        async with tether.connect(url(server, "/extra")) as ws:
            assert ws.response is not None and ws.response.headers["X-Extra"] == "yes"


async def test_async_process_request() -> None:
    async def process_request(connection, request):
        await asyncio.sleep(0)
        return tether.Response(401, body=b"who are you")

    async with tether.serve(
        echo_handler, "127.0.0.1", 0, process_request=process_request
    ) as server:
        with pytest.raises(InvalidStatus) as info:
            await tether.connect(url(server))
        assert info.value.status == 401


async def test_origins() -> None:
    async with tether.serve(
        echo_handler, "127.0.0.1", 0, origins=["https://good.example"]
    ) as server:
        async with tether.connect(url(server), origin="https://good.example"):
            pass
        with pytest.raises(InvalidStatus) as info:
            await tether.connect(url(server), origin="https://evil.example")
        assert info.value.status == 403


async def test_subprotocol_negotiation() -> None:
    async with tether.serve(
        echo_handler, "127.0.0.1", 0, subprotocols=["chat", "superchat"]
    ) as server:
        async with tether.connect(url(server), subprotocols=["superchat"]) as ws:
            assert ws.subprotocol == "superchat"
        async with tether.connect(url(server)) as ws:
            assert ws.subprotocol is None


async def test_compression_negotiated_and_off(echo_server: tether.Server) -> None:
    text = "compress me " * 1000
    async with tether.connect(url(echo_server)) as ws:
        assert ws.response is not None
        assert "permessage-deflate" in (ws.response.headers.get("Sec-WebSocket-Extensions") or "")
        await ws.send(text)
        assert await ws.recv() == text
    async with tether.connect(url(echo_server), compression=None) as ws:
        assert ws.response is not None
        assert "Sec-WebSocket-Extensions" not in ws.response.headers
        await ws.send(text)
        assert await ws.recv() == text


async def test_wss(server_ssl: ssl.SSLContext, client_ssl: ssl.SSLContext) -> None:
    async with tether.serve(echo_handler, "127.0.0.1", 0, ssl=server_ssl) as server:
        async with tether.connect(f"wss://127.0.0.1:{server.port}/", ssl=client_ssl) as ws:
            await ws.send("secret")
            assert await ws.recv() == "secret"


async def test_wss_many_tls_records_in_one_read(
    server_ssl: ssl.SSLContext, client_ssl: ssl.SSLContext
) -> None:
    """asyncio's TLS layer fills the protocol's buffer with several records
    per read, slicing it between records: every byte must land in place."""
    sizes = [3, 5000, 20000, 70000, 1 << 20, 17, 40000]
    payloads = [os.urandom(n) for n in sizes]
    async with tether.serve(echo_handler, "127.0.0.1", 0, ssl=server_ssl, max_size=None) as server:
        uri = f"wss://127.0.0.1:{server.port}/"
        async with tether.connect(uri, ssl=client_ssl, max_size=None, compression=None) as ws:
            for payload in payloads:  # pipelined: records pile up in the socket
                await ws.send(payload)
            for payload in payloads:
                assert await asyncio.wait_for(ws.recv(), 10) == payload


async def test_open_timeout_on_client() -> None:
    async def silent(reader, writer):
        await asyncio.sleep(5)
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(tether.HandshakeTimeout):
            await tether.connect(f"ws://127.0.0.1:{port}/", open_timeout=0.2)
    finally:
        server.close()


async def test_open_timeout_on_server() -> None:
    async with tether.serve(echo_handler, "127.0.0.1", 0, open_timeout=0.2) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        data = await asyncio.wait_for(reader.read(), 5)
        assert data == b""  # dropped without an answer
        writer.close()


async def test_read_backpressure_pauses_transport() -> None:
    got: list[tether.Connection] = []
    release = asyncio.Event()

    async def handler(ws: tether.Connection) -> None:
        got.append(ws)
        await release.wait()
        async for message in ws:
            await ws.send(message)

    async with tether.serve(handler, "127.0.0.1", 0, max_queue=4) as server:
        async with tether.connect(url(server), compression=None) as ws:
            # 50 x 16 KiB: more than one read brings in (small messages sent
            # in a row may all arrive in one segment, and one read).
            flood = [f"m{i}".ljust(16384, ".") for i in range(50)]
            for message in flood:
                await ws.send(message)
            await asyncio.sleep(0.2)
            conn = got[0]
            # Reading paused once 4 messages were queued; what one read had
            # already brought in is queued too, but not the whole flood.
            assert conn._paused_reading
            assert 4 <= len(conn._queue) < 50
            release.set()
            for message in flood:
                assert await asyncio.wait_for(ws.recv(), 5) == message


async def test_backlog_offers_gathered_writes_only_past_the_limit() -> None:
    """backlog(limit) is buffered_amount, except that writes gathered in this
    turn are offered to the kernel first when they could pass ``limit``."""
    seen: list[tuple[int, int]] = []

    def on_open(ws: tether.Connection) -> None:
        def reply(message: object) -> None:
            for _ in range(5):
                ws.send_nowait(b"r" * 100)
            transport = ws.transport
            seen.append((ws.backlog(10_000), getattr(transport, "gathered", -1)))
            seen.append((ws.backlog(100), getattr(transport, "gathered", -1)))

        ws.set_message_handler(reply)

    async def handler(ws: tether.Connection) -> None:
        on_open(ws)
        await ws.wait_closed()

    async with tether.serve(handler, "127.0.0.1", 0) as server:
        async with tether.connect(url(server), compression=None) as ws:
            await ws.send(b"go")
            for _ in range(5):
                assert await asyncio.wait_for(ws.recv(), 5) == b"r" * 100
    from tether.aio import transports

    if transports.compiled is not None:
        # Under the bound the replies stay gathered (they leave together at
        # the end of the turn); past it they go to the kernel, which takes
        # them all.
        assert seen[0][0] == 0 and seen[0][1] > 0
        assert seen[1] == (0, 0)
    else:
        assert seen == [(0, -1), (0, -1)]  # asyncio's transport gathers nothing


async def test_write_limit_makes_send_wait() -> None:
    async def handler(ws: tether.Connection) -> None:
        await asyncio.sleep(30)

    async with tether.serve(handler, "127.0.0.1", 0) as server:
        async with tether.connect(url(server), write_limit=1024, compression=None) as ws:
            chunk = bytes(64 * 1024)

            async def flood() -> None:
                while True:
                    await ws.send(chunk)

            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(flood(), 0.5)
            # The peer does not read: sending stalled with the data bounded
            # by the kernel buffers plus our write limit.
            assert ws.buffered_amount < 1024 * 1024
            ws.abort()


async def test_keepalive_detects_dead_peer() -> None:
    async def handler(ws: tether.Connection) -> None:
        ws.core.auto_pong = False  # a peer that swallows pings
        await asyncio.sleep(10)

    async with tether.serve(handler, "127.0.0.1", 0) as server:
        ws = await tether.connect(url(server), ping_interval=0.1, ping_timeout=0.2)
        with pytest.raises(ConnectionClosedError) as info:
            await asyncio.wait_for(ws.recv(), 5)
        assert info.value.code == 1006
        assert "keepalive" in info.value.reason
        assert "keepalive" in str(info.value)
        assert isinstance(info.value.__cause__, TimeoutError)


async def test_keepalive_keeps_healthy_connection(echo_server: tether.Server) -> None:
    async with tether.connect(url(echo_server), ping_interval=0.05, ping_timeout=0.5) as ws:
        await asyncio.sleep(0.4)
        await ws.send("still here")
        assert await ws.recv() == "still here"


async def test_peer_vanishes_gives_1006() -> None:
    async def handler(ws: tether.Connection) -> None:
        ws.abort()

    async with tether.serve(handler, "127.0.0.1", 0) as server:
        async with tether.connect(url(server)) as ws:
            with pytest.raises(ConnectionClosedError) as info:
                await asyncio.wait_for(ws.recv(), 5)
            assert info.value.code == 1006


async def test_close_timeout_when_peer_never_answers() -> None:
    async def handler(ws: tether.Connection) -> None:
        ws.core._discard = True  # a broken peer that ignores our close frame
        await asyncio.sleep(10)

    async with tether.serve(handler, "127.0.0.1", 0, close_timeout=0.3) as server:
        ws = await tether.connect(url(server), close_timeout=0.3)
        await asyncio.wait_for(ws.close(), 5)
        assert ws.state is tether.State.CLOSED


async def test_message_handler_mode(echo_server: tether.Server) -> None:
    received: list[object] = []
    async with tether.connect(url(echo_server)) as ws:
        ws.set_message_handler(received.append)
        ws.send_nowait("a")
        ws.send_nowait(b"b")
        for _ in range(100):
            if len(received) == 2:
                break
            await asyncio.sleep(0.01)
        assert received == ["a", b"b"]
        with pytest.raises(tether.InvalidState):
            await ws.recv()


async def test_close_callbacks(echo_server: tether.Server) -> None:
    seen: list[int | None] = []
    ws = await tether.connect(url(echo_server))
    ws.add_close_callback(lambda c: seen.append(c.close_code))
    await ws.close()
    assert seen == [1000]
    ws.add_close_callback(lambda c: seen.append(0))
    assert seen == [1000, 0]


async def test_unix_socket(tmp_path) -> None:
    path = str(tmp_path / "ws.sock")
    async with tether.serve(echo_handler, unix=path):
        async with tether.connect("ws://localhost/", unix=path) as ws:
            await ws.send("over unix")
            assert await ws.recv() == "over unix"


async def test_many_clients(echo_server: tether.Server) -> None:
    async def one(i: int) -> str:
        async with tether.connect(url(echo_server)) as ws:
            await ws.send(f"c{i}")
            return await ws.recv()  # type: ignore[return-value]

    results = await asyncio.gather(*(one(i) for i in range(50)))
    assert results == [f"c{i}" for i in range(50)]


async def test_message_handler_reply_after_close_is_not_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from test_bad_input import open_raw, read_close
    from tether.cli.echo import echo_app
    from tether.protocol.frames import build_frame

    async with tether.serve(echo_app(), "127.0.0.1", 0) as server:
        reader, writer = await open_raw(server.port)
        mask = b"\x01\x02\x03\x04"
        # A message and a close frame in one segment: the core answers the
        # close while parsing, so the handler's echo of the message finds the
        # connection closing; that is dropped quietly, not logged as an error.
        writer.write(build_frame(0x81, b"late", mask) + build_frame(0x88, b"\x03\xe8", mask))
        with caplog.at_level(logging.ERROR, "tether"):
            assert await read_close(reader) == 1000
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
        writer.close()


async def test_compression_property(echo_server: tether.Server) -> None:
    async with tether.connect(url(echo_server)) as ws:
        params = ws.compression
        assert params is not None and params.server_max_window_bits == 15
    async with tether.connect(url(echo_server), compression=None) as ws:
        assert ws.compression is None


async def test_frame_level_public_methods(echo_server: tether.Server) -> None:
    async with tether.connect(url(echo_server)) as ws:
        ws.send_fragment("ab", fin=False)
        ws.send_fragment("cd", fin=False, continuation=True)
        ws.send_fragment(b"ef", fin=True, continuation=True)
        await ws.drain()
        assert await ws.recv() == "abcdef"
        ws.send_fragment(b"\x00", fin=True)
        assert await ws.recv() == b"\x00"
        ws.ping_nowait(b"hb")
        ws.set_keepalive(0.05, 1.0)
        await asyncio.sleep(0.2)
        assert ws._ka_handle is not None  # keepalive runs and the peer answers
        await ws.send("alive")
        assert await ws.recv() == "alive"
        ws.set_keepalive(None)
        assert ws._ka_handle is None
        ws.close_nowait(4000, "bye")
        ws.close_nowait(4001)  # closing already: nothing happens
        await asyncio.wait_for(ws.wait_closed(), 5)
        assert ws.closed_exception is not None
        assert ws.closed_exception.sent == tether.Close(4000, "bye")
