"""Interop with node's `ws`, a peer no one here wrote: it as the client of our
server (driven line by line through tests/peers/ws_client.js) and as the server
of our client (tests/peers/ws_server.js)."""

from __future__ import annotations

import asyncio
import base64
import json
import pathlib
import shutil

import pytest

import tether
from conftest import echo_handler

PEERS = pathlib.Path(__file__).parent / "peers"
BIG = 16 * 1024 * 1024

pytestmark = pytest.mark.skipif(
    shutil.which("node") is None or not (PEERS / "node_modules" / "ws").exists(),
    reason="node and tests/peers/node_modules (scripts/setup installs them) are required",
)


class NodeClient:
    """node ws_client.js, one JSON command per line in, one JSON event per line out."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, uri: str, *args: str) -> NodeClient:
        proc = await asyncio.create_subprocess_exec(
            "node",
            str(PEERS / "ws_client.js"),
            uri,
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=64 * 1024 * 1024,
        )
        return cls(proc)

    def command(self, **command: object) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(command).encode() + b"\n")

    async def event(self) -> dict[str, object]:
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), 30)
        assert line, "the node client exited"
        return json.loads(line)  # type: ignore[no-any-return]

    async def finish(self) -> int:
        try:
            return await asyncio.wait_for(self.proc.wait(), 10)
        except asyncio.TimeoutError:
            self.proc.kill()
            raise


@pytest.mark.parametrize("compression", ["deflate", None])
async def test_node_client_against_tether_server(compression) -> None:
    async with tether.serve(
        echo_handler, "127.0.0.1", 0, max_size=BIG, compression=compression
    ) as server:
        client = await NodeClient.start(f"ws://127.0.0.1:{server.port}/", "--max-payload", str(BIG))
        opened = await client.event()
        assert "open" in opened
        assert ("permessage-deflate" in json.dumps(opened)) == bool(compression)
        for text in ["hello", "", "ünïcødé ✓" * 50]:
            client.command(send=text)
            assert await client.event() == {"message": text, "binary": False}
        for blob in [b"\x00\xff", b"", bytes(BIG)]:
            client.command(send_binary_b64=base64.b64encode(blob).decode())
            event = await client.event()
            assert event["binary"] is True
            assert base64.b64decode(event["message"]) == blob  # type: ignore[arg-type]
        client.command(send="frag", fin=False)
        client.command(send="mented")
        assert await client.event() == {"message": "fragmented", "binary": False}
        client.command(ping="are you there")
        assert await client.event() == {"pong": "are you there"}
        client.command(close=[4000, "node done"])
        assert await client.event() == {"close": [4000, ""]}
        assert await client.finish() == 0


async def test_node_client_sees_server_close_codes() -> None:
    async def closer(ws: tether.Connection) -> None:
        message = await ws.recv()
        await ws.close(int(message), "server says bye")

    async with tether.serve(closer, "127.0.0.1", 0) as server:
        for code in (1000, 1001, 1011, 4999):
            client = await NodeClient.start(f"ws://127.0.0.1:{server.port}/")
            assert "open" in await client.event()
            client.command(send=str(code))
            assert await client.event() == {"close": [code, "server says bye"]}
            assert await client.finish() == 0


async def test_node_client_terminate_gives_1006() -> None:
    closed: asyncio.Future[tether.ConnectionClosed] = asyncio.get_running_loop().create_future()

    async def handler(ws: tether.Connection) -> None:
        try:
            await ws.recv()
        except tether.ConnectionClosed as exc:
            closed.set_result(exc)

    async with tether.serve(handler, "127.0.0.1", 0) as server:
        client = await NodeClient.start(f"ws://127.0.0.1:{server.port}/")
        assert "open" in await client.event()
        client.command(terminate=True)
        exc = await asyncio.wait_for(closed, 10)
        assert exc.code == 1006
        client.proc.kill()
        await client.proc.wait()


class NodeServer:
    def __init__(self, proc: asyncio.subprocess.Process, port: int) -> None:
        self.proc = proc
        self.port = port

    @classmethod
    async def start(cls, *args: str) -> NodeServer:
        proc = await asyncio.create_subprocess_exec(
            "node", str(PEERS / "ws_server.js"), "0", *args, stdout=asyncio.subprocess.PIPE
        )
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        assert line.startswith(b"listening "), line
        return cls(proc, int(line.split()[1]))

    async def stop(self) -> None:
        self.proc.terminate()
        await asyncio.wait_for(self.proc.wait(), 10)


@pytest.mark.parametrize("compression", ["deflate", None])
async def test_tether_client_against_node_server(compression) -> None:
    server = await NodeServer.start(*([] if compression else ["--no-compression"]))
    try:
        async with tether.connect(
            f"ws://127.0.0.1:{server.port}/", max_size=BIG, compression=compression
        ) as ws:
            extensions = ws.response.headers.get("Sec-WebSocket-Extensions") or ""
            assert ("permessage-deflate" in extensions) == bool(compression)
            for message in ["hello", "", "✓" * 1000, b"\x00", b"", bytes(BIG)]:
                await ws.send(message)
                assert await asyncio.wait_for(ws.recv(), 30) == message
            await ws.send(["a", "b", "c"])
            assert await ws.recv() == "abc"
            assert await asyncio.wait_for(ws.ping(b"node?"), 5) >= 0
            await ws.send("close:4003:from node")
            with pytest.raises(tether.ConnectionClosedError) as info:
                await asyncio.wait_for(ws.recv(), 5)
            assert (info.value.code, info.value.reason) == (4003, "from node")
    finally:
        await server.stop()


async def test_node_server_shutdown_sends_1001() -> None:
    server = await NodeServer.start()
    ws = await tether.connect(f"ws://127.0.0.1:{server.port}/")
    await server.stop()
    with pytest.raises(tether.ConnectionClosedOK) as info:
        await asyncio.wait_for(ws.recv(), 10)
    assert info.value.code == 1001
