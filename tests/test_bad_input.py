"""Bad input over real sockets: malformed handshakes and frames sent to the
server and to the client get the exact HTTP status or close code, the
connection is then gone, and nothing else is disturbed."""

from __future__ import annotations

import asyncio
import base64
import struct

import pytest

import tether
from conftest import echo_handler
from tether.protocol.frames import apply_mask, build_frame

KEY = base64.b64encode(b"0123456789abcdef").decode()
MASK = b"\xaa\xbb\xcc\xdd"


def request(
    *,
    line: str = "GET / HTTP/1.1",
    host: str | None = "127.0.0.1",
    upgrade: str | None = "websocket",
    connection: str | None = "Upgrade",
    key: str | None = KEY,
    version: str | None = "13",
    extra: str = "",
) -> bytes:
    lines = [line]
    if host is not None:
        lines.append(f"Host: {host}")
    if upgrade is not None:
        lines.append(f"Upgrade: {upgrade}")
    if connection is not None:
        lines.append(f"Connection: {connection}")
    if key is not None:
        lines.append(f"Sec-WebSocket-Key: {key}")
    if version is not None:
        lines.append(f"Sec-WebSocket-Version: {version}")
    text = "\r\n".join(lines) + "\r\n" + extra + "\r\n"
    return text.encode("latin-1")


BAD_HANDSHAKES = [
    ("post", request(line="POST / HTTP/1.1"), 405),
    ("http 1.0", request(line="GET / HTTP/1.0"), 400),
    ("http 2", request(line="GET / HTTP/2.0"), 505),
    ("garbage request line", b"HELLO\r\n\r\n", 400),
    ("no target", request(line="GET HTTP/1.1"), 400),
    ("missing host", request(host=None), 400),
    ("missing upgrade", request(upgrade=None), 426),
    ("wrong upgrade", request(upgrade="h2c"), 426),
    ("missing connection", request(connection=None), 426),
    ("connection without upgrade", request(connection="keep-alive"), 426),
    ("missing key", request(key=None), 400),
    ("short key", request(key=base64.b64encode(b"short").decode()), 400),
    ("key not base64", request(key="not base64 at all!!!"), 400),
    ("two keys", request(extra=f"Sec-WebSocket-Key: {KEY}\r\n"), 400),
    ("version 8", request(version="8"), 426),
    ("missing version", request(version=None), 426),
    ("version garbage", request(version="thirteen"), 426),
    ("obs-fold", request(extra="X-Folded: a\r\n b\r\n"), 400),
    ("header without colon", request(extra="NoColonHere\r\n"), 400),
    ("space in header name", request(extra="Bad Name: x\r\n"), 400),
    ("NUL in header value", request(extra="X-Nul: a\x00b\r\n"), 400),
    ("header line too long", request(extra="X-Long: " + "a" * 9000 + "\r\n"), 431),
    ("too many headers", request(extra="".join(f"X-{i}: {i}\r\n" for i in range(200))), 431),
    ("request line too long", request(line="GET /" + "a" * 9000 + " HTTP/1.1"), 414),
]


async def exchange(port: int, data: bytes, timeout: float = 5) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()


def status_of(response: bytes) -> int:
    line = response.split(b"\r\n", 1)[0]
    assert line.startswith(b"HTTP/1.1 "), response[:100]
    return int(line.split()[1])


@pytest.mark.parametrize(
    ("data", "status"), [pytest.param(d, s, id=n) for n, d, s in BAD_HANDSHAKES]
)
async def test_malformed_handshake(data: bytes, status: int) -> None:
    async with tether.serve(echo_handler, "127.0.0.1", 0) as server:
        response = await exchange(server.port, data)
        assert status_of(response) == status
        if status == 426 and b"ersion" in data and b"Version: 13" not in data:
            assert b"Sec-WebSocket-Version: 13" in response
        # The connection is gone (read() returned at EOF) and the server still serves.
        assert not server.connections
        async with tether.connect(f"ws://127.0.0.1:{server.port}/") as ws:
            await ws.send("still fine")
            assert await ws.recv() == "still fine"


async def test_version_426_names_13() -> None:
    async with tether.serve(echo_handler, "127.0.0.1", 0) as server:
        response = await exchange(server.port, request(version="8"))
        assert status_of(response) == 426
        assert b"Sec-WebSocket-Version: 13\r\n" in response


async def test_truncated_handshake_times_out() -> None:
    async with tether.serve(echo_handler, "127.0.0.1", 0, open_timeout=0.3) as server:
        response = await exchange(server.port, request()[:20])
        assert response == b""


