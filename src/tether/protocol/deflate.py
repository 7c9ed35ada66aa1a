"""permessage-deflate (RFC 7692): negotiation and the per-message codec.

Negotiation, in the opening handshake:

* client: :func:`client_offer` gives the ``Sec-WebSocket-Extensions``
  value to send; :func:`client_accept` checks the server's answer and
  returns the agreed :class:`DeflateParams` (or ``None``: declined).
* server: :func:`server_accept` reads the client's offers and returns the
  answer to send and the agreed :class:`DeflateParams` (or ``None``).

Then :class:`PerMessageDeflate` compresses and decompresses the messages of
one connection.

Memory per connection, with zlib (``zlib.h``): the deflater takes
``(1 << (window_bits + 2)) + (1 << (mem_level + 9))`` bytes, 256 KiB at the
defaults (15-bit window, ``mem_level`` 8); the inflater ``1 << window_bits``
bytes plus about 7 KiB, 39 KiB at 15 bits. Both are allocated lazily: the
deflater with the first message we compress (messages shorter than
``min_size`` are never compressed), the inflater with the first compressed
message we receive; the inflater is dropped after each message when the peer
compresses without context takeover. To cut the cost, lower ``mem_level``
(4: deflater 128 KiB + 8 KiB) or the window bits (``server_max_window_bits=12``
on a server: deflater 16 KiB + 128 KiB at mem_level 8), or raise ``min_size``.

What to call next: :class:`~tether.protocol.handshake.ServerHandshake` and
:class:`~tether.protocol.handshake.ClientHandshake` call the negotiation
functions; the connection state machine calls :meth:`PerMessageDeflate.compress`
and :meth:`PerMessageDeflate.decompress`.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable
from dataclasses import dataclass

from tether.exceptions import (
    InvalidRequest,
    NegotiationError,
    PayloadTooBig,
    ProtocolError,
)

__all__ = [
    "EXTENSION_NAME",
    "DeflateOptions",
    "DeflateParams",
    "PerMessageDeflate",
    "client_accept",
    "client_offer",
    "parse_extensions",
    "server_accept",
]

EXTENSION_NAME = "permessage-deflate"

# RFC 7692 section 7.2.1: the 4 octets "0x00 0x00 0xff 0xff" that end a
# DEFLATE block flushed with an empty stored block.
_TAIL = b"\x00\x00\xff\xff"

# RFC 7692 section 7.1.2.1: "a decimal integer value without leading zeroes
# between 8 to 15, inclusive".
_WINDOW_BITS = {str(bits): bits for bits in range(8, 16)}

_token = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+").fullmatch
# quoted-string content (RFC 9110 section 5.6.4): qdtext or quoted-pair.
_quoted = re.compile(
    r"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*"
).fullmatch
_unescape = re.compile(r"\\(.)").sub

Params = list[tuple[str, "str | None"]]


@dataclass(frozen=True, slots=True)
class DeflateOptions:
    """What this endpoint is willing to do with permessage-deflate.

    ``server_no_context_takeover`` / ``client_no_context_takeover``: ask
    for (client) or impose (server) a fresh compression context per message
    on that side. ``server_max_window_bits`` / ``client_max_window_bits``
    (8..15, ``None`` = no limit, i.e. 15): limit the LZ77 window of that
    side's compressor, which bounds the memory of the other side's
    inflater. A server whose ``client_max_window_bits`` is set below 15
    declines clients that do not offer that parameter (they could not honour
    the limit).

    ``compress_level`` (0..9, or -1 for zlib's default) and ``mem_level``
    (1..9) tune our deflater; see the module docstring for the memory they
    cost. ``min_size``: messages shorter than this many bytes are sent
    uncompressed (RSV1 clear), which RFC 7692 section 6 allows: the
    "Per-Message Compressed" bit "indicates whether a message is compressed
    or not". The default, 32, skips messages where deflate saves a few bytes
    at best for the price of a zlib call, and spares the 256 KiB deflater on
    connections that only ever send short messages.
    """

    server_no_context_takeover: bool = False
    client_no_context_takeover: bool = False
    server_max_window_bits: int | None = None
    client_max_window_bits: int | None = None
    compress_level: int = 6
    mem_level: int = 8
    min_size: int = 32

    def __post_init__(self) -> None:
        for name in ("server_max_window_bits", "client_max_window_bits"):
            bits = getattr(self, name)
            if bits is not None and (type(bits) is not int or not 8 <= bits <= 15):
                raise ValueError(f"{name} must be None or an integer from 8 to 15, not {bits!r}")
        if not -1 <= self.compress_level <= 9:
            raise ValueError(f"compress_level must be from -1 to 9, not {self.compress_level!r}")
        if not 1 <= self.mem_level <= 9:
            raise ValueError(f"mem_level must be from 1 to 9, not {self.mem_level!r}")
        if self.min_size < 0:
            raise ValueError(f"min_size must be >= 0, not {self.min_size!r}")


@dataclass(frozen=True, slots=True)
class DeflateParams:
    """What was agreed in the handshake (window bits are 15 when not given)."""

    server_no_context_takeover: bool = False
    client_no_context_takeover: bool = False
    server_max_window_bits: int = 15
    client_max_window_bits: int = 15


# ---------------------------------------------------------------------------
# The Sec-WebSocket-Extensions grammar


def parse_extensions(values: Iterable[str]) -> list[tuple[str, Params]]:
    """Parse ``Sec-WebSocket-Extensions`` header values (all of them, in
    order) into ``[(extension, [(param, value or None), ...]), ...]``.

    RFC 6455 section 9.1::

        extension-list = 1#extension
        extension = extension-token *( ";" extension-param )
        extension-token = registered-token
        registered-token = token
        extension-param = token [ "=" (token | quoted-string) ]
            ;When using the quoted-string syntax variant, the value
            ;after quoted-string unescaping MUST conform to the
            ;'token' ABNF.

    Empty list elements are skipped (RFC 9110 section 5.6.1: "a recipient
    MUST accept and ignore a reasonable number of empty list elements").
    Raises ``ValueError`` on anything else that does not match.
    """
    result: list[tuple[str, Params]] = []
    for value in values:
        # Splitting on "," and ";" before parsing quoted strings is safe: a
        # quoted value holding either character cannot unescape to a token,
        # so it is malformed whichever way it is cut.
        for element in value.split(","):
            element = element.strip(" \t")
            if not element:
                continue
            parts = element.split(";")
            name = parts[0].rstrip(" \t")
            if not _token(name):
                raise ValueError(f"invalid extension name {name!r}")
            params: Params = []
            for part in parts[1:]:
                pname, eq, pvalue = part.partition("=")
                pname = pname.strip(" \t")
                if not _token(pname):
                    raise ValueError(f"invalid parameter name {pname!r} in {name}")
                if not eq:
                    params.append((pname, None))
                    continue
                pvalue = pvalue.strip(" \t")
                if pvalue[:1] == '"':
                    inner = pvalue[1:-1]
                    if len(pvalue) < 2 or pvalue[-1] != '"' or not _quoted(inner):
                        raise ValueError(f"invalid quoted string {pvalue!r} in {name}")
                    pvalue = _unescape(r"\1", inner)
                if not _token(pvalue):
                    raise ValueError(f"invalid value {pvalue!r} for parameter {pname} of {name}")
                params.append((pname, pvalue))
            result.append((name, params))
    return result


class _Invalid(Exception):
    """A permessage-deflate element with invalid parameters."""


def _read_params(
    params: Params, in_offer: bool
) -> tuple[bool, bool, int | None, int | bool | None]:
    """Check the parameters of one permessage-deflate element.

    Returns ``(server_no_context_takeover, client_no_context_takeover,
    server_max_window_bits, client_max_window_bits)``, the last being
    ``True`` for a value-less ``client_max_window_bits`` (offers only).

    RFC 7692 section 7: "A server MUST decline an extension negotiation
    offer for this extension if any of the following conditions are met:
    The negotiation offer contains an extension parameter not defined for
    use in an offer. The negotiation offer contains an extension parameter
    with an invalid value. The negotiation offer contains multiple extension
    parameters with the same name." The same three rules make a client
    "_Fail the WebSocket Connection_" for a response. Raises :class:`_Invalid`.
    """
    snct = cnct = False
    smwb: int | None = None
    cmwb: int | bool | None = None
    seen: set[str] = set()
    for name, value in params:
        if name in seen:
            raise _Invalid(f"parameter {name} appears more than once")
        seen.add(name)
        if name in ("server_no_context_takeover", "client_no_context_takeover"):
            # 7.1.1.1 / 7.1.1.2: "This extension parameter has no value."
            if value is not None:
                raise _Invalid(f"parameter {name} takes no value")
            if name[0] == "s":
                snct = True
            else:
                cnct = True
        elif name == "server_max_window_bits":
            # 7.1.2.1: the value is "a decimal integer value without leading
            # zeroes between 8 to 15, inclusive", in offers and responses.
            bits = _WINDOW_BITS.get(value) if value is not None else None
            if bits is None:
                raise _Invalid(f"invalid server_max_window_bits {value!r}")
            smwb = bits
        elif name == "client_max_window_bits":
            # 7.1.2.2: in an offer, "This parameter has no value or a decimal
            # integer value without leading zeroes between 8 to 15"; in a
            # response it "has a decimal integer value".
            if value is None and in_offer:
                cmwb = True
            else:
                bits = _WINDOW_BITS.get(value) if value is not None else None
                if bits is None:
                    raise _Invalid(f"invalid client_max_window_bits {value!r}")
                cmwb = bits
        else:
            raise _Invalid(f"unknown parameter {name}")
    return snct, cnct, smwb, cmwb


def _format(
    server_no_context_takeover: bool,
    client_no_context_takeover: bool,
    server_max_window_bits: int | None,
    client_max_window_bits: int | bool | None,
) -> str:
    parts = [EXTENSION_NAME]
    if server_no_context_takeover:
        parts.append("server_no_context_takeover")
    if client_no_context_takeover:
        parts.append("client_no_context_takeover")
    if server_max_window_bits is not None:
        parts.append(f"server_max_window_bits={server_max_window_bits}")
    if client_max_window_bits is True:
        parts.append("client_max_window_bits")
    elif client_max_window_bits is not None and client_max_window_bits is not False:
        parts.append(f"client_max_window_bits={client_max_window_bits}")
    return "; ".join(parts)


def client_offer(options: DeflateOptions) -> str:
    """The ``Sec-WebSocket-Extensions`` value a client sends.

    ``client_max_window_bits`` is always offered, without a value when
    ``options.client_max_window_bits`` is ``None``: RFC 7692 section
    7.1.2.2, "By including this parameter in an extension negotiation
    offer, a client informs the peer server that the client supports the
    "client_max_window_bits" extension parameter in an extension negotiation
    response" (a server that wants to limit our window, to save memory,
    can then accept us).
    """
    return _format(
        options.server_no_context_takeover,
        options.client_no_context_takeover,
        options.server_max_window_bits,
        options.client_max_window_bits or True,
    )


def server_accept(offers: list[str], options: DeflateOptions) -> tuple[str, DeflateParams] | None:
    """Choose among the client's offers; return ``(response_value, params)``
    or ``None`` to decline permessage-deflate.

    ``offers`` are all the ``Sec-WebSocket-Extensions`` values of the
    request. RFC 7692 section 5: "The order of elements is important as it
    specifies the client's preference. An element preceding another element
    has higher preference." The first acceptable permessage-deflate offer
    wins; an offer with invalid parameters is declined and the next one
    tried; other extensions are ignored (not accepted).

    A header that does not match the grammar of RFC 6455 section 9.1 raises
    :class:`~tether.exceptions.InvalidRequest` (400): "If a value is received
    by either the client or the server during negotiation that does not
    conform to the ABNF below, the recipient of such malformed data MUST
    immediately _Fail the WebSocket Connection_."
    """
    # Clients send the same few offers over and over (browsers all send
    # "permessage-deflate; client_max_window_bits"): remember the answers.
    key = (tuple(offers), options)
    try:
        return _ACCEPT_CACHE[key]
    except KeyError:
        pass
    result = _server_accept(offers, options)
    if len(_ACCEPT_CACHE) < _ACCEPT_CACHE_SIZE:
        _ACCEPT_CACHE[key] = result
    return result


_ACCEPT_CACHE: dict[tuple[tuple[str, ...], DeflateOptions], tuple[str, DeflateParams] | None] = {}
_ACCEPT_CACHE_SIZE = 256


def _server_accept(offers: list[str], options: DeflateOptions) -> tuple[str, DeflateParams] | None:
    try:
        extensions = parse_extensions(offers)
    except ValueError as exc:
        raise InvalidRequest(f"malformed Sec-WebSocket-Extensions header: {exc}", 400) from None
    for name, params in extensions:
        if name != EXTENSION_NAME:
            continue
        try:
            snct, cnct, smwb, cmwb = _read_params(params, in_offer=True)
        except _Invalid:
            continue  # RFC 7692 section 7: "A server MUST decline" this offer.
        agreed = _server_agree(snct, cnct, smwb, cmwb, options)
        if agreed is not None:
            return agreed
    return None


def _server_agree(
    snct: bool, cnct: bool, smwb: int | None, cmwb: int | bool | None, options: DeflateOptions
) -> tuple[str, DeflateParams] | None:
    # 7.1.1.1: "A server accepts an extension negotiation offer that includes
    # the "server_no_context_takeover" extension parameter by including the
    # "server_no_context_takeover" extension parameter in the corresponding
    # extension negotiation response" and "A server MAY include the
    # "server_no_context_takeover" extension parameter in an extension
    # negotiation response even if the extension negotiation offer being
    # accepted by the extension negotiation response didn't include" it.
    server_nct = snct or options.server_no_context_takeover
    # 7.1.1.2: "A server MAY include the "client_no_context_takeover"
    # extension parameter in an extension negotiation response." When the
    # client offered it (a promise not to use context takeover) we echo it:
    # it costs the client nothing and lets us drop our inflater between
    # messages.
    client_nct = cnct or options.client_no_context_takeover
    # 7.1.2.1: "A server accepts an extension negotiation offer with this
    # parameter by including the "server_max_window_bits" extension
    # parameter in the extension negotiation response to send back to the
    # client with the same or smaller value as the offer." and "A server MAY
    # include the "server_max_window_bits" extension parameter in an
    # extension negotiation response even if the extension negotiation offer
    # being accepted by the response didn't include" it.
    # An offer of 8 is accepted with 8: zlib cannot compress with an 8-bit
    # window, so PerMessageDeflate then compresses with run-length matches
    # only (every match at distance 1), which a 256-byte window decodes; see
    # PerMessageDeflate._new_deflater for why this is correct.
    limit = options.server_max_window_bits
    if smwb is not None:
        server_bits: int | None = smwb if limit is None else min(smwb, limit)
    else:
        server_bits = limit
    # 7.1.2.2: "If a received extension negotiation offer doesn't have the
    # "client_max_window_bits" extension parameter, the corresponding
    # extension negotiation response to the offer MUST NOT include the
    # "client_max_window_bits" extension parameter." So a server that must
    # limit the client's window (to bound its inflater's memory) declines
    # such an offer. "If the "client_max_window_bits" extension parameter in
    # a received extension negotiation offer has a value, the server may
    # either ignore this value or use this value ... by including the
    # "client_max_window_bits" extension parameter in the corresponding
    # extension negotiation response to the offer with a value equal to or
    # smaller than the received value."
    client_limit = options.client_max_window_bits
    client_bits: int | None
    if cmwb is None:
        if client_limit is not None and client_limit < 15:
            return None
        client_bits = None
    elif cmwb is True:
        client_bits = client_limit
    else:
        assert not isinstance(cmwb, bool)
        client_bits = cmwb if client_limit is None else min(cmwb, client_limit)
    response = _format(server_nct, client_nct, server_bits, client_bits)
    params = DeflateParams(server_nct, client_nct, server_bits or 15, client_bits or 15)
    return response, params


def client_accept(
    values: list[str], options: DeflateOptions, offered: bool
) -> DeflateParams | None:
    """Check the server's ``Sec-WebSocket-Extensions`` values (all of them)
    against our offer (``client_offer(options)``, when ``offered``).

    Returns the agreed :class:`DeflateParams`, or ``None`` when the server
    declined (no extension in its answer). Raises
    :class:`~tether.exceptions.NegotiationError` for a malformed header, an
    extension we did not offer, or parameters that break RFC 7692.
    """
    try:
        extensions = parse_extensions(values)
    except ValueError as exc:
        # RFC 6455 section 9.1: malformed data -> "_Fail the WebSocket Connection_".
        raise NegotiationError(f"malformed Sec-WebSocket-Extensions header: {exc}") from None
    if not extensions:
        return None
    for name, _ in extensions:
        # RFC 6455 section 4.1: "If the response includes a
        # |Sec-WebSocket-Extensions| header field and this header field
        # indicates the use of an extension that was not present in the
        # client's handshake (the server has indicated an extension not
        # requested by the client), the client MUST _Fail the WebSocket
        # Connection_."
        if name != EXTENSION_NAME or not offered:
            raise NegotiationError(f"the server accepted extension {name}, which was not offered")
    if len(extensions) > 1:
        raise NegotiationError("the server accepted permessage-deflate more than once")
    try:
        snct, cnct, smwb, cmwb = _read_params(extensions[0][1], in_offer=False)
    except _Invalid as exc:
        # RFC 7692 section 7: "A client MUST _Fail the WebSocket Connection_
        # if the peer server accepted an extension negotiation offer for this
        # extension with an extension negotiation response meeting any of the
        # following conditions" (the three rules of _read_params, and) "The
        # client does not support the configuration that the response
        # represents."
        raise NegotiationError(f"invalid permessage-deflate response: {exc}") from None
    assert not isinstance(cmwb, bool)
    # 7.1.1.1: the server accepts server_no_context_takeover "by including"
    # it; leaving it out of the response does not honour our offer.
    if options.server_no_context_takeover and not snct:
        raise NegotiationError("the server did not accept server_no_context_takeover")
    # 7.1.2.1: "... with the same or smaller value as the offer."
    limit = options.server_max_window_bits
    if limit is not None and (smwb is None or smwb > limit):
        raise NegotiationError(
            f"the server did not accept server_max_window_bits={limit} (answered {smwb})"
        )
    # 7.1.2.2: we always offer client_max_window_bits, so the server may
    # answer it; "with a value equal to or smaller than the received value".
    client_limit = options.client_max_window_bits
    if cmwb is not None and client_limit is not None and cmwb > client_limit:
        raise NegotiationError(
            f"the server answered client_max_window_bits={cmwb}, over the {client_limit} offered"
        )
    # 7.1.1.2: with client_no_context_takeover in our offer, "the client is
    # not going to use context takeover" whatever the server answers.
    return DeflateParams(
        snct,
        cnct or options.client_no_context_takeover,
        smwb or 15,
        cmwb or client_limit or 15,
    )


# ---------------------------------------------------------------------------
# The codec


class PerMessageDeflate:
    """The permessage-deflate codec of one connection.

    ``params`` are the agreed parameters, ``is_server`` tells which side we
    are (the ``server_*`` parameters apply to the server's compressor), and
    ``options`` our own settings (``compress_level``, ``mem_level``,
    ``min_size``). zlib objects are created on first use in each direction.

    What to call next: :meth:`compress` each outgoing message of at least
    :attr:`min_size` bytes and set RSV1 on its first frame; feed every frame
    of an incoming message that had RSV1 set to :meth:`decompress`.
    """

    __slots__ = (
        "_deflater",
        "_inflater",
        "_local_bits",
        "_local_nct",
        "_remote_bits",
        "_remote_nct",
        "is_server",
        "min_size",
        "options",
        "params",
    )

    def __init__(
        self, params: DeflateParams, is_server: bool, options: DeflateOptions | None = None
    ) -> None:
        if options is None:
            options = DeflateOptions()
        self.params = params
        self.is_server = is_server
        self.options = options
        self.min_size = options.min_size
        if is_server:
            self._local_nct = params.server_no_context_takeover
            self._local_bits = params.server_max_window_bits
            self._remote_nct = params.client_no_context_takeover
            self._remote_bits = params.client_max_window_bits
        else:
            self._local_nct = params.client_no_context_takeover
            self._local_bits = params.client_max_window_bits
            self._remote_nct = params.server_no_context_takeover
            self._remote_bits = params.server_max_window_bits
        self._deflater: zlib._Compress | None = None
        self._inflater: zlib._Decompress | None = None

    def __repr__(self) -> str:
        side = "server" if self.is_server else "client"
        return f"PerMessageDeflate({self.params!r}, {side})"

    def _new_deflater(self) -> zlib._Compress:
        options = self.options
        bits = self._local_bits
        if bits == 8:
            # We agreed to compress with an LZ77 window of 2**8 = 256 bytes
            # (RFC 7692 section 7.1.2.1: server_max_window_bits "limits the
            # LZ77 sliding window size that the server will use to compress
            # messages"; 7.1.2.2 the same for the client), but zlib refuses
            # windowBits=8 for raw deflate since 1.2.9 (before, it silently
            # used 9). Stock zlib with windowBits=9 happens never to emit a
            # distance over 250 (its MAX_DIST is the window size minus 262),
            # but that is an implementation detail that forks (zlib-ng,
            # Intel's, Cloudflare's) need not share. The Z_RLE strategy only
            # ever emits matches at distance 1: whatever zlib is underneath,
            # the stream never refers more than 1 byte back, and any
            # conforming inflater with a 256-byte window decodes it
            # (tests/test_protocol_deflate.py checks with an 8-bit inflater).
            # The price: only runs of a repeated byte are matched, plus
            # Huffman coding. Declining offers of 8 would be RFC-correct too,
            # but loses compression altogether, and Autobahn counts cases
            # 13.3.x/13.5.x/13.7.x (server_max_window_bits=8 offered to our
            # server, client_max_window_bits=8 asked of our client) as
            # unimplemented.
            return zlib.compressobj(
                options.compress_level, zlib.DEFLATED, -9, options.mem_level, zlib.Z_RLE
            )
        return zlib.compressobj(options.compress_level, zlib.DEFLATED, -bits, options.mem_level)

    def compress(self, data: bytes | bytearray | memoryview) -> bytes:
        """Compress one whole message; return the payload to send with RSV1.

        RFC 7692 section 7.2.1: "1. Compress all the octets of the payload of
        the message using DEFLATE. 2. If the resulting data does not end with
        an empty DEFLATE block with no compression (the "BTYPE" bits are set
        to 00), append an empty DEFLATE block with no compression to the tail
        end. 3. Remove 4 octets (that are 0x00 0x00 0xff 0xff) from the tail
        end."
        """
        deflater = self._deflater
        if deflater is None:
            deflater = self._deflater = self._new_deflater()
        head = deflater.compress(data)
        # Z_SYNC_FLUSH ends the data with an empty stored block (step 2).
        # Without context takeover on our side, Z_FULL_FLUSH does the same
        # and also forgets the data compressed so far, so the next message
        # cannot refer to this one: the peer can inflate each message with a
        # fresh context (RFC 7692 section 7.1.1.1/7.1.1.2), and we keep one
        # deflater instead of allocating one per message.
        tail = deflater.flush(zlib.Z_FULL_FLUSH if self._local_nct else zlib.Z_SYNC_FLUSH)
        # zlib's flush output always ends with 00 00 ff ff here (step 3).
        return head + tail[:-4] if head else tail[:-4]

    def decompress(
        self, data: bytes | bytearray | memoryview, fin: bool, max_size: int | None
    ) -> bytes:
        """Decompress one frame of a compressed message (RSV1 was set on its
        first frame); ``fin`` tells whether it is the last frame.

        ``max_size`` bounds the output of this call (pass what is left of the
        message's size limit, or ``None`` for no limit): zlib is asked for at
        most ``max_size + 1`` bytes, so a small frame that would inflate to
        gigabytes costs no more than ``max_size + 1`` bytes of memory before
        :class:`~tether.exceptions.PayloadTooBig` (1009) is raised. Corrupt
        data raises :class:`~tether.exceptions.ProtocolError` (1007).

        RFC 7692 section 7.2.2: "1. Append 4 octets of 0x00 0x00 0xff 0xff
        to the tail end of the payload of the message. 2. Decompress the
        resulting data using DEFLATE."
        """
        limit = None if max_size is None else max(0, max_size)
        try:
            out = self._inflate(data, limit)
            if fin:
                # The whole frame was consumed (the output stayed under the
                # bound); the tail ends the empty stored block and normally
                # adds nothing.
                more = self._inflate(_TAIL, None if limit is None else limit - len(out))
                if more:
                    out += more
        except zlib.error as exc:
            self._inflater = None
            raise ProtocolError(f"invalid compressed data: {exc}", 1007) from None
        if fin and self._remote_nct:
            # The peer compresses each message with a fresh context: our
            # inflater's window is useless after this message; drop it to
            # save memory (a new one is cheap: zlib allocates the window on
            # first use).
            self._inflater = None
        return out

    def _inflate(self, data: bytes | bytearray | memoryview, limit: int | None) -> bytes:
        out = b""
        while True:
            inflater = self._inflater
            if inflater is None:
                # A window bigger than the peer's is always fine for
                # inflating. An 8-bit peer window is inflated with 9 bits
                # (256 bytes more): zlib accepts 8 for inflating, but this
                # tolerates peers that, like zlib before 1.2.9, cannot
                # compress with 8 and quietly use 9.
                inflater = self._inflater = zlib.decompressobj(-max(9, self._remote_bits))
            if limit is None:
                chunk = inflater.decompress(data)
            else:
                # Ask for one byte more than allowed: getting it proves the
                # message too big without inflating any further.
                chunk = inflater.decompress(data, limit - len(out) + 1)
            out = out + chunk if out else chunk
            if limit is not None and len(out) > limit:
                raise PayloadTooBig(
                    f"decompressed message over the size limit ({limit} more bytes allowed)"
                )
            if not inflater.eof:
                return out
            # RFC 7692 section 7.2.3.4: "implementors can choose to flush
            # data using DEFLATE blocks with "BFINAL" set to 1"; zlib then
            # ends the stream, and the bytes after that block (at least an
            # empty stored block: "This octet is necessary to allow the
            # payload to be decompressed in the same manner as messages
            # compressed using DEFLATE blocks with "BFINAL" set to 0") start
            # a new one.
            data = inflater.unused_data
            self._inflater = None
            if not data:
                return out

    def reset(self) -> None:
        """Drop the zlib objects (their memory goes back at once).

        Call it when the connection is closed. Mid-connection, only when no
        context is carried over in that direction: with context takeover a
        message may refer to the previous ones, and dropping the context
        would break them.
        """
        self._deflater = None
        self._inflater = None
