"""Shared fixtures: a self-signed TLS certificate, and loopback echo servers."""

from __future__ import annotations

import pathlib
import ssl
import subprocess
from collections.abc import AsyncIterator

import pytest

import tether


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
