"""Reaching a WebSocket server through a proxy.

Two kinds of proxies are supported:

- **HTTP proxies** (``http://host:port``, or ``https://`` for TLS to the
  proxy itself): tether asks for a tunnel with ``CONNECT host:port``
  (RFC 9110 section 9.3.6), with ``Proxy-Authorization: Basic`` when the
  proxy URL carries ``user:password@``. Then it runs TLS (for ``wss://``) and
  the WebSocket handshake inside the tunnel (``wss://`` through an
  ``https://`` proxy is TLS inside TLS: Python 3.11 or later).
- **SOCKS proxies** (``socks5://``, ``socks5h://`` to let the proxy resolve
  the name, ``socks4://``, ``socks4a://``) through the ``python-socks``
  library: ``pip install 'tether[socks]'``.

Which proxy: :func:`proxy_for` takes the ``proxy=`` argument of
:func:`tether.connect`: a URL (that proxy), ``None`` or ``False`` (connect
directly), or ``True`` (the default: read the environment like other Python
HTTP clients do: ``https_proxy``/``HTTPS_PROXY`` for ``wss://``,
``http_proxy``/``HTTP_PROXY`` for ``ws://``, then ``all_proxy``/``ALL_PROXY``,
skipping the hosts listed in ``no_proxy``/``NO_PROXY``). Loopback hosts
(``localhost``, ``127.0.0.0/8``, ``::1``) are never sent to a proxy taken
from the environment.

Failures raise :class:`ProxyError` (a kind of
:class:`~tether.exceptions.InvalidHandshake`) with the proxy's HTTP status
(407, 502...) when it answered one, or ``OSError`` when the proxy cannot be
reached at all.

What to call next: nothing; :func:`tether.connect` calls
:func:`open_via_proxy` for you. Use :class:`Proxy` to inspect a proxy URL.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import os
import re
import ssl as ssl_module
import sys
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import unquote, urlsplit

from tether.exceptions import InvalidHandshake
from tether.protocol.uri import WSURI

__all__ = ["Proxy", "ProxyError", "open_via_proxy", "proxy_for"]

P = TypeVar("P", bound=asyncio.BaseProtocol)

#: Largest answer to CONNECT (status line + headers) read from a proxy, in bytes.
MAX_PROXY_RESPONSE = 64 * 1024

_SCHEMES = ("http", "https", "socks5", "socks5h", "socks4", "socks4a")
_DEFAULT_PORTS = {"http": 80, "https": 443}
_STATUS_LINE = re.compile(rb"HTTP/1\.[01] ([1-9][0-9]{2})(?: ([^\r\n]*))?")


class ProxyError(InvalidHandshake):
    """The proxy did not open a tunnel to the server.

    ``status`` is the HTTP status of the proxy's answer to ``CONNECT`` (407
    when it wants credentials or refused them, 502 or 504 when it could not
    reach the server...), or ``None`` when there was no usable answer
    (garbage, the connection closed, or a SOCKS failure). ``proxy`` is the
    proxy's URL without its password.
    """

    def __init__(self, message: str, proxy: str, status: int | None = None) -> None:
        super().__init__(message)
        self.proxy = proxy
        self.status = status


@dataclass(frozen=True, slots=True)
class Proxy:
    """A parsed proxy URL: ``scheme://[user:password@]host[:port]``.

    ``str(proxy)`` leaves the password out, so it is safe to log.
    """

    scheme: str
    host: str
    port: int
    username: str | None = None
    password: str | None = None

    @classmethod
    def parse(cls, url: str) -> Proxy:
        """Parse a proxy URL; a bare ``host:port`` means ``http://host:port``.

        Raises ``ValueError`` naming what is wrong.
        """
        if "://" not in url:
            url = f"http://{url}"
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in _SCHEMES:
            raise ValueError(
                f"proxy URL {_redact(url)!r} has scheme {scheme!r}: expected one of "
                + ", ".join(_SCHEMES)
            )
        if not parts.hostname:
            raise ValueError(f"proxy URL {_redact(url)!r} has no host")
        try:
            port = parts.port
        except ValueError:
            raise ValueError(f"proxy URL {_redact(url)!r} has an invalid port") from None
        if port is None:
            if scheme not in _DEFAULT_PORTS:
                raise ValueError(f"proxy URL {_redact(url)!r} needs a port")
            port = _DEFAULT_PORTS[scheme]
        username = unquote(parts.username) if parts.username is not None else None
        password = unquote(parts.password) if parts.password is not None else None
        return cls(scheme, parts.hostname, port, username, password)

    @property
    def is_socks(self) -> bool:
        """Whether this is a SOCKS proxy (handled by python-socks)."""
        return self.scheme.startswith("socks")

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        user = f"{self.username}@" if self.username else ""
        return f"{self.scheme}://{user}{host}:{self.port}"


def _redact(url: str) -> str:
    return re.sub(r"(//[^:/@]*:)[^@/]*@", r"\1***@", url)


def _is_loopback(host: str) -> bool:
    if host.lower().rstrip(".") == "localhost" or host.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.partition("%")[0]).is_loopback
    except ValueError:
        return False


def proxy_for(
    uri: WSURI,
    proxy: str | Proxy | bool | None = True,
    environ: Mapping[str, str] | None = None,
) -> Proxy | None:
    """The proxy to reach ``uri`` through, or ``None`` to connect directly.

    ``proxy``: a URL or :class:`Proxy` (used as is), ``None``/``False``
    (direct), ``True`` (from the environment: see the module docstring).
    ``environ`` replaces ``os.environ`` (for tests).
    """
    if proxy is None or proxy is False:
        return None
    if isinstance(proxy, Proxy):
        return proxy
    if isinstance(proxy, str):
        return Proxy.parse(proxy)
    if _is_loopback(uri.host):
        return None
    proxies = _environment_proxies(os.environ if environ is None else environ)
    url = proxies.get("https" if uri.secure else "http") or proxies.get("all")
    if not url:
        return None
    host_port = f"{uri.host}:{uri.port}"
    if _bypass(host_port, proxies):
        return None
    return Proxy.parse(url)


def _environment_proxies(environ: Mapping[str, str]) -> dict[str, str]:
    """Like ``urllib.request.getproxies_environment``, on any mapping:
    ``*_proxy`` variables by scheme, lower case winning over upper case."""
    proxies: dict[str, str] = {}
    for name, value in environ.items():
        lower = name.lower()
        if value and lower.endswith("_proxy"):
            proxies.setdefault(lower[:-6], value)
    for name, value in environ.items():
        lower = name.lower()
        if value and name == lower and lower.endswith("_proxy"):
            proxies[lower[:-6]] = value
    # "httpoxy": under CGI, HTTP_PROXY may come from a request's Proxy header.
    if "REQUEST_METHOD" in environ:
        proxies.pop("http", None)
        if "http_proxy" in environ:
            proxies["http"] = environ["http_proxy"]
    return proxies


def _bypass(host_port: str, proxies: dict[str, str]) -> bool:
    if "no" not in proxies:
        return False
    return bool(urllib.request.proxy_bypass_environment(host_port, proxies))  # type: ignore[attr-defined]


# ----------------------------------------------------------------------
# Opening the tunnel


async def open_via_proxy(
    proxy: Proxy,
    uri: WSURI,
    factory: Callable[[], P],
    *,
    ssl: ssl_module.SSLContext | None,
    server_hostname: str | None,
    proxy_ssl: ssl_module.SSLContext | None = None,
    user_agent: str | None = None,
    happy_eyeballs_delay: float | None = None,
) -> tuple[asyncio.Transport, P]:
    """Open a tunnel to ``uri``'s host and port through ``proxy``, run TLS in
    it when ``ssl`` is given, and hand the transport to ``factory()``'s
    protocol (which then sends the WebSocket handshake).

    ``proxy_ssl`` is the context for TLS to an ``https://`` proxy itself.
    The caller bounds the whole thing with ``open_timeout``.
    """
    if proxy.is_socks:
        return await _open_socks(proxy, uri, factory, ssl=ssl, server_hostname=server_hostname)
    return await _open_http(
        proxy,
        uri,
        factory,
        ssl=ssl,
        server_hostname=server_hostname,
        proxy_ssl=proxy_ssl,
        user_agent=user_agent,
        happy_eyeballs_delay=happy_eyeballs_delay,
    )


def connect_request(proxy: Proxy, host: str, port: int, user_agent: str | None = None) -> bytes:
    """The ``CONNECT`` request that asks ``proxy`` for a tunnel to ``host:port``.

    RFC 9110 section 9.3.6: "the request-target consists of only the host
    name and port number of the tunnel destination, separated by a colon".
    """
    authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    lines = [f"CONNECT {authority} HTTP/1.1", f"Host: {authority}"]
    if user_agent:
        lines.append(f"User-Agent: {user_agent}")
    if proxy.username is not None:
        # RFC 7617: the "Basic" scheme, user-id ":" password in base64.
        credentials = f"{proxy.username}:{proxy.password or ''}".encode()
        lines.append(f"Proxy-Authorization: Basic {base64.b64encode(credentials).decode()}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class _ConnectProtocol(asyncio.Protocol):
    """Sends CONNECT, reads the proxy's answer, then stays quiet until the
    transport is handed to the WebSocket protocol."""

    def __init__(self, request: bytes) -> None:
        self.request = request
        self.buffer = b""
        self.answer: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        if self.answer.done():
            return
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end >= 0:
            assert self.transport is not None
            self.transport.pause_reading()
            self.answer.set_result(self.buffer[: end + 4])
            self.buffer = self.buffer[end + 4 :]
        elif len(self.buffer) > MAX_PROXY_RESPONSE:
            self.answer.set_result(self.buffer)

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.answer.done():
            self.answer.set_exception(ConnectionResetError("closed") if exc is None else exc)


async def _open_http(
    proxy: Proxy,
    uri: WSURI,
    factory: Callable[[], P],
    *,
    ssl: ssl_module.SSLContext | None,
    server_hostname: str | None,
    proxy_ssl: ssl_module.SSLContext | None,
    user_agent: str | None,
    happy_eyeballs_delay: float | None,
) -> tuple[asyncio.Transport, P]:
    loop = asyncio.get_running_loop()
    tunnel = _ConnectProtocol(connect_request(proxy, uri.host, uri.port, user_agent))
    if proxy.scheme == "https":
        proxy_ssl = proxy_ssl or ssl_module.create_default_context()
    else:
        proxy_ssl = None
    try:
        transport, _ = await loop.create_connection(
            lambda: tunnel,
            proxy.host,
            proxy.port,
            ssl=proxy_ssl,
            happy_eyeballs_delay=happy_eyeballs_delay,
        )
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno and exc.errno > 0 else str(exc)
        raise type(exc)(exc.errno, f"cannot reach proxy {proxy}: {reason}") from exc
    assert isinstance(transport, asyncio.Transport)
    try:
        try:
            answer = await tunnel.answer
        except OSError as exc:
            raise ProxyError(
                f"proxy {proxy} closed the connection without answering CONNECT", str(proxy)
            ) from exc
        status = _check_answer(proxy, answer, uri)
        if tunnel.buffer:
            raise ProxyError(
                f"proxy {proxy} sent data after its {status} answer, before the server could",
                str(proxy),
                status,
            )
        if ssl is not None:
            if proxy_ssl is not None and sys.version_info < (3, 11):
                raise ProxyError(
                    f"wss:// through the https:// proxy {proxy} needs TLS inside TLS, "
                    "which asyncio supports from Python 3.11 on",
                    str(proxy),
                )
            tls = await loop.start_tls(transport, tunnel, ssl, server_hostname=server_hostname)
            if tls is None:  # pragma: no cover - only when the transport is closing
                raise ConnectionResetError(f"proxy {proxy} closed the tunnel during TLS")
            transport = tls
        protocol = factory()
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        transport.resume_reading()
        return transport, protocol
    except BaseException:
        transport.abort()
        raise


def _check_answer(proxy: Proxy, answer: bytes, uri: WSURI) -> int:
    """The status of the proxy's answer to CONNECT; raise unless it is 2xx."""
    name = str(proxy)
    line, _, _ = answer.partition(b"\r\n")
    match = _STATUS_LINE.fullmatch(line)
    if not answer.endswith(b"\r\n\r\n") or match is None:
        shown = answer[:80]
        more = "..." if len(answer) > 80 else ""
        raise ProxyError(f"proxy {proxy} sent an invalid answer to CONNECT: {shown!r}{more}", name)
    status = int(match.group(1))
    phrase = (match.group(2) or b"").decode("latin-1").strip()
    label = f"{status} {phrase}".strip()
    target = f"{uri.host}:{uri.port}"
    # RFC 9110 section 9.3.6: "Any 2xx (Successful) response indicates that
    # the sender (and all inbound proxies) will switch to tunnel mode".
    if 200 <= status < 300:
        return status
    if status == 407:
        if proxy.username is None:
            hint = "it wants credentials: put them in the proxy URL, http://user:password@host:port"
        else:
            hint = f"it rejected the credentials of user {proxy.username!r}"
        raise ProxyError(f"proxy {proxy} answered {label}: {hint}", name, status)
    if status in (502, 503, 504):
        raise ProxyError(f"proxy {proxy} could not reach {target}: {label}", name, status)
    raise ProxyError(f"proxy {proxy} refused the tunnel to {target}: {label}", name, status)


