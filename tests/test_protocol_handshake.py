"""tether.protocol.handshake: the opening handshake, bytes in, objects out."""

from __future__ import annotations

import base64

import pytest

from tether.exceptions import (
    InvalidHandshake,
    InvalidMessage,
    InvalidRequest,
    InvalidResponse,
    InvalidStatus,
    NegotiationError,
)
from tether.protocol.deflate import DeflateOptions, DeflateParams
from tether.protocol.handshake import (
    GUID,
    ClientHandshake,
    Headers,
    Negotiated,
    Request,
    Response,
    ServerHandshake,
    accept_key,
)
from tether.protocol.uri import parse_uri

KEY = "dGhlIHNhbXBsZSBub25jZQ=="
ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="  # RFC 6455 section 1.3

BASE = [
    ("Host", "server.example.com"),
    ("Upgrade", "websocket"),
    ("Connection", "Upgrade"),
    ("Sec-WebSocket-Key", KEY),
    ("Sec-WebSocket-Version", "13"),
]

CHROME = (
    b"GET /chat HTTP/1.1\r\n"
    b"Host: localhost:8765\r\n"
    b"Connection: Upgrade\r\n"
    b"Pragma: no-cache\r\n"
    b"Cache-Control: no-cache\r\n"
    b"User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko)\r\n"
    b"Upgrade: websocket\r\n"
    b"Origin: http://localhost:8765\r\n"
    b"Sec-WebSocket-Version: 13\r\n"
    b"Accept-Encoding: gzip, deflate, br\r\n"
    b"Accept-Language: en-US,en;q=0.9\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
    b"\r\n"
)


def build(
    *,
    start: str = "GET /chat HTTP/1.1",
    drop: tuple[str, ...] = (),
    replace: dict[str, str] | None = None,
    add: tuple[tuple[str, str], ...] = (),
) -> bytes:
    """A request made of BASE, with headers dropped, replaced or added."""
    replace = replace or {}
    lines = [start]
    for name, value in BASE:
        if name in drop:
            continue
        lines.append(f"{name}: {replace.get(name, value)}")
    lines += [f"{name}: {value}" for name, value in add]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def server_answer(data: bytes, **kwargs: object) -> Response:
    """What a server answers to ``data``: the 101, or the refusal."""
    server = ServerHandshake(**kwargs)  # type: ignore[arg-type]
    try:
        request = server.receive_data(data)
        assert request is not None, "incomplete request"
        response, _ = server.accept(request)
    except (InvalidMessage, InvalidRequest) as exc:
        return server.reject_error(exc)
    return response


def test_accept_key_rfc_example() -> None:
    # RFC 6455 section 1.3: "the server would concatenate the string
    # "258EAFA5-E914-47DA-95CA-C5AB0DC85B11" ... s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    assert GUID == "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
    assert accept_key(KEY) == ACCEPT


# ---------------------------------------------------------------------------
# Server: valid requests


def test_server_accepts_a_browser_request() -> None:
    server = ServerHandshake()
    request = server.receive_data(CHROME)
    assert request is not None
    assert request.path == "/chat"
    assert request.host == "localhost:8765"
    assert request.origin == "http://localhost:8765"
    assert server.validate(request) == KEY
    response, negotiated = server.accept(request)
    assert response.status == 101
    assert response.serialize() == (
        b"HTTP/1.1 101 Switching Protocols\r\n"
        b"Upgrade: websocket\r\n"
        b"Connection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
        b"Sec-WebSocket-Extensions: permessage-deflate\r\n"
        b"Server: tether\r\n"
        b"\r\n"
    )
    assert negotiated == Negotiated(None, DeflateParams(), "permessage-deflate")
    assert server.leftover == b""