async def open_raw(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 101 ")
    return reader, writer


async def read_close(reader: asyncio.StreamReader) -> int:
    """Read frames until the close frame; return its code; then expect EOF."""
    while True:
        header = await asyncio.wait_for(reader.readexactly(2), 5)
        length = header[1] & 0x7F
        if length == 126:
            length = struct.unpack("!H", await reader.readexactly(2))[0]
        elif length == 127:
            length = struct.unpack("!Q", await reader.readexactly(8))[0]
        payload = await reader.readexactly(length)
        if header[0] & 0x0F == 8:
            code = struct.unpack("!H", payload[:2])[0]
            assert await asyncio.wait_for(reader.read(), 5) == b""  # the server closed TCP
            return code


BAD_FRAMES = [
    ("reserved opcode", build_frame(0x83, b"", MASK), 1002),
    ("reserved control opcode", build_frame(0x8C, b"", MASK), 1002),
    ("rsv2", build_frame(0xA2, b"x", MASK), 1002),
    ("unmasked", build_frame(0x81, b"x"), 1002),
    ("long ping", build_frame(0x89, bytes(126), MASK), 1002),
    ("fragmented ping", build_frame(0x09, b"", MASK), 1002),
    ("lone continuation", build_frame(0x80, b"x", MASK), 1002),
    ("nested message", build_frame(0x01, b"x", MASK) + build_frame(0x82, b"y", MASK), 1002),
    ("bad utf-8", build_frame(0x81, b"\xc3\x28", MASK), 1007),
    ("bad close code", build_frame(0x88, struct.pack("!H", 1005), MASK), 1002),
    ("1-byte close", build_frame(0x88, b"\x03", MASK), 1002),
    ("bad close reason", build_frame(0x88, b"\x03\xe8\xff", MASK), 1007),
    ("too big", build_frame(0x82, bytes(2 * 1024 * 1024), MASK), 1009),
    ("64-bit msb", b"\x82\xff" + struct.pack("!Q", 1 << 63) + MASK, 1002),
]


@pytest.mark.parametrize(("frame", "code"), [pytest.param(f, c, id=n) for n, f, c in BAD_FRAMES])
async def test_malformed_frame_to_server(frame: bytes, code: int) -> None:
    async with tether.serve(echo_handler, "127.0.0.1", 0) as server:
        other = await tether.connect(f"ws://127.0.0.1:{server.port}/")
        reader, writer = await open_raw(server.port)
        writer.write(frame)
        assert await read_close(reader) == code
        writer.close()
        # Nothing else is disturbed.
        await other.send("ok")
        assert await other.recv() == "ok"
        await other.close()
        for _ in range(50):
            if not server.connections:
                break
            await asyncio.sleep(0.02)
        assert not server.connections


async def fake_server(frames: bytes) -> tuple[asyncio.AbstractServer, asyncio.Future[bytes]]:
    """A raw server that accepts the upgrade, sends ``frames``, then records
    what the client sends until it closes."""
    from tether.protocol.handshake import accept_key

    got: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        key = next(
            line.split(b":", 1)[1].strip()
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key:")
        ).decode()
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept_key(key).encode() + b"\r\n\r\n" + frames
        )
        data = await asyncio.wait_for(reader.read(1 << 20), 5)
        got.set_result(data)
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, got


BAD_CLIENT_FRAMES = [
    ("masked by server", build_frame(0x81, b"x", MASK), 1002),
    ("reserved opcode", build_frame(0x84, b""), 1002),
    ("bad utf-8", build_frame(0x81, b"\xff"), 1007),
    ("too big", build_frame(0x82, bytes(2 * 1024 * 1024)), 1009),
    ("bad close code", build_frame(0x88, struct.pack("!H", 999)), 1002),
]


@pytest.mark.parametrize(
    ("frame", "code"), [pytest.param(f, c, id=n) for n, f, c in BAD_CLIENT_FRAMES]
)
async def test_client_fails_malformed_frames(frame: bytes, code: int) -> None:
    server, got = await fake_server(frame)
    port = server.sockets[0].getsockname()[1]
    try:
        ws = await tether.connect(f"ws://127.0.0.1:{port}/", close_timeout=0.5)
        with pytest.raises(tether.ConnectionClosedError) as info:
            await asyncio.wait_for(ws.recv(), 5)
        assert isinstance(info.value.__cause__, tether.ProtocolError)
        assert info.value.__cause__.code == code
        data = await asyncio.wait_for(got, 5)
        # The client sent a masked close frame with the code.
        assert data[0] == 0x88 and data[1] & 0x80

        length = data[1] & 0x7F
        unmasked = apply_mask(data[6 : 6 + length], data[2:6])
        assert struct.unpack("!H", unmasked[:2])[0] == code
    finally:
        server.close()


async def test_client_refuses_bad_accept() -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: d3Jvbmc=\r\n\r\n"
        )
        await asyncio.sleep(1)
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(tether.InvalidResponse):
            await tether.connect(f"ws://127.0.0.1:{port}/")
    finally:
        server.close()


async def test_client_refuses_garbage_response() -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"SSH-2.0-OpenSSH\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(tether.InvalidMessage):
            await tether.connect(f"ws://127.0.0.1:{port}/")
    finally:
        server.close()
