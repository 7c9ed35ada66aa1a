"""Frames of RFC 6455 section 5: opcodes, close codes, parsing and building.

The two hot functions, :func:`scan_frames` (bytes -> frames) and
:func:`build_frame` (payload -> bytes), and the masking helper
:func:`apply_mask` exist twice: here in pure Python, and in the compiled
module ``tether._speedups``. :mod:`tether.protocol.accel` picks one; both
give identical results, and the test suite runs against each.

What to call next: you rarely need this module directly; the state machine in
:mod:`tether.protocol.connection` calls it.
"""

from __future__ import annotations

import enum
import os
import struct
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "CLOSE_CODES_SENDABLE",
    "Close",
    "CloseCode",
    "Opcode",
    "PayloadSink",
    "apply_mask",
    "build_frame",
    "check_close_code",
    "parse_close",
    "scan_frames",
    "serialize_close",
]


class Opcode(enum.IntEnum):
    """RFC 6455 section 5.2: "Opcode: 4 bits"."""

    CONT = 0x0
    TEXT = 0x1
    BINARY = 0x2
    CLOSE = 0x8
    PING = 0x9
    PONG = 0xA


class CloseCode(enum.IntEnum):
    """Close codes of RFC 6455 section 7.4.1 and the IANA registry."""

    NORMAL_CLOSURE = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003
    NO_STATUS_RCVD = 1005
    ABNORMAL_CLOSURE = 1006
    INVALID_DATA = 1007
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    MANDATORY_EXTENSION = 1010
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012
    TRY_AGAIN_LATER = 1013
    BAD_GATEWAY = 1014
    TLS_HANDSHAKE = 1015


#: Codes an endpoint may put in a close frame (RFC 6455 section 7.4.1 and
#: 7.4.2): 1004, 1005, 1006 and 1015 "MUST NOT be set as a status code in a
#: Close control frame"; 1016-2999 are reserved for future RFCs; 3000-4999
#: belong to libraries, frameworks and applications.
CLOSE_CODES_SENDABLE = frozenset({1000, 1001, 1002, 1003, *range(1007, 1015)})

_EXPLANATIONS = {
    1000: "OK",
    1001: "going away",
    1002: "protocol error",
    1003: "unsupported data",
    1005: "no status received [internal]",
    1006: "connection closed abnormally [internal]",
    1007: "invalid frame payload data",
    1008: "policy violation",
    1009: "message too big",
    1010: "mandatory extension",
    1011: "internal error",
    1012: "service restart",
    1013: "try again later",
    1014: "bad gateway",
    1015: "TLS failure [internal]",
}


def check_close_code(code: int) -> bool:
    """Whether ``code`` may appear in a close frame on the wire."""
    return code in CLOSE_CODES_SENDABLE or 3000 <= code <= 4999


@dataclass(frozen=True, slots=True)
class Close:
    """The content of a close frame: a code and a reason."""

    code: int
    reason: str = ""

    def __str__(self) -> str:
        if 3000 <= self.code < 4000:
            explanation = "registered"
        elif 4000 <= self.code < 5000:
            explanation = "private use"
        else:
            explanation = _EXPLANATIONS.get(self.code, "unknown")
        text = f"{self.code} ({explanation})"
        if self.reason:
            text = f"{text} {self.reason}"
        return text


def parse_close(payload: bytes) -> Close:
    """Parse the payload of a close frame (RFC 6455 section 5.5.1).

    Raises :class:`~tether.exceptions.ProtocolError` (1002) for a 1-byte
    payload or a code that may not be sent, and (1007) for a reason that is
    not UTF-8. An empty payload means "no status code": 1005.
    """
    from tether.exceptions import ProtocolError

    n = len(payload)
    if n == 0:
        return Close(CloseCode.NO_STATUS_RCVD, "")
    if n == 1:
        # "If there is a body, the first two bytes of the body MUST be a
        # 2-byte unsigned integer" (section 5.5.1).
        raise ProtocolError("close frame with a 1-byte payload")
    code = (payload[0] << 8) | payload[1]
    if not check_close_code(code):
        raise ProtocolError(f"invalid close code {code}")
    try:
        # "the body ... MAY contain UTF-8-encoded data" (section 5.5.1),
        # which must then be valid (section 8.1).
        reason = payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError("close reason is not valid UTF-8", 1007) from None
    return Close(code, reason)