@pytest.mark.parametrize(
    "data",
    [
        build(),
        build(replace={"Connection": "keep-alive, Upgrade"}),
        build(replace={"Connection": "Upgrade, keep-alive"}),
        build(replace={"Connection": "UPGRADE"}),
        build(replace={"Connection": "keep-alive"}, add=(("Connection", "Upgrade"),)),
        build(replace={"Upgrade": "WebSocket"}),
        build(replace={"Upgrade": "h2c, websocket"}),
        build(add=(("Upgrade", "websocket"),), replace={"Upgrade": "h2c"}),
        build(replace={"Sec-WebSocket-Key": "AAAAAAAAAAAAAAAAAAAAAA=="}),
        build(replace={"Host": "[::1]:8080"}),
        build(start="GET http://server.example.com/chat HTTP/1.1"),
        build(start="GET wss://server.example.com HTTP/1.1"),
        build(start="GET /chat?x=1&y=2 HTTP/1.1"),
        build(add=(("Content-Length", "0"),)),
        b"get /chat HTTP/1.1\r\nhost: h\r\nupgrade: websocket\r\nconnection: upgrade\r\n"
        b"sec-websocket-key: " + KEY.encode() + b"\r\nsec-websocket-version: 13\r\n\r\n",
        b"GET / HTTP/1.1\r\nHOST: h\r\nUPGRADE: WEBSOCKET\r\nCONNECTION: UPGRADE\r\n"
        b"SEC-WEBSOCKET-KEY:" + KEY.encode() + b"  \r\nSEC-WEBSOCKET-VERSION:\t13\r\n\r\n",
    ],
)
def test_server_accepts_valid_variants(data: bytes) -> None:
    if data.startswith(b"get "):
        # Methods are case-sensitive (RFC 9110 section 9.1): "get" is not GET.
        assert server_answer(data).status == 405
        return
    response = server_answer(data)
    assert response.status == 101
    request = ServerHandshake().receive_data(data)
    assert request is not None
    key = request.headers["Sec-WebSocket-Key"]
    assert response.headers["Sec-WebSocket-Accept"] == accept_key(key)


# ---------------------------------------------------------------------------
# Server: malformed requests, each with its exact status

MALFORMED: list[tuple[str, bytes, int, list[tuple[str, str]]]] = [
    ("POST", build(start="POST /chat HTTP/1.1"), 405, [("Allow", "GET")]),
    ("HEAD", build(start="HEAD /chat HTTP/1.1"), 405, [("Allow", "GET")]),
    ("lowercase get", build(start="get /chat HTTP/1.1"), 405, [("Allow", "GET")]),
    ("HTTP/1.0", build(start="GET /chat HTTP/1.0"), 400, []),
    ("HTTP/2.0", build(start="GET /chat HTTP/2.0"), 505, []),
    ("target not a path", build(start="GET chat HTTP/1.1"), 400, []),
    ("asterisk target", build(start="GET * HTTP/1.1"), 400, []),
    ("missing Host", build(drop=("Host",)), 400, []),
    ("two Hosts", build(add=(("Host", "other.example.com"),)), 400, []),
    ("empty Host", build(replace={"Host": ""}), 400, []),
    ("missing Upgrade", build(drop=("Upgrade",)), 426, [("Upgrade", "websocket")]),
    ("Upgrade: h2c", build(replace={"Upgrade": "h2c"}), 426, [("Upgrade", "websocket")]),
    ("garbage Upgrade", build(replace={"Upgrade": "web socket"}), 426, [("Upgrade", "websocket")]),
    ("missing Connection", build(drop=("Connection",)), 426, [("Upgrade", "websocket")]),
    (
        "Connection without upgrade",
        build(replace={"Connection": "keep-alive"}),
        426,
        [("Upgrade", "websocket")],
    ),
    ("missing key", build(drop=("Sec-WebSocket-Key",)), 400, []),
    (
        "short key",
        build(replace={"Sec-WebSocket-Key": base64.b64encode(b"x" * 15).decode()}),
        400,
        [],
    ),
    (
        "long key",
        build(replace={"Sec-WebSocket-Key": base64.b64encode(b"x" * 17).decode()}),
        400,
        [],
    ),
    ("key not base64", build(replace={"Sec-WebSocket-Key": "!!!!!!!!!!!!!!!!!!!!!!!!"}), 400, []),
    ("key without padding", build(replace={"Sec-WebSocket-Key": KEY.rstrip("=")}), 400, []),
    ("non-ASCII key", build(replace={"Sec-WebSocket-Key": "\xe9" * 24}), 400, []),
    ("two keys", build(add=(("Sec-WebSocket-Key", KEY),)), 400, []),
    (
        "version 8",
        build(replace={"Sec-WebSocket-Version": "8"}),
        426,
        [("Sec-WebSocket-Version", "13")],
    ),
    (
        "version 13, 8",
        build(replace={"Sec-WebSocket-Version": "13, 8"}),
        426,
        [("Sec-WebSocket-Version", "13")],
    ),
    (
        "missing version",
        build(drop=("Sec-WebSocket-Version",)),
        426,
        [("Sec-WebSocket-Version", "13")],
    ),
    ("two versions", build(add=(("Sec-WebSocket-Version", "13"),)), 400, []),
    (
        "malformed extensions",
        build(add=(("Sec-WebSocket-Extensions", "permessage-deflate; x=@"),)),
        400,
        [],
    ),
    ("request line too long", build(start=f"GET /{'a' * 9000} HTTP/1.1"), 414, []),
    ("header line too long", build(add=(("X-Big", "a" * 9000),)), 431, []),
    ("too many headers", build(add=tuple((f"X-{i}", "a") for i in range(130))), 431, []),
    ("head too large", build(add=tuple((f"X-{i}", "a" * 8000) for i in range(9))), 431, []),
    ("obs-fold", build(add=(("X-Folded", "a\r\n b"),)), 400, []),
    ("NUL in a header", build(add=(("X-Nul", "a\x00b"),)), 400, []),
    ("invalid header name", build(add=(("X Bad", "a"),)), 400, []),
    ("space before colon", build(add=(("X-Bad ", "a"),)), 400, []),
    ("bare LF", build().replace(b"\r\n", b"\n"), 400, []),
    ("a body", build(add=(("Content-Length", "5"),)), 400, []),
    ("a chunked body", build(add=(("Transfer-Encoding", "chunked"),)), 400, []),
]


