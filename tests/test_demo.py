"""The seed's example apps (tether.examples.demo, demo_client, echo) and the
`tether demo` / `tether demo-client` commands, driven by the `websockets`
library and by real subprocesses over loopback."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import sys
from collections.abc import AsyncIterator

import pytest
import websockets
from websockets.asyncio.client import connect as ws_connect

import tether
from tether.examples import demo, demo_client, echo

TIMEOUT = 10


@pytest.fixture
async def demo_server() -> AsyncIterator[tether.Server]:
    async with tether.serve(demo.routes(), "127.0.0.1", 0) as server:
        yield server


def ws_url(server: tether.Server | int, path: str = "/subscriptions") -> str:
    port = server if isinstance(server, int) else server.port
    return f"ws://127.0.0.1:{port}{path}"


async def recv(ws: websockets.ClientConnection) -> str | bytes:
    return await asyncio.wait_for(ws.recv(), TIMEOUT)


async def http_get(port: int, path: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
    data = await asyncio.wait_for(reader.read(), TIMEOUT)
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split(" ")[1]), headers, body


# ---------------------------------------------------------------------------
# The rules of the demo server, one by one, with `websockets` as the client


async def test_greeting_on_handshake(demo_server: tether.Server) -> None:
    async with ws_connect(ws_url(demo_server)) as ws:
        assert await recv(ws) == "Greetings!"


async def test_foo_bar(demo_server: tether.Server) -> None:
    async with ws_connect(ws_url(demo_server)) as ws:
        assert await recv(ws) == "Greetings!"
        await ws.send("foo")
        assert await recv(ws) == "bar"
        await ws.send("bar")
        assert await recv(ws) == "foo"
        # Exact matches only: anything else is echoed.
        await ws.send("FOO")
        assert [await recv(ws) for _ in range(10)] == ["FOO"] * 10


async def test_other_text_comes_back_ten_times_in_order(demo_server: tether.Server) -> None:
    async with ws_connect(ws_url(demo_server)) as ws:
        assert await recv(ws) == "Greetings!"
        await ws.send("one")
        await ws.send("two")
        received = [await recv(ws) for _ in range(20)]
        assert received == ["one"] * 10 + ["two"] * 10
        # Nothing more: an 11th copy would arrive before this answer.
        await ws.send("foo")
        assert await recv(ws) == "bar"


async def test_end_closes_with_1000(demo_server: tether.Server) -> None:
    async with ws_connect(ws_url(demo_server)) as ws:
        assert await recv(ws) == "Greetings!"
        await ws.send("end")
        with pytest.raises(websockets.ConnectionClosedOK):
            await recv(ws)
        assert ws.close_code == 1000
        assert ws.close_reason == ""


async def test_binary_gets_no_answer(demo_server: tether.Server) -> None:
    async with ws_connect(ws_url(demo_server)) as ws:
        assert await recv(ws) == "Greetings!"
        await ws.send(b"foo")  # the rules are about text
        await ws.send("bar")
        assert await recv(ws) == "foo"


async def test_greet_404_405_and_page(demo_server: tether.Server) -> None:
    status, headers, body = await http_get(demo_server.port, "/greet/alice")
    assert (status, body) == (200, b"Greetings alice!")
    assert headers["Content-Type"] == "text/plain; charset=utf-8"
    status, _, body = await http_get(demo_server.port, "/greet/J%C3%BCrgen")
    assert body == "Greetings Jürgen!".encode()
    status, _, _ = await http_get(demo_server.port, "/unknown/path")
    assert status == 404
    status, _, _ = await http_get(demo_server.port, "/greet/alice/")
    assert status == 404
    status, headers, _ = await http_get(demo_server.port, "/greet/alice", method="POST")
    assert status == 405 and headers["Allow"] == "GET, HEAD"
    status, headers, body = await http_get(demo_server.port, "/")
    assert status == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
    assert b"/subscriptions" in body and b"<script>" in body
    assert b"http://" not in body and b"https://" not in body  # no CDN, nothing external
    # A WebSocket upgrade elsewhere than /subscriptions is refused.
    with pytest.raises(websockets.InvalidStatus) as info:
        async with ws_connect(ws_url(demo_server, "/nowhere")):
            pass
    assert info.value.response.status_code == 404


async def test_many_clients_at_once(demo_server: tether.Server) -> None:
    async def one(i: int) -> list[str | bytes]:
        async with ws_connect(ws_url(demo_server)) as ws:
            assert await recv(ws) == "Greetings!"
            await ws.send(f"client {i}")
            return [await recv(ws) for _ in range(10)]

    results = await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(20))), TIMEOUT)
    assert results == [[f"client {i}"] * 10 for i in range(20)]


# ---------------------------------------------------------------------------
# WebSocketEcho (the seed's third listing)


async def test_echo_example() -> None:
    async with tether.serve(echo.routes(), "127.0.0.1", 0) as server:
        async with ws_connect(ws_url(server)) as ws:
            await ws.send("FOO")
            assert await recv(ws) == "BAR"
            await ws.send("BAR")
            assert await recv(ws) == "FOO"
            await ws.send("hello")
            assert [await recv(ws) for _ in range(10)] == ["hello"] * 10
        _, _, body = await http_get(server.port, "/greet/bob")
        assert body == b"Greetings bob!"


# ---------------------------------------------------------------------------
# The demo client, in process


@pytest.mark.parametrize("ending", ["end", "eof"])
async def test_demo_client_in_process(demo_server: tether.Server, ending: str) -> None:
    read_end, write_end = os.pipe()
    stdin = open(read_end, encoding="utf-8")  # noqa: SIM115 - closed below
    out, err = io.StringIO(), io.StringIO()
    task = asyncio.create_task(
        demo_client.run(ws_url(demo_server), stdin=stdin, stdout=out, stderr=err)
    )
    try:
        for _ in range(500):
            if "Greetings!" in out.getvalue():
                break
            await asyncio.sleep(0.01)
        os.write(write_end, b"foo\nhi\n")
        for _ in range(500):
            if out.getvalue().count("hi") == 10:
                break
            await asyncio.sleep(0.01)
        if ending == "end":
            os.write(write_end, b"end\n")  # the server closes with 1000
        else:
            os.close(write_end)  # Ctrl-D: the client closes with 1000
            write_end = -1
        assert await asyncio.wait_for(task, TIMEOUT) == 0
    finally:
        if write_end >= 0:
            os.close(write_end)
        task.cancel()
    assert out.getvalue().splitlines() == ["Greetings!", "bar"] + ["hi"] * 10
    assert "closed with code 1000" in err.getvalue()
    stdin.close()


async def test_demo_client_cannot_connect() -> None:
    err = io.StringIO()
    status = await demo_client.run(
        "ws://127.0.0.1:1/subscriptions", stdin=io.StringIO(""), stdout=io.StringIO(), stderr=err
    )
    assert status == 1 and "cannot connect" in err.getvalue()


# ---------------------------------------------------------------------------
# The commands, as subprocesses


async def start_cli(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tether",
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def demo_port(process: asyncio.subprocess.Process) -> int:
    assert process.stderr is not None
    line = await asyncio.wait_for(process.stderr.readline(), TIMEOUT)
    assert b"listening on 127.0.0.1:" in line, line
    return int(line.split(b"listening on 127.0.0.1:")[1].split(b";")[0])


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_tether_demo_command_and_graceful_shutdown(sig: signal.Signals) -> None:
    process = await start_cli("demo", "--host", "127.0.0.1", "--port", "0")
    try:
        port = await demo_port(process)
        async with ws_connect(ws_url(port)) as ws:
            assert await recv(ws) == "Greetings!"
            await ws.send("foo")
            assert await recv(ws) == "bar"
            process.send_signal(sig)
            with pytest.raises(websockets.ConnectionClosedOK):
                await recv(ws)
            assert ws.close_code == 1001  # going away
        assert await asyncio.wait_for(process.wait(), TIMEOUT) == 0
        assert process.stderr is not None
        assert b"stopped" in await process.stderr.read()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_tether_demo_client_command(demo_server: tether.Server) -> None:
    process = await start_cli("demo-client", ws_url(demo_server))
    assert process.stdin is not None and process.stdout is not None
    try:
        assert await asyncio.wait_for(process.stdout.readline(), TIMEOUT) == b"Greetings!\n"
        process.stdin.write(b"foo\n")
        await process.stdin.drain()
        assert await asyncio.wait_for(process.stdout.readline(), TIMEOUT) == b"bar\n"
        process.stdin.close()  # Ctrl-D: the client closes with 1000
        assert await asyncio.wait_for(process.wait(), TIMEOUT) == 0
        assert process.stderr is not None
        assert b"closed with code 1000" in await process.stderr.read()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def test_cli_help_lists_the_commands() -> None:
    from tether.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(["demo"])
    assert (args.host, args.port) == ("0.0.0.0", 8080)
    args = parser.parse_args(["demo-client"])
    assert args.url == "ws://localhost:8080/subscriptions"