def serialize_close(close: Close) -> bytes:
    """The payload of a close frame; 1005 serializes as an empty payload."""
    if close.code == CloseCode.NO_STATUS_RCVD:
        return b""
    return struct.pack("!H", close.code) + close.reason.encode("utf-8")


# ---------------------------------------------------------------------------
# The hot path, pure-Python twin of tether._speedups.

_native: Literal["little"] = "little"


def apply_mask(data: bytes | bytearray | memoryview, mask: bytes) -> bytes:
    """XOR ``data`` with the 4-byte ``mask`` repeated (RFC 6455 section 5.3).

    "Octet i of the transformed data is the XOR of octet i of the original
    data with octet at index i modulo 4 of the masking key." Raises
    ValueError unless ``mask`` is 4 bytes long.
    """
    if len(mask) != 4:
        raise ValueError(f"mask must be 4 bytes, got {len(mask)}")
    n = len(data)
    if n == 0:
        return b""
    reps = (n + 3) // 4
    key = int.from_bytes(mask * reps, _native)
    value = int.from_bytes(data, _native)
    return (value ^ key).to_bytes(reps * 4, _native)[:n]


def build_frame(first_byte: int, payload: bytes, mask: bytes | None = None) -> bytes:
    """Serialize one frame (RFC 6455 section 5.2).

    ``first_byte`` is FIN | RSV1-3 | opcode; ``mask`` is the 4-byte masking
    key (clients must mask, section 5.3) or ``None``. The payload length uses
    "the minimal number of bytes" (section 5.2): 7 bits up to 125, 16 bits up
    to 65535, 64 bits beyond.
    """
    n = len(payload)
    mask_bit = 0x80 if mask is not None else 0
    if n < 126:
        header = bytes((first_byte, mask_bit | n))
    elif n < 65536:
        header = struct.pack("!BBH", first_byte, mask_bit | 126, n)
    else:
        header = struct.pack("!BBQ", first_byte, mask_bit | 127, n)
    if mask is None:
        return header + payload
    return header + mask + apply_mask(payload, mask)


_MASK_POOL_SIZE = 256
_mask_pool = bytearray()


def _drop_mask_pool() -> None:
    _mask_pool.clear()


if hasattr(os, "register_at_fork"):  # pragma: no branch - absent on Windows only
    # A forked child must not hand out the keys its parent will use.
    os.register_at_fork(after_in_child=_drop_mask_pool)


def masking_key() -> bytes:
    """4 random bytes for a client frame's masking key (RFC 6455 section 5.3).

    Section 10.3: "the masking key MUST be derived from a strong source of
    entropy". The bytes come from :func:`os.urandom`, read 256 at a time (one
    system call per 64 frames); each key is handed out once, and a forked
    child starts with an empty pool.
    """
    pool = _mask_pool
    if len(pool) < 4:
        pool[:] = os.urandom(_MASK_POOL_SIZE)
    key = bytes(pool[-4:])
    del pool[-4:]
    return key


