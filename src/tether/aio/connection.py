"""The asyncio connection: an :class:`asyncio.Protocol` that drives the core.

One :class:`Connection` type serves both sides and every face::

    message = await ws.recv()           # str or bytes
    await ws.send("hello")              # or bytes, or an iterable of fragments
    async for message in ws: ...        # ends quietly on a normal close
    latency = await ws.ping()           # seconds until the matching pong
    await ws.close(1000, "bye")

Messages reach the application in one of two ways: queued for :meth:`recv`
(the default, bounded by ``max_queue``: when full, the transport stops
reading, which is backpressure on the peer), or handed synchronously to a
callback installed with :meth:`Connection.set_message_handler`, with no task
switch at all (the callback faces and the echo server use this).

Errors: a closed connection raises :class:`~tether.exceptions.ConnectionClosed`
from ``recv()`` and ``send()``; two concurrent ``recv()`` calls raise
:class:`~tether.exceptions.ConcurrencyError`.
"""

from __future__ import annotations

import asyncio
import collections
import mmap
import os
import threading
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from typing import TYPE_CHECKING, Any, cast

from tether.aio.waiter import Waiter
from tether.exceptions import (
    ConcurrencyError,
    ConnectionClosed,
    ConnectionClosedOK,
    InvalidState,
)
from tether.protocol import accel
from tether.protocol.connection import Connection as Core
from tether.protocol.connection import Side, State
from tether.protocol.deflate import PerMessageDeflate
from tether.protocol.events import Fragment, Ping, Pong
from tether.protocol.frames import Close

if TYPE_CHECKING:  # pragma: no cover
    from tether.aio.options import Options
    from tether.aio.timers import Timer
    from tether.protocol.deflate import DeflateParams
    from tether.protocol.handshake import Negotiated, Request, Response

    #: What a timer setter returns: asyncio's handle or a shared-queue timer.
    Cancellable = asyncio.TimerHandle | Timer

__all__ = ["Connection", "State"]

Message = str | bytes
#: Seconds a deferred close frame (a peer error, or the reply to the peer's
#: close) waits for the application to read the
#: messages that came before it (see Connection.data_received).
_CLOSE_GRACE = 1.0
MessageHandler = Callable[[Message], Any]
# Enum members as module constants (``State.OPEN`` is slow on Python 3.11).
_OPEN = State.OPEN
_CLOSED = State.CLOSED
#: Binary messages from this size on are written as header + payload with one
#: writelines() call (one writev() with a compiled transport), not copied
#: into a single frame first.
_WRITELINES_MIN = 65536
#: Bytes read per system call into the shared scratch buffer (the most that
#: asyncio's and aiofastnet's transports read at once).
_SCRATCH_SIZE = 256 * 1024
_thread_scratch = threading.local()


def _scratch_buffer() -> memoryview:
    """This thread's read buffer, shared by all its connections (see
    Connection.get_buffer). A memoryview, not the buffer itself: asyncio's TLS
    layer reads several records into it through slices (``buf[offset:]``),
    which must be views; slicing a bytearray would copy, losing the bytes.

    Anonymous memory (mmap), so it starts on a page boundary in every
    process: a bytearray lands wherever the heap's layout puts it, which
    depends on how the process was started (the length of its command line).
    Under workload (d), two ``tether echo`` processes started with relative
    and absolute paths differed by a quarter (16 of 16 windows in favour of
    one) with a heap buffer, and by no consistent amount with this one."""
    scratch: memoryview | None = getattr(_thread_scratch, "view", None)
    if scratch is None:
        scratch = _thread_scratch.view = memoryview(mmap.mmap(-1, _SCRATCH_SIZE))
    return scratch


#: The fields that the per-message path reads, and where they live.
_HOT_FIELDS = (
    "core",
    "transport",
    "_message_handler",
    "_scratch",
    "_lent",
    "_waiter",
    "_queue",
    "_reading",
    "_wake",
    "_loop",
    "_closed_exc",
    "_send_lock",
    "_write_paused",
    "_gathers",
)

if TYPE_CHECKING:
    from tether._speedups import ConnectionBase as _Base
elif accel.SPEEDUPS:
    # The compiled per-message path: get_buffer, buffer_updated (scan and
    # dispatch) and send_nowait in C, reading the core's slots directly. It
    # hands anything but the common case to the Python twins below.
    from tether import _speedups
    from tether._speedups import ConnectionBase as _Base

    _speedups.bind_core(Core, _OPEN)
    # recv() and send() return Operations: coroutines without a Python frame,
    # which asyncio.create_task and run_coroutine_threadsafe accept as such.
    collections.abc.Coroutine.register(_speedups.Operation)