@pytest.mark.parametrize(
    ("data", "status", "headers"),
    [m[1:] for m in MALFORMED],
    ids=[m[0] for m in MALFORMED],
)
def test_server_refuses_malformed_requests(
    data: bytes, status: int, headers: list[tuple[str, str]]
) -> None:
    response = server_answer(data)
    assert response.status == status
    for name, value in headers:
        assert response.headers[name] == value
    assert response.headers["Connection"] == "close"
    assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert response.body.startswith(b"Failed to open a WebSocket connection: ")


@pytest.mark.parametrize(
    ("data", "status", "headers"),
    [m[1:] for m in MALFORMED],
    ids=[m[0] for m in MALFORMED],
)
def test_server_refuses_malformed_requests_byte_by_byte(
    data: bytes, status: int, headers: list[tuple[str, str]]
) -> None:
    server = ServerHandshake()
    with pytest.raises((InvalidMessage, InvalidRequest)) as info:
        for i in range(len(data)):
            request = server.receive_data(data[i : i + 1])
            if request is not None:
                server.accept(request)
    assert info.value.status == status  # type: ignore[union-attr]


ORIGINS: list[tuple[str, list[str | None], bytes, int]] = [
    ("allowed", ["https://a.example"], build(add=(("Origin", "https://a.example"),)), 101),
    ("another one allowed", ["https://a", "https://b"], build(add=(("Origin", "https://b"),)), 101),
    ("bad origin", ["https://a.example"], build(add=(("Origin", "https://evil.example"),)), 403),
    ("case matters", ["https://a.example"], build(add=(("Origin", "https://A.example"),)), 403),
    ("missing, not allowed", ["https://a.example"], build(), 403),
    ("missing, allowed", ["https://a.example", None], build(), 101),
    ("only missing allowed", [None], build(add=(("Origin", "https://a.example"),)), 403),
    (
        "two origins",
        ["https://a"],
        build(add=(("Origin", "https://a"), ("Origin", "https://a"))),
        400,
    ),
    ("any origin", [], build(add=(("Origin", "https://x"),)), 403),
]