class PayloadSink:
    """The payload of one frame that arrives over several reads, assembled in place.

    The state machine makes one when a frame's header is in but its payload
    is not (see :meth:`tether.protocol.connection.Connection.receive_data`),
    so that a large payload is copied once instead of being gathered in a
    growing buffer and sliced out at the end. Fill it with :meth:`feed`, or
    read into :meth:`buffer` (``recv_into``, ``BufferedProtocol.get_buffer``)
    and call :meth:`written`; call :meth:`take` once :attr:`remaining` is 0.
    ``mask``: the frame's 4-byte masking key, or ``None`` if unmasked. The
    compiled twin, ``tether._speedups.PayloadSink``, fills a ``bytes`` object
    directly; this one fills a ``bytearray`` and copies it once at the end.
    """

    __slots__ = ("_data", "_mask", "filled", "size")

    def __init__(self, size: int, mask: bytes | None = None) -> None:
        if size < 0:
            raise ValueError("size must be >= 0")
        if mask is not None and len(mask) != 4:
            raise ValueError(f"mask must be 4 bytes, got {len(mask)}")
        self.size = size
        self.filled = 0
        self._mask = mask
        self._data: bytearray | None = bytearray(size)

    @property
    def remaining(self) -> int:
        """Bytes still to come."""
        return self.size - self.filled

    def _open(self) -> bytearray:
        if self._data is None:
            raise ValueError("the payload was already taken")
        return self._data

    def _unmask(self, chunk: bytes | bytearray | memoryview) -> bytes | bytearray | memoryview:
        # Section 5.3: octet i is XORed with octet i modulo 4 of the key; the
        # chunk starts at payload offset `filled`.
        mask = self._mask
        if mask is None:
            return chunk
        shift = self.filled % 4
        return apply_mask(chunk, mask[shift:] + mask[:shift])

    def feed(self, data: bytes | bytearray | memoryview, start: int = 0) -> int:
        """Copy ``data[start:]`` into the payload, unmasking it, up to the
        payload's end. Returns how many bytes of ``data`` were used."""
        buf = self._open()
        if not 0 <= start <= len(data):
            raise ValueError("start out of range")
        n = min(len(data) - start, self.size - self.filled)
        buf[self.filled : self.filled + n] = self._unmask(data[start : start + n])
        self.filled += n
        return n

    def buffer(self) -> memoryview:
        """A writable view of the unfilled part, to read into; then call
        :meth:`written`."""
        buf = self._open()
        if self.filled == self.size:
            raise BufferError("the payload sink has no room left")
        return memoryview(buf)[self.filled :]

    def written(self, n: int) -> None:
        """``n`` bytes were read into :meth:`buffer`: unmask them in place."""
        buf = self._open()
        if not 0 <= n <= self.size - self.filled:
            raise ValueError("more bytes written than the payload holds")
        end = self.filled + n
        buf[self.filled : end] = self._unmask(buf[self.filled : end])
        self.filled = end

    def take(self) -> bytes:
        """The finished payload; the sink is empty afterwards."""
        buf = self._open()
        if self.filled != self.size:
            raise ValueError(f"the payload is incomplete: {self.filled} of {self.size} bytes")
        self._data = None
        return bytes(buf)

    def peek(self, start: int, end: int) -> bytes:
        """A copy of the unmasked payload bytes ``[start:end]`` (within what
        is filled)."""
        buf = self._open()
        if not 0 <= start <= end <= self.filled:
            raise ValueError("peek() range outside the filled payload")
        return bytes(buf[start:end])


# Error results of scan_frames: (close code, reason).
FrameError = tuple[int, str]


