"""tether.protocol.http: Headers, Request, Response, bounded head parsing."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tether.exceptions import InvalidMessage
from tether.protocol.http import (
    Headers,
    Request,
    Response,
    _BodyReader,
    _HeadScanner,
    parse_request_head,
    parse_response_head,
)

GOOD = (
    b"GET /chat?room=1 HTTP/1.1\r\n"
    b"Host: example.com\r\n"
    b"Upgrade: websocket\r\n"
    b"Connection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n"
    b"\r\n"
)


def head(*lines: str, start: str = "GET / HTTP/1.1") -> bytes:
    return "".join(f"{line}\r\n" for line in (start, *lines)).encode("latin-1") + b"\r\n"


# ---------------------------------------------------------------------------
# Headers


def test_headers_basics() -> None:
    h = Headers([("Host", "a"), ("X-Twice", "1"), ("x-twice", "2")])
    assert h["host"] == "a"
    assert h["HOST"] == "a"
    assert h.get("x-TWICE") == "1"
    assert h.get_all("X-Twice") == ["1", "2"]
    assert h.get_all("Host") == ["a"]
    assert h.get_all("Missing") == []
    assert h.get("Missing") is None
    assert h.get("Missing", "d") == "d"
    assert "HOST" in h
    assert "Missing" not in h
    assert 3 not in h
    assert len(h) == 3
    assert list(h) == ["Host", "X-Twice", "x-twice"]
    assert h.items() == [("Host", "a"), ("X-Twice", "1"), ("x-twice", "2")]
    with pytest.raises(KeyError, match="Missing"):
        h["Missing"]


def test_headers_get_all_returns_a_copy() -> None:
    h = Headers([("A", "1"), ("A", "2")])
    h.get_all("a").append("3")
    assert h.get_all("a") == ["1", "2"]


def test_headers_set_and_delete() -> None:
    h = Headers({"A": "1", "B": "2"})
    h.add("a", "3")
    assert h.get_all("A") == ["1", "3"]
    h["A"] = "4"
    assert h.items() == [("B", "2"), ("A", "4")]
    h["C"] = "5"
    assert h["c"] == "5"
    del h["b"]
    assert h.items() == [("A", "4"), ("C", "5")]
    with pytest.raises(KeyError):
        del h["b"]


def test_headers_copy_and_equality() -> None:
    h = Headers([("A", "1"), ("B", "2")])
    c = h.copy()
    assert c == h
    assert c is not h
    c.add("C", "3")
    assert c != h
    assert h == Headers([("a", "1"), ("b", "2")])  # names compare case-insensitively
    assert h != Headers([("A", "1"), ("B", "3")])
    assert h != Headers([("B", "2"), ("A", "1")])  # order matters
    assert h != {"A": "1", "B": "2"}
    assert Headers(h) == h
    assert repr(Headers([("A", "1")])) == "Headers([('A', '1')])"
    with pytest.raises(TypeError):
        hash(h)


@pytest.mark.parametrize("name", ["", "A B", "A:", "A\r\nB", "Ä", "(A)"])
def test_headers_reject_invalid_names(name: str) -> None:
    with pytest.raises(ValueError, match="invalid header name"):
        Headers().add(name, "v")


@pytest.mark.parametrize(
    "value", ["a\r\nInjected: 1", "a\nb", "a\rb", "a\x00b", "a\x7fb", "\u0100"]
)
def test_headers_reject_invalid_values(value: str) -> None:
    with pytest.raises(ValueError, match="invalid value"):
        Headers().add("X", value)


def test_headers_reject_non_strings() -> None:
    with pytest.raises(ValueError):
        Headers().add(b"X", "v")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Headers().add("X", 1)  # type: ignore[arg-type]


def test_headers_lookup_after_change() -> None:
    h = Headers([("A", "1")])
    assert h["a"] == "1"  # builds the index
    h.add("A", "2")
    assert h.get_all("a") == ["1", "2"]
    h._add("B", "3")
    assert h["b"] == "3"


# ---------------------------------------------------------------------------
# Request


def test_request_serialize() -> None:
    request = Request("GET", "/chat", Headers([("Host", "example.com"), ("X", "y")]))
    assert request.serialize() == b"GET /chat HTTP/1.1\r\nHost: example.com\r\nX: y\r\n\r\n"
    assert request.version == "HTTP/1.1"
    assert Request("GET", "/").serialize() == b"GET / HTTP/1.1\r\n\r\n"


@pytest.mark.parametrize(("method", "path"), [("GE T", "/"), ("GET", "/a b"), ("GET", "/\r\n")])
def test_request_serialize_rejects_injection(method: str, path: str) -> None:
    with pytest.raises(ValueError):
        Request(method, path).serialize()


@pytest.mark.parametrize(
    ("path", "url_path", "query_string"),
    [
        ("/", "/", ""),
        ("/chat", "/chat", ""),
        ("/chat?room=1&x", "/chat", "room=1&x"),
        ("/?a=1", "/", "a=1"),
        ("http://example.com/chat?x=1", "/chat", "x=1"),
        ("wss://example.com:443/a/b", "/a/b", ""),
        ("http://example.com", "/", ""),
        ("http://example.com?x=1", "/", "x=1"),
        ("*", "*", ""),
    ],
)
def test_request_url_path(path: str, url_path: str, query_string: str) -> None:
    request = Request("GET", path)
    assert request.url_path == url_path
    assert request.query_string == query_string


def test_request_properties() -> None:
    request = Request("GET", "/?a=1&b=&a=2", Headers([("Host", "h"), ("Origin", "https://o")]))
    assert request.host == "h"
    assert request.origin == "https://o"
    assert request.query == {"a": ["1", "2"], "b": [""]}
    bare = Request("GET", "/")
    assert bare.host is None
    assert bare.origin is None
    assert bare.query == {}


# ---------------------------------------------------------------------------
# Response


def test_response_defaults() -> None:
    assert Response(101).reason == "Switching Protocols"
    assert Response(404).reason == "Not Found"
    assert Response(599).reason == ""
    assert Response(200, "Fine").reason == "Fine"
    assert Response(200).headers == Headers()
    assert Response(200).body == b""
    # A mapping is accepted for the headers, for convenience.
    assert Response(200, headers={"A": "1"}).headers == Headers([("A", "1")])  # type: ignore[arg-type]


def test_response_serialize_101() -> None:
    response = Response(101, headers=Headers([("Upgrade", "websocket")]))
    assert response.serialize() == b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"


def test_response_serialize_adds_content_length() -> None:
    response = Response(403, body=b"no")
    assert response.serialize() == b"HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\n\r\nno"
    assert "Content-Length" not in response.headers  # not modified


@pytest.mark.parametrize("status", [100, 101, 204, 304])
def test_response_serialize_no_content_length_without_body(status: int) -> None:
    assert b"Content-Length" not in Response(status).serialize()


def test_response_serialize_keeps_given_framing() -> None:
    given_length = Response(200, headers=Headers([("Content-Length", "0")]))
    assert given_length.serialize().count(b"Content-Length") == 1
    chunked = Response(200, headers=Headers([("Transfer-Encoding", "chunked")]))
    assert b"Content-Length" not in chunked.serialize()


def test_response_serialize_rejects_invalid() -> None:
    with pytest.raises(ValueError, match="status"):
        Response(99).serialize()
    with pytest.raises(ValueError, match="reason"):
        Response(200, "OK\r\nInjected: 1").serialize()


def test_response_text() -> None:
    response = Response.text("not h\u00e9re\n", 404)
    assert response.status == 404
    assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert response.body == "not h\u00e9re\n".encode()
    assert response.serialize().endswith(b"Content-Length: 10\r\n\r\nnot h\xc3\xa9re\n")
    html = Response.text("<p>", 200, [("Content-Type", "text/html")])
    assert html.headers.get_all("content-type") == ["text/html"]


# ---------------------------------------------------------------------------
# parse_request_head: valid requests


def test_parse_request() -> None:
    parsed = parse_request_head(GOOD + b"\x81\x00")
    assert parsed is not None
    request, end = parsed
    assert end == len(GOOD)
    assert request.method == "GET"
    assert request.path == "/chat?room=1"
    assert request.version == "HTTP/1.1"
    assert request.headers["sec-websocket-key"] == "dGhlIHNhbXBsZSBub25jZQ=="
    assert len(request.headers) == 5


def test_parse_request_incomplete() -> None:
    for i in range(len(GOOD)):
        assert parse_request_head(GOOD[:i]) is None
    assert parse_request_head(bytearray(GOOD)) is not None


def test_parse_request_strips_ows_and_keeps_case() -> None:
    parsed = parse_request_head(
        head("X-A:   spaced value \t", "x-b:tight", "X-Empty:", "X-Tab:\tv")
    )
    assert parsed is not None
    request, _ = parsed
    assert request.headers.items() == [
        ("X-A", "spaced value"),
        ("x-b", "tight"),
        ("X-Empty", ""),
        ("X-Tab", "v"),
    ]


def test_parse_request_obs_text_in_value() -> None:
    parsed = parse_request_head(b"GET / HTTP/1.1\r\nX: caf\xe9\r\n\r\n")
    assert parsed is not None
    assert parsed[0].headers["X"] == "caf\xe9"


def test_parse_request_no_headers() -> None:
    parsed = parse_request_head(b"GET / HTTP/1.1\r\n\r\n")
    assert parsed is not None
    assert len(parsed[0].headers) == 0


def test_parse_request_at_the_limits() -> None:
    # Exactly max_line, max_headers and max_request are allowed.
    line = "X: " + "a" * 97  # 100 bytes
    data = head(*[line] * 4)
    parsed = parse_request_head(data, max_line=100, max_headers=4, max_request=len(data))
    assert parsed is not None
    target = "/" + "a" * 85  # request line of 100 bytes
    data = head(start=f"GET {target} HTTP/1.1")
    assert parse_request_head(data, max_line=100) is not None


# ---------------------------------------------------------------------------
# parse_request_head: malformed requests, each with its status

MALFORMED: list[tuple[str, bytes, int]] = [
    ("HTTP/1.0", head("Host: h", start="GET / HTTP/1.0"), 400),
    ("HTTP/2.0", head("Host: h", start="GET / HTTP/2.0"), 505),
    ("HTTP/3.0", head("Host: h", start="GET / HTTP/3.0"), 505),
    ("lowercase version", head("Host: h", start="GET / http/1.1"), 400),
    ("garbage version", head("Host: h", start="GET / HTTP/1.1x"), 400),
    ("two spaces", head("Host: h", start="GET  / HTTP/1.1"), 400),
    ("missing target", head("Host: h", start="GET HTTP/1.1"), 400),
    ("trailing space", head("Host: h", start="GET / HTTP/1.1 "), 400),
    ("invalid method", head("Host: h", start="G(T / HTTP/1.1"), 400),
    ("tab separator", head("Host: h", start="GET\t/\tHTTP/1.1"), 400),
    ("non-ASCII target", b"GET /caf\xe9 HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    ("empty line first", b"\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    ("only a blank line", b"\r\n\r\n", 400),
    ("obs-fold space", head("Host: h", "X: a", " b"), 400),
    ("obs-fold tab", head("Host: h", "X: a", "\tb"), 400),
    ("NUL in value", head("Host: h", "X: a\x00b"), 400),
    ("CTL in value", head("Host: h", "X: a\x01b"), 400),
    ("DEL in value", head("Host: h", "X: a\x7fb"), 400),
    ("ESC in value", head("Host: h", "X: \x1b[31m"), 400),
    ("space in name", head("Host: h", "X Y: a"), 400),
    ("space before colon", head("Host : h"), 400),
    ("tab before colon", head("Host\t: h"), 400),
    ("invalid name char", head("Host: h", "X(Y): a"), 400),
    ("non-ASCII name", b"GET / HTTP/1.1\r\nHost: h\r\nX\xe9: a\r\n\r\n", 400),
    ("empty name", head("Host: h", ": a"), 400),
    ("no colon", head("Host: h", "JustAName"), 400),
    ("bare LF", b"GET / HTTP/1.1\nHost: h\n\n", 400),
    ("bare LF in one line", b"GET / HTTP/1.1\r\nHost: h\r\nX: a\nb\r\n\r\n", 400),
    ("bare LF at the end", b"GET / HTTP/1.1\r\nHost: h\r\n\n", 400),
    ("bare CR", b"GET / HTTP/1.1\r\nHost: h\r\nX: a\rb\r\n\r\n", 400),
    ("bare CR in request line", b"GET /\r HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    ("bare CR splitting the request line", b"GET\r/ HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    ("TLS client hello", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40, 400),
]


@pytest.mark.parametrize(
    ("data", "status"), [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED]
)
def test_parse_request_malformed(data: bytes, status: int) -> None:
    with pytest.raises(InvalidMessage) as info:
        parse_request_head(data)
    assert info.value.status == status


@pytest.mark.parametrize(
    ("data", "status"), [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED]
)
def test_parse_request_malformed_byte_by_byte(data: bytes, status: int) -> None:
    """Fed one byte at a time, the same requests fail the same way, and never
    later than the byte after the one that breaks them... at worst at the end."""
    scanner = _HeadScanner(True, 8192, 128, 65536)
    buf = bytearray()
    with pytest.raises(InvalidMessage) as info:
        for byte in data:
            old = len(buf)
            buf.append(byte)
            end = scanner.scan(buf, old)
            if end is not None:
                parse_request_head(buf)
    assert info.value.status == status


@pytest.mark.parametrize(
    ("name", "prefix", "status"),
    [
        ("bare LF", b"GET / HTTP/1.1\n", 400),
        ("bare LF later", b"GET / HTTP/1.1\r\nHost: h\n", 400),
        ("bare CR", b"GET / HTTP/1.1\rX", 400),
        ("NUL", b"GET / HTTP/1.1\r\nHost: \x00", 400),
        ("bad request line", b"GET / HTTP/1.0\r\n", 400),
        ("bad version", b"GET / HTTP/9.9\r\n", 505),
        ("obs-fold", b"GET / HTTP/1.1\r\nHost: h\r\n folded\r\n", 400),
        ("bad header", b"GET / HTTP/1.1\r\nHo st: h\r\n", 400),
    ],
)
def test_malformed_detected_before_the_head_is_complete(
    name: str, prefix: bytes, status: int
) -> None:
    with pytest.raises(InvalidMessage) as info:
        parse_request_head(prefix)
    assert info.value.status == status


# ---------------------------------------------------------------------------
# Limits


def test_request_line_too_long() -> None:
    data = head("Host: h", start="GET /" + "a" * 200 + " HTTP/1.1")
    with pytest.raises(InvalidMessage) as info:
        parse_request_head(data, max_line=100)
    assert info.value.status == 414


def test_request_line_too_long_before_its_end() -> None:
    with pytest.raises(InvalidMessage) as info:
        parse_request_head(b"GET /" + b"a" * 8192)  # no line end yet
    assert info.value.status == 414


def test_first_line_too_long_without_a_space() -> None:
    with pytest.raises(InvalidMessage) as info:
        parse_request_head(b"A" * 8193)
    assert info.value.status == 400


def test_header_line_too_long() -> None:
    data = head("Host: h", "X: " + "a" * 200)
    with pytest.raises(InvalidMessage) as info:
        parse_request_head(data, max_line=100)
    assert info.value.status == 431


def test_long_lines_in_an_unfinished_head() -> None:
    with pytest.raises(InvalidMessage) as info:
        parse_request_head(b"GET / HTTP/1.1\r\nX: " + b"a" * 200 + b"\r\n", max_line=100)
    assert info.value.status == 431
    with pytest.raises(InvalidMessage) as info:
        parse_request_head(b"GET /" + b"a" * 200 + b" HTTP/1.1\r\n", max_line=100)
    assert info.value.status == 414
    with pytest.raises(InvalidMessage) as info:
        parse_response_head(b"HTTP/1.1 200 " + b"a" * 200 + b"\r\n", max_line=100)
    assert info.value.status == 431


def test_header_line_too_long_before_its_end() -> None:
    """8 KiB in a header line without a line end: 431 at once."""
    data = b"GET / HTTP/1.1\r\nHost: h\r\nX-Big: " + b"a" * 8192
    with pytest.raises(InvalidMessage) as info:
        parse_request_head(data)
    assert info.value.status == 431
    # One byte less is still acceptable: the line could end next.
    assert parse_request_head(data[:-8]) is None


def test_line_at_max_line_waiting_for_its_lf() -> None:
    data = b"GET / HTTP/1.1\r\nX: " + b"a" * 97 + b"\r"  # 100 bytes, then CR
    assert parse_request_head(data, max_line=100) is None


def test_too_many_headers() -> None:
    data = head(*[f"X-{i}: {i}" for i in range(129)])
    with pytest.raises(InvalidMessage) as info:
        parse_request_head(data)
    assert info.value.status == 431
    assert parse_request_head(head(*[f"X-{i}: {i}" for i in range(128)])) is not None


def test_too_many_headers_before_the_end() -> None:
    data = head(*[f"X-{i}: {i}" for i in range(200)])[:-2]  # no blank line yet
    with pytest.raises(InvalidMessage) as info:
        parse_request_head(data)
    assert info.value.status == 431


def test_head_too_large() -> None:
    data = head(*[f"X-{i}: {'a' * 90}" for i in range(20)])
    with pytest.raises(InvalidMessage) as info:
        parse_request_head(data, max_request=1000)
    assert info.value.status == 431


def test_head_too_large_before_the_end() -> None:
    data = head(*[f"X-{i}: {'a' * 90}" for i in range(20)])[:-2]
    with pytest.raises(InvalidMessage) as info:
        parse_request_head(data, max_request=1000)
    assert info.value.status == 431


def test_long_head_with_long_lines_only_where_allowed() -> None:
    # A head longer than max_line whose lines are all short is fine.
    data = head(*[f"X-{i}: {'a' * 50}" for i in range(10)])
    assert len(data) > 100
    assert parse_request_head(data, max_line=100) is not None


def test_scanner_is_incremental() -> None:
    """Fed in pieces, the scanner finds the same end as in one piece."""
    for size in (1, 2, 3, 5, 7, 64):
        scanner = _HeadScanner(True, 8192, 128, 65536)
        buf = bytearray()
        end = None
        for i in range(0, len(GOOD) + 10, size):
            old = len(buf)
            buf += (GOOD + b"0123456789")[i : i + size]
            end = scanner.scan(buf, old)
            if end is not None:
                break
        assert end == len(GOOD)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=len(GOOD)), min_size=1, max_size=8))
def test_any_split_gives_the_same_request(cuts: list[int]) -> None:
    scanner = _HeadScanner(True, 8192, 128, 65536)
    buf = bytearray()
    end = None
    points = sorted({0, *cuts, len(GOOD)})
    for a, b in itertools.pairwise(points):
        old = len(buf)
        buf += GOOD[a:b]
        end = scanner.scan(buf, old)
        if end is not None:
            break
    assert end == len(GOOD)
    assert parse_request_head(buf) == parse_request_head(GOOD)


# ---------------------------------------------------------------------------
# parse_response_head


def test_parse_response() -> None:
    data = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x00"
    parsed = parse_response_head(data)
    assert parsed is not None
    response, end = parsed
    assert response.status == 101
    assert response.reason == "Switching Protocols"
    assert response.headers["upgrade"] == "websocket"
    assert data[end:] == b"\x81\x00"
    assert parse_response_head(data[:10]) is None


@pytest.mark.parametrize(
    ("line", "status", "reason"),
    [
        ("HTTP/1.1 404 Not Found", 404, "Not Found"),
        ("HTTP/1.1 404 ", 404, "Not Found"),  # empty reason: the standard phrase
        ("HTTP/1.1 404", 404, "Not Found"),  # tolerated: no SP after the code
        ("HTTP/1.1 200 Tr\u00e8s bien", 200, "Tr\u00e8s bien"),
        ("HTTP/1.0 403 Forbidden", 403, "Forbidden"),  # a proxy's error page
        ("HTTP/1.1 599 Whatever", 599, "Whatever"),
    ],
)
def test_parse_status_lines(line: str, status: int, reason: str) -> None:
    parsed = parse_response_head(f"{line}\r\n\r\n".encode("latin-1"))
    assert parsed is not None
    assert (parsed[0].status, parsed[0].reason) == (status, reason)


@pytest.mark.parametrize(
    "line",
    [
        "HTTP/1.1 1O1 Switching",
        "HTTP/1.1 10 Short",
        "HTTP/1.1 1011 Long",
        "HTTP/1.1 099 Low",
        "HTTP/2 200 OK",
        "HTTP/1.1  200 OK",
        "ICY 200 OK",
        "HTTP/1.0 101 Switching Protocols",
        "HTTP/1.1 200 O\x01K",
    ],
)
def test_parse_malformed_status_lines(line: str) -> None:
    with pytest.raises(InvalidMessage):
        parse_response_head(f"{line}\r\n\r\n".encode("latin-1"))


def test_status_line_too_long() -> None:
    with pytest.raises(InvalidMessage) as info:
        parse_response_head(b"HTTP/1.1 200 " + b"a" * 200 + b"\r\n\r\n", max_line=100)
    assert info.value.status == 431
    with pytest.raises(InvalidMessage):
        parse_response_head(b"HTTP/1.1 200 " + b"a" * 200, max_line=100)


def test_response_header_errors() -> None:
    with pytest.raises(InvalidMessage):
        parse_response_head(b"HTTP/1.1 101 OK\r\nUpgrade : websocket\r\n\r\n")
    with pytest.raises(InvalidMessage):
        parse_response_head(b"HTTP/1.1 101 OK\r\nUpgrade: websocket\n\r\n")


# ---------------------------------------------------------------------------
# _BodyReader edge cases (the usual ones are tested through ClientHandshake)


def reader(*headers: tuple[str, str], status: int = 200, max_body: int = 100) -> _BodyReader:
    return _BodyReader(Response(status, headers=Headers(headers)), max_body, 50)


def test_body_content_length_in_pieces() -> None:
    r = reader(("Content-Length", "5"))
    assert r.feed(b"ab") is None
    assert r.feed(b"cdeXY") == b"XY"
    assert bytes(r.body) == b"abcde"


def test_body_content_length_zero() -> None:
    r = reader(("Content-Length", "0"))
    assert r.feed(b"rest") == b"rest"
    assert bytes(r.body) == b""


def test_body_identical_content_lengths() -> None:
    r = reader(("Content-Length", "3, 3"), ("Content-Length", "3"))
    assert r.feed(b"abc") == b""


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ((("Content-Length", "3"), ("Content-Length", "4")), "conflicting"),
        ((("Content-Length", "-1"),), "invalid Content-Length"),
        ((("Content-Length", "0x10"),), "invalid Content-Length"),
        ((("Content-Length", "\xb2"),), "invalid Content-Length"),  # superscript 2
        ((("Content-Length", "101"),), "over max_body"),
    ],
)
def test_body_bad_content_length(headers: tuple[tuple[str, str], ...], message: str) -> None:
    with pytest.raises(InvalidMessage, match=message):
        reader(*headers)


@pytest.mark.parametrize("status", [101, 103, 204, 304])
def test_body_none(status: int) -> None:
    r = reader(("Content-Length", "10"), status=status)
    assert r.feed(b"next") == b"next"


def test_body_transfer_encoding_wins_over_content_length() -> None:
    r = reader(("Content-Length", "100"), ("Transfer-Encoding", "chunked"))
    assert r.feed(b"3\r\nabc\r\n0\r\n\r\n") == b""
    assert bytes(r.body) == b"abc"


def test_body_unknown_transfer_encoding_reads_to_eof() -> None:
    r = reader(("Transfer-Encoding", "gzip"))
    assert r.mode == "eof"
    r = reader(("Transfer-Encoding", "chunked, gzip"))
    assert r.mode == "eof"
    r = reader(("Transfer-Encoding", "gzip, chunked"))
    assert r.mode == "chunked"


def test_body_eof_bounded() -> None:
    r = reader()
    assert r.feed(b"a" * 100) is None
    with pytest.raises(InvalidMessage, match="max_body"):
        r.feed(b"a")


def test_body_chunked_in_pieces() -> None:
    data = (
        b"4;ext=1\r\nWiki\r\n5\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nTrailer: x\r\n\r\nnext"
    )
    for size in (1, 2, 3, 7, len(data)):
        r = reader(("Transfer-Encoding", "chunked"))
        rest = None
        for i in range(0, len(data), size):
            rest = r.feed(data[i : i + size])
            if rest is not None:
                rest += data[i + size :]
                break
        assert bytes(r.body) == b"Wikipedia in\r\n\r\nchunks."
        assert rest == b"next"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"x\r\n", "invalid chunk size"),
        (b"-1\r\n", "invalid chunk size"),
        (b"0x1\r\n", "invalid chunk size"),
        (b"1" * 17 + b"\r\n", "invalid chunk size"),
        (b"65\r\n", "max_body"),
        (b"3\r\nabcX\r\n", "not followed by CRLF"),
        (b"a" * 60, "too long"),
        (b"0\r\n" + b"T: x\r\n" * 129, "too many trailer"),
    ],
)
def test_body_chunked_errors(data: bytes, message: str) -> None:
    r = reader(("Transfer-Encoding", "chunked"))
    with pytest.raises(InvalidMessage, match=message):
        r.feed(data)


def test_response_constructors() -> None:
    assert Response.text("hi").status == 200
    assert Response.text("hi").headers["Content-Type"] == "text/plain; charset=utf-8"
    assert Response.html("<b>", 201).headers["Content-Type"] == "text/html; charset=utf-8"
    response = Response.json({"a": [1, "é"]}, 404, [("X-A", "b")])
    assert (response.status, response.body) == (404, '{"a":[1,"é"]}'.encode())
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["X-A"] == "b"
