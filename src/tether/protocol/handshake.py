"""The opening handshake of RFC 6455 (section 4), both sides, sans-I/O.

Server::

    hs = ServerHandshake(subprotocols=["chat"])
    request = hs.receive_data(data)        # None until the head is complete
    # InvalidMessage (malformed HTTP): send hs.reject_error(exc), close
    response, negotiated = hs.accept(request)   # InvalidRequest: hs.reject_error(exc)
    send(response.serialize()); then speak WebSocket, starting with hs.leftover

Client::

    hs = ClientHandshake(parse_uri("wss://example.com/chat"))
    send(hs.request().serialize())
    response = hs.receive_data(data)       # None until complete; hs.receive_eof() at EOF
    negotiated = hs.check(response)        # InvalidStatus, InvalidResponse, NegotiationError
    then speak WebSocket, starting with hs.leftover

Status codes a server answers with (the ``status`` of the exception):

* 400: malformed HTTP (see :mod:`tether.protocol.http`), HTTP/1.0, a
  missing or repeated ``Host``, a missing, repeated or invalid
  ``Sec-WebSocket-Key``, a repeated ``Sec-WebSocket-Version``, a malformed
  ``Sec-WebSocket-Protocol`` (when we speak subprotocols) or
  ``Sec-WebSocket-Extensions`` (when compression is on: RFC 6455 section
  9.1 says to fail on malformed data; offers that are well-formed but
  unacceptable are only declined), a repeated ``Origin``, a request-target
  that is not a path or an absolute URI, a body (``Transfer-Encoding``, or
  a ``Content-Length`` other than 0).
* 405 (with ``Allow: GET``): a method other than GET.
* 426 (with ``Upgrade: websocket``): no ``Upgrade: websocket`` or no
  ``Connection: upgrade``; the request is then a plain HTTP request, and
  RFC 9110 section 15.5.22 says 426 "indicates that the server refuses to
  perform the request using the current protocol but might be willing to do
  so after the client upgrades to a different protocol".
* 426 (with ``Sec-WebSocket-Version: 13``): a missing or other version.
* 403: an ``Origin`` that is not allowed.
* 414 and 431: limits, 505: HTTP/2.0 and the like (from the HTTP parser).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from tether import limits
from tether.exceptions import (
    InvalidHandshake,
    InvalidMessage,
    InvalidRequest,
    InvalidResponse,
    InvalidStatus,
    NegotiationError,
)
from tether.protocol.deflate import (
    DeflateOptions,
    DeflateParams,
    client_accept,
    client_offer,
    server_accept,
)
from tether.protocol.http import (
    Headers,
    Request,
    Response,
    _BodyReader,
    _HeadScanner,
    _request_from_head,
    _response_from_head,
    parse_request_head,
    parse_response_head,
)
from tether.protocol.uri import WSURI

__all__ = [
    "GUID",
    "ClientHandshake",
    "Headers",
    "Negotiated",
    "Request",
    "Response",
    "ServerHandshake",
    "accept_key",
    "parse_request_head",
    "parse_response_head",
]

#: RFC 6455 section 1.3: the "Globally Unique Identifier" appended to the key.
GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

_token = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+").fullmatch
# An absolute-form request-target (RFC 6455 section 4.2.1, item 1: "or an
# absolute HTTP/HTTPS URI containing the /resource name/").
_absolute = re.compile(r"(?:https?|wss?)://[^/?]+(?:[/?].*)?", re.IGNORECASE).fullmatch

_UPGRADE_HEADERS = [("Upgrade", "websocket"), ("Connection", "Upgrade")]
_VERSION_HEADERS = [("Sec-WebSocket-Version", "13")]


def accept_key(key: str) -> str:
    """The ``Sec-WebSocket-Accept`` value for a ``Sec-WebSocket-Key``.

    RFC 6455 section 4.2.2: "concatenating /key/ ... with the string
    "258EAFA5-E914-47DA-95CA-C5AB0DC85B11", taking the SHA-1 hash of this
    concatenated value to obtain a 20-byte value and base64-encoding (see
    Section 4 of [RFC4648]) this 20-byte hash."
    """
    digest = hashlib.sha1((key + GUID).encode("latin-1")).digest()
    return binascii.b2a_base64(digest, newline=False).decode("ascii")


@dataclass(frozen=True, slots=True)
class Negotiated:
    """What the handshake agreed on.

    ``subprotocol``: the ``Sec-WebSocket-Protocol`` chosen, or ``None``.
    ``deflate``: the permessage-deflate parameters, or ``None`` (no
    compression): build the codec with
    ``PerMessageDeflate(negotiated.deflate, is_server, options)``.
    ``extensions_header``: the ``Sec-WebSocket-Extensions`` value agreed,
    for information.
    """

    subprotocol: str | None = None
    deflate: DeflateParams | None = None
    extensions_header: str | None = None


def _tokens(values: list[str]) -> list[str]:
    """The lower-cased elements of comma-separated header values."""
    return [item.strip(" \t").lower() for value in values for item in value.split(",")]


def _check_subprotocols(subprotocols: Sequence[str] | None) -> tuple[str, ...]:
    if subprotocols is None:
        return ()
    if isinstance(subprotocols, str):
        raise TypeError("subprotocols must be a list of strings, not a string")
    for protocol in subprotocols:
        # RFC 6455 section 4.1: "The elements that comprise this value MUST
        # be non-empty strings with characters in the range U+0021 to U+007E
        # not including separator characters as defined in [RFC2616] and
        # MUST all be unique strings."
        if not isinstance(protocol, str) or not _token(protocol):
            raise ValueError(f"invalid subprotocol {protocol!r}: must be an HTTP token")
    if len(set(subprotocols)) != len(subprotocols):
        raise ValueError("subprotocols must be unique")
    return tuple(subprotocols)


class _HeadBuffer:
    """The bytes of an HTTP head that may arrive in pieces.

    The usual case, a whole head in one piece, is scanned where it lies,
    without a copy; only a head cut across reads is gathered in a buffer,
    which the scanner resumes where it stopped.
    """

    __slots__ = ("_buf", "_scanner")

    def __init__(self, scanner: _HeadScanner) -> None:
        self._scanner = scanner
        self._buf = bytearray()

    def feed(self, data: bytes | bytearray) -> tuple[bytes | bytearray, int] | None:
        """Add ``data``; once the head is complete, return ``(bytes, end)``:
        the head is ``bytes[:end]`` and what follows it is ``bytes[end:]``.
        Raises :class:`~tether.exceptions.InvalidMessage` like the scanner."""
        buf = self._buf
        if buf:
            old = len(buf)
            buf += data
            src: bytes | bytearray = buf
        else:
            old = 0
            src = data
        end = self._scanner.scan(src, old)
        if end is None:
            if not buf:
                self._buf = bytearray(data)
            return None
        if buf:
            self._buf = bytearray()
        return src, end


class ServerHandshake:
    """The server side of the opening handshake.

    ``subprotocols``: the subprotocols we speak; the first one *in the
    client's order* that we speak is chosen (RFC 6455 section 4.1: the client
    lists them "ordered by preference"); none if there is no overlap or the
    client offers none (the connection is still accepted; refuse it in
    your handler if a subprotocol is mandatory). ``compression``: our
    permessage-deflate settings, ``None`` never to accept it. ``origins``:
    ``None`` accepts any ``Origin``; a list accepts only these exact
    values, and ``None`` in the list accepts requests without ``Origin``
    (non-browser clients). ``server_header``: the ``Server`` header of our
    responses, ``None`` for none. ``max_*``: the HTTP limits of
    :mod:`tether.limits`.

    What to call next: :meth:`receive_data` until it returns the
    :class:`Request`, then :meth:`accept` (or :meth:`reject`) and send the
    response; :attr:`leftover` holds the bytes that came after the request
    (frames a client sent without waiting).
    """

    __slots__ = (
        "_head",
        "_request",
        "_subprotocol_set",
        "compression",
        "leftover",
        "max_headers",
        "max_line",
        "max_request",
        "origins",
        "server_header",
        "subprotocols",
    )

    def __init__(
        self,
        *,
        subprotocols: Sequence[str] | None = None,
        compression: DeflateOptions | None = DeflateOptions(),  # noqa: B008 - frozen
        origins: Sequence[str | None] | None = None,
        server_header: str | None = "tether",
        max_line: int = limits.MAX_LINE,
        max_headers: int = limits.MAX_HEADERS,
        max_request: int = limits.MAX_REQUEST,
    ) -> None:
        self.subprotocols = _check_subprotocols(subprotocols)
        self._subprotocol_set = frozenset(self.subprotocols)
        self.compression = compression
        self.origins = None if origins is None else frozenset(origins)
        self.server_header = server_header
        self.max_line = max_line
        self.max_headers = max_headers
        self.max_request = max_request
        #: The bytes received after the request head.
        self.leftover = b""
        self._request: Request | None = None
        self._head = _HeadBuffer(_HeadScanner(True, max_line, max_headers, max_request))

    def receive_data(self, data: bytes | bytearray | memoryview) -> Request | None:
        """Feed bytes from the client; return the :class:`Request` once its
        head is complete, else ``None``.

        Raises :class:`~tether.exceptions.InvalidMessage` (with the status to
        answer: 400, 414, 431, 505) as soon as the bytes are malformed or
        over a limit. Bytes after the head go to :attr:`leftover`, including
        those of later calls.
        """
        if self._request is not None:
            self.leftover += data
            return None
        if not isinstance(data, (bytes, bytearray)):
            data = bytes(data)
        head = self._head.feed(data)
        if head is None:
            return None
        src, end = head
        request = _request_from_head(src, end, self.max_line, self.max_headers)
        if end < len(src):
            self.leftover = bytes(src[end:])
        self._request = request
        return request

    def validate(self, request: Request) -> str:
        """Check that ``request`` is a WebSocket upgrade (RFC 6455 section
        4.2.1); return its ``Sec-WebSocket-Key``.

        Raises :class:`~tether.exceptions.InvalidRequest` with the status and
        headers to answer with (see the module docstring). :meth:`accept`
        calls this; call it yourself to check a request before deciding.
        """
        # 4.2.1, item 1: "An HTTP/1.1 or higher GET request, including a
        # "Request-URI" [RFC2616] that should be interpreted as a /resource
        # name/ defined in Section 3 (or an absolute HTTP/HTTPS URI
        # containing the /resource name/)."
        if request.method != "GET":
            raise InvalidRequest(
                f"method {request.method} not allowed: the WebSocket handshake is a GET",
                405,
                [("Allow", "GET")],
            )
        if request.version != "HTTP/1.1":
            raise InvalidRequest(f"{request.version} is not supported: expected HTTP/1.1", 400)
        path = request.path
        if not path.startswith("/") and not _absolute(path):
            raise InvalidRequest(f"invalid request target {path[:100]!r}", 400)
        headers = request.headers
        index = headers._index if headers._index is not None else headers._build()
        repeated = headers._multi
        # 4.2.1, item 2: "A |Host| header field containing the server's
        # authority." RFC 9112 section 3.2: "A server MUST respond with a 400
        # (Bad Request) status code to any HTTP/1.1 request message that
        # lacks a Host header field and to any request message that contains
        # more than one Host header field line".
        host = index.get("host")
        if not host or "host" in repeated:
            if host is None:
                problem = "missing Host header"
            elif "host" in repeated:
                problem = "more than one Host header"
            else:
                problem = "empty Host header"
            raise InvalidRequest(problem, 400)
        # RFC 9110 section 9.3.1: "content received in a GET request has no
        # generally defined semantics, cannot alter the meaning or target of
        # the request, and might lead some implementations to reject the
        # request and close the connection because of its potential as a
        # request smuggling attack." Here the bytes of a body would be read
        # as WebSocket frames: refuse it.
        if "transfer-encoding" in index or index.get("content-length", "0") != "0":
            raise InvalidRequest("a WebSocket upgrade request must not have a body", 400)
        # 4.2.1, item 3: "An |Upgrade| header field containing the value
        # "websocket", treated as an ASCII case-insensitive value."
        upgrade = index.get("upgrade")
        if upgrade is None or (
            upgrade.lower() != "websocket"
            and "websocket" not in _tokens(headers.get_all("upgrade"))
        ):
            problem = "missing Upgrade header" if upgrade is None else f"Upgrade: {upgrade[:100]}"
            raise InvalidRequest(
                f"{problem}: expected Upgrade: websocket", 426, list(_UPGRADE_HEADERS)
            )
        # 4.2.1, item 4: "A |Connection| header field that includes the token
        # "Upgrade", treated as an ASCII case-insensitive value."
        connection = index.get("connection")
        if connection is None or (
            connection.lower() != "upgrade"
            and "upgrade" not in _tokens(headers.get_all("connection"))
        ):
            problem = (
                "missing Connection header"
                if connection is None
                else f"Connection: {connection[:100]}"
            )
            raise InvalidRequest(
                f"{problem}: expected the token 'upgrade'", 426, list(_UPGRADE_HEADERS)
            )
        # 4.2.1, item 6: "A |Sec-WebSocket-Version| header field, with a value
        # of 13." Section 4.4: "If this version does not match a version
        # understood by the server, the server MUST abort the WebSocket
        # handshake described in this section and instead send an
        # appropriate HTTP error code (such as 426 Upgrade Required) and a
        # |Sec-WebSocket-Version| header field indicating the version(s) the
        # server is capable of understanding." A missing version is answered
        # the same way: pre-RFC (hixie) clients send none, and 426 tells them
        # what to do.
        version = index.get("sec-websocket-version")
        if version != "13" or "sec-websocket-version" in repeated:
            if "sec-websocket-version" in repeated:
                raise InvalidRequest("more than one Sec-WebSocket-Version header", 400)
            problem = (
                "missing Sec-WebSocket-Version header"
                if version is None
                else f"unsupported Sec-WebSocket-Version: {version[:20]}"
            )
            raise InvalidRequest(f"{problem}: expected 13", 426, list(_VERSION_HEADERS))
        # 4.2.1, item 5: "A |Sec-WebSocket-Key| header field with a base64-
        # encoded (see Section 4 of [RFC4648]) value that, when decoded, is 16
        # bytes in length." Section 11.3.1: "The |Sec-WebSocket-Key| header
        # field MUST NOT appear more than once in an HTTP request."
        key = index.get("sec-websocket-key")
        if key is None or "sec-websocket-key" in repeated:
            problem = "missing" if key is None else "more than one"
            raise InvalidRequest(f"{problem} Sec-WebSocket-Key header", 400)
        try:
            raw = base64.b64decode(key, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidRequest(f"Sec-WebSocket-Key is not base64: {key[:40]!r}", 400) from None
        if len(raw) != 16:
            raise InvalidRequest(
                f"Sec-WebSocket-Key decodes to {len(raw)} bytes, not 16: {key[:40]!r}", 400
            )
        # 4.2.1, item 7: "Optionally, an |Origin| header field." Section
        # 4.2.2: "If the server does not validate the origin, it will accept
        # connections from anywhere. If the server does not wish to accept
        # this connection, it MUST return an appropriate HTTP error code
        # (e.g., 403 Forbidden) and abort the WebSocket handshake".
        if self.origins is not None:
            if "origin" in repeated:
                raise InvalidRequest("more than one Origin header", 400)
            origin = index.get("origin")
            if origin not in self.origins:
                raise InvalidRequest(
                    "missing Origin header" if origin is None else f"Origin {origin!r} not allowed",
                    403,
                )
        return key

    def accept(
        self, request: Request, extra_headers: Iterable[tuple[str, str]] = ()
    ) -> tuple[Response, Negotiated]:
        """Validate ``request`` and build the 101 response (RFC 6455 section
        4.2.2); return it with what was negotiated.

        Raises :class:`~tether.exceptions.InvalidRequest`: answer it with
        :meth:`reject_error`. ``extra_headers`` are added after ours (checked:
        ``ValueError`` for an invalid name or value).
        """
        key = self.validate(request)
        headers = request.headers
        # 4.2.2, step 4: "/subprotocol/ Either a single value representing
        # the subprotocol the server is ready to use or null. The value
        # chosen MUST be derived from the client's handshake, specifically by
        # selecting one of the values from the |Sec-WebSocket-Protocol| field
        # that the server is willing to use for this connection (if any)."
        subprotocol = None
        if self.subprotocols:
            offered = _tokens_exact(headers.get_all("Sec-WebSocket-Protocol"))
            for protocol in offered:
                if protocol in self._subprotocol_set:
                    subprotocol = protocol
                    break
        # 4.2.2, step 4: "/extensions/ A (possibly empty) list representing
        # the protocol-level extensions the server is ready to use."
        deflate = None
        extensions_header = None
        if self.compression is not None:
            offers = headers.get_all("Sec-WebSocket-Extensions")
            if offers:
                agreed = server_accept(offers, self.compression)
                if agreed is not None:
                    extensions_header, deflate = agreed
        # 4.2.2, step 5: "1. A Status-Line with a 101 response code ... 2. An
        # |Upgrade| header field with value "websocket" ... 3. A |Connection|
        # header field with value "Upgrade". 4. A |Sec-WebSocket-Accept|
        # header field. ... 5. Optionally, a |Sec-WebSocket-Protocol| header
        # field ... 6. Optionally, a |Sec-WebSocket-Extensions| header field".
        out = Headers()
        add = out._add
        add("Upgrade", "websocket")
        add("Connection", "Upgrade")
        add("Sec-WebSocket-Accept", accept_key(key))
        if extensions_header is not None:
            add("Sec-WebSocket-Extensions", extensions_header)
        if subprotocol is not None:
            add("Sec-WebSocket-Protocol", subprotocol)
        if self.server_header:
            out.add("Server", self.server_header)
        for name, value in extra_headers:
            out.add(name, value)
        response = Response(101, "Switching Protocols", out)
        return response, Negotiated(subprotocol, deflate, extensions_header)

    def reject(
        self,
        status: int,
        body: str | bytes = b"",
        headers: Iterable[tuple[str, str]] = (),
    ) -> Response:
        """A plain HTTP response refusing the upgrade (or serving something
        else): ``Connection: close``, the ``Server`` header, and for a
        ``str`` body ``Content-Type: text/plain; charset=utf-8``. Send it,
        then close the connection."""
        out = Headers()
        if self.server_header:
            out.add("Server", self.server_header)
        out._add("Connection", "close")
        if isinstance(body, str):
            body = body.encode("utf-8")
            extra = list(headers)
            if not any(name.lower() == "content-type" for name, _ in extra):
                out._add("Content-Type", "text/plain; charset=utf-8")
            headers = extra
        for name, value in headers:
            out.add(name, value)
        return Response(status, "", out, bytes(body))

    def reject_error(self, exc: InvalidHandshake) -> Response:
        """The response for an :class:`~tether.exceptions.InvalidMessage` or
        :class:`~tether.exceptions.InvalidRequest`: its status (400 for
        others), its headers (``Allow``, ``Upgrade``,
        ``Sec-WebSocket-Version``...) and its message as the body."""
        status = getattr(exc, "status", 400)
        if not isinstance(exc, (InvalidMessage, InvalidRequest)):
            status = 400
        headers = exc.headers if isinstance(exc, InvalidRequest) else []
        return self.reject(status, f"Failed to open a WebSocket connection: {exc}.\n", headers)


def _tokens_exact(values: list[str]) -> list[str]:
    """The elements of ``Sec-WebSocket-Protocol`` values, case kept
    (subprotocol names are case-sensitive). Empty elements are skipped;
    a non-token raises InvalidRequest (400)."""
    result = []
    for value in values:
        for item in value.split(","):
            item = item.strip(" \t")
            if not item:
                continue
            if not _token(item):
                raise InvalidRequest(f"invalid Sec-WebSocket-Protocol {value[:100]!r}", 400)
            result.append(item)
    return result


_RESERVED = frozenset(
    {
        "upgrade",
        "connection",
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-extensions",
        "sec-websocket-protocol",
    }
)
_REPLACEABLE = frozenset({"host", "origin", "user-agent", "authorization"})


class ClientHandshake:
    """The client side of the opening handshake.

    ``uri``: where to connect (:func:`~tether.protocol.uri.parse_uri`).
    ``subprotocols``: offered in this order of preference. ``compression``:
    our permessage-deflate offer, ``None`` for none. ``additional_headers``:
    added to the request; a ``Host``, ``Origin``, ``User-Agent`` or
    ``Authorization`` among them replaces ours; the ``Upgrade``,
    ``Connection`` and ``Sec-WebSocket-*`` headers cannot be set this way
    (``ValueError``). ``origin``: the ``Origin`` header, if any.
    ``user_agent``: the ``User-Agent`` header, ``None`` for none. ``key``:
    the ``Sec-WebSocket-Key`` (random by default; give one for tests).
    ``max_body``: the largest body read from a response that refuses the
    upgrade.

    What to call next: send :meth:`request`, feed the server's bytes to
    :meth:`receive_data` (and call :meth:`receive_eof` if the connection
    closes) until it returns the :class:`Response`, then :meth:`check` it;
    :attr:`leftover` holds the bytes after a 101 response (the first frames).
    """

    __slots__ = (
        "_body",
        "_done",
        "_head",
        "_request",
        "_response",
        "compression",
        "key",
        "leftover",
        "max_body",
        "max_headers",
        "max_line",
        "max_request",
        "subprotocols",
        "uri",
    )

    def __init__(
        self,
        uri: WSURI,
        *,
        subprotocols: Sequence[str] | None = None,
        compression: DeflateOptions | None = DeflateOptions(),  # noqa: B008 - frozen
        additional_headers: Headers | Iterable[tuple[str, str]] | Mapping[str, str] | None = None,
        origin: str | None = None,
        user_agent: str | None = "tether/0.1",
        key: str | None = None,
        max_line: int = limits.MAX_LINE,
        max_headers: int = limits.MAX_HEADERS,
        max_request: int = limits.MAX_REQUEST,
        max_body: int = limits.MAX_BODY,
    ) -> None:
        self.uri = uri
        self.subprotocols = _check_subprotocols(subprotocols)
        self.compression = compression
        # 4.1, item 7: "The request MUST include a header field with the name
        # |Sec-WebSocket-Key|. The value of this header field MUST be a nonce
        # consisting of a randomly selected 16-byte value that has been
        # base64-encoded ... The nonce MUST be selected randomly for each
        # connection."
        self.key = key if key is not None else base64.b64encode(os.urandom(16)).decode("ascii")
        self.max_line = max_line
        self.max_headers = max_headers
        self.max_request = max_request
        self.max_body = max_body
        #: The bytes received after the response (the first frames after a 101).
        self.leftover = b""
        self._head = _HeadBuffer(_HeadScanner(False, max_line, max_headers, max_request))
        self._response: Response | None = None
        self._body: _BodyReader | None = None
        self._done = False
        self._request = self._build_request(additional_headers, origin, user_agent)

    def _build_request(
        self,
        additional_headers: Headers | Iterable[tuple[str, str]] | Mapping[str, str] | None,
        origin: str | None,
        user_agent: str | None,
    ) -> Request:
        uri = self.uri
        headers = Headers()
        add = headers._add
        # 4.1, item 4: "The request MUST contain a |Host| header field whose
        # value contains /host/ plus optionally ":" followed by /port/ (when
        # not using the default port)."
        add("Host", uri.host_header)
        # Items 5 and 6: "|Upgrade| header field whose value MUST include the
        # "websocket" keyword", "|Connection| header field whose value MUST
        # include the "Upgrade" token".
        add("Upgrade", "websocket")
        add("Connection", "Upgrade")
        add("Sec-WebSocket-Key", self.key)
        # Item 9: "The request MUST include a header field with the name
        # |Sec-WebSocket-Version|. The value of this header field MUST be 13."
        add("Sec-WebSocket-Version", "13")
        # Item 11: "The request MAY include a header field with the name
        # |Sec-WebSocket-Extensions|. If present, this value indicates the
        # protocol-level extension(s) the client wishes to speak."
        if self.compression is not None:
            add("Sec-WebSocket-Extensions", client_offer(self.compression))
        # Item 10: "The request MAY include a header field with the name
        # |Sec-WebSocket-Protocol|. If present, this value indicates one or
        # more comma-separated subprotocol the client wishes to speak,
        # ordered by preference."
        if self.subprotocols:
            add("Sec-WebSocket-Protocol", ", ".join(self.subprotocols))
        if uri.user_info is not None:
            user, password = uri.user_info
            credentials = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
            add("Authorization", f"Basic {credentials}")
        # Item 8: "The request MUST include a header field with the name
        # |Origin| [RFC6454] if the request is coming from a browser client."
        if origin is not None:
            headers.add("Origin", origin)
        if user_agent is not None:
            headers.add("User-Agent", user_agent)
        if additional_headers is not None:
            pairs = (
                additional_headers.items()
                if isinstance(additional_headers, (Mapping, Headers))
                else additional_headers
            )
            replaced: set[str] = set()
            for name, value in pairs:
                lower = name.lower() if isinstance(name, str) else ""
                if lower in _RESERVED:
                    raise ValueError(f"the {name} header is set by the handshake; not allowed")
                if lower in _REPLACEABLE and lower not in replaced:
                    replaced.add(lower)
                    if name in headers:
                        del headers[name]
                headers.add(name, value)
        return Request("GET", uri.resource, headers)

    def request(self) -> Request:
        """The upgrade request to send (always the same object)."""
        return self._request

    def receive_data(self, data: bytes | bytearray | memoryview) -> Response | None:
        """Feed bytes from the server; return the :class:`Response` when it
        is complete, else ``None``.

        A 101 is complete with its head (the bytes after it go to
        :attr:`leftover`); another status when its body is read too
        (``Content-Length``, chunked, or until :meth:`receive_eof`), at most
        ``max_body`` bytes. Raises :class:`~tether.exceptions.InvalidMessage`
        for a malformed or oversized response.
        """
        if self._done:
            self.leftover += data
            return None
        if not isinstance(data, (bytes, bytearray)):
            data = bytes(data)
        if self._body is None:
            head = self._head.feed(data)
            if head is None:
                return None
            src, end = head
            response = _response_from_head(src, end, self.max_line, self.max_headers)
            rest = bytes(src[end:])
            self._response = response
            if response.status == 101:
                self.leftover = rest
                self._done = True
                return response
            self._body = _BodyReader(response, self.max_body, self.max_line)
            data = rest
        after = self._body.feed(data)
        if after is None:
            return None
        self.leftover = after
        return self._finish()

    def _finish(self) -> Response:
        response = self._response
        assert response is not None and self._body is not None
        response.body = bytes(self._body.body)
        self._done = True
        return response

    def receive_eof(self) -> Response | None:
        """The server closed the connection.

        Returns the response whose body ran to the end of the connection
        (the body may be cut short if the server said it would be longer),
        ``None`` if the response was already returned, and raises
        :class:`~tether.exceptions.InvalidMessage` if no complete head
        arrived.
        """
        if self._done:
            return None
        if self._body is None:
            raise InvalidMessage("connection closed during handshake")
        return self._finish()

    def check(self, response: Response) -> Negotiated:
        """Check the server's response (RFC 6455 section 4.1, "the client
        MUST validate the server's response as follows"); return what was
        negotiated.

        Raises :class:`~tether.exceptions.InvalidStatus` (not 101),
        :class:`~tether.exceptions.InvalidResponse` (a 101 that breaks RFC
        6455) or :class:`~tether.exceptions.NegotiationError` (an extension
        or subprotocol we did not offer, invalid permessage-deflate
        parameters).
        """
        # "1. If the status code received from the server is not 101, the
        # client handles the response per HTTP [RFC2616] procedures."
        if response.status != 101:
            raise InvalidStatus(response)
        headers = response.headers
        # "2. If the response lacks an |Upgrade| header field or the |Upgrade|
        # header field contains a value that is not an ASCII case-insensitive
        # match for the value "websocket", the client MUST _Fail the
        # WebSocket Connection_."
        upgrade = headers.get_all("Upgrade")
        if not upgrade or set(_tokens(upgrade)) != {"websocket"}:
            raise InvalidResponse(
                "missing Upgrade header" if not upgrade else f"invalid Upgrade: {upgrade[0]}"
            )
        # "3. If the response lacks a |Connection| header field or the
        # |Connection| header field doesn't contain a token that is an ASCII
        # case-insensitive match for the value "Upgrade", the client MUST
        # _Fail the WebSocket Connection_."
        connection = headers.get_all("Connection")
        if "upgrade" not in _tokens(connection):
            raise InvalidResponse(
                "missing Connection header"
                if not connection
                else f"invalid Connection: {connection[0]}"
            )
        # "4. If the response lacks a |Sec-WebSocket-Accept| header field or
        # the |Sec-WebSocket-Accept| contains a value other than the
        # base64-encoded SHA-1 of the concatenation of the |Sec-WebSocket-
        # Key| (as a string, not base64-decoded) with the string
        # "258EAFA5-E914-47DA-95CA-C5AB0DC85B11" but ignoring any leading and
        # trailing whitespace, the client MUST _Fail the WebSocket
        # Connection_."
        accepts = headers.get_all("Sec-WebSocket-Accept")
        if len(accepts) != 1:
            raise InvalidResponse(
                "missing Sec-WebSocket-Accept header"
                if not accepts
                else "more than one Sec-WebSocket-Accept header"
            )
        if accepts[0].strip() != accept_key(self.key):
            raise InvalidResponse(f"wrong Sec-WebSocket-Accept: {accepts[0][:40]}")
        # "5. If the response includes a |Sec-WebSocket-Extensions| header
        # field and this header field indicates the use of an extension that
        # was not present in the client's handshake (the server has indicated
        # an extension not requested by the client), the client MUST _Fail
        # the WebSocket Connection_."
        deflate = None
        extensions_header = None
        values = headers.get_all("Sec-WebSocket-Extensions")
        if values:
            options = self.compression
            deflate = client_accept(
                values, options if options is not None else DeflateOptions(), options is not None
            )
            if deflate is not None:
                extensions_header = ", ".join(values)
        # "6. If the response includes a |Sec-WebSocket-Protocol| header field
        # and this header field indicates the use of a subprotocol that was
        # not present in the client's handshake (the server has indicated a
        # subprotocol not requested by the client), the client MUST _Fail the
        # WebSocket Connection_." Section 11.3.4: "The |Sec-WebSocket-Protocol|
        # header field MUST NOT appear more than once in an HTTP response."
        subprotocol = None
        protocols = headers.get_all("Sec-WebSocket-Protocol")
        if len(protocols) > 1:
            raise NegotiationError("more than one Sec-WebSocket-Protocol header")
        if protocols:
            subprotocol = protocols[0].strip(" \t")
            if subprotocol not in self.subprotocols:
                raise NegotiationError(f"the server chose subprotocol {subprotocol!r}, not offered")
        return Negotiated(subprotocol, deflate, extensions_header)