def scan_frames(
    buf: bytes | bytearray | memoryview,
    pos: int,
    masked: bool,
    max_frame: int,
    rsv_allowed: int,
    end: int | None = None,
    events: list[Any] | None = None,
) -> tuple[list[tuple[int, bytes]], int, FrameError | None]:
    """Turn the bytes of ``buf`` from ``pos`` on into complete frames.

    Returns ``(frames, pos, error)``: each frame is ``(first_byte, payload)``
    with the payload unmasked; ``pos`` is where the first incomplete frame
    starts (or ``len(buf)``); ``error`` is ``None`` or ``(code, reason)`` for
    the first frame that breaks a framing rule, in which case ``frames`` holds
    the valid frames before it and the rest of ``buf`` must be ignored.

    ``masked``: whether frames must be masked (True on the server, section
    5.1: "a server MUST close the connection upon receiving a frame that is
    not masked"; False on the client: "A client MUST close a connection if it
    detects a masked frame"). ``max_frame``: largest payload accepted (1009
    beyond). ``rsv_allowed``: the RSV bits a negotiated extension gives a
    meaning to (0x40 with permessage-deflate).

    ``end``: scan ``buf[:end]`` only (a reused read buffer need not be
    sliced). ``events``: a list to deliver the leading whole messages to
    directly: while frames are single-frame text (``0x81``, valid UTF-8) or
    binary (``0x82``) messages, their ``str`` or ``bytes`` go to ``events``
    instead of ``frames``; from the first other frame on, frames are returned.
    Pass it only when no fragmented message is in progress.

    Only stateless rules are checked here; the fragmentation rules and the
    meaning of RSV1 are the state machine's.
    """
    frames: list[tuple[int, bytes]] = []
    if end is None:
        end = len(buf)
    elif not 0 <= end <= len(buf):
        raise ValueError("end must be within the buffer")
    while True:
        if end - pos < 2:
            return frames, pos, None
        b0 = buf[pos]
        b1 = buf[pos + 1]
        opcode = b0 & 0x0F
        # Section 5.2: "RSV1, RSV2, RSV3: 1 bit each. MUST be 0 unless an
        # extension is negotiated that defines meanings for non-zero values."
        if b0 & 0x70 & ~rsv_allowed:
            return frames, pos, (1002, "reserved bits must be 0")
        # "If an unknown opcode is received, the receiving endpoint MUST _Fail
        # the WebSocket Connection_." (section 5.2)
        if opcode not in (0, 1, 2, 8, 9, 10):
            return frames, pos, (1002, f"reserved opcode {opcode}")
        if bool(b1 & 0x80) != masked:
            return (
                frames,
                pos,
                (
                    1002,
                    "incorrect masking: client frames must be masked, server frames must not",
                ),
            )
        length = b1 & 0x7F
        header = 2
        if length == 126:
            if end - pos < 4:
                return frames, pos, None
            length = (buf[pos + 2] << 8) | buf[pos + 3]
            header = 4
        elif length == 127:
            if end - pos < 10:
                return frames, pos, None
            length = int.from_bytes(buf[pos + 2 : pos + 10], "big")
            # "the most significant bit MUST be 0" (section 5.2)
            if length >> 63:
                return frames, pos, (1002, "payload length with the most significant bit set")
            header = 10
        if opcode >= 8:
            # Section 5.5: "All control frames MUST have a payload length of
            # 125 bytes or less and MUST NOT be fragmented."
            if length > 125:
                return frames, pos, (1002, "control frame too long")
            if not b0 & 0x80:
                return frames, pos, (1002, "fragmented control frame")
        if length > max_frame:
            return (
                frames,
                pos,
                (1009, f"frame of {length} bytes exceeds limit of {max_frame} bytes"),
            )
        start = pos + header + (4 if masked else 0)
        if end - start < length:
            return frames, pos, None
        if masked:
            payload = apply_mask(buf[start : start + length], bytes(buf[start - 4 : start]))
        else:
            payload = bytes(buf[start : start + length])
        pos = start + length
        if events is not None:
            if b0 == 0x82:
                events.append(payload)
                continue
            if b0 == 0x81:
                try:
                    events.append(payload.decode())
                    continue
                except UnicodeDecodeError:
                    pass
            events = None
        frames.append((b0, payload))


def frame_header(
    buf: bytes | bytearray | memoryview, pos: int
) -> tuple[int, int, int, bytes | None] | None:
    """Parse the header of the frame at ``pos`` without waiting for its payload.

    Returns ``(first_byte, length, header_length, mask)`` or ``None`` if the
    header itself is incomplete. The state machine uses this on the rare path
    where a text frame arrives in pieces, to validate its UTF-8 as soon as
    each byte arrives; :func:`scan_frames` has already vetted the header.
    """
    end = len(buf)
    if end - pos < 2:
        return None
    b0, b1 = buf[pos], buf[pos + 1]
    length = b1 & 0x7F
    header = 2
    if length == 126:
        if end - pos < 4:
            return None
        length = (buf[pos + 2] << 8) | buf[pos + 3]
        header = 4
    elif length == 127:
        if end - pos < 10:
            return None
        length = int.from_bytes(buf[pos + 2 : pos + 10], "big")
        header = 10
    mask = None
    if b1 & 0x80:
        if end - pos < header + 4:
            return None
        mask = bytes(buf[pos + header : pos + header + 4])
        header += 4
    return b0, length, header, mask