@pytest.mark.parametrize(
    ("origins", "data", "status"), [o[1:] for o in ORIGINS], ids=[o[0] for o in ORIGINS]
)
def test_server_origins(origins: list[str | None], data: bytes, status: int) -> None:
    assert server_answer(data, origins=origins).status == status


def test_server_without_origin_check_accepts_any() -> None:
    assert server_answer(build(add=(("Origin", "https://evil"),))).status == 101


def test_server_validate_rejects_a_request_object_in_http_1_0() -> None:
    request = Request("GET", "/", Headers(BASE), "HTTP/1.0")
    with pytest.raises(InvalidRequest) as info:
        ServerHandshake().validate(request)
    assert info.value.status == 400


def test_server_leftover_and_pipelined_frames() -> None:
    server = ServerHandshake()
    frame = b"\x81\x85\x00\x00\x00\x00hello"
    assert server.receive_data(build() + frame[:3]) is not None
    assert server.leftover == frame[:3]
    assert server.receive_data(frame[3:]) is None
    assert server.leftover == frame


def test_server_byte_by_byte() -> None:
    server = ServerHandshake()
    data = CHROME + b"\x81"
    requests = [server.receive_data(data[i : i + 1]) for i in range(len(data))]
    assert all(r is None for r in requests[: len(CHROME) - 1])
    request = requests[len(CHROME) - 1]
    assert request is not None
    assert request.headers == ServerHandshake().receive_data(CHROME).headers  # type: ignore[union-attr]
    assert server.leftover == b"\x81"


def test_server_accepts_memoryview() -> None:
    server = ServerHandshake()
    assert server.receive_data(memoryview(build())) is not None


def test_server_subprotocol_client_order() -> None:
    data = build(add=(("Sec-WebSocket-Protocol", "v2.chat, v1.chat"),))
    server = ServerHandshake(subprotocols=["v1.chat", "v2.chat"])
    request = server.receive_data(data)
    assert request is not None
    response, negotiated = server.accept(request)
    assert negotiated.subprotocol == "v2.chat"
    assert response.headers["Sec-WebSocket-Protocol"] == "v2.chat"


@pytest.mark.parametrize(
    ("ours", "offered", "chosen"),
    [
        (["chat"], ["chat"], "chat"),
        (["chat"], ["superchat", "chat"], "chat"),
        (["chat"], ["superchat"], None),  # no overlap: no subprotocol
        (["chat"], [], None),  # the client offers none: accepted without
        ([], ["chat"], None),  # we speak none
        (["chat"], ["Chat"], None),  # case-sensitive
        (["a", "b"], ["x, b", "a"], "b"),  # several headers, in order
        (["a"], [" , a,"], "a"),  # empty elements skipped
    ],
)
def test_server_subprotocols(ours: list[str], offered: list[str], chosen: str | None) -> None:
    data = build(add=tuple(("Sec-WebSocket-Protocol", value) for value in offered))
    server = ServerHandshake(subprotocols=ours)
    request = server.receive_data(data)
    assert request is not None
    response, negotiated = server.accept(request)
    assert negotiated.subprotocol == chosen
    assert response.headers.get("Sec-WebSocket-Protocol") == chosen


def test_server_malformed_subprotocol_header() -> None:
    data = build(add=(("Sec-WebSocket-Protocol", "chat, b@d"),))
    assert server_answer(data, subprotocols=["chat"]).status == 400


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"subprotocols": "chat"}, TypeError),
        ({"subprotocols": ["a b"]}, ValueError),
        ({"subprotocols": [""]}, ValueError),
        ({"subprotocols": ["a", "a"]}, ValueError),
    ],
)
def test_server_invalid_settings(kwargs: dict[str, object], error: type[Exception]) -> None:
    with pytest.raises(error):
        ServerHandshake(**kwargs)  # type: ignore[arg-type]


def test_server_without_compression_ignores_offers() -> None:
    server = ServerHandshake(compression=None)
    request = server.receive_data(CHROME)
    assert request is not None
    response, negotiated = server.accept(request)
    assert negotiated.deflate is None
    assert negotiated.extensions_header is None
    assert "Sec-WebSocket-Extensions" not in response.headers


