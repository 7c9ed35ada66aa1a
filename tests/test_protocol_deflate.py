"""tether.protocol.deflate: RFC 7692 negotiation and the permessage-deflate codec."""

from __future__ import annotations

import random
import zlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tether.exceptions import InvalidRequest, NegotiationError, PayloadTooBig, ProtocolError
from tether.protocol.deflate import (
    DeflateOptions,
    DeflateParams,
    PerMessageDeflate,
    client_accept,
    client_offer,
    parse_extensions,
    server_accept,
)

# ---------------------------------------------------------------------------
# Options


@pytest.mark.parametrize(
    "kwargs",
    [
        {"server_max_window_bits": 7},
        {"server_max_window_bits": 16},
        {"client_max_window_bits": 0},
        {"client_max_window_bits": True},
        {"client_max_window_bits": 10.0},
        {"compress_level": 10},
        {"compress_level": -2},
        {"mem_level": 0},
        {"mem_level": 10},
        {"min_size": -1},
    ],
)
def test_options_validation(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        DeflateOptions(**kwargs)


def test_options_defaults() -> None:
    options = DeflateOptions()
    assert options.server_max_window_bits is None
    assert options.client_max_window_bits is None
    assert not options.server_no_context_takeover
    assert not options.client_no_context_takeover
    assert (options.compress_level, options.mem_level, options.min_size) == (6, 8, 32)
    assert DeflateParams() == DeflateParams(False, False, 15, 15)


# ---------------------------------------------------------------------------
# The extension grammar (RFC 6455 section 9.1)


@pytest.mark.parametrize(
    ("values", "parsed"),
    [
        ([], []),
        ([""], []),
        ([" , ,"], []),
        (["foo"], [("foo", [])]),
        (["foo, bar"], [("foo", []), ("bar", [])]),
        (["foo", "bar; x"], [("foo", []), ("bar", [("x", None)])]),
        (["foo ; a ; b=1 ;c = 2"], [("foo", [("a", None), ("b", "1"), ("c", "2")])]),
        (['foo; a="10"'], [("foo", [("a", "10")])]),
        (['foo; a="1\\0"'], [("foo", [("a", "10")])]),  # quoted-pair
        (['foo; a=""x""'], None),
        (["foo;\ta=b\t,\tbar"], [("foo", [("a", "b")]), ("bar", [])]),
    ],
)
def test_parse_extensions(values: list[str], parsed: list[Any] | None) -> None:
    if parsed is None:
        with pytest.raises(ValueError):
            parse_extensions(values)
    else:
        assert parse_extensions(values) == parsed


@pytest.mark.parametrize(
    "value",
    [
        "foo;",  # empty parameter
        "foo; ",
        ";a",  # empty extension name
        "fo o",
        "foo; a b",
        "foo; a=",
        "foo; =1",
        "foo; a=1=2",
        'foo; a="1',  # unterminated quoted string
        'foo; a="',
        'foo; a="a b"',  # unescapes to a non-token
        'foo; a="a,b"',
        'foo; a="a\\"',
        "foo; a=@",
        "f\u00f6o",
    ],
)
def test_parse_extensions_malformed(value: str) -> None:
    with pytest.raises(ValueError):
        parse_extensions([value])


# ---------------------------------------------------------------------------
# Client offer


@pytest.mark.parametrize(
    ("options", "offer"),
    [
        (DeflateOptions(), "permessage-deflate; client_max_window_bits"),
        (
            DeflateOptions(server_no_context_takeover=True, client_no_context_takeover=True),
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover;"
            " client_max_window_bits",
        ),
        (
            DeflateOptions(server_max_window_bits=10, client_max_window_bits=12),
            "permessage-deflate; server_max_window_bits=10; client_max_window_bits=12",
        ),
    ],
)
def test_client_offer(options: DeflateOptions, offer: str) -> None:
    assert client_offer(options) == offer


# ---------------------------------------------------------------------------
# Server side: what we answer to an offer, for each of the four parameters

P = "permessage-deflate"

SERVER_TABLE: list[tuple[str, DeflateOptions, str | None, DeflateParams | None]] = [
    # (offer, our options, response, agreed params)
    (P, DeflateOptions(), P, DeflateParams()),
    # server_no_context_takeover (7.1.1.1)
    (
        f"{P}; server_no_context_takeover",
        DeflateOptions(),
        f"{P}; server_no_context_takeover",
        DeflateParams(server_no_context_takeover=True),
    ),
    (
        P,
        DeflateOptions(server_no_context_takeover=True),
        f"{P}; server_no_context_takeover",
        DeflateParams(server_no_context_takeover=True),
    ),
    # client_no_context_takeover (7.1.1.2): echoed, or imposed
    (
        f"{P}; client_no_context_takeover",
        DeflateOptions(),
        f"{P}; client_no_context_takeover",
        DeflateParams(client_no_context_takeover=True),
    ),
    (
        P,
        DeflateOptions(client_no_context_takeover=True),
        f"{P}; client_no_context_takeover",
        DeflateParams(client_no_context_takeover=True),
    ),
    # server_max_window_bits (7.1.2.1): same or smaller, or ours unasked
    (
        f"{P}; server_max_window_bits=10",
        DeflateOptions(),
        f"{P}; server_max_window_bits=10",
        DeflateParams(server_max_window_bits=10),
    ),
    (
        f"{P}; server_max_window_bits=10",
        DeflateOptions(server_max_window_bits=12),
        f"{P}; server_max_window_bits=10",
        DeflateParams(server_max_window_bits=10),
    ),
    (
        f"{P}; server_max_window_bits=10",
        DeflateOptions(server_max_window_bits=9),
        f"{P}; server_max_window_bits=9",
        DeflateParams(server_max_window_bits=9),
    ),
    (
        P,
        DeflateOptions(server_max_window_bits=12),
        f"{P}; server_max_window_bits=12",
        DeflateParams(server_max_window_bits=12),
    ),
    (
        f"{P}; server_max_window_bits=8",
        DeflateOptions(),
        f"{P}; server_max_window_bits=8",
        DeflateParams(server_max_window_bits=8),
    ),
    (
        f'{P}; server_max_window_bits="10"',
        DeflateOptions(),
        f"{P}; server_max_window_bits=10",
        DeflateParams(server_max_window_bits=10),
    ),
    # client_max_window_bits (7.1.2.2)
    (f"{P}; client_max_window_bits", DeflateOptions(), P, DeflateParams()),
    (
        f"{P}; client_max_window_bits",
        DeflateOptions(client_max_window_bits=10),
        f"{P}; client_max_window_bits=10",
        DeflateParams(client_max_window_bits=10),
    ),
    (
        f"{P}; client_max_window_bits=12",
        DeflateOptions(),
        f"{P}; client_max_window_bits=12",
        DeflateParams(client_max_window_bits=12),
    ),
    (
        f"{P}; client_max_window_bits=12",
        DeflateOptions(client_max_window_bits=10),
        f"{P}; client_max_window_bits=10",
        DeflateParams(client_max_window_bits=10),
    ),
    (
        f"{P}; client_max_window_bits=9",
        DeflateOptions(client_max_window_bits=14),
        f"{P}; client_max_window_bits=9",
        DeflateParams(client_max_window_bits=9),
    ),
    (P, DeflateOptions(client_max_window_bits=10), None, None),  # cannot limit the client
    (P, DeflateOptions(client_max_window_bits=15), P, DeflateParams()),
    # Autobahn 13.3 / 13.5 offers (server_max_window_bits=8)
    (
        f"{P}; client_no_context_takeover; client_max_window_bits; server_max_window_bits=8",
        DeflateOptions(),
        f"{P}; client_no_context_takeover; server_max_window_bits=8",
        DeflateParams(client_no_context_takeover=True, server_max_window_bits=8),
    ),
    (
        f"{P}; client_no_context_takeover; client_max_window_bits; server_no_context_takeover;"
        " server_max_window_bits=8",
        DeflateOptions(),
        f"{P}; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=8",
        DeflateParams(True, True, 8, 15),
    ),
    # all four at once
    (
        f"{P}; server_no_context_takeover; client_no_context_takeover;"
        " server_max_window_bits=11; client_max_window_bits=13",
        DeflateOptions(),
        f"{P}; server_no_context_takeover; client_no_context_takeover;"
        " server_max_window_bits=11; client_max_window_bits=13",
        DeflateParams(True, True, 11, 13),
    ),
    # invalid offers are declined (RFC 7692 section 7)
    (f"{P}; server_no_context_takeover; server_no_context_takeover", DeflateOptions(), None, None),
    (f"{P}; server_no_context_takeover=1", DeflateOptions(), None, None),
    (f"{P}; client_no_context_takeover=yes", DeflateOptions(), None, None),
    (f"{P}; server_max_window_bits", DeflateOptions(), None, None),
    (f"{P}; server_max_window_bits=7", DeflateOptions(), None, None),
    (f"{P}; server_max_window_bits=16", DeflateOptions(), None, None),
    (f"{P}; server_max_window_bits=08", DeflateOptions(), None, None),
    (f"{P}; server_max_window_bits=10; server_max_window_bits=10", DeflateOptions(), None, None),
    (f"{P}; client_max_window_bits=abc", DeflateOptions(), None, None),
    (f"{P}; client_max_window_bits=3", DeflateOptions(), None, None),
    (f"{P}; mystery", DeflateOptions(), None, None),
    (f"{P}; Server_No_Context_Takeover", DeflateOptions(), None, None),
    ("x-webkit-deflate-frame", DeflateOptions(), None, None),
    ("Permessage-Deflate", DeflateOptions(), None, None),
]


@pytest.mark.parametrize(("offer", "options", "response", "params"), SERVER_TABLE)
def test_server_accept_table(
    offer: str, options: DeflateOptions, response: str | None, params: DeflateParams | None
) -> None:
    result = server_accept([offer], options)
    if response is None:
        assert result is None
    else:
        assert result == (response, params)
        # And the client that made this offer accepts the answer.
        assert client_accept([response], DeflateOptions(), True) is not None


def test_server_accept_first_acceptable_offer_wins() -> None:
    # RFC 7692 section 5: "The order of elements is important as it specifies
    # the client's preference."
    offers = [
        f"{P}; client_max_window_bits; server_max_window_bits=10, {P}; client_max_window_bits"
    ]
    assert server_accept(offers, DeflateOptions()) == (
        f"{P}; server_max_window_bits=10",
        DeflateParams(server_max_window_bits=10),
    )
    # An invalid first offer is skipped, and so is one we cannot accept.
    offers = [f"{P}; bogus", "x-foo", f"{P}; client_max_window_bits"]
    assert server_accept(offers, DeflateOptions(client_max_window_bits=9)) == (
        f"{P}; client_max_window_bits=9",
        DeflateParams(client_max_window_bits=9),
    )
    offers = [P, f"{P}; client_max_window_bits"]
    assert server_accept(offers, DeflateOptions(client_max_window_bits=9)) == (
        f"{P}; client_max_window_bits=9",
        DeflateParams(client_max_window_bits=9),
    )


@pytest.mark.parametrize("value", [f"{P};", f"{P}; a=@", "a b", f'{P}; x="unterminated'])
def test_server_accept_malformed_header_is_400(value: str) -> None:
    # RFC 6455 section 9.1: malformed data -> "_Fail the WebSocket Connection_".
    with pytest.raises(InvalidRequest) as info:
        server_accept([value], DeflateOptions())
    assert info.value.status == 400


def test_server_accept_is_cached() -> None:
    options = DeflateOptions(compress_level=1)
    first = server_accept([f"{P}; client_max_window_bits"], options)
    assert server_accept([f"{P}; client_max_window_bits"], options) is first


# ---------------------------------------------------------------------------
# Client side: checking the server's answer

CLIENT_TABLE: list[tuple[list[str], DeflateOptions, DeflateParams | str | None]] = [
    # (response values, our options, agreed params or the error message)
    ([], DeflateOptions(), None),
    ([""], DeflateOptions(), None),
    ([P], DeflateOptions(), DeflateParams()),
    ([" permessage-deflate "], DeflateOptions(), DeflateParams()),
    # server_no_context_takeover
    (
        [f"{P}; server_no_context_takeover"],
        DeflateOptions(),
        DeflateParams(server_no_context_takeover=True),
    ),
    (
        [f"{P}; server_no_context_takeover"],
        DeflateOptions(server_no_context_takeover=True),
        DeflateParams(server_no_context_takeover=True),
    ),
    ([P], DeflateOptions(server_no_context_takeover=True), "server_no_context_takeover"),
    # client_no_context_takeover: imposed by the server, or our own promise
    (
        [f"{P}; client_no_context_takeover"],
        DeflateOptions(),
        DeflateParams(client_no_context_takeover=True),
    ),
    (
        [P],
        DeflateOptions(client_no_context_takeover=True),
        DeflateParams(client_no_context_takeover=True),
    ),
    # server_max_window_bits
    (
        [f"{P}; server_max_window_bits=11"],
        DeflateOptions(),
        DeflateParams(server_max_window_bits=11),
    ),
    (
        [f"{P}; server_max_window_bits=10"],
        DeflateOptions(server_max_window_bits=10),
        DeflateParams(server_max_window_bits=10),
    ),
    (
        [f"{P}; server_max_window_bits=9"],
        DeflateOptions(server_max_window_bits=10),
        DeflateParams(server_max_window_bits=9),
    ),
    (
        [f"{P}; server_max_window_bits=12"],
        DeflateOptions(server_max_window_bits=10),
        "server_max_window_bits",
    ),
    ([P], DeflateOptions(server_max_window_bits=10), "server_max_window_bits"),
    # client_max_window_bits
    (
        [f"{P}; client_max_window_bits=10"],
        DeflateOptions(),
        DeflateParams(client_max_window_bits=10),
    ),
    ([f"{P}; client_max_window_bits=8"], DeflateOptions(), DeflateParams(client_max_window_bits=8)),
    (
        [f"{P}; client_max_window_bits=9"],
        DeflateOptions(client_max_window_bits=10),
        DeflateParams(client_max_window_bits=9),
    ),
    (
        [f"{P}; client_max_window_bits=11"],
        DeflateOptions(client_max_window_bits=10),
        "client_max_window_bits",
    ),
    ([P], DeflateOptions(client_max_window_bits=10), DeflateParams(client_max_window_bits=10)),
    ([f"{P}; client_max_window_bits"], DeflateOptions(), "client_max_window_bits"),
    # invalid responses
    ([f"{P}; server_max_window_bits"], DeflateOptions(), "invalid server_max_window_bits"),
    ([f"{P}; server_max_window_bits=16"], DeflateOptions(), "invalid server_max_window_bits"),
    ([f"{P}; server_no_context_takeover=1"], DeflateOptions(), "takes no value"),
    (
        [f"{P}; client_no_context_takeover; client_no_context_takeover"],
        DeflateOptions(),
        "more than once",
    ),
    ([f"{P}; foo"], DeflateOptions(), "unknown parameter"),
    ([P, P], DeflateOptions(), "more than once"),
    ([f"{P}, x-foo"], DeflateOptions(), "x-foo"),
    (["x-foo"], DeflateOptions(), "x-foo"),
    ([f"{P};"], DeflateOptions(), "malformed"),
]


@pytest.mark.parametrize(("values", "options", "expected"), CLIENT_TABLE)
def test_client_accept_table(
    values: list[str], options: DeflateOptions, expected: DeflateParams | str | None
) -> None:
    if isinstance(expected, str):
        with pytest.raises(NegotiationError, match=expected):
            client_accept(values, options, True)
    else:
        assert client_accept(values, options, True) == expected


def test_client_accept_not_offered() -> None:
    with pytest.raises(NegotiationError, match="not offered"):
        client_accept([P], DeflateOptions(), False)
    assert client_accept([], DeflateOptions(), False) is None


# ---------------------------------------------------------------------------
# The codec: RFC 7692 section 7.2.3 examples

HELLO = b"\xf2\x48\xcd\xc9\xc9\x07\x00"


def server(params: DeflateParams = DeflateParams(), **options: Any) -> PerMessageDeflate:  # noqa: B008
    return PerMessageDeflate(params, True, DeflateOptions(**options))


def client(params: DeflateParams = DeflateParams(), **options: Any) -> PerMessageDeflate:  # noqa: B008
    return PerMessageDeflate(params, False, DeflateOptions(**options))


def test_rfc_example_one_block() -> None:
    # 7.2.3.1: "Hello" compressed with one compressed DEFLATE block.
    assert client().decompress(HELLO, True, 1000) == b"Hello"
    assert server().compress(b"Hello") == HELLO


def test_rfc_example_sharing_the_window() -> None:
    # 7.2.3.2: the second "Hello" refers to the first one.
    codec = client()
    assert codec.decompress(HELLO, True, 1000) == b"Hello"
    assert codec.decompress(b"\xf2\x00\x11\x00\x00", True, 1000) == b"Hello"
    sender = server()
    assert sender.compress(b"Hello") == HELLO
    assert sender.compress(b"Hello") == b"\xf2\x00\x11\x00\x00"


def test_rfc_example_fragmented() -> None:
    # 7.2.3.1: the same message split into two frames.
    codec = client()
    first = codec.decompress(b"\xf2\x48\xcd", False, 1000)
    assert first + codec.decompress(b"\xc9\xc9\x07\x00", True, 1000) == b"Hello"


def test_rfc_example_no_compression() -> None:
    # 7.2.3.3: a DEFLATE block with no compression.
    data = b"\x00\x05\x00\xfa\xff\x48\x65\x6c\x6c\x6f\x00"
    assert client().decompress(data, True, 1000) == b"Hello"


def test_rfc_example_bfinal() -> None:
    # 7.2.3.4: a DEFLATE block with BFINAL set to 1, then the next message.
    codec = client()
    assert codec.decompress(b"\xf3\x48\xcd\xc9\xc9\x07\x00\x00", True, 1000) == b"Hello"
    assert codec.decompress(HELLO, True, 1000) == b"Hello"


def test_rfc_example_two_blocks() -> None:
    # 7.2.3.5: two DEFLATE blocks in one message.
    data = b"\xf2\x48\x05\x00\x00\x00\xff\xff\xca\xc9\xc9\x07\x00"
    assert client().decompress(data, True, 1000) == b"Hello"


def test_empty_message() -> None:
    codec = server()
    compressed = codec.compress(b"")
    assert compressed == b"\x00"
    assert client().decompress(compressed, True, 0) == b""
    # 7.2.3.6: an empty fragment is fine too.
    receiver = client()
    assert receiver.decompress(b"", False, 10) == b""
    assert receiver.decompress(HELLO, True, 10) == b"Hello"


# ---------------------------------------------------------------------------
# The codec: sizes and errors


def test_max_size_is_exact() -> None:
    data = b"x" * 1000
    compressed = server().compress(data)
    assert client().decompress(compressed, True, 1000) == data
    with pytest.raises(PayloadTooBig):
        client().decompress(compressed, True, 999)
    assert client().decompress(compressed, True, None) == data
    with pytest.raises(PayloadTooBig) as info:
        client().decompress(compressed, True, -5)
    assert info.value.code == 1009


class SpyInflater:
    """Wraps a zlib decompressobj and records the largest output asked and given."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.max_asked = 0
        self.max_given = 0

    def decompress(self, data: bytes, max_length: int = 0) -> bytes:
        assert max_length > 0, "unbounded inflate"
        self.max_asked = max(self.max_asked, max_length)
        out: bytes = self.inner.decompress(data, max_length)
        self.max_given = max(self.max_given, len(out))
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_zip_bomb() -> None:
    """100 MB of zeros deflate to about 100 KB; inflating them with a 1 MiB
    limit raises PayloadTooBig having produced at most 1 MiB + 1 byte."""
    deflater = zlib.compressobj(9, zlib.DEFLATED, -15)
    chunk = bytes(1 << 20)
    parts = [deflater.compress(chunk) for _ in range(100)]
    parts.append(deflater.flush(zlib.Z_SYNC_FLUSH))
    bomb = b"".join(parts)[:-4]
    assert len(bomb) < 200_000
    codec = client()
    spy = SpyInflater(zlib.decompressobj(-15))
    codec._inflater = spy  # type: ignore[assignment]
    limit = 1 << 20
    with pytest.raises(PayloadTooBig):
        codec.decompress(bomb, True, limit)
    assert spy.max_asked == limit + 1
    assert spy.max_given <= limit + 1


def test_zip_bomb_in_fragments() -> None:
    """The engine passes what is left of the message's limit with each frame."""
    deflater = zlib.compressobj(9, zlib.DEFLATED, -15)
    bomb = deflater.compress(bytes(10 << 20)) + deflater.flush(zlib.Z_SYNC_FLUSH)
    codec = client()
    left = 1 << 20
    with pytest.raises(PayloadTooBig):
        for i in range(0, len(bomb), 100):
            out = codec.decompress(bomb[i : i + 100], False, left)
            left -= len(out)
    assert left >= 0


def test_corrupt_data() -> None:
    codec = client()
    with pytest.raises(ProtocolError) as info:
        codec.decompress(b"\xff\xff\xff\xff", True, 1000)
    assert info.value.code == 1007
    # The codec can go on with a fresh context.
    assert codec.decompress(HELLO, True, 1000) == b"Hello"


def test_window_too_small_for_the_data() -> None:
    """A peer that agreed to a 9-bit window but refers 2000 bytes back, into
    its previous message."""
    deflater = zlib.compressobj(9, zlib.DEFLATED, -15)
    data = random.Random(1).randbytes(2000)
    first = deflater.compress(data) + deflater.flush(zlib.Z_SYNC_FLUSH)
    second = deflater.compress(data) + deflater.flush(zlib.Z_SYNC_FLUSH)
    assert len(second) < 100
    codec = client(DeflateParams(server_max_window_bits=9))
    assert codec.decompress(first[:-4], True, None) == data
    with pytest.raises(ProtocolError) as info:
        codec.decompress(second[:-4], True, None)
    assert info.value.code == 1007


def test_output_from_the_tail_is_bounded() -> None:
    # A stored block announcing 4 bytes that never come: the 4 bytes of the
    # tail become its content.
    stored = b"\x00\x04\x00\xfb\xff"
    assert client().decompress(stored, True, 4) == b"\x00\x00\xff\xff"
    with pytest.raises(PayloadTooBig):
        client().decompress(stored, True, 3)


def test_bfinal_without_the_extra_octet() -> None:
    deflater = zlib.compressobj(6, zlib.DEFLATED, -15)
    stream = deflater.compress(b"Hello") + deflater.flush(zlib.Z_FINISH)
    codec = client()
    assert codec.decompress(stream, False, 100) == b"Hello"
    assert codec._inflater is None  # the stream ended: a new one starts next


def test_server_accept_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    from tether.protocol import deflate

    monkeypatch.setattr(deflate, "_ACCEPT_CACHE_SIZE", 0)
    options = DeflateOptions(compress_level=2)
    assert server_accept([P], options) == (P, DeflateParams())
    assert ((P,), options) not in deflate._ACCEPT_CACHE


# ---------------------------------------------------------------------------
# The codec: context takeover, memory


def test_lazy_allocation_and_reset() -> None:
    codec = server()
    assert codec._deflater is None
    assert codec._inflater is None
    codec.compress(b"x" * 100)
    assert codec._deflater is not None
    assert codec._inflater is None
    codec.decompress(HELLO, True, 100)
    assert codec._inflater is not None
    codec.reset()
    assert codec._deflater is None
    assert codec._inflater is None


def test_inflater_dropped_after_each_message_without_peer_context_takeover() -> None:
    codec = server(DeflateParams(client_no_context_takeover=True))
    first = codec.decompress(b"\xf2\x48\xcd", False, 100)
    assert codec._inflater is not None
    assert first + codec.decompress(b"\xc9\xc9\x07\x00", True, 100) == b"Hello"
    assert codec._inflater is None
    # With context takeover, it stays.
    codec = server()
    codec.decompress(HELLO, True, 100)
    assert codec._inflater is not None


def test_no_context_takeover_messages_stand_alone() -> None:
    sender = server(DeflateParams(server_no_context_takeover=True))
    first = sender.compress(b"Hello")
    second = sender.compress(b"Hello")
    assert first == second == HELLO
    # Each decodes with a fresh inflater.
    for message in (first, second):
        assert zlib.decompressobj(-15).decompress(message + b"\x00\x00\xff\xff") == b"Hello"


def test_params_sides() -> None:
    params = DeflateParams(True, False, 9, 10)
    s = PerMessageDeflate(params, True)
    c = PerMessageDeflate(params, False)
    assert (s._local_nct, s._local_bits, s._remote_nct, s._remote_bits) == (True, 9, False, 10)
    assert (c._local_nct, c._local_bits, c._remote_nct, c._remote_bits) == (False, 10, True, 9)
    assert s.options == DeflateOptions()
    assert s.min_size == 32
    assert repr(s) == f"PerMessageDeflate({params!r}, server)"
    assert repr(c) == f"PerMessageDeflate({params!r}, client)"
    assert PerMessageDeflate(params, True, DeflateOptions(min_size=0)).min_size == 0


def strict_inflater(bits: int) -> Any:
    """An inflater with exactly the agreed window: the peer's point of view."""
    return zlib.decompressobj(-bits)


def test_strict_inflate_is_strict() -> None:
    text = random.Random(2).randbytes(600) * 3
    deflater = zlib.compressobj(6, zlib.DEFLATED, -15)
    data = deflater.compress(text) + deflater.flush(zlib.Z_SYNC_FLUSH)
    with pytest.raises(zlib.error, match="too far back"):
        strict_inflate(strict_inflater(9), data)


def strict_inflate(inflater: Any, data: bytes) -> bytes:
    """Inflate 16 bytes at a time: zlib lets a match reach back beyond the
    window into the output of the same call, not of an earlier one, so this
    makes every match that reaches further than the window fail."""
    out = []
    while data:
        out.append(inflater.decompress(data, 16))
        data = inflater.unconsumed_tail
    return b"".join(out)


@pytest.mark.parametrize("bits", range(8, 16))
def test_compressor_respects_the_agreed_window(bits: int) -> None:
    """What we compress with N window bits inflates with exactly N bits, 8
    included (zlib cannot deflate with 8: we use run-length matches only)."""
    sender = server(DeflateParams(server_max_window_bits=bits))
    inflater = strict_inflater(bits)
    # Matches at distances of 600 and more, and short ones.
    text = (
        random.Random(2).randbytes(600) * 3 + b"The quick brown fox jumps over the lazy dog. " * 9
    )
    for _ in range(3):  # context takeover across messages
        compressed = sender.compress(text)
        assert strict_inflate(inflater, compressed + b"\x00\x00\xff\xff") == text
    runs = bytes(4000)
    assert len(sender.compress(runs)) < 100  # runs compress, even with 8 bits


messages = st.lists(
    st.one_of(
        st.binary(max_size=3000),
        st.text(max_size=500).map(str.encode),
        st.builds(lambda b, n: b * n, st.binary(min_size=1, max_size=8), st.integers(0, 500)),
        st.binary(min_size=200, max_size=700).map(lambda b: b * 3),  # long distances
    ),
    min_size=1,
    max_size=8,
)


@settings(max_examples=150, deadline=None)
@given(
    msgs=messages,
    server_nct=st.booleans(),
    client_nct=st.booleans(),
    server_bits=st.integers(8, 15),
    client_bits=st.integers(8, 15),
    level=st.integers(0, 9),
    cut=st.integers(1, 400),
)
def test_round_trip(
    msgs: list[bytes],
    server_nct: bool,
    client_nct: bool,
    server_bits: int,
    client_bits: int,
    level: int,
    cut: int,
) -> None:
    params = DeflateParams(server_nct, client_nct, server_bits, client_bits)
    options = DeflateOptions(compress_level=level)
    srv = PerMessageDeflate(params, True, options)
    cli = PerMessageDeflate(params, False, options)
    peer_of_server = strict_inflater(server_bits)
    for sender, receiver in ((srv, cli), (cli, srv)):
        for msg in msgs:
            compressed = sender.compress(msg)
            # Split into frames of ``cut`` bytes, as a fragmented message.
            frames = [compressed[i : i + cut] for i in range(0, len(compressed), cut)] or [b""]
            out = b"".join(
                receiver.decompress(frame, i == len(frames) - 1, len(msg))
                for i, frame in enumerate(frames)
            )
            assert out == msg
            if sender is srv:
                if server_nct:
                    peer_of_server = strict_inflater(server_bits)
                assert strict_inflate(peer_of_server, compressed + b"\x00\x00\xff\xff") == msg
