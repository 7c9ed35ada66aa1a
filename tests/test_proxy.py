"""Connecting well: HTTP CONNECT and SOCKS5 proxies (written here, on
loopback), ``wss://`` through them, proxies from the environment, redirects,
every resolved address, ``open_timeout``, Unix sockets and request headers."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import pathlib
import socket
import ssl
import struct
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest

import tether
from conftest import echo_handler
from tether.aio.client import redirect_target
from tether.aio.proxy import Proxy, ProxyError, connect_request, proxy_for
from tether.aio.server import Upgrade
from tether.protocol.uri import parse_uri

# ----------------------------------------------------------------------
# An HTTP CONNECT proxy, for the tests


class ConnectProxy:
    """A small HTTP proxy that answers CONNECT and relays bytes both ways.

    ``auth``: ``"user:password"`` that must come as Basic credentials (else
    407). ``answer``: what to do instead of tunnelling: ``"502"``,
    ``"garbage"``, ``"close"`` (hang up), ``"silent"`` (never answer).
    ``resolve``: host names mapped to addresses (the proxy resolves names,
    not the client). ``requests`` records each request head.
    """

    def __init__(
        self,
        auth: str | None = None,
        answer: str | None = None,
        resolve: dict[str, str] | None = None,
        ssl: ssl.SSLContext | None = None,
    ) -> None:
        self.ssl = ssl
        self.auth = auth
        self.answer = answer
        self.resolve = resolve or {}
        self.requests: list[bytes] = []
        self.tunnels = 0
        self.server: asyncio.Server | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    def url(self, credentials: str = "") -> str:
        at = f"{credentials}@" if credentials else ""
        if self.ssl is not None:
            return f"https://{at}localhost:{self.port}"
        return f"http://{at}127.0.0.1:{self.port}"

    async def __aenter__(self) -> ConnectProxy:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0, ssl=self.ssl)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.server.wait_closed()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        try:
            await self._handle(reader, writer)
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self.tasks.discard(task)
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        self.requests.append(head)
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ")
        headers = {
            name.strip().lower(): value.strip()
            for name, _, value in (line.partition(":") for line in lines[1:] if line)
        }
        if method != "CONNECT":
            writer.write(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
            return
        if self.auth is not None:
            expected = "Basic " + base64.b64encode(self.auth.encode()).decode()
            if headers.get("proxy-authorization") != expected:
                writer.write(
                    b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                    b'Proxy-Authenticate: Basic realm="test"\r\nContent-Length: 0\r\n\r\n'
                )
                await writer.drain()
                return
        if self.answer == "502":
            writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
            return
        if self.answer == "garbage":
            writer.write(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")
            await writer.drain()
            return
        if self.answer == "close":
            return
        if self.answer == "silent":
            await asyncio.sleep(3600)
        host, _, port = target.rpartition(":")
        host = self.resolve.get(host.strip("[]"), host.strip("[]"))
        up_reader, up_writer = await asyncio.open_connection(host, int(port))
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        self.tunnels += 1
        try:
            await asyncio.gather(relay(reader, up_writer), relay(up_reader, writer))
        finally:
            up_writer.close()


async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        # (A TLS transport cannot half-close: NotImplementedError.)
        with contextlib.suppress(OSError, NotImplementedError):
            writer.write_eof()


# ----------------------------------------------------------------------
# A SOCKS5 proxy (RFC 1928, with RFC 1929 username/password), for the tests


class Socks5Proxy:
    def __init__(self, auth: tuple[str, str] | None = None) -> None:
        self.auth = auth
        self.targets: list[tuple[str, int]] = []
        self.server: asyncio.Server | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def __aenter__(self) -> Socks5Proxy:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.server.wait_closed()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        try:
            await self._handle(reader, writer)
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self.tasks.discard(task)
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        version, count = await reader.readexactly(2)
        assert version == 5
        methods = await reader.readexactly(count)
        wanted = 2 if self.auth else 0
        if wanted not in methods:
            writer.write(b"\x05\xff")
            return
        writer.write(bytes([5, wanted]))
        if self.auth:
            _, ulen = await reader.readexactly(2)
            user = (await reader.readexactly(ulen)).decode()
            (plen,) = await reader.readexactly(1)
            password = (await reader.readexactly(plen)).decode()
            ok = (user, password) == self.auth
            writer.write(b"\x01\x00" if ok else b"\x01\x01")
            if not ok:
                return
        _, command, _, kind = await reader.readexactly(4)
        assert command == 1  # CONNECT
        if kind == 1:
            host = socket.inet_ntoa(await reader.readexactly(4))
        elif kind == 3:
            (length,) = await reader.readexactly(1)
            host = (await reader.readexactly(length)).decode()
        else:
            host = socket.inet_ntop(socket.AF_INET6, await reader.readexactly(16))
        (port,) = struct.unpack("!H", await reader.readexactly(2))
        self.targets.append((host, port))
        try:
            address = "127.0.0.1" if host.endswith(".test") else host
            up_reader, up_writer = await asyncio.open_connection(address, port)
        except OSError:
            writer.write(b"\x05\x05\x00\x01" + bytes(6))  # connection refused
            return
        writer.write(b"\x05\x00\x00\x01" + socket.inet_aton("127.0.0.1") + struct.pack("!H", 0))
        try:
            await asyncio.gather(relay(reader, up_writer), relay(up_reader, writer))
        finally:
            up_writer.close()


# ----------------------------------------------------------------------
# Fixtures


class Recorder:
    """An app that records each upgrade request and echoes."""

    def __init__(self) -> None:
        self.requests: list[Any] = []

    def __tether_dispatch__(self, connection: Any, request: Any) -> Upgrade:
        self.requests.append(request)
        return Upgrade(echo_handler)


@pytest.fixture
async def recorder() -> AsyncIterator[tuple[Recorder, int]]:
    app = Recorder()
    async with tether.serve(app, "127.0.0.1", 0) as server:
        yield app, server.port


@pytest.fixture
async def tls_server(server_ssl: ssl.SSLContext) -> AsyncIterator[int]:
    async with tether.serve(echo_handler, "127.0.0.1", 0, ssl=server_ssl) as server:
        yield server.port


async def roundtrip(ws: tether.Connection, message: str | bytes = "through") -> None:
    await ws.send(message)
    assert await asyncio.wait_for(ws.recv(), 5) == message


# ----------------------------------------------------------------------
# HTTP CONNECT


async def test_ws_through_an_http_proxy(recorder: tuple[Recorder, int]) -> None:
    app, port = recorder
    async with ConnectProxy() as proxy:
        async with tether.connect(f"ws://127.0.0.1:{port}/chat", proxy=proxy.url()) as ws:
            await roundtrip(ws)
            await roundtrip(ws, b"\x00\xffbinary")
    assert proxy.tunnels == 1
    head = proxy.requests[0].decode()
    assert head.startswith(f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\n")
    assert f"Host: 127.0.0.1:{port}\r\n" in head
    assert "Proxy-Authorization" not in head
    assert app.requests[0].url_path == "/chat"


async def test_wss_through_an_http_proxy(tls_server: int, client_ssl: ssl.SSLContext) -> None:
    async with ConnectProxy() as proxy:
        async with tether.connect(
            f"wss://localhost:{tls_server}/", proxy=proxy.url(), ssl=client_ssl
        ) as ws:
            await roundtrip(ws)
            assert ws.transport is not None
            assert ws.transport.get_extra_info("ssl_object") is not None
    # The proxy saw only CONNECT in clear text; TLS ran inside the tunnel
    # (the proxy resolved "localhost", the certificate is checked for it).
    assert proxy.requests[0].startswith(f"CONNECT localhost:{tls_server} ".encode())


async def test_wss_through_an_https_proxy_is_tls_inside_tls(
    tls_server: int, server_ssl: ssl.SSLContext, client_ssl: ssl.SSLContext
) -> None:
    async with ConnectProxy(auth="u:p", ssl=server_ssl) as proxy:
        connecting = tether.connect(
            f"wss://localhost:{tls_server}/",
            proxy=proxy.url("u:p"),
            proxy_ssl=client_ssl,
            ssl=client_ssl,
        )
        if sys.version_info < (3, 11):
            with pytest.raises(ProxyError, match=r"from Python 3\.11 on"):
                await connecting
            return
        async with connecting as ws:
            await roundtrip(ws)
    assert proxy.tunnels == 1
    assert proxy.requests[0].startswith(f"CONNECT localhost:{tls_server} ".encode())


@pytest.mark.parametrize("scheme", ["ws", "wss"])
async def test_an_http_proxy_with_basic_auth(
    scheme: str, recorder: tuple[Recorder, int], tls_server: int, client_ssl: ssl.SSLContext
) -> None:
    port = recorder[1] if scheme == "ws" else tls_server
    extra = {"ssl": client_ssl} if scheme == "wss" else {}
    async with ConnectProxy(auth="alice:s3cr:et") as proxy:
        # The password has a colon and is percent-encoded in the URL.
        url = proxy.url("alice:s3cr%3Aet")
        async with tether.connect(f"{scheme}://localhost:{port}/", proxy=url, **extra) as ws:
            await roundtrip(ws)
    expected = base64.b64encode(b"alice:s3cr:et").decode()
    assert f"Proxy-Authorization: Basic {expected}\r\n" in proxy.requests[0].decode()


async def test_407_without_credentials_says_to_give_some(recorder: tuple[Recorder, int]) -> None:
    async with ConnectProxy(auth="alice:pw") as proxy:
        with pytest.raises(ProxyError) as info:
            await tether.connect(f"ws://127.0.0.1:{recorder[1]}/", proxy=proxy.url())
    error = info.value
    assert error.status == 407
    assert isinstance(error, tether.InvalidHandshake)
    assert "407 Proxy Authentication Required" in str(error)
    assert "put them in the proxy URL" in str(error)


async def test_407_with_wrong_credentials_names_the_user(recorder: tuple[Recorder, int]) -> None:
    async with ConnectProxy(auth="alice:pw") as proxy:
        with pytest.raises(ProxyError) as info:
            await tether.connect(f"ws://127.0.0.1:{recorder[1]}/", proxy=proxy.url("alice:wrong"))
    assert info.value.status == 407
    assert "rejected the credentials of user 'alice'" in str(info.value)
    assert "wrong" not in str(info.value)  # never the password


async def test_502_says_the_proxy_could_not_reach_the_server() -> None:
    async with ConnectProxy(answer="502") as proxy:
        with pytest.raises(ProxyError) as info:
            await tether.connect("ws://127.0.0.1:9/", proxy=proxy.url())
        port = proxy.port
    assert info.value.status == 502
    assert str(info.value) == (
        f"proxy http://127.0.0.1:{port} could not reach 127.0.0.1:9: 502 Bad Gateway"
    )


async def test_a_garbage_answer_is_shown() -> None:
    async with ConnectProxy(answer="garbage") as proxy:
        with pytest.raises(ProxyError) as info:
            await tether.connect("ws://127.0.0.1:9/", proxy=proxy.url())
    assert info.value.status is None
    assert "sent an invalid answer to CONNECT: b'SSH-2.0-OpenSSH_9.2" in str(info.value)


async def test_a_proxy_that_hangs_up_or_is_not_there() -> None:
    async with ConnectProxy(answer="close") as proxy:
        with pytest.raises(ProxyError, match="closed the connection without answering CONNECT"):
            await tether.connect("ws://127.0.0.1:9/", proxy=proxy.url())
        port = proxy.port
    with pytest.raises(ConnectionRefusedError, match=f"cannot reach proxy http://127.0.0.1:{port}"):
        await tether.connect("ws://127.0.0.1:9/", proxy=f"http://127.0.0.1:{port}")


async def test_open_timeout_covers_the_proxy() -> None:
    async with ConnectProxy(answer="silent") as proxy:
        with pytest.raises(tether.HandshakeTimeout, match=r"timed out after 0\.3 s"):
            await tether.connect("ws://127.0.0.1:9/", proxy=proxy.url(), open_timeout=0.3)


def test_the_connect_request() -> None:
    proxy = Proxy.parse("http://bob:pa%20ss@proxy.example:3128")
    assert (proxy.username, proxy.password, proxy.port) == ("bob", "pa ss", 3128)
    assert str(proxy) == "http://bob@proxy.example:3128"  # no password
    request = connect_request(proxy, "::1", 443, "tether/0.1").decode()
    assert request == (
        "CONNECT [::1]:443 HTTP/1.1\r\nHost: [::1]:443\r\nUser-Agent: tether/0.1\r\n"
        f"Proxy-Authorization: Basic {base64.b64encode(b'bob:pa ss').decode()}\r\n\r\n"
    )
    assert Proxy.parse("10.0.0.1:8080") == Proxy("http", "10.0.0.1", 8080)
    assert Proxy.parse("https://p.example").port == 443
    with pytest.raises(ValueError, match="scheme 'ftp'"):
        Proxy.parse("ftp://p.example:21")
    with pytest.raises(ValueError, match="needs a port"):
        Proxy.parse("socks5://p.example")
    with pytest.raises(ValueError, match=r"\*\*\*"):  # the password is hidden
        Proxy.parse("gopher://u:secret@p.example")


# ----------------------------------------------------------------------
# The environment


def test_proxy_from_the_environment() -> None:
    ws = parse_uri("ws://api.example.com/feed")
    wss = parse_uri("wss://api.example.com/feed")
    env = {"HTTP_PROXY": "http://plain:3128", "HTTPS_PROXY": "http://secure:3128"}
    assert proxy_for(ws, True, env) == Proxy("http", "plain", 3128)
    assert proxy_for(wss, True, env) == Proxy("http", "secure", 3128)
    # Lower case wins over upper case, like urllib and curl.
    env_lower = dict(env, https_proxy="http://lower:1")
    assert proxy_for(wss, True, env_lower) == Proxy("http", "lower", 1)
    # ALL_PROXY when there is no scheme-specific one.
    assert proxy_for(wss, True, {"ALL_PROXY": "socks5h://s:1080"}) == Proxy("socks5h", "s", 1080)
    # NO_PROXY: exact names, domain suffixes, "*".
    for no_proxy in ["api.example.com", ".example.com", "example.com", "*", "x.org, example.com"]:
        assert proxy_for(wss, True, dict(env, NO_PROXY=no_proxy)) is None, no_proxy
    assert proxy_for(wss, True, dict(env, NO_PROXY="other.com")) is not None
    # Explicit settings beat the environment; loopback never uses it.
    assert proxy_for(wss, None, env) is None
    assert proxy_for(wss, False, env) is None
    assert proxy_for(wss, "socks5://s:1", env) == Proxy("socks5", "s", 1)
    for host in ["localhost", "127.0.0.1", "127.9.9.9", "[::1]"]:
        assert proxy_for(parse_uri(f"wss://{host}/"), True, env) is None
    assert proxy_for(parse_uri("ws://localhost/"), "http://p:1", env) is not None
    # CGI: HTTP_PROXY may come from a request header ("httpoxy"): ignored.
    assert proxy_for(ws, True, dict(env, REQUEST_METHOD="GET")) is None
    assert proxy_for(ws, True, {}) is None


async def test_proxy_from_the_environment_end_to_end(
    recorder: tuple[Recorder, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    # "feed.test" is resolved by the proxy only (to 127.0.0.1), never by us.
    async with ConnectProxy(auth="u:p", resolve={"feed.test": "127.0.0.1"}) as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url("u:p"))
        monkeypatch.delenv("http_proxy", raising=False)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        async with tether.connect(f"ws://feed.test:{recorder[1]}/") as ws:
            await roundtrip(ws)
        assert proxy.tunnels == 1
        assert recorder[0].requests[0].host == f"feed.test:{recorder[1]}"
        monkeypatch.setenv("NO_PROXY", "feed.test")
        with pytest.raises(OSError):  # direct now: the name does not resolve
            await tether.connect(f"ws://feed.test:{recorder[1]}/", open_timeout=5)
        assert proxy.tunnels == 1


# ----------------------------------------------------------------------
# SOCKS5 (python-socks)


@pytest.mark.parametrize("auth", [None, ("carol", "pw")])
async def test_ws_and_wss_through_socks5(
    auth: tuple[str, str] | None,
    recorder: tuple[Recorder, int],
    tls_server: int,
    client_ssl: ssl.SSLContext,
) -> None:
    async with Socks5Proxy(auth) as socks:
        credentials = f"{auth[0]}:{auth[1]}@" if auth else ""
        url = f"socks5://{credentials}127.0.0.1:{socks.port}"
        async with tether.connect(f"ws://127.0.0.1:{recorder[1]}/", proxy=url) as ws:
            await roundtrip(ws)
        async with tether.connect(
            f"wss://localhost:{tls_server}/", proxy=url, ssl=client_ssl
        ) as ws:
            await roundtrip(ws)
        # socks5h: the proxy resolves the name.
        remote = url.replace("socks5://", "socks5h://")
        async with tether.connect(f"ws://feed.test:{recorder[1]}/", proxy=remote) as ws:
            await roundtrip(ws)
    assert socks.targets == [
        ("127.0.0.1", recorder[1]),
        ("127.0.0.1", tls_server),  # socks5: we resolved "localhost"
        ("feed.test", recorder[1]),
    ]


async def test_socks5_errors_are_clear(recorder: tuple[Recorder, int]) -> None:
    async with Socks5Proxy(("carol", "pw")) as socks:
        with pytest.raises(ProxyError, match=r"could not open a tunnel to 127\.0\.0\.1"):
            await tether.connect(
                f"ws://127.0.0.1:{recorder[1]}/",
                proxy=f"socks5://carol:bad@127.0.0.1:{socks.port}",
            )
        port = socks.port
    with pytest.raises(OSError, match=r"cannot reach proxy socks5://127\.0\.0\.1"):
        await tether.connect("ws://127.0.0.1:9/", proxy=f"socks5://127.0.0.1:{port}")


# ----------------------------------------------------------------------
# Redirects


class Redirects:
    """``/old`` -> 302 to ``/new`` (upgraded); ``/loop`` -> itself; ``/away``
    -> 307 to ``location``; ``/gone`` -> 301 to an http URL on ``localhost``."""

    def __init__(self) -> None:
        self.requests: list[Any] = []
        self.location = ""

    def __tether_dispatch__(self, connection: Any, request: Any) -> Any:
        self.requests.append(request)
        path = request.url_path
        if path == "/old":
            return tether.Response(302, headers={"Location": "/new?x=1"})
        if path == "/loop":
            return tether.Response(308, headers={"Location": "/loop"})
        if path == "/away":
            return tether.Response(307, headers={"Location": self.location})
        return Upgrade(echo_handler)


async def test_redirects_are_followed_only_when_asked() -> None:
    app = Redirects()
    async with tether.serve(app, "127.0.0.1", 0) as server:
        url = f"ws://127.0.0.1:{server.port}/old"
        with pytest.raises(tether.InvalidStatus) as info:
            await tether.connect(url)
        assert info.value.status == 302
        async with tether.connect(url, follow_redirects=True) as ws:
            await roundtrip(ws)
            assert ws.request is not None and ws.request.path == "/new?x=1"
        with pytest.raises(tether.InvalidHandshake, match="too many redirects") as loop:
            await tether.connect(
                f"ws://127.0.0.1:{server.port}/loop", follow_redirects=True, max_redirects=3
            )
        assert isinstance(loop.value.__cause__, tether.InvalidStatus)
        assert [r.url_path for r in app.requests[-4:]] == ["/loop"] * 4


async def test_a_redirect_to_another_host_drops_credentials() -> None:
    app = Redirects()
    async with tether.serve(app, "127.0.0.1", 0) as server:
        port = server.port
        app.location = f"http://localhost:{port}/new"
        async with tether.connect(
            f"ws://user:pw@127.0.0.1:{server.port}/away",
            follow_redirects=True,
            additional_headers={"Cookie": "session=1", "X-Trace": "abc"},
        ) as ws:
            await roundtrip(ws)
    first, second = app.requests
    assert first.headers["Authorization"].startswith("Basic ")
    assert first.headers["Cookie"] == "session=1"
    assert second.headers["Host"] == f"localhost:{port}"
    assert "Authorization" not in second.headers and "Cookie" not in second.headers
    assert second.headers["X-Trace"] == "abc"


def test_redirect_targets() -> None:
    base = parse_uri("wss://a.example/x/y")
    assert str(redirect_target(base, "z")) == "wss://a.example/x/z"
    assert str(redirect_target(base, "https://b.example:8443/q")) == "wss://b.example:8443/q"
    assert str(redirect_target(base, "wss://c.example/")) == "wss://c.example/"
    with pytest.raises(tether.InvalidHandshake, match="drops TLS"):
        redirect_target(base, "http://a.example/")
    with pytest.raises(tether.InvalidHandshake, match="not a ws/http URL"):
        redirect_target(base, "ftp://a.example/")
    plain = parse_uri("ws://a.example/")
    assert str(redirect_target(plain, "wss://a.example/")) == "wss://a.example/"


# ----------------------------------------------------------------------
# Connecting well


@pytest.mark.parametrize("delay", [0.25, None])
async def test_every_address_of_a_name_is_tried(
    delay: float | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The name resolves to two addresses; nothing listens on the first one
    # (127.0.0.2), so the connection works only if the next one is tried.
    loop = asyncio.get_running_loop()
    resolved: list[str] = []

    async def getaddrinfo(host: str, port: int, *args: Any, **kwargs: Any) -> list[Any]:
        resolved.append(host)
        stream, tcp = socket.SOCK_STREAM, socket.IPPROTO_TCP
        return [
            (socket.AF_INET, stream, tcp, "", ("127.0.0.2", port)),
            (socket.AF_INET, stream, tcp, "", ("127.0.0.1", port)),
        ]

    async with tether.serve(echo_handler, "127.0.0.1", 0) as server:
        monkeypatch.setattr(loop, "getaddrinfo", getaddrinfo)
        async with tether.connect(
            f"ws://two.test:{server.port}/", happy_eyeballs_delay=delay
        ) as ws:
            await roundtrip(ws)
            assert ws.remote_address[0] == "127.0.0.1"
    assert resolved == ["two.test"]


async def test_open_timeout_covers_the_handshake() -> None:
    # A server that accepts TCP and never answers the upgrade request.
    async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()

    server = await asyncio.start_server(mute, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        loop = asyncio.get_running_loop()
        start = loop.time()
        with pytest.raises(tether.HandshakeTimeout):
            await tether.connect(f"ws://127.0.0.1:{port}/", open_timeout=0.3)
        assert 0.25 < loop.time() - start < 5
    finally:
        server.close()
        await server.wait_closed()


async def test_open_timeout_covers_tls(client_ssl: ssl.SSLContext) -> None:
    # Accepts TCP, never speaks TLS.
    async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()

    server = await asyncio.start_server(mute, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(tether.HandshakeTimeout):
            await tether.connect(f"wss://localhost:{port}/", ssl=client_ssl, open_timeout=0.3)
    finally:
        server.close()
        await server.wait_closed()


async def test_unix_socket_and_ssl_context(
    tmp_path: pathlib.Path, server_ssl: ssl.SSLContext, client_ssl: ssl.SSLContext
) -> None:
    path = str(tmp_path / "ws.sock")
    async with tether.serve(echo_handler, unix=path):
        async with tether.connect("ws://localhost/", unix=path) as ws:
            await roundtrip(ws)
    tls_path = str(tmp_path / "wss.sock")
    async with tether.serve(echo_handler, unix=tls_path, ssl=server_ssl):
        async with tether.connect("wss://localhost/", unix=tls_path, ssl=client_ssl) as ws:
            await roundtrip(ws)
        # The default context does not trust the self-signed certificate.
        with pytest.raises(ssl.SSLCertVerificationError):
            await tether.connect("wss://localhost/", unix=tls_path)
    with pytest.raises(ValueError, match="ssl=False"):
        await tether.connect("wss://localhost/", unix=tls_path, ssl=False)


async def test_request_headers(recorder: tuple[Recorder, int]) -> None:
    app, port = recorder
    async with tether.connect(
        f"ws://127.0.0.1:{port}/",
        additional_headers=[("X-Api-Key", "k1"), ("X-Api-Key", "k2")],
        user_agent="bot/2.0",
        origin="https://app.example",
    ) as ws:
        await roundtrip(ws)
    async with tether.connect(
        f"ws://127.0.0.1:{port}/", user_agent=None, additional_headers=tether.Headers({"A": "b"})
    ) as ws:
        await roundtrip(ws)
    first, second = (request.headers for request in app.requests)
    assert first.get_all("X-Api-Key") == ["k1", "k2"]
    assert first["User-Agent"] == "bot/2.0"
    assert first["Origin"] == "https://app.example"
    assert "User-Agent" not in second and "Origin" not in second
    assert second["A"] == "b"