def test_server_declines_unknown_extensions() -> None:
    data = build(add=(("Sec-WebSocket-Extensions", "x-webkit-deflate-frame, foo; bar=1"),))
    server = ServerHandshake()
    request = server.receive_data(data)
    assert request is not None
    response, negotiated = server.accept(request)
    assert negotiated.deflate is None
    assert "Sec-WebSocket-Extensions" not in response.headers


def test_server_extra_headers_and_server_header() -> None:
    server = ServerHandshake(server_header=None)
    request = server.receive_data(build())
    assert request is not None
    response, _ = server.accept(request, [("Set-Cookie", "a=1"), ("X-Trace", "t")])
    assert "Server" not in response.headers
    assert response.headers.items()[-2:] == [("Set-Cookie", "a=1"), ("X-Trace", "t")]
    with pytest.raises(ValueError):
        server.accept(request, [("X-Bad", "a\r\nInjected: 1")])


def test_server_reject() -> None:
    server = ServerHandshake()
    response = server.reject(404, "not here\n")
    assert response.serialize() == (
        b"HTTP/1.1 404 Not Found\r\n"
        b"Server: tether\r\n"
        b"Connection: close\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"Content-Length: 9\r\n"
        b"\r\n"
        b"not here\n"
    )
    html = server.reject(200, "<p>hi</p>", [("Content-Type", "text/html")])
    assert html.headers.get_all("Content-Type") == ["text/html"]
    raw = ServerHandshake(server_header=None).reject(503, b"\x00\x01", [("Retry-After", "5")])
    assert raw.headers.items() == [("Connection", "close"), ("Retry-After", "5")]
    assert raw.body == b"\x00\x01"
    assert server.reject(500).body == b""


def test_server_reject_error() -> None:
    server = ServerHandshake()
    response = server.reject_error(InvalidRequest("nope", 426, [("Sec-WebSocket-Version", "13")]))
    assert response.status == 426
    assert response.headers["Sec-WebSocket-Version"] == "13"
    assert response.body == b"Failed to open a WebSocket connection: nope.\n"
    assert server.reject_error(InvalidMessage("too big", 431)).status == 431
    assert server.reject_error(NegotiationError("hmm")).status == 400


# ---------------------------------------------------------------------------
# Client: the request


def test_client_request() -> None:
    client = ClientHandshake(parse_uri("ws://example.com/chat?x=1"), key=KEY)
    request = client.request()
    assert request is client.request()
    assert request.serialize() == (
        b"GET /chat?x=1 HTTP/1.1\r\n"
        b"Host: example.com\r\n"
        b"Upgrade: websocket\r\n"
        b"Connection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\n"
        b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
        b"User-Agent: tether/0.1\r\n"
        b"\r\n"
    )


def test_client_request_options() -> None:
    client = ClientHandshake(
        parse_uri("wss://alice:s3cr%C3%A9t@[::1]:8443/"),
        subprotocols=["v2", "v1"],
        compression=None,
        origin="https://app.example",
        user_agent=None,
        additional_headers={"X-Token": "t", "Cookie": "a=1"},
    )
    headers = client.request().headers
    assert headers["Host"] == "[::1]:8443"
    assert headers["Sec-WebSocket-Protocol"] == "v2, v1"
    assert "Sec-WebSocket-Extensions" not in headers
    assert "User-Agent" not in headers
    assert headers["Origin"] == "https://app.example"
    credentials = base64.b64decode(headers["Authorization"].removeprefix("Basic "))
    assert credentials == "alice:s3cr\u00e9t".encode()
    assert headers["X-Token"] == "t"
    assert headers["Cookie"] == "a=1"


