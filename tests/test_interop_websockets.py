"""Interop with the `websockets` library, a peer no one here wrote: it as the
client of our server, and as the server of our client."""

from __future__ import annotations

import asyncio

import pytest
import websockets
from websockets.asyncio.client import connect as ws_connect
from websockets.asyncio.server import serve as ws_serve
from websockets.exceptions import ConnectionClosedError as WsClosedError
from websockets.exceptions import ConnectionClosedOK as WsClosedOK

import tether
from conftest import echo_handler

BIG = 16 * 1024 * 1024
MESSAGES = ["hello", "", "ünïcødé ✓" * 100, b"\x00\x01\xff", b"", bytes(range(256)) * 300]


@pytest.mark.parametrize("compression", ["deflate", None])
async def test_websockets_client_against_tether_server(compression) -> None:
    async with tether.serve(
        echo_handler, "127.0.0.1", 0, max_size=BIG, compression=compression
    ) as server:
        uri = f"ws://127.0.0.1:{server.port}/"
        async with ws_connect(
            uri, max_size=BIG, compression="deflate" if compression else None
        ) as ws:
            negotiated = [type(e).__name__ for e in ws.protocol.extensions]
            assert negotiated == (["PerMessageDeflate"] if compression else [])
            for message in MESSAGES:
                await ws.send(message)
                assert await ws.recv() == message
            big = bytes(BIG)
            await ws.send(big)
            assert await asyncio.wait_for(ws.recv(), 30) == big
            await ws.send(["frag", "men", "ted"])
            assert await ws.recv() == "fragmented"
            latency = await asyncio.wait_for(await ws.ping(), 5)
            assert latency >= 0


async def test_websockets_client_close_paths() -> None:
    async def closer(ws: tether.Connection) -> None:
        message = await ws.recv()
        code, _, reason = str(message).partition(" ")
        await ws.close(int(code), reason)

    async with tether.serve(closer, "127.0.0.1", 0) as server:
        uri = f"ws://127.0.0.1:{server.port}/"
        # The server closes normally.
        async with ws_connect(uri) as ws:
            await ws.send("1000 done")
            with pytest.raises(WsClosedOK):
                await ws.recv()
            assert ws.close_code == 1000 and ws.close_reason == "done"
        # The server closes with an application code.
        async with ws_connect(uri) as ws:
            await ws.send("4001 custom")
            with pytest.raises(WsClosedError):
                await ws.recv()
            assert ws.close_code == 4001 and ws.close_reason == "custom"
        # The client closes.
        async with ws_connect(uri) as ws:
            await ws.close(1001, "leaving")
            assert ws.close_code == 1001


async def test_tether_client_against_websockets_server() -> None:
    async def echo(ws) -> None:
        async for message in ws:
            await ws.send(message)

    for compression in ("deflate", None):
        async with ws_serve(echo, "127.0.0.1", 0, max_size=BIG, compression=compression) as server:
            port = server.sockets[0].getsockname()[1]
            async with tether.connect(
                f"ws://127.0.0.1:{port}/", max_size=BIG, compression=compression
            ) as ws:
                extensions = ws.response.headers.get("Sec-WebSocket-Extensions") or ""
                assert ("permessage-deflate" in extensions) == bool(compression)
                for message in MESSAGES:
                    await ws.send(message)
                    assert await ws.recv() == message
                big = bytes(BIG)
                await ws.send(big)
                assert await asyncio.wait_for(ws.recv(), 30) == big
                await ws.send([b"frag", b"ment"])
                assert await ws.recv() == b"fragment"
                assert await asyncio.wait_for(ws.ping(), 5) >= 0
            assert ws.close_code == 1000


async def test_tether_client_close_paths_against_websockets_server() -> None:
    async def handler(ws) -> None:
        message = await ws.recv()
        if message == "close 4002":
            await ws.close(4002, "bye")
        elif message == "abort":
            ws.transport.abort()
        else:
            await ws.wait_closed()

    async with ws_serve(handler, "127.0.0.1", 0) as server:
        uri = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
        async with tether.connect(uri) as ws:
            await ws.send("close 4002")
            with pytest.raises(tether.ConnectionClosedError) as info:
                await ws.recv()
            assert (info.value.code, info.value.reason) == (4002, "bye")
        async with tether.connect(uri) as ws:
            await ws.send("abort")
            with pytest.raises(tether.ConnectionClosedError) as info:
                await ws.recv()
            assert info.value.code == 1006
        async with tether.connect(uri) as ws:
            await ws.send("wait")
            await ws.close(1000, "client done")
            assert ws.close_code == 1000


async def test_websockets_server_subprotocol_and_refusal() -> None:
    async def echo(ws) -> None:
        async for message in ws:
            await ws.send(message)

    def process_request(connection, request):
        if request.path == "/deny":
            return connection.respond(403, "denied\n")
        return None

    async with ws_serve(
        echo, "127.0.0.1", 0, subprotocols=["v2", "v1"], process_request=process_request
    ) as server:
        port = server.sockets[0].getsockname()[1]
        async with tether.connect(f"ws://127.0.0.1:{port}/", subprotocols=["v1"]) as ws:
            assert ws.subprotocol == "v1"
        with pytest.raises(tether.InvalidStatus) as info:
            await tether.connect(f"ws://127.0.0.1:{port}/deny")
        assert info.value.response.status == 403
        assert info.value.response.body == b"denied\n"


def test_websockets_version() -> None:
    assert int(websockets.__version__.split(".")[0]) >= 14
