"""The WebSocket state machine after the opening handshake (RFC 6455 sections 5-7).

Bytes in, events and bytes out; no I/O, no clock::

    core = Connection(Side.SERVER)
    core.receive_data(data)            # bytes read from the network
    for event in core.events_received():
        ...                            # str, bytes, Fragment, Ping, Pong, Close
    core.send_text("hello")
    for chunk in core.data_to_send():  # b"" means: close the TCP connection
        ...
    if core.close_expected():
        ...                            # arm the close timeout

Peer errors never escape :meth:`Connection.receive_data`: the core fails the
connection (it queues a close frame with 1002, 1007 or 1009 and stops reading)
and keeps the :class:`~tether.exceptions.ProtocolError` in ``error``. Our own
misuse (sending after closing) raises :class:`~tether.exceptions.InvalidState`
at once.
"""

from __future__ import annotations

import codecs
import enum
import functools
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tether import limits
from tether.exceptions import (
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionClosedOK,
    InvalidState,
    PayloadTooBig,
    ProtocolError,
)
from tether.protocol import accel
from tether.protocol.events import Event, Fragment, Ping, Pong
from tether.protocol.frames import (
    Close,
    CloseCode,
    Opcode,
    check_close_code,
    frame_header,
    parse_close,
    serialize_close,
)

if TYPE_CHECKING:  # pragma: no cover
    from tether.protocol.deflate import PerMessageDeflate

__all__ = ["OK_CLOSE_CODES", "Connection", "Side", "State"]


class Side(enum.IntEnum):
    """Which end of the connection this is."""

    SERVER = 0
    CLIENT = 1


class State(enum.IntEnum):
    """RFC 6455 section 4.1 and 7: the connection states after the handshake."""

    CONNECTING = 0
    OPEN = 1
    CLOSING = 2
    CLOSED = 3


# Enum members as module constants: on Python 3.11, ``State.OPEN`` costs about
# 200 ns per lookup, which the per-message path cannot afford.
_OPEN = State.OPEN
_CLOSED = State.CLOSED

#: Close codes that make a :class:`ConnectionClosedOK` rather than an error.
OK_CLOSE_CODES = frozenset({1000, 1001, 1005})

_utf8_decoder = codecs.getincrementaldecoder("utf-8")
_NO_LIMIT = 1 << 62
_scan_frames = accel.scan_frames
#: An incomplete frame with a payload at least this long is assembled in a
#: PayloadSink (copied once, in place) rather than in the receive buffer.
_SINK_MIN = 4096
# Section 5.2: the 16-bit and 64-bit extended payload length headers.
_HEADER16 = struct.Struct("!BBH")
_HEADER64 = struct.Struct("!BBQ")