def test_client_additional_headers_replace_ours() -> None:
    client = ClientHandshake(
        parse_uri("ws://u:p@10.0.0.1:9000/"),
        origin="https://a",
        additional_headers=[
            ("Host", "virtual.example"),
            ("User-Agent", "bot/1"),
            ("origin", "https://b"),
            ("Authorization", "Bearer x"),
            ("X-Twice", "1"),
            ("X-Twice", "2"),
        ],
    )
    headers = client.request().headers
    assert headers.get_all("Host") == ["virtual.example"]
    assert headers.get_all("User-Agent") == ["bot/1"]
    assert headers.get_all("Origin") == ["https://b"]
    assert headers.get_all("Authorization") == ["Bearer x"]
    assert headers.get_all("X-Twice") == ["1", "2"]


def test_client_additional_headers_add_missing_ones() -> None:
    client = ClientHandshake(parse_uri("ws://h/"), additional_headers=[("Origin", "https://o")])
    assert client.request().headers.get_all("Origin") == ["https://o"]


def test_client_additional_headers_as_headers() -> None:
    extra = Headers([("X-A", "1"), ("X-A", "2")])
    client = ClientHandshake(parse_uri("ws://h/"), additional_headers=extra)
    assert client.request().headers.get_all("X-A") == ["1", "2"]


@pytest.mark.parametrize(
    "name", ["Upgrade", "connection", "Sec-WebSocket-Key", "Sec-WebSocket-Extensions"]
)
def test_client_reserved_headers(name: str) -> None:
    with pytest.raises(ValueError, match="set by the handshake"):
        ClientHandshake(parse_uri("ws://h/"), additional_headers=[(name, "x")])


def test_client_random_key() -> None:
    a = ClientHandshake(parse_uri("ws://h/"))
    b = ClientHandshake(parse_uri("ws://h/"))
    assert a.key != b.key
    assert len(base64.b64decode(a.key, validate=True)) == 16
    assert a.request().headers["Sec-WebSocket-Key"] == a.key


def test_client_request_is_accepted_by_server() -> None:
    client = ClientHandshake(parse_uri("ws://localhost:8765/x"), subprotocols=["chat"])
    server = ServerHandshake(subprotocols=["chat"])
    request = server.receive_data(client.request().serialize())
    assert request is not None
    response, negotiated = server.accept(request)
    received = client.receive_data(response.serialize())
    assert received is not None
    assert client.check(received) == negotiated
    assert negotiated.subprotocol == "chat"


# ---------------------------------------------------------------------------
# Client: the response


def answer(*headers: tuple[str, str], status: str = "101 Switching Protocols") -> bytes:
    lines = [f"HTTP/1.1 {status}", *(f"{n}: {v}" for n, v in headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


GOOD_101 = (("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Sec-WebSocket-Accept", ACCEPT))


def client(**kwargs: object) -> ClientHandshake:
    return ClientHandshake(parse_uri("ws://h/"), key=KEY, **kwargs)  # type: ignore[arg-type]


def check(data: bytes, **kwargs: object) -> Negotiated:
    hs = client(**kwargs)
    response = hs.receive_data(data)
    assert response is not None
    return hs.check(response)


def test_client_101_with_frames_after_it() -> None:
    hs = client()
    data = answer(*GOOD_101) + b"\x81\x05hello"
    response = hs.receive_data(data[:20])
    assert response is None
    response = hs.receive_data(data[20:])
    assert response is not None
    assert response.status == 101
    assert hs.leftover == b"\x81\x05hello"
    assert hs.receive_data(b"\x81\x00") is None
    assert hs.leftover == b"\x81\x05hello\x81\x00"
    assert hs.check(response) == Negotiated()
    assert hs.receive_eof() is None


def test_client_byte_by_byte() -> None:
    hs = client()
    data = answer(*GOOD_101)
    results = [hs.receive_data(data[i : i + 1]) for i in range(len(data))]
    assert all(r is None for r in results[:-1])
    assert results[-1] is not None


@pytest.mark.parametrize(
    "headers",
    [
        GOOD_101,
        (("upgrade", "WebSocket"), ("connection", "upgrade"), ("sec-websocket-accept", ACCEPT)),
        (("Upgrade", "websocket"), ("Connection", "keep-alive, Upgrade")),
        (("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Sec-WebSocket-Accept", ACCEPT)),
    ],
)
def test_client_accepts_valid_responses(headers: tuple[tuple[str, str], ...]) -> None:
    if not any(n.lower() == "sec-websocket-accept" for n, _ in headers):
        headers = (*headers, ("Sec-WebSocket-Accept", f" {ACCEPT}"))
    assert check(answer(*headers)) == Negotiated()


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        (GOOD_101[1:], "missing Upgrade"),
        ((("Upgrade", "h2c"), *GOOD_101[1:]), "invalid Upgrade"),
        ((("Upgrade", "websocket, h2c"), *GOOD_101[1:]), "invalid Upgrade"),
        ((GOOD_101[0], GOOD_101[2]), "missing Connection"),
        ((GOOD_101[0], ("Connection", "close"), GOOD_101[2]), "invalid Connection"),
        (GOOD_101[:2], "missing Sec-WebSocket-Accept"),
        ((*GOOD_101[:2], ("Sec-WebSocket-Accept", "x" + ACCEPT[1:])), "wrong Sec-WebSocket-Accept"),
        ((*GOOD_101, ("Sec-WebSocket-Accept", ACCEPT)), "more than one Sec-WebSocket-Accept"),
    ],
)
def test_client_rejects_invalid_101(headers: tuple[tuple[str, str], ...], message: str) -> None:
    with pytest.raises(InvalidResponse, match=message):
        check(answer(*headers))