async def _open_socks(
    proxy: Proxy,
    uri: WSURI,
    factory: Callable[[], P],
    *,
    ssl: ssl_module.SSLContext | None,
    server_hostname: str | None,
) -> tuple[asyncio.Transport, P]:
    try:
        import python_socks
        from python_socks.async_.asyncio import Proxy as SocksProxy
    except ImportError:
        raise ImportError(
            f"the proxy {proxy} is a SOCKS proxy, which needs python-socks: "
            "pip install 'tether[socks]'"
        ) from None
    kind = (
        python_socks.ProxyType.SOCKS4
        if proxy.scheme.startswith("socks4")
        else (python_socks.ProxyType.SOCKS5)
    )
    socks = SocksProxy(
        kind,
        proxy.host,
        proxy.port,
        username=proxy.username,
        password=proxy.password,
        rdns=proxy.scheme in ("socks5h", "socks4a"),
    )
    name = str(proxy)
    try:
        # The caller's open_timeout bounds the whole connection; python-socks
        # wants one of its own: make it never the one that fires first.
        sock = await socks.connect(uri.host, uri.port, timeout=3600.0)
    except python_socks.ProxyConnectionError as exc:
        raise OSError(exc.errno, f"cannot reach proxy {proxy}: {exc}") from exc
    except python_socks.ProxyTimeoutError as exc:  # pragma: no cover - see above
        raise TimeoutError(f"proxy {proxy} timed out") from exc
    except python_socks.ProxyError as exc:
        raise ProxyError(
            f"proxy {proxy} could not open a tunnel to {uri.host}:{uri.port}: {exc}", name
        ) from exc
    loop = asyncio.get_running_loop()
    try:
        transport, protocol = await loop.create_connection(
            factory, sock=sock, ssl=ssl, server_hostname=server_hostname
        )
    except BaseException:
        sock.close()
        raise
    assert isinstance(transport, asyncio.Transport)
    return transport, protocol


def describe(proxy: Proxy | None) -> str:
    """``"directly"`` or ``"through proxy URL"``, for log lines."""
    return "directly" if proxy is None else f"through proxy {proxy}"
