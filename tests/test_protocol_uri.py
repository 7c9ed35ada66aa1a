"""tether.protocol.uri: ws:// and wss:// URIs (RFC 6455 section 3)."""

from __future__ import annotations

import pytest

from tether.exceptions import InvalidURI
from tether.protocol.uri import WSURI, parse_uri


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("ws://example.com", WSURI(False, "example.com", 80, "/")),
        ("wss://example.com", WSURI(True, "example.com", 443, "/")),
        ("ws://example.com:8080/", WSURI(False, "example.com", 8080, "/")),
        ("wss://example.com:443/chat", WSURI(True, "example.com", 443, "/chat")),
        ("ws://example.com/a/b?x=1&y=2", WSURI(False, "example.com", 80, "/a/b?x=1&y=2")),
        ("ws://example.com?x=1", WSURI(False, "example.com", 80, "/?x=1")),
        # '"?" if the query component is non-empty'
        ("ws://example.com/path?", WSURI(False, "example.com", 80, "/path")),
        ("WS://EXAMPLE.COM/Path", WSURI(False, "example.com", 80, "/Path")),
        ("ws://127.0.0.1:9000/", WSURI(False, "127.0.0.1", 9000, "/")),
        ("ws://[::1]/", WSURI(False, "::1", 80, "/")),
        ("wss://[2001:db8::1]:8443/x", WSURI(True, "2001:db8::1", 8443, "/x")),
        ("ws://example.com:/x", WSURI(False, "example.com", 80, "/x")),
        ("ws://user:pass@example.com/", WSURI(False, "example.com", 80, "/", ("user", "pass"))),
        ("ws://us%40er:p%3Ass@h/", WSURI(False, "h", 80, "/", ("us@er", "p:ss"))),
        ("ws://user@h/", WSURI(False, "h", 80, "/", ("user", ""))),
        ("ws://user:@h/", WSURI(False, "h", 80, "/", ("user", ""))),
        ("ws://h/caf\u00e9 au lait", WSURI(False, "h", 80, "/caf%C3%A9%20au%20lait")),
        ("ws://h/already%20encoded?q=%C3%A9", WSURI(False, "h", 80, "/already%20encoded?q=%C3%A9")),
        ("ws://b\u00fccher.example/", WSURI(False, "xn--bcher-kva.example", 80, "/")),
        ("ws://h/a%23b", WSURI(False, "h", 80, "/a%23b")),
    ],
)
def test_valid(uri: str, expected: WSURI) -> None:
    assert parse_uri(uri) == expected


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("http://example.com/", "scheme 'http'"),
        ("https://example.com/", "scheme 'https'"),
        ("example.com/chat", "no scheme"),
        ("ws:///chat", "no host"),
        ("ws://", "no host"),
        ("ws://example.com/#frag", "fragment"),
        ("ws://example.com/#", "fragment"),
        ("ws://example.com:99999/", "invalid port"),
        ("ws://example.com:abc/", "invalid port"),
        ("ws://example.com:0/", "port 0"),
        ("ws://[::1/", "not a valid URI"),
        ("ws://[nothex::1]/", "not a valid URI|invalid IPv6"),
        ("ws://exa mple.com/", "invalid host"),
        ("ws://exa<mple.com/", "invalid host"),
        (" ws://example.com/", "leading or trailing"),
        ("ws://example.com/\n", "control characters"),
        ("ws://example.com/\x00", "control characters"),
        ("ws://xn--a\u0300.com/", "IDNA"),
    ],
)
def test_invalid(uri: str, message: str) -> None:
    with pytest.raises(InvalidURI, match=message):
        parse_uri(uri)


def test_not_a_string() -> None:
    with pytest.raises(InvalidURI, match="not a string"):
        parse_uri(b"ws://example.com/")  # type: ignore[arg-type]


def test_invalid_uri_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        parse_uri("ftp://x/")


@pytest.mark.parametrize(
    ("uri", "host_header", "text"),
    [
        ("ws://example.com/", "example.com", "ws://example.com/"),
        ("ws://example.com:80/", "example.com", "ws://example.com/"),
        ("ws://example.com:443/", "example.com:443", "ws://example.com:443/"),
        ("wss://example.com:443/", "example.com", "wss://example.com/"),
        ("wss://example.com:80/", "example.com:80", "wss://example.com:80/"),
        ("ws://[::1]:8080/a?b", "[::1]:8080", "ws://[::1]:8080/a?b"),
        ("wss://[::1]/", "[::1]", "wss://[::1]/"),
        ("ws://user:secret@h/", "h", "ws://h/"),
    ],
)
def test_host_header_and_str(uri: str, host_header: str, text: str) -> None:
    parsed = parse_uri(uri)
    assert parsed.host_header == host_header
    assert str(parsed) == text  # never shows the user info


def test_default_port() -> None:
    assert parse_uri("ws://h/").default_port == 80
    assert parse_uri("wss://h/").default_port == 443


def test_frozen() -> None:
    uri = parse_uri("ws://h/")
    with pytest.raises(AttributeError):
        uri.port = 1  # type: ignore[misc]
