"""Shared fixtures: a self-signed TLS certificate, loopback echo servers, a
transport that records what a connection writes, and helpers that drive a
connection over it by hand (open_connection, feed, masked)."""

from __future__ import annotations

import pathlib
import ssl
import subprocess
from collections.abc import AsyncIterator
from typing import Any

import pytest

import tether
from tether.aio.connection import Connection
from tether.aio.options import make_options
from tether.protocol.connection import Connection as Core
from tether.protocol.connection import Side
from tether.protocol.frames import build_frame


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[pathlib.Path, pathlib.Path]:
    """A self-signed certificate for 127.0.0.1 and localhost (made with openssl)."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


@pytest.fixture(scope="session")
def server_ssl(tls_files: tuple[pathlib.Path, pathlib.Path]) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*tls_files)
    return context


@pytest.fixture(scope="session")
def client_ssl(tls_files: tuple[pathlib.Path, pathlib.Path]) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(tls_files[0]))
    return context


async def echo_handler(ws: tether.Connection) -> None:
    """Echo every message back."""
    async for message in ws:
        await ws.send(message)


@pytest.fixture
async def echo_server() -> AsyncIterator[tether.Server]:
    """A tether echo server on a free loopback port."""
    async with tether.serve(echo_handler, "127.0.0.1", 0) as server:
        yield server


class RecordingTransport:
    """Stands in for an asyncio transport: records what is written (and
    ``<eof>`` for write_eof), so a test can drive a Connection by hand."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.gathers = 0  # calls of gather_writes()
        self.low_water: list[int] = []  # calls of set_read_low_water()

    def gather_writes(self) -> None:
        self.gathers += 1

    def set_read_low_water(self, n: int) -> None:
        self.low_water.append(n)

    def write(self, data: bytes) -> None:
        self.written.append(bytes(data))

    def writelines(self, data: list[bytes]) -> None:
        self.written.append(b"".join(data))

    def get_extra_info(self, name: str, default: object = None) -> object:
        return default

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.written.append(b"<eof>")


def open_connection(
    core: Core | None = None, **options: Any
) -> tuple[Connection, RecordingTransport]:
    """A server-side connection (or one around ``core``) past its handshake,
    writing to a RecordingTransport; no pings, no close timeout, and no
    compression unless ``options`` say otherwise."""
    options.setdefault("compression", None)
    ws = Connection(make_options(ping_interval=None, close_timeout=None, **options), False)
    transport = RecordingTransport()
    ws.connection_made(transport)  # type: ignore[arg-type]
    ws._open(core if core is not None else Core(Side.SERVER), b"")
    return ws, transport


def feed(ws: Connection, data: bytes) -> None:
    """Read ``data`` the way a BufferedProtocol transport does."""
    while data:
        buf = ws.get_buffer(-1)
        n = min(len(buf), len(data))
        buf[:n] = data[:n]
        ws.buffer_updated(n)
        data = data[n:]


def masked(first: int, payload: bytes) -> bytes:
    """A frame as a client sends it: first byte ``first``, masked."""
    return build_frame(first, payload, b"\x01\x02\x03\x04")