def test_client_rejects_accept_for_another_key() -> None:
    other = accept_key(base64.b64encode(b"0123456789abcdef").decode())
    with pytest.raises(InvalidResponse, match="wrong Sec-WebSocket-Accept"):
        check(answer(*GOOD_101[:2], ("Sec-WebSocket-Accept", other)))


@pytest.mark.parametrize(
    ("extensions", "kwargs", "message"),
    [
        ("permessage-deflate", {"compression": None}, "not offered"),
        ("x-webkit-deflate-frame", {}, "not offered"),
        ("permessage-deflate; foo", {}, "unknown parameter"),
        ("permessage-deflate; server_max_window_bits=7", {}, "invalid server_max_window_bits"),
        ("permessage-deflate, permessage-deflate", {}, "more than once"),
        ("permessage-deflate; =", {}, "malformed"),
    ],
)
def test_client_rejects_extensions(
    extensions: str, kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(NegotiationError, match=message):
        check(answer(*GOOD_101, ("Sec-WebSocket-Extensions", extensions)), **kwargs)


def test_client_negotiates_deflate() -> None:
    negotiated = check(
        answer(
            *GOOD_101,
            ("Sec-WebSocket-Extensions", "permessage-deflate; server_no_context_takeover"),
        )
    )
    assert negotiated.deflate == DeflateParams(server_no_context_takeover=True)
    assert negotiated.extensions_header == "permessage-deflate; server_no_context_takeover"


def test_client_empty_extensions_header() -> None:
    negotiated = check(answer(*GOOD_101, ("Sec-WebSocket-Extensions", "")))
    assert negotiated.deflate is None
    assert negotiated.extensions_header is None


@pytest.mark.parametrize(
    ("protocols", "offered", "result"),
    [
        ([], ["chat"], None),
        (["chat"], ["chat"], "chat"),
        (["v1"], ["v2", "v1"], "v1"),
        (["other"], ["chat"], NegotiationError),
        (["chat"], [], NegotiationError),
        (["chat", "chat"], ["chat"], NegotiationError),
        (["v1, v2"], ["v1", "v2"], NegotiationError),
    ],
)
def test_client_subprotocols(
    protocols: list[str], offered: list[str], result: str | type[Exception] | None
) -> None:
    data = answer(*GOOD_101, *(("Sec-WebSocket-Protocol", p) for p in protocols))
    if isinstance(result, type):
        with pytest.raises(result):
            check(data, subprotocols=offered)
    else:
        assert check(data, subprotocols=offered).subprotocol == result


def test_client_non_101_content_length() -> None:
    hs = client()
    data = answer(("Content-Length", "9"), ("Content-Type", "text/plain"), status="403 Forbidden")
    assert hs.receive_data(data + b"forb") is None
    response = hs.receive_data(b"idden")
    assert response is not None
    assert response.status == 403
    assert response.body == b"forbidden"
    with pytest.raises(InvalidStatus) as info:
        hs.check(response)
    assert info.value.status == 403
    assert info.value.response.body == b"forbidden"
    assert isinstance(info.value, InvalidHandshake)


def test_client_non_101_chunked() -> None:
    hs = client()
    data = answer(("Transfer-Encoding", "chunked"), status="404 Not Found")
    response = hs.receive_data(data + b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
    assert response is not None
    assert response.body == b"hello world"
    assert hs.leftover == b""


def test_client_non_101_until_eof() -> None:
    hs = client()
    assert hs.receive_data(answer(status="500 Internal Server Error") + b"oops") is None
    assert hs.receive_data(b", sorry") is None
    response = hs.receive_eof()
    assert response is not None
    assert response.status == 500
    assert response.body == b"oops, sorry"
    assert hs.receive_eof() is None


def test_client_non_101_truncated_by_eof() -> None:
    hs = client()
    assert hs.receive_data(answer(("Content-Length", "100"), status="502 Bad Gateway")) is None
    assert hs.receive_data(b"partial") is None
    response = hs.receive_eof()
    assert response is not None
    assert response.body == b"partial"


def test_client_non_101_no_body() -> None:
    hs = client()
    response = hs.receive_data(answer(status="304 Not Modified") + b"junk")
    assert response is not None
    assert response.body == b""
    assert hs.leftover == b"junk"


def test_client_body_too_big() -> None:
    hs = client(max_body=10)
    with pytest.raises(InvalidMessage, match="max_body"):
        hs.receive_data(answer(("Content-Length", "11"), status="403 Forbidden"))
    hs = client(max_body=10)
    assert hs.receive_data(answer(status="403 Forbidden")) is None
    with pytest.raises(InvalidMessage, match="max_body"):
        hs.receive_data(b"a" * 11)


def test_client_eof_before_the_head() -> None:
    hs = client()
    assert hs.receive_data(b"HTTP/1.1 101 Switching") is None
    with pytest.raises(InvalidMessage, match="connection closed during handshake"):
        hs.receive_eof()
    with pytest.raises(InvalidMessage):
        client().receive_eof()


def test_client_malformed_response() -> None:
    with pytest.raises(InvalidMessage):
        client().receive_data(b"HTTP/1.1 101 OK\nUpgrade: websocket\n\n")
    with pytest.raises(InvalidMessage):
        client().receive_data(b"SSH-2.0-OpenSSH_9.6\r\n")


def test_client_accepts_memoryview() -> None:
    assert client().receive_data(memoryview(answer(*GOOD_101))) is not None


# ---------------------------------------------------------------------------
# Both sides together


@pytest.mark.parametrize(
    ("client_options", "server_options"),
    [
        (DeflateOptions(), DeflateOptions()),
        (DeflateOptions(server_max_window_bits=10), DeflateOptions()),
        (DeflateOptions(client_max_window_bits=9), DeflateOptions()),
        (DeflateOptions(), DeflateOptions(client_max_window_bits=11)),
        (DeflateOptions(), DeflateOptions(server_max_window_bits=8)),
        (DeflateOptions(server_no_context_takeover=True), DeflateOptions()),
        (DeflateOptions(), DeflateOptions(client_no_context_takeover=True)),
        (None, DeflateOptions()),
        (DeflateOptions(), None),
    ],
)
def test_both_sides_agree(
    client_options: DeflateOptions | None, server_options: DeflateOptions | None
) -> None:
    hs_client = ClientHandshake(parse_uri("ws://h/"), compression=client_options)
    hs_server = ServerHandshake(compression=server_options)
    request = hs_server.receive_data(hs_client.request().serialize())
    assert request is not None
    response, server_side = hs_server.accept(request)
    received = hs_client.receive_data(response.serialize())
    assert received is not None
    client_side = hs_client.check(received)
    assert client_side == server_side
    assert (client_side.deflate is None) == (client_options is None or server_options is None)