else:

    class _Base:
        """The fields of the per-message path, without the compiled methods."""

        __slots__ = _HOT_FIELDS


#: Whether get_buffer, buffer_updated and send_nowait run compiled.
COMPILED = accel.SPEEDUPS


class Connection(_Base, asyncio.BufferedProtocol):
    """A WebSocket connection, client or server side.

    You get one from :func:`tether.connect` or as the argument of your
    :func:`tether.serve` handler; you do not build it yourself.

    Attributes: ``request`` and ``response`` (the opening handshake),
    ``subprotocol``, ``remote_address``, ``local_address``, ``state``,
    ``close_code`` and ``close_reason`` (once closed), ``latency`` (of the
    last ping).
    """

    __slots__ = (
        "__weakref__",
        "_close_callbacks",
        "_close_handle",
        "_closed",
        "_drain_waiter",
        "_ka_handle",
        "_ka_payload",
        "_paused_reading",
        "_peername",
        "_pings",
        "_sockname",
        "is_client",
        "latency",
        "options",
        "request",
        "response",
        "subprotocol",
    )

    def __init__(self, options: Options, is_client: bool) -> None:
        self.options = options
        self.is_client = is_client
        self._loop = asyncio.get_running_loop()
        self.core: Core | None = None
        self.transport: asyncio.Transport | None = None
        self._peername: Any = None
        self._sockname: Any = None
        self.request: Request | None = None
        self.response: Response | None = None
        self.subprotocol: str | None = None
        self.latency = 0.0
        # Created on the first queued message: a connection whose messages go
        # to a message handler never needs one (about 600 bytes saved).
        self._queue: collections.deque[Any] | None = None
        self._waiter: Waiter | None = None
        # While a read is handled, a recv() waiter completed by it is kept
        # here and woken as the read ends (see tether.aio.waiter).
        self._reading = False
        self._wake: Waiter | None = None
        self._message_handler: MessageHandler | None = None
        self._paused_reading = False
        self._scratch = _scratch_buffer()
        self._lent = False
        self._write_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self._send_lock: asyncio.Lock | None = None
        self._gathers = False
        self._pings: dict[bytes, tuple[asyncio.Future[float], float]] | None = None
        self._ka_handle: Cancellable | None = None
        self._ka_payload: bytes | None = None
        self._close_handle: Cancellable | None = None
        self._closed: asyncio.Future[None] | None = None
        self._closed_exc: ConnectionClosed | None = None
        self._close_callbacks: list[Callable[[Connection], Any]] | None = None

    # ------------------------------------------------------------------
    # Properties

    @property
    def state(self) -> State:
        """CONNECTING during the handshake, then OPEN, CLOSING, CLOSED."""
        if self._closed_exc is not None:
            return State.CLOSED
        if self.core is None:
            return State.CONNECTING
        return self.core.state

    @property
    def remote_address(self) -> Any:
        """The peer's address, as the socket reports it."""
        return self._peername

    @property
    def local_address(self) -> Any:
        """Our end's address, as the socket reports it."""
        return self._sockname

    @property
    def close_code(self) -> int | None:
        """The close code (RFC 6455 7.1.5) once closed, else ``None``."""
        return self._closed_exc.code if self._closed_exc is not None else None

    @property
    def close_reason(self) -> str | None:
        """The close reason once closed, else ``None``."""
        return self._closed_exc.reason if self._closed_exc is not None else None

    @property
    def closed_exception(self) -> ConnectionClosed | None:
        """The :class:`ConnectionClosed` that describes how it closed, once closed."""
        return self._closed_exc

    @property
    def compression(self) -> DeflateParams | None:
        """The permessage-deflate parameters agreed in the handshake, or
        ``None`` when the connection is not compressed."""
        core = self.core
        deflate = core._deflate if core is not None else None
        return deflate.params if deflate is not None else None

    @property
    def buffered_amount(self) -> int:
        """Bytes written that the kernel has refused so far: the backlog
        waiting for the socket to drain. The small writes of this turn of
        the loop, which tether's transport gathers to send together at its
        end, are not counted yet; :meth:`backlog` counts them too."""
        transport = self.transport
        return transport.get_write_buffer_size() if transport is not None else 0

    def backlog(self, limit: int) -> int:
        """:attr:`buffered_amount`, made exact for a check against ``limit``.

        When the writes gathered in this turn and the backlog together pass
        ``limit``, the gathered writes are offered to the kernel now, and
        what it refuses is counted; so a burst of small writes in one turn
        cannot pass a bound unseen. Below ``limit`` nothing is sent early
        (the gathered writes still leave together). The hub's slow-consumer
        check calls this; compare the result with your bound, then write.
        """
        transport: Any = self.transport
        if transport is None:
            return 0
        buffered: int = transport.get_write_buffer_size()
        # Only tether's compiled transport gathers (the one with
        # gather_writes, see connection_made); others have no backlog that
        # the kernel has not been offered.
        gathered: int = transport.gathered if self._gathers else 0
        if gathered and buffered + gathered > limit:
            transport.flush()
            buffered = transport.get_write_buffer_size()
        return buffered

    # ------------------------------------------------------------------
    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Any transport with asyncio.Transport's methods (uvloop's, aiofastnet's).
        self.transport = stream = cast("asyncio.Transport", transport)
        # Read once here: compiled transports answer only on the loop's
        # thread, and tether.sync reads these from another one.
        self._peername = stream.get_extra_info("peername")
        self._sockname = stream.get_extra_info("sockname")
        limit = self.options.write_limit
        stream.set_write_buffer_limits(high=limit, low=limit // 4)
        # tether's transport sends a first reply at once and gathers the
        # ones after it; for a read of several messages, all are gathered
        # (one send for the burst of replies). Other transports lack it.
        # A flag, not the bound method: 80 bytes less per idle connection.
        # The same transport has set_read_low_water (see _py_buffer_updated).
        self._gathers = hasattr(stream, "gather_writes")

    def _py_get_buffer(self, sizehint: int) -> memoryview:
        # Reads go straight into the payload of a large frame that is still
        # arriving (unmasked in place, no copy), and otherwise into a
        # scratch buffer shared by every connection of this thread: the core
        # copies out what it keeps, so an idle connection holds no buffer.
        core = self.core
        if core is not None and core._sink is not None:
            buf = core.receive_buffer()
            if buf is not None:
                self._lent = True
                return buf  # type: ignore[no-any-return]
        return self._scratch

    def _py_buffer_updated(self, nbytes: int) -> None:
        core = self.core
        if core is None:
            self._handshake_data(bytes(self._scratch[:nbytes]))
            return
        self._reading = True
        try:
            if self._lent:
                self._lent = False
                core.receive_into(nbytes)
            else:
                core.receive_data(self._scratch, nbytes)
            sink = core._sink
            if sink is not None and self._gathers and sink.remaining > 1:
                # A large frame's payload is still arriving: tether's
                # transport wakes us once a useful amount of it is in, not
                # for every segment (Transport.set_read_low_water).
                cast("Any", self.transport).set_read_low_water(sink.remaining)
            self._handle_events(core)
        finally:
            self._end_read()

    if not COMPILED:
        get_buffer = _py_get_buffer
        buffer_updated = _py_buffer_updated

    def data_received(self, data: bytes | bytearray | memoryview) -> None:
        core = self.core
        if core is None:
            self._handshake_data(bytes(data))
            return
        self._reading = True
        try:
            core.receive_data(data)
            self._handle_events(core)
        finally:
            self._end_read()

    def _end_read(self) -> None:
        """A read is handled: wake the task whose recv() it completed, now
        (in this callback) rather than on the loop's next turn."""
        self._reading = False
        waiter = self._wake
        if waiter is not None:
            self._wake = None
            waiter.wake()

    def _handle_events(self, core: Core) -> None:
        """Deliver what the core parsed; send what it queued."""
        events = core.events
        queued = False
        if events:
            core.events = []
            if len(events) > 1 and self._gathers:
                cast("Any", self.transport).gather_writes()
            handler = self._message_handler
            for event in events:
                kind = type(event)
                if kind is str or kind is bytes:
                    if handler is not None:
                        try:
                            handler(event)  # type: ignore[arg-type]
                        except Exception as exc:
                            self._handler_failed(exc)
                    else:
                        self._put(event)
                        queued = True
                else:
                    if kind is Ping and core._out:
                        # Answer pings in order with the replies to messages.
                        self._flush()
                    self._event(event)
        if core._out or core._pending_close is not None:
            self._after_events(core, queued)

    def _after_events(self, core: Core, queued: bool) -> None:
        """The events were delivered (``queued``: some went to the queue):
        send what the core has queued, or defer its close frame."""
        if core._pending_close is not None and (queued or self._queue):
            # A peer error (or the peer's close) follows messages the
            # application has not read yet
            # (queued by this call or by an earlier one the app has not caught
            # up with: e.g. a message that came before the app's first recv()).
            # Strict failure: let it read (and answer) them first; the close
            # frame goes when recv() finds no more messages, or after a grace.
            self._close_handle = self._loop.call_later(_CLOSE_GRACE, self._commit_close)
        elif core._out or core._pending_close is not None:
            self._flush()

    def eof_received(self) -> bool | None:
        # Returning a false value lets asyncio close the transport; the
        # closing handshake (or its absence) is judged in connection_lost.
        if self.core is not None:
            self.core.receive_eof()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        for handle in (self._ka_handle, self._close_handle):
            if handle is not None:
                handle.cancel()
        self._ka_handle = self._close_handle = None
        core = self.core
        if core is None:
            self._handshake_lost(exc)
            return
        core.receive_eof()
        detail = ""
        if self._ka_payload is not None and core.close_rcvd is None and core.error is None:
            detail = "keepalive timeout" if exc is None else str(exc)
        elif exc is not None and core.close_rcvd is None:
            detail = f"connection lost: {exc}"
        closed = core.close_exc(detail)
        if exc is not None and closed.__cause__ is None:
            closed.__cause__ = exc
        self._set_closed(closed)

    def _set_closed(self, closed: ConnectionClosed) -> None:
        if self._closed_exc is not None:
            return
        self._closed_exc = closed
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(closed)
            # The exception is delivered through recv(); don't warn if the
            # waiter was abandoned.
            waiter.exception()
        drain = self._drain_waiter
        if drain is not None and not drain.done():
            drain.set_result(None)
        if self._pings:
            for fut, _ in self._pings.values():
                if not fut.done():
                    fut.set_exception(closed)
                    fut.exception()
            self._pings = None
        if self._closed is not None and not self._closed.done():
            self._closed.set_result(None)
        if self._close_callbacks:
            callbacks, self._close_callbacks = self._close_callbacks, None
            for callback in callbacks:
                try:
                    callback(self)
                except Exception:
                    self.options.logger.exception("error in a close callback")

    def pause_writing(self) -> None:
        self._write_paused = True
        # A message handler replies with send_nowait(), which cannot wait:
        # stop reading instead, so a peer that sends without reading the
        # answers cannot grow our write buffer without bound.
        if self._message_handler is not None and self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        if (
            self._message_handler is not None
            and self.transport is not None
            and not self._paused_reading
            and self._closed_exc is None
        ):
            self.transport.resume_reading()
        drain = self._drain_waiter
        if drain is not None and not drain.done():
            drain.set_result(None)

    # ------------------------------------------------------------------
    # Handshake hooks, implemented by the server and client subclasses.

    def _handshake_data(self, data: bytes) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _handshake_lost(self, exc: Exception | None) -> None:  # pragma: no cover
        raise NotImplementedError

    def _make_core(self, negotiated: Negotiated) -> Core:
        """The sans-I/O core for what the handshake agreed, with this
        connection's options (limits, fragments, auto_pong)."""
        options = self.options
        deflate = None
        if negotiated.deflate is not None:
            assert options.compression is not None
            deflate = PerMessageDeflate(negotiated.deflate, not self.is_client, options.compression)
        return Core(
            Side.CLIENT if self.is_client else Side.SERVER,
            deflate=deflate,
            max_size=options.max_size,
            max_fragments=options.max_fragments,
            fragments=options.fragments,
            auto_pong=options.auto_pong,
        )

    def _later(self, delay: float, callback: Callable[[], Any]) -> Cancellable:
        """Call ``callback()`` in ``delay`` seconds (the keepalive and closing
        timers); a server's connections share queues (see tether.aio.timers)."""
        return self._loop.call_later(delay, callback)

    def _open(self, core: Core, leftover: bytes) -> None:
        """Switch to the WebSocket protocol after a successful handshake."""
        self.core = core
        interval = self.options.ping_interval
        if interval:
            self._ka_handle = self._later(interval, self._keepalive)

    # ------------------------------------------------------------------
    # Incoming events

    def _commit_close(self) -> None:
        """Send the deferred close frame: of a peer error, or the reply to the
        peer's close (see data_received)."""
        if self._close_handle is not None:
            self._close_handle.cancel()
            self._close_handle = None
        self._flush()

    def _put(self, item: Any) -> None:
        waiter = self._waiter
        if waiter is not None and not self._queue:
            self._waiter = None
            if not waiter.done():
                if self._reading:
                    waiter.resolve(item)
                    self._wake = waiter  # woken by _end_read
                else:
                    waiter.set_result(item)
                return
        queue = self._queue
        if queue is None:
            queue = self._queue = collections.deque()
        queue.append(item)
        max_queue = self.options.max_queue
        if max_queue is not None and len(queue) >= max_queue and not self._paused_reading:
            self._paused_reading = True
            if self.transport is not None:
                self.transport.pause_reading()

    def _event(self, event: Any) -> None:
        kind = type(event)
        if kind is Pong:
            self._pong(event.data)
            if self.options.control_frames:
                self._put(event)
        elif kind is Ping:
            if self.options.control_frames:
                self._put(event)
        elif kind is Fragment:
            self._put(event)
        elif kind is Close:
            if self.options.control_frames:
                self._put(event)
            self._arm_close_timeout()
        else:  # pragma: no cover - the core emits nothing else
            raise AssertionError(f"unexpected event {event!r}")

    def _pong(self, payload: bytes) -> None:
        if payload == self._ka_payload:
            self._ka_payload = None
            interval = self.options.ping_interval
            if self._ka_handle is not None:
                self._ka_handle.cancel()
            if interval:
                self._ka_handle = self._later(interval, self._keepalive)
        pings = self._pings
        if not pings or payload not in pings:
            return
        # Section 5.5.3: "If an endpoint receives a Ping frame and has not yet
        # sent Pong frame(s) in response to previous Ping frame(s), the
        # endpoint MAY elect to send a Pong frame for only the most recently
        # processed Ping frame." A pong acknowledges every earlier ping too.
        now = self._loop.time()
        for key in list(pings):
            fut, sent_at = pings.pop(key)
            if not fut.done():
                fut.set_result(now - sent_at)
            if key == payload:
                self.latency = now - sent_at
                break

    def _handler_failed(self, exc: BaseException) -> None:
        if isinstance(exc, ConnectionClosed):
            # The handler replied to a message that arrived just before the
            # close: a normal race, not a bug in the handler.
            return
        self.options.logger.error("error in a message handler", exc_info=exc)
        self._fail(1011, "internal error")

    def set_message_handler(self, handler: MessageHandler | None) -> None:
        """Deliver each incoming message by calling ``handler(message)`` at once,
        from the event loop, instead of queueing it for :meth:`recv`.

        This is the fast path: no task switch per message. The handler must
        not block; to reply, call :meth:`send_nowait`. An exception in it
        closes the connection with 1011. Messages already queued are handed
        over first.
        """
        self._message_handler = handler
        if handler is not None:
            while self._queue:
                item = self._queue.popleft()
                if type(item) is str or type(item) is bytes:
                    handler(item)
            self._resume_reading()

    def add_close_callback(self, callback: Callable[[Connection], Any]) -> None:
        """Call ``callback(connection)`` once, when the connection is closed
        (at once if it already is)."""
        if self._closed_exc is not None:
            callback(self)
            return
        if self._close_callbacks is None:
            self._close_callbacks = []
        self._close_callbacks.append(callback)

    def remove_close_callback(self, callback: Callable[[Connection], Any]) -> None:
        """Undo :meth:`add_close_callback`."""
        if self._close_callbacks and callback in self._close_callbacks:
            self._close_callbacks.remove(callback)

    # ------------------------------------------------------------------
    # Receiving

    async def _py_recv(self) -> Message:
        """The next message: a ``str`` for text, ``bytes`` for binary.

        Raises :class:`ConnectionClosed` once the connection is closed and every
        message received before the close was returned;
        :class:`ConcurrencyError` if another coroutine is already waiting.
        With ``fragments=True`` or ``control_frames=True`` it may also return
        :class:`~tether.protocol.events.Fragment`, ``Ping`` or ``Pong`` events.
        """
        if self._queue:
            return self._pop()  # type: ignore[no-any-return]
        if self._closed_exc is not None:
            raise self._closed_exc
        core = self.core
        if core is not None and core._pending_close is not None:
            self._commit_close()
        if self._waiter is not None:
            raise ConcurrencyError("another coroutine is already waiting for the next message")
        if self._message_handler is not None:
            raise InvalidState("messages go to the message handler; recv() gets none")
        waiter = self._waiter = Waiter(self._loop)
        try:
            return await waiter  # type: ignore[no-any-return]
        finally:
            if self._waiter is waiter:
                self._waiter = None

    if not COMPILED:
        recv = _py_recv

    def recv_nowait(self) -> Message | None:
        """The next queued message, or ``None`` if none is queued yet."""
        if self._queue:
            return self._pop()  # type: ignore[no-any-return]
        if self._closed_exc is not None:
            raise self._closed_exc
        return None

    def _pop(self) -> Any:
        """The oldest queued item; reading resumes once the queue is down to
        a quarter of ``max_queue``."""
        queue = self._queue
        assert queue is not None
        item = queue.popleft()
        if self._paused_reading and len(queue) <= (self.options.max_queue or 0) // 4:
            self._resume_reading()
        return item

    def _resume_reading(self) -> None:
        if self._paused_reading:
            self._paused_reading = False
            if self.transport is not None and self._closed_exc is None:
                self.transport.resume_reading()

    def __aiter__(self) -> AsyncIterator[Message]:
        """``async for message in ws``: messages until the connection closes;
        a normal close ends the loop, an error raises
        :class:`~tether.exceptions.ConnectionClosedError`."""
        return self

    async def _py_anext(self) -> Message:
        """The next message of ``async for``, as :meth:`recv`; a normal close
        (1000 or 1001) ends the loop."""
        try:
            return await self.recv()
        except ConnectionClosedOK:
            raise StopAsyncIteration from None

    if not COMPILED:
        __anext__ = _py_anext

    # ------------------------------------------------------------------
    # Sending

    def _py_send_nowait(self, message: Message) -> None:
        """Send a whole message without waiting for the peer to read it.

        For code that runs on the event loop but cannot await (message
        handlers, callbacks). The bytes are buffered without bound: check
        :attr:`buffered_amount`, or use ``await send()`` which waits.
        """
        core = self.core
        if core is None or core.state is not _OPEN or core.close_sent is not None:
            raise self._send_closed_exc()
        assert self.transport is not None
        if type(message) is bytes and len(message) >= _WRITELINES_MIN:
            self.transport.writelines(core.encode_message_parts(message))
        else:
            self.transport.write(core.encode_message(message))

    if not COMPILED:
        send_nowait = _py_send_nowait

    def write_frame(self, frame: bytes) -> bool:
        """Write one already serialized frame (see :mod:`tether.hub`).

        Returns False, writing nothing, if the connection is not open.
        """
        core = self.core
        if core is None or core.state is not _OPEN or core.close_sent is not None:
            return False
        assert self.transport is not None
        self.transport.write(frame)
        return True

    def send_fragment(self, data: Message, *, fin: bool, continuation: bool = False) -> None:
        """Send one data frame yourself, for faces that fragment by hand.

        The first frame of a message has ``continuation=False`` (text for
        ``str``, binary for ``bytes``); the next ones ``continuation=True``;
        the last one ``fin=True``. Does not wait: follow with :meth:`drain`.
        Frames sent this way are never compressed (RFC 7692 allows it).
        """
        if continuation:
            self._core_send(lambda core: core.send_continuation(data, fin))
        elif isinstance(data, str):
            self._core_send(lambda core: core.send_text(data, fin))
        else:
            self._core_send(lambda core: core.send_binary(bytes(data), fin))

    async def drain(self) -> None:
        """Wait until the write buffer is under ``write_limit`` (the peer reads)."""
        if self._write_paused:
            await self._drain()

    def ping_nowait(self, data: bytes = b"") -> None:
        """Send a ping without waiting for its pong (see :meth:`ping`)."""
        self._core_send(lambda core: core.send_ping(data))

    def close_nowait(self, code: int = 1000, reason: str = "") -> None:
        """Start the closing handshake and return at once; the engine completes
        it (or drops TCP after ``close_timeout``). Does nothing if closing
        already; :meth:`wait_closed` waits for the end."""
        core = self.core
        if core is None:
            self.abort()
        elif self._closed_exc is None and core.state is _OPEN and core.close_sent is None:
            core.send_close(code, reason)
            self._flush()

    def set_keepalive(self, interval: float | None, timeout: float | None = None) -> None:
        """Change the keepalive of this connection: a ping every ``interval``
        seconds, failing the connection if no pong within ``timeout``
        (``None``: ``interval``). ``interval=None`` turns keepalive off."""
        self.options = self.options.replace(
            ping_interval=interval, ping_timeout=interval if timeout is None else timeout
        )
        if self._ka_handle is not None:
            self._ka_handle.cancel()
        self._ka_handle = None
        self._ka_payload = None
        if interval and self.core is not None and self._closed_exc is None:
            self._ka_handle = self._later(interval, self._keepalive)

    async def _py_send(
        self,
        message: Message | Iterable[Message] | AsyncIterable[Message],
    ) -> None:
        """Send a message: ``str`` as text, ``bytes``-like as binary.

        An iterable (or async iterable) of ``str`` or of ``bytes`` is sent as
        one fragmented message, one frame per item. Waits while more than
        ``write_limit`` bytes are buffered (the peer reads slowly). Raises
        :class:`ConnectionClosed` if the connection is closing or closed.
        """
        if isinstance(message, (bytearray, memoryview)):
            message = bytes(message)
        if isinstance(message, (str, bytes)):
            lock = self._send_lock
            if lock is not None and lock.locked():
                # A fragmented message is on its way: this one goes after it.
                core = self.core
                if core is None or core.state is not _OPEN or core.close_sent is not None:
                    raise self._send_closed_exc()
                async with lock:
                    self.send_nowait(message)
            else:
                self.send_nowait(message)
            if self._write_paused:
                await self._drain()
            return
        if self._send_lock is None:
            self._send_lock = asyncio.Lock()
        async with self._send_lock:
            if isinstance(message, AsyncIterable):
                await self._send_fragments_async(message)
            elif isinstance(message, Iterable):
                await self._send_fragments(iter(message))
            else:
                raise TypeError(f"cannot send {type(message).__name__}")

    if not COMPILED:
        send = _py_send

    async def _send_fragments(self, chunks: Iterable[Message]) -> None:
        first = True
        text = False
        for chunk in chunks:
            text = await self._send_fragment(chunk, first, text)
            first = False
        if not first:
            self._core_send(lambda core: core.send_continuation(b"", True))

    async def _send_fragments_async(self, chunks: AsyncIterable[Message]) -> None:
        first = True
        text = False
        async for chunk in chunks:
            text = await self._send_fragment(chunk, first, text)
            first = False
        if not first:
            self._core_send(lambda core: core.send_continuation(b"", True))

    async def _send_fragment(self, chunk: Message, first: bool, text: bool) -> bool:
        if isinstance(chunk, (bytearray, memoryview)):
            chunk = bytes(chunk)
        if first:
            text = isinstance(chunk, str)
            if text:
                self._core_send(lambda core: core.send_text(chunk, fin=False))
            elif isinstance(chunk, bytes):
                self._core_send(lambda core: core.send_binary(chunk, fin=False))
            else:
                raise TypeError(f"cannot send a fragment of type {type(chunk).__name__}")
        else:
            if isinstance(chunk, str) != text or not isinstance(chunk, (str, bytes)):
                raise TypeError("all fragments of a message must be str, or all bytes")
            self._core_send(lambda core: core.send_continuation(chunk, False))
        if self._write_paused:
            await self._drain()
        return text

    def _core_send(self, action: Callable[[Core], None]) -> None:
        core = self.core
        if core is None or core.state is not _OPEN or core.close_sent is not None:
            raise self._send_closed_exc()
        action(core)
        self._flush()

    async def _drain(self) -> None:
        while self._write_paused and self._closed_exc is None:
            self._drain_waiter = self._loop.create_future()
            await self._drain_waiter
        self._drain_waiter = None
        if self._closed_exc is not None:
            raise self._closed_exc

    def _send_closed_exc(self) -> Exception:
        if self._closed_exc is not None:
            return self._closed_exc
        if self.core is None:
            return InvalidState("the opening handshake has not completed")
        return self.core.close_exc("the connection is closing")

    def _flush(self) -> None:
        core = self.core
        transport = self.transport
        if core is None or transport is None:
            return
        for chunk in core.data_to_send():
            if chunk:
                transport.write(chunk)
            elif transport.can_write_eof():
                # The core asks to close TCP (the server closes first, RFC
                # 6455 7.1.1). Half-close and keep reading (the core discards
                # it) until the peer's FIN: closing with unread input would
                # make the kernel answer with RST, and the peer could lose
                # our close frame. The close timeout bounds the wait.
                transport.write_eof()
            else:
                transport.close()
        if core.close_expected():
            self._arm_close_timeout()

    def _arm_close_timeout(self) -> None:
        if self._close_handle is None and self._closed_exc is None:
            timeout = self.options.close_timeout
            if timeout is not None:
                self._close_handle = self._later(timeout, self._close_timed_out)

    def _close_timed_out(self) -> None:
        self._close_handle = None
        if self.transport is not None:
            self.transport.abort()

    def _fail(self, code: int, reason: str) -> None:
        """Fail the connection with ``code`` (RFC 6455 7.1.7), from our side."""
        core = self.core
        if core is None or self._closed_exc is not None:
            return
        core.fail(code, reason)
        self._flush()

    # ------------------------------------------------------------------
    # Ping, pong, close

    async def ping(self, data: str | bytes | None = None) -> float:
        """Send a ping and wait for its pong; returns the round trip in seconds.

        ``data`` is the payload (4 random bytes by default; at most 125).
        Raises :class:`ConnectionClosed` if the connection closes first.
        """
        payload = (
            os.urandom(4)
            if data is None
            else (data.encode() if isinstance(data, str) else bytes(data))
        )
        if self._pings is None:
            self._pings = {}
        if payload in self._pings:
            raise ValueError("a ping with this payload is already waiting for its pong")
        self._core_send(lambda core: core.send_ping(payload))
        fut: asyncio.Future[float] = self._loop.create_future()
        self._pings[payload] = (fut, self._loop.time())
        return await fut

    async def pong(self, data: str | bytes = b"") -> None:
        """Send an unsolicited pong (RFC 6455 5.5.3), e.g. as a heartbeat."""
        payload = data.encode() if isinstance(data, str) else bytes(data)
        self._core_send(lambda core: core.send_pong(payload))

    def _keepalive(self) -> None:
        self._ka_handle = None
        if self._closed_exc is not None or self.core is None:
            return
        if self.core.state is not _OPEN or self.core.close_sent is not None:
            return
        if self._ka_payload is None:
            self._ka_payload = os.urandom(4)
            self.core.send_ping(self._ka_payload)
            self._flush()
            timeout = self.options.ping_timeout
            if timeout:
                self._ka_handle = self._later(timeout, self._keepalive_timeout)
            elif self.options.ping_interval:
                self._ka_payload = None
                self._ka_handle = self._later(self.options.ping_interval, self._keepalive)

    def _keepalive_timeout(self) -> None:
        """No pong within ``ping_timeout``: the peer stopped answering."""
        self._ka_handle = None
        if self._closed_exc is not None or self.core is None:
            return
        timeout = self.options.ping_timeout
        detail = f"keepalive timeout: no pong from the peer within {timeout} s"
        self.options.logger.info("%s; closing", detail)
        core = self.core
        if core.close_sent is None:
            core.send_close(1011, "keepalive ping timeout")
            self._flush()
        closed = core.close_exc(detail)
        closed.__cause__ = TimeoutError(detail)
        self._set_closed(closed)
        if self.transport is not None:
            self.transport.abort()

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Start the closing handshake and wait until the connection is closed.

        Waits at most ``close_timeout`` for the peer, then drops TCP. Closing a
        closed connection does nothing. Raises ``ValueError`` for a code that
        may not be sent or a reason over 123 bytes.
        """
        core = self.core
        if core is None:
            if self.transport is not None:
                self.transport.abort()
            return
        if self._closed_exc is None and core.close_sent is None and core.state is not _CLOSED:
            core.send_close(code, reason)
            self._flush()
        await self.wait_closed()

    async def wait_closed(self) -> None:
        """Wait until the connection is closed (by either side)."""
        if self._closed_exc is not None:
            return
        if self._closed is None:
            self._closed = self._loop.create_future()
        await asyncio.shield(self._closed)

    def abort(self) -> None:
        """Drop the TCP connection at once, without a closing handshake."""
        if self.transport is not None:
            self.transport.abort()

    def __repr__(self) -> str:
        side = "client" if self.is_client else "server"
        return f"<tether.Connection {side} {self.state.name} {self.remote_address}>"