class Connection:
    """The sans-I/O WebSocket connection for one side.

    ``deflate``: the permessage-deflate codec agreed in the handshake, or
    ``None``. ``max_size``: largest incoming message in bytes after
    decompression (``None``: no limit). ``max_fragments``: most frames in one
    message. ``fragments``: emit each frame of a fragmented message as a
    :class:`Fragment` instead of assembling it (messages that fit one frame
    are always emitted whole). ``auto_pong``: answer pings automatically, as
    RFC 6455 section 5.5.2 requires ("Upon receipt of a Ping frame, an
    endpoint MUST send a Pong frame in response"); turn it off only if the
    application answers pings itself. ``mask_source``: called with 4, returns
    that many random bytes for a client masking key (default:
    :func:`tether.protocol.accel.masking_key`, ``os.urandom`` bytes read 256
    at a time).
    """

    __slots__ = (
        "_buf",
        "_compress_min",
        "_deflate",
        "_discard",
        "_frag_count",
        "_mask_key",
        "_masked_in",
        "_masked_out",
        "_msg_compressed",
        "_msg_decoder",
        "_msg_op",
        "_msg_parts",
        "_msg_size",
        "_out",
        "_peek",
        "_pending_close",
        "_rsv_allowed",
        "_send_op",
        "_sink",
        "_sink_b0",
        "auto_pong",
        "close_rcvd",
        "close_rcvd_then_sent",
        "close_sent",
        "eof_sent",
        "error",
        "events",
        "fragments",
        "mask_source",
        "max_fragments",
        "max_size",
        "side",
        "state",
    )

    def __init__(
        self,
        side: Side,
        *,
        deflate: PerMessageDeflate | None = None,
        max_size: int | None = limits.MAX_SIZE,
        max_fragments: int | None = limits.MAX_FRAGMENTS,
        fragments: bool = False,
        auto_pong: bool = True,
        mask_source: Callable[[int], bytes] | None = None,
    ) -> None:
        self.side = side
        self.state = State.OPEN
        self.max_size = _NO_LIMIT if max_size is None else max_size
        self.max_fragments = _NO_LIMIT if max_fragments is None else max_fragments
        self.fragments = fragments
        self.auto_pong = auto_pong
        self.mask_source = mask_source
        self._mask_key: Callable[[], bytes] = (
            accel.masking_key if mask_source is None else functools.partial(mask_source, 4)
        )
        self._deflate = deflate
        # RFC 7692 section 6: permessage-deflate gives RSV1 a meaning.
        self._rsv_allowed = 0x40 if deflate is not None else 0
        self._compress_min = getattr(getattr(deflate, "options", None), "min_size", 0)
        # Section 5.1: the server reads masked frames and writes unmasked ones.
        self._masked_in = side is Side.SERVER
        self._masked_out = side is Side.CLIENT
        self._buf: bytearray | None = None
        self._discard = False
        self._peek: Any = None
        # The payload of a large frame still arriving (see receive_data).
        self._sink: Any = None
        self._sink_b0 = 0
        self._pending_close: Close | None = None
        # The incoming message being assembled.
        self._msg_op = -1
        self._msg_parts: list[bytes] = []
        self._msg_decoder: Any = None
        self._msg_size = 0
        self._msg_compressed = False
        self._frag_count = 0
        # The outgoing fragmented message in progress (-1: none).
        self._send_op = -1
        self.events: list[Event] = []
        self._out: list[bytes] = []
        self.close_rcvd: Close | None = None
        self.close_sent: Close | None = None
        self.close_rcvd_then_sent: bool | None = None
        self.eof_sent = False
        self.error: ProtocolError | None = None

    # ------------------------------------------------------------------
    # Receiving

    def receive_data(self, data: bytes | bytearray | memoryview, end: int | None = None) -> None:
        """Feed bytes read from the network: ``data``, or its first ``end``
        bytes. Then call :meth:`events_received` and :meth:`data_to_send`.

        ``data`` may be a buffer the caller reuses for its next read: nothing
        is kept that points into it.
        """
        if self._discard:
            return
        if self._sink is not None or self._buf:
            if end is not None:
                data = memoryview(data)[:end]
                end = None
            if self._sink is not None:
                used = self._sink.feed(data)
                if not self._sink_progress() or used == len(data):
                    return
                data = data[used:]
        buf: bytes | bytearray | memoryview
        if self._buf:
            self._buf += data
            buf = self._buf
        else:
            buf = data
        # Whole messages go straight to the events unless a fragmented
        # message is in progress (then every frame goes through _deliver).
        frames, pos, err = _scan_frames(
            buf,
            0,
            self._masked_in,
            self.max_size,
            self._rsv_allowed,
            end,
            self.events if self._msg_op < 0 else None,
        )
        self._after_scan(buf, end, frames, pos, err)

    def _after_scan(
        self,
        buf: bytes | bytearray | memoryview,
        end: int | None,
        frames: list[tuple[int, bytes]],
        pos: int,
        err: tuple[int, str] | None,
    ) -> None:
        """What :meth:`receive_data` does once ``buf`` (up to ``end``) was
        scanned: deliver the frames left over, fail on a framing error, keep
        the bytes of an incomplete frame. The compiled hot path
        (``tether._speedups.ConnectionBase``) scans by itself and calls this
        only when the scan left something to do."""
        if frames and not self._deliver(frames):
            return
        if err is not None:
            code, reason = err
            self._peer_error(PayloadTooBig(reason) if code == 1009 else ProtocolError(reason, code))
            return
        if end is not None:
            if pos == end:
                return
            buf = memoryview(buf)[:end]
        elif pos == len(buf):
            self._buf = None
            self._peek = None
            return
        header = frame_header(buf, pos)
        if header is not None and header[1] >= _SINK_MIN and (len(buf) - pos) * 4 >= header[1]:
            # A large frame whose payload is still arriving (its header was
            # vetted by scan_frames): assemble the payload in place, one copy,
            # instead of growing the receive buffer and slicing it out. The
            # sink allocates the whole payload, so it waits until a quarter of
            # the frame is in: a peer that announces a large frame and stalls
            # makes us hold at most 4x what it actually sent.
            b0, length, header_len, mask = header
            self._sink = sink = accel.PayloadSink(length, mask)
            self._sink_b0 = b0
            self._buf = None
            self._peek = None
            sink.feed(buf, pos + header_len)
            self._sink_progress()
            return
        if pos or self._buf is None:
            self._buf = bytearray(buf[pos:])
            self._peek = None
        if self._msg_op in (-1, Opcode.TEXT) and self._buf[0] & 0x0F in (0, 1):
            self._validate_partial_text()

    def receive_buffer(self) -> Any:
        """A writable buffer to read the network into directly, or ``None``.

        While a large frame is arriving this is the unfilled part of its
        payload (see :class:`~tether.protocol.frames.PayloadSink`): read into
        it (``recv_into``, ``BufferedProtocol.get_buffer``), then call
        :meth:`receive_into` with the byte count. Otherwise read into any
        buffer of yours and pass the bytes to :meth:`receive_data`.
        """
        sink = self._sink
        if sink is None or self._discard:
            return None
        return sink.buffer()

    def receive_into(self, n: int) -> None:
        """``n`` bytes were read into :meth:`receive_buffer`'s buffer."""
        sink = self._sink
        if sink is None or self._discard:
            return
        sink.written(n)
        self._sink_progress()

    def _sink_progress(self) -> bool:
        """Bytes went into the payload sink: validate partial text, and
        deliver the frame once complete. False if the connection failed."""
        sink = self._sink
        assert sink is not None
        if sink.remaining:
            if self._sink_b0 & 0x0F in (0, 1) and self._msg_op in (-1, Opcode.TEXT):
                self._validate_partial_text()
            return not self._discard
        self._sink = None
        self._peek = None
        return self._deliver([(self._sink_b0, sink.take())])

    def _deliver(self, frames: list[tuple[int, bytes]]) -> bool:
        """Turn complete frames into events. False if the peer broke the
        protocol (the rest of the input is then ignored)."""
        # Whole single-frame messages at the start of a read were delivered
        # by scan_frames already (events=); what is left takes the full path.
        for b0, payload in frames:
            self._frame(b0, payload)
            if self._discard:
                return False
        return True

    def receive_eof(self) -> None:
        """The peer closed the TCP connection (or it broke)."""
        self._discard = True
        self.state = State.CLOSED

    def events_received(self) -> list[Event]:
        """The events parsed since the last call, oldest first."""
        events = self.events
        if events:
            self.events = []
        return events

    def _frame(self, b0: int, payload: bytes) -> None:
        opcode = b0 & 0x0F
        fin = b0 & 0x80
        if opcode >= 8:
            self._control(opcode, payload)
            return
        try:
            if opcode == Opcode.CONT:
                if self._msg_op < 0:
                    # Section 5.4: a continuation frame must follow a data
                    # frame with FIN clear.
                    raise ProtocolError("unexpected continuation frame")
                if b0 & 0x40:
                    # RFC 7692 section 6.1: RSV1 is set on "the first frame
                    # of a message" only.
                    raise ProtocolError("RSV1 set on a continuation frame")
                first = False
            else:
                if self._msg_op >= 0:
                    # Section 5.4: "fragments of one message MUST NOT be
                    # interleaved between fragments of another message".
                    raise ProtocolError("expected a continuation frame")
                self._msg_op = opcode
                self._msg_size = 0
                self._frag_count = 0
                self._msg_compressed = bool(b0 & 0x40)
                if opcode == Opcode.TEXT:
                    self._msg_decoder = _utf8_decoder()
                first = True
            self._frag_count += 1
            if self._frag_count > self.max_fragments:
                raise PayloadTooBig(f"message split in more than {self.max_fragments} frames")
            if self._msg_compressed:
                assert self._deflate is not None
                payload = self._deflate.decompress(
                    payload, bool(fin), self.max_size - self._msg_size
                )
            self._msg_size += len(payload)
            if self._msg_size > self.max_size:
                raise PayloadTooBig(f"message exceeds limit of {self.max_size} bytes")
            text = self._msg_op == Opcode.TEXT
            data: str | bytes = payload
            if text:
                try:
                    data = self._msg_decoder.decode(payload, bool(fin))
                except UnicodeDecodeError:
                    # Section 8.1: "When an endpoint is to interpret a byte
                    # stream as UTF-8 but finds that the byte stream is not,
                    # in fact, a valid UTF-8 stream, that endpoint MUST _Fail
                    # the WebSocket Connection_."
                    raise ProtocolError("invalid UTF-8 in text message", 1007) from None
        except ProtocolError as exc:
            self._peer_error(exc)
            return
        if self.fragments and not (first and fin):
            self.events.append(Fragment(data, text, first, bool(fin)))
        elif fin and first:
            self.events.append(data)
        else:
            self._msg_parts.append(data)  # type: ignore[arg-type]
            if fin:
                if text:
                    self.events.append("".join(self._msg_parts))  # type: ignore[arg-type]
                else:
                    self.events.append(b"".join(self._msg_parts))
                self._msg_parts = []
        if fin:
            self._msg_op = -1
            self._msg_decoder = None

    def _control(self, opcode: int, payload: bytes) -> None:
        if opcode == Opcode.PING:
            if self.auto_pong and self.close_sent is None:
                self._out.append(self._frame_bytes(0x8A, payload))
            self.events.append(Ping(payload))
        elif opcode == Opcode.PONG:
            self.events.append(Pong(payload))
        else:
            try:
                close = parse_close(payload)
            except ProtocolError as exc:
                self._peer_error(exc)
                return
            self.close_rcvd = close
            self.events.append(close)
            # Section 1.4: after the closing handshake, nothing more is read.
            self._discard = True
            if self.close_sent is None:
                # Section 5.5.1: "If an endpoint receives a Close frame and
                # did not previously send a Close frame, the endpoint MUST
                # send a Close frame in response. ... the endpoint typically
                # echos the status code it received." and "It MAY delay
                # sending a Close frame until its current message is sent":
                # the reply is queued at the next data_to_send(), after what
                # the application sends in answer to the messages that
                # arrived before the close.
                self.close_rcvd_then_sent = True
                if self._pending_close is None:
                    self._pending_close = Close(close.code, "")
            else:
                self.state = State.CLOSING
                self._close_tcp_if_server()

    def _validate_partial_text(self) -> None:
        """Validate the UTF-8 of a text frame whose payload is still arriving.

        Autobahn 6.4.x and section 8.1 ("MUST _Fail the WebSocket Connection_"
        as soon as the stream is known to be invalid): a strict endpoint does
        not wait for the end of the frame to notice invalid bytes.
        """
        sink = self._sink
        buf = self._buf
        if sink is not None:
            b0 = self._sink_b0
            available = sink.filled
        else:
            assert buf is not None
            header = frame_header(buf, 0)
            if header is None:
                return
            b0, length, header_len, mask = header
            available = min(len(buf) - header_len, length)
        opcode = b0 & 0x0F
        if b0 & 0x40 or (self._msg_compressed and opcode == 0):
            return  # compressed: validated after inflating
        if not ((opcode == 1 and self._msg_op < 0) or (opcode == 0 and self._msg_op == 1)):
            return  # not text: an invalid frame is reported when it completes
        if self._peek is None:
            decoder = _utf8_decoder()
            if self._msg_op == Opcode.TEXT:
                decoder.setstate(self._msg_decoder.getstate())
            self._peek = [decoder, 0]
        decoder, done = self._peek
        if available <= done:
            return
        if sink is not None:
            chunk = sink.peek(done, available)
        else:
            assert buf is not None
            chunk = bytes(buf[header_len + done : header_len + available])
            if mask is not None:
                shift = done % 4
                chunk = accel.apply_mask(chunk, mask[shift:] + mask[:shift])
        try:
            decoder.decode(chunk, False)
        except UnicodeDecodeError:
            self._peer_error(ProtocolError("invalid UTF-8 in text message", 1007))
            return
        self._peek[1] = available

    # ------------------------------------------------------------------
    # Sending

    def data_to_send(self) -> list[bytes]:
        """Bytes to write to the network, oldest first. An empty ``bytes``
        means "close the TCP connection after writing what came before".

        A peer error, or the peer's close frame, found by :meth:`receive_data`
        is answered here (the close frame is queued now, not when it was
        found), so that whatever the application sent in reply to the
        messages received before it goes out first: a strict endpoint answers
        every valid message, then fails exactly at the offending frame or
        completes the closing handshake.
        """
        if self._pending_close is not None:
            close = self._pending_close
            self._pending_close = None
            if self.close_sent is None and self.state is not State.CLOSED:
                if self.close_rcvd is None:
                    self.close_rcvd_then_sent = False
                self._send_close_frame(close)
            self._close_tcp_if_server()
        out = self._out
        if out:
            self._out = []
        return out

    def close_expected(self) -> bool:
        """Whether the core expects the TCP connection to close soon: the I/O
        layer should then arm its close timeout (section 7.1.1)."""
        return self.close_sent is not None or self._discard or self._pending_close is not None

    def _frame_bytes(self, first_byte: int, payload: bytes) -> bytes:
        if self._masked_out:
            return accel.build_frame(first_byte, payload, self._mask_key())
        return accel.build_frame(first_byte, payload)

    def _check_open(self) -> None:
        if self.state is not _OPEN or self.close_sent is not None:
            raise InvalidState(f"cannot send: the connection is {self.state.name.lower()}")

    def encode_message(self, message: str | bytes) -> bytes:
        """The frame bytes for a whole text (``str``) or binary message, for the
        I/O layer's fast path. Raises :class:`InvalidState` if not open."""
        if self.state is not _OPEN or self.close_sent is not None or self._send_op >= 0:
            self._check_open()
            raise InvalidState("cannot send a message while a fragmented message is in progress")
        if isinstance(message, str):
            payload = message.encode()
            first = 0x81
        else:
            payload = message
            first = 0x82
        if self._deflate is not None and len(payload) >= self._compress_min:
            payload = self._deflate.compress(payload)
            first |= 0x40
        if self._masked_out:
            return accel.build_frame(first, payload, self._mask_key())
        return accel.build_frame(first, payload)

    def encode_message_parts(self, message: bytes) -> list[bytes]:
        """Like :meth:`encode_message` for a binary message, as pieces to write
        in one ``writelines`` call: ``[header, payload]`` when the frame can
        carry the payload as is (server side, uncompressed), which spares
        copying a large payload behind its header; else ``[frame]``."""
        if self._masked_out or (self._deflate is not None and len(message) >= self._compress_min):
            return [self.encode_message(message)]
        if self.state is not _OPEN or self.close_sent is not None or self._send_op >= 0:
            return [self.encode_message(message)]  # raises InvalidState
        n = len(message)
        if n < 126:
            header = bytes((0x82, n))
        elif n < 65536:
            header = _HEADER16.pack(0x82, 126, n)
        else:
            header = _HEADER64.pack(0x82, 127, n)
        return [header, message]

    def send_text(self, data: str | bytes, fin: bool = True) -> None:
        """Queue a text frame (the first frame of a message). ``fin=False``
        starts a fragmented message: continue it with :meth:`send_continuation`."""
        self._send_data(Opcode.TEXT, data.encode() if isinstance(data, str) else data, fin)

    def send_binary(self, data: bytes, fin: bool = True) -> None:
        """Queue a binary frame; ``fin=False`` starts a fragmented message."""
        self._send_data(Opcode.BINARY, bytes(data), fin)

    def send_continuation(self, data: str | bytes, fin: bool) -> None:
        """Queue the next frame of the fragmented message in progress."""
        self._check_open()
        if self._send_op < 0:
            raise InvalidState("no fragmented message in progress")
        payload = data.encode() if isinstance(data, str) else bytes(data)
        self._out.append(self._frame_bytes(0x80 if fin else 0, payload))
        if fin:
            self._send_op = -1

    def _send_data(self, opcode: int, payload: bytes, fin: bool) -> None:
        self._check_open()
        if self._send_op >= 0:
            raise InvalidState("cannot start a message while a fragmented message is in progress")
        first = opcode
        if fin:
            first |= 0x80
            if self._deflate is not None and len(payload) >= self._compress_min:
                # RFC 7692 section 6.1: a compressed message has RSV1 set on
                # its first frame. Fragmented messages go uncompressed, which
                # section 6 allows ("An endpoint MAY send uncompressed messages").
                payload = self._deflate.compress(payload)
                first |= 0x40
        else:
            self._send_op = opcode
        self._out.append(self._frame_bytes(first, payload))

    def send_ping(self, data: bytes = b"") -> None:
        """Queue a ping (at most 125 bytes, section 5.5)."""
        self._check_control(data)
        self._out.append(self._frame_bytes(0x89, bytes(data)))

    def send_pong(self, data: bytes = b"") -> None:
        """Queue a pong (at most 125 bytes): unsolicited, or the answer to a
        ping when ``auto_pong`` is off."""
        self._check_control(data)
        self._out.append(self._frame_bytes(0x8A, bytes(data)))

    def _check_control(self, data: bytes) -> None:
        self._check_open()
        if len(data) > 125:
            raise ValueError("control frame payloads are at most 125 bytes (RFC 6455 5.5)")

    def send_close(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> None:
        """Start the closing handshake (section 7.1.2).

        ``code`` must be sendable (1000-1003, 1007-1014, 3000-4999) or 1005 for
        "no code" (an empty close frame, then ``reason`` must be empty);
        ``reason`` is at most 123 bytes of UTF-8. Raises :class:`InvalidState`
        if a close frame was already sent.
        """
        if self.close_sent is not None or self.state is _CLOSED:
            raise InvalidState("a close frame was already sent")
        if code == CloseCode.NO_STATUS_RCVD:
            if reason:
                raise ValueError("a close frame without a code cannot carry a reason")
        elif not check_close_code(code):
            raise ValueError(f"close code {code} may not be sent (RFC 6455 7.4)")
        if len(reason.encode()) > 123:
            raise ValueError("close reason is over 123 bytes of UTF-8 (RFC 6455 5.5)")
        close = Close(code, reason)
        if self.close_rcvd is None:
            self.close_rcvd_then_sent = False
        self._send_close_frame(close)
        if self.close_rcvd is not None:
            self._close_tcp_if_server()

    def _send_close_frame(self, close: Close) -> None:
        self.close_sent = close
        self.state = State.CLOSING
        self._out.append(self._frame_bytes(0x88, serialize_close(close)))

    def _close_tcp_if_server(self) -> None:
        # Section 7.1.1: "the underlying TCP connection, in most normal cases,
        # SHOULD be closed first by the server".
        if self.side is Side.SERVER and not self.eof_sent:
            self.eof_sent = True
            self._out.append(b"")

    def _peer_error(self, exc: ProtocolError) -> None:
        """The peer broke the protocol: stop reading now; answer with a close
        frame at the next :meth:`data_to_send`."""
        if self.error is None:
            self.error = exc
        self._discard = True
        self._buf = None
        self._sink = None
        self._msg_parts = []
        if self._pending_close is None:
            self._pending_close = Close(exc.code, exc.reason[:123])

    def fail(self, code: int, reason: str = "") -> None:
        """Fail the connection (section 7.1.7) with ``code``: queue a close
        frame if none was sent, stop reading, and close TCP on the server."""
        self._fail(code, reason)

    def _fail(self, code: int, reason: str, exc: ProtocolError | None = None) -> None:
        if self.error is None and code != CloseCode.NORMAL_CLOSURE:
            self.error = exc if exc is not None else ProtocolError(reason, code)
        self._discard = True
        self._buf = None
        self._sink = None
        self._msg_parts = []
        # Section 7.1.7: "If _The WebSocket Connection is Established_ prior
        # to the point where the endpoint is required to _Fail the WebSocket
        # Connection_, the endpoint SHOULD send a Close frame with an
        # appropriate status code before proceeding to _Close the WebSocket
        # Connection_."
        if self.close_sent is None and self.state is not _CLOSED:
            if self.close_rcvd is None:
                self.close_rcvd_then_sent = False
            self._send_close_frame(Close(code, reason[:123]))
        # Section 7.1.7: "... and MUST NOT continue to attempt to process data
        # (including a responding Close frame) from the remote endpoint".
        self._close_tcp_if_server()

    # ------------------------------------------------------------------

    def close_exc(self, detail: str = "") -> ConnectionClosed:
        """The exception that describes how this connection closed:
        :class:`ConnectionClosedOK` when both close frames were exchanged with
        1000, 1001 or 1005, :class:`ConnectionClosedError` otherwise. Its
        ``__cause__`` is the protocol error, if the peer broke the protocol."""
        rcvd, sent = self.close_rcvd, self.close_sent
        ok = (
            rcvd is not None
            and sent is not None
            and rcvd.code in OK_CLOSE_CODES
            and sent.code in OK_CLOSE_CODES
            and self.error is None
        )
        cls = ConnectionClosedOK if ok else ConnectionClosedError
        exc = cls(rcvd, sent, self.close_rcvd_then_sent, detail)
        if self.error is not None:
            exc.__cause__ = self.error
        return exc
