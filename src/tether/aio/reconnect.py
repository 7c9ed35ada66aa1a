"""Reconnection with backoff, and an outgoing queue that survives disconnects.

Iterate over :func:`tether.connect` to get a new open connection each time
the previous one drops::

    outbox = tether.OutgoingQueue(maxsize=1000, when_full="drop_oldest")
    client = tether.connect(url, retry=tether.Retry(initial=0.5, cap=30), outbox=outbox)
    async for ws in client:
        try:
            async for message in ws:
                handle(message)
        except tether.ConnectionClosed:
            continue                    # dropped: the loop reconnects
    # Elsewhere, at any time, connected or not:
    await outbox.send("hello")          # sent now, or held and sent after the next connect

How the loop decides, after each failed attempt or dropped connection:

- It waits before the next attempt: "full jitter" (a random delay between 0
  and ``min(cap, initial * factor ** n)``, ``n`` counting the attempts since
  the last connection that stayed up ``reset_after`` seconds), so that many
  clients of a restarted server do not all come back at the same instant. A
  server's ``Retry-After`` (on 429 or 503) raises the delay, up to ``cap``.
  The very first attempt is not delayed.
- It gives up, raising the last error from the ``async for``, after
  ``max_attempts`` attempts or ``max_time`` seconds without a connection that
  stayed up ``reset_after`` seconds.
- It stops at once, raising the error, when retrying cannot help: the server
  refused the upgrade with a 4xx status other than 429 (:class:`InvalidStatus`),
  the proxy answered 407 or another 4xx, the URI or a setting is wrong, the
  TLS certificate does not verify. ``Retry(should_retry=...)`` changes this.
- The loop ends quietly when *you* closed the connection (``await
  ws.close()``), or when the server closed it cleanly (1000/1001) with a code
  listed in ``final_close_codes``; a listed error code is raised as the
  :class:`ConnectionClosedError`. A connection you leave open when you go
  back to the top of the loop is closed (1000) and replaced. ``break`` leaves
  the last connection open: close it yourself, or call ``await client.aclose()``.

Every attempt is recorded as an :class:`Attempt` in ``client.attempts`` (the
last :data:`HISTORY` of them), logged on the ``tether.client`` logger, and
handed to ``on_attempt(attempt)`` when given, each time its outcome changes.

Time comes from ``Retry(clock=, sleep=, random=)``: tests pass a fake clock
and a fake sleep and check the schedule without waiting.

The outgoing queue (:class:`OutgoingQueue`) and what "confirmed" means are
described in its docstring.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import random as random_module
import ssl as ssl_module
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from tether.exceptions import (
    ConnectionClosed,
    ConnectionClosedOK,
    HandshakeTimeout,
    InvalidMessage,
    InvalidStatus,
    TetherError,
)
from tether.protocol.connection import State

if TYPE_CHECKING:  # pragma: no cover
    from tether.aio.client import ClientConnection, connect

__all__ = [
    "HISTORY",
    "Attempt",
    "OutgoingQueue",
    "OutgoingQueueFull",
    "Reconnecting",
    "Retry",
    "is_retryable",
]

logger = logging.getLogger("tether.client")

#: How many :class:`Attempt` records ``client.attempts`` keeps.
HISTORY = 100

Message = str | bytes


@dataclass(frozen=True, slots=True)
class Retry:
    """When and how often to reconnect. Pass it as ``tether.connect(url, retry=...)``.

    Delays (seconds): the wait before attempt ``n+1`` of a run is drawn from
    ``[0, min(cap, initial * factor ** n)]`` with ``jitter`` (full jitter),
    or is exactly that bound without it. A "run" starts afresh after a
    connection stayed up ``reset_after`` seconds.

    Limits: ``max_attempts`` attempts, or ``max_time`` seconds, per run;
    ``None`` means no limit (the default: retry forever).

    ``final_close_codes``: close codes that end the loop instead of
    reconnecting. ``should_retry(exc) -> bool`` replaces :func:`is_retryable`.

    ``clock`` (seconds, monotonic), ``sleep`` (an awaitable delay) and
    ``random`` (a float in [0, 1)) default to the event loop's clock,
    :func:`asyncio.sleep` and :func:`random.random`; tests replace them.
    """

    initial: float = 1.0
    factor: float = 2.0
    cap: float = 60.0
    max_attempts: int | None = None
    max_time: float | None = None
    jitter: bool = True
    reset_after: float = 30.0
    final_close_codes: Collection[int] = frozenset()
    should_retry: Callable[[BaseException], bool] | None = None
    clock: Callable[[], float] | None = None
    sleep: Callable[[float], Awaitable[Any]] | None = None
    random: Callable[[], float] | None = None

    def __post_init__(self) -> None:
        if self.initial < 0 or self.cap < 0 or self.reset_after < 0:
            raise ValueError("initial, cap and reset_after must be >= 0")
        if self.factor < 1:
            raise ValueError(f"factor must be >= 1, not {self.factor!r}")
        if self.max_attempts is not None and self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1 or None, not {self.max_attempts!r}")
        if self.max_time is not None and self.max_time < 0:
            raise ValueError(f"max_time must be >= 0 or None, not {self.max_time!r}")
        if not isinstance(self.final_close_codes, frozenset):
            object.__setattr__(self, "final_close_codes", frozenset(self.final_close_codes))

    def ceiling(self, n: int) -> float:
        """The largest delay before the retry that follows ``n`` earlier
        retries of the run: ``min(cap, initial * factor ** n)``."""
        try:
            return float(min(self.cap, self.initial * self.factor**n))
        except OverflowError:
            return self.cap

    def delay(self, n: int, draw: float) -> float:
        """The delay for ``n`` earlier retries, ``draw`` being a random number in [0, 1)."""
        ceiling = self.ceiling(n)
        return ceiling * draw if self.jitter else ceiling


def is_retryable(exc: BaseException) -> bool:
    """Whether another attempt could succeed after ``exc`` (the default rule).

    Retried: network errors and timeouts (``OSError`` except a TLS
    certificate that does not verify, :class:`HandshakeTimeout`), a broken or
    truncated HTTP answer (:class:`InvalidMessage`), a refusal with 429 or a
    status outside 4xx (:class:`InvalidStatus`), a proxy that failed without
    a 4xx, a connection that closed while the queue was flushed. Everything
    else (a 4xx, a bad URI, an unusable setting, a 101 that breaks RFC 6455)
    is final.
    """
    from tether.aio.proxy import ProxyError

    if isinstance(exc, ssl_module.SSLCertVerificationError):
        return False
    if isinstance(exc, (OSError, HandshakeTimeout, TimeoutError, ConnectionClosed)):
        return True
    if isinstance(exc, InvalidStatus):
        return exc.status == 429 or not 400 <= exc.status < 500
    if isinstance(exc, ProxyError):
        return exc.status is None or exc.status == 429 or not 400 <= exc.status < 500
    return isinstance(exc, InvalidMessage)


@dataclass(slots=True, eq=False)
class Attempt:
    """One connection attempt and what became of it.

    ``outcome``: ``"connecting"``, then ``"failed"`` (``error`` says why) or
    ``"open"``, then ``"closed"`` (``closed`` is the
    :class:`~tether.exceptions.ConnectionClosed` that tells how). Times are
    readings of the retry clock: ``started``, ``opened``, ``ended``.
    ``delay`` is how long the loop waited before this attempt. ``will_retry``
    is set once the loop has decided what to do next.
    """

    number: int
    delay: float
    started: float
    outcome: Literal["connecting", "failed", "open", "closed"] = "connecting"
    error: BaseException | None = None
    closed: ConnectionClosed | None = None
    opened: float | None = None
    ended: float | None = None
    will_retry: bool | None = None

    @property
    def uptime(self) -> float | None:
        """Seconds the connection stayed open, once it closed."""
        if self.opened is None or self.ended is None:
            return None
        return self.ended - self.opened

    def __str__(self) -> str:
        text = f"attempt {self.number} (after {self.delay:.3f} s): {self.outcome}"
        if self.error is not None:
            text += f": {type(self.error).__name__}: {self.error}"
        if self.closed is not None:
            text += f" after {self.uptime or 0.0:.3f} s: {self.closed.code} {self.closed.reason}"
        return text


class OutgoingQueueFull(TetherError, asyncio.QueueFull):
    """:meth:`OutgoingQueue.send` found the queue full (policy ``"raise"``)."""


WhenFull = Literal["raise", "drop_oldest", "drop_newest"]


class OutgoingQueue:
    """A bounded queue of outgoing messages that outlives connections.

    Give it to ``tether.connect(url, outbox=queue)`` and iterate over the
    client; then call :meth:`send` at any time. While a connection is open and
    nothing is waiting, the message is written at once. While disconnected
    (or before the first connect) it is held; after the next connect, the
    held messages are written in the order they were sent, before the loop
    yields the new connection, and before any message sent later.

    ``maxsize`` bounds the messages held (pending plus unconfirmed);
    ``when_full`` says what :meth:`send` does when it is reached:
    ``"raise"`` (:class:`OutgoingQueueFull`, nothing is dropped),
    ``"drop_oldest"`` (the oldest held message is discarded to make room) or
    ``"drop_newest"`` (the new message is discarded). ``dropped`` counts the
    discarded messages.

    What "sent" means, and what can be lost. WebSocket has no
    acknowledgements of its own, so by default (``until_confirmed=False``)
    a message counts as sent, and leaves the queue, once it is written to an
    open connection: handed to the transport, on its way to the kernel. It is
    written exactly once, so it never arrives twice; but it is lost if the
    connection breaks before the server's application read it (it may still
    sit in our write buffer, in the kernel's send buffer, in the network or
    in the server's receive buffer). Also lost: messages discarded by
    ``when_full``, and messages still held when the program ends.

    With ``until_confirmed=True`` a written message stays in the queue
    ("unconfirmed") until you call :meth:`confirm` with its sequence number
    (the one :meth:`send` returned, for example when the server acknowledges
    it in a message of your own protocol). After a reconnect every unconfirmed
    message is written again, first, in order. Nothing is lost to a dropped
    connection then, but a message may arrive twice (the server got it and
    the acknowledgement was lost): put the sequence number in the message and
    let the server drop what it has already seen.
    """

    def __init__(
        self,
        maxsize: int = 1024,
        when_full: WhenFull = "raise",
        *,
        until_confirmed: bool = False,
    ) -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize must be >= 1, not {maxsize!r}")
        if when_full not in ("raise", "drop_oldest", "drop_newest"):
            raise ValueError(
                f"when_full must be 'raise', 'drop_oldest' or 'drop_newest', not {when_full!r}"
            )
        self.maxsize = maxsize
        self.when_full: WhenFull = when_full
        self.until_confirmed = until_confirmed
        #: Messages discarded by the ``when_full`` policy so far.
        self.dropped = 0
        self._pending: collections.deque[tuple[int, Message]] = collections.deque()
        self._unconfirmed: collections.deque[tuple[int, Message]] = collections.deque()
        self._seq = 0
        self._connection: ClientConnection | None = None

    # ------------------------------------------------------------------
    # Public

    @property
    def connection(self) -> ClientConnection | None:
        """The open connection messages go to now, or ``None`` while held."""
        return self._connection

    @property
    def pending(self) -> int:
        """Messages held, waiting for a connection."""
        return len(self._pending)

    @property
    def unconfirmed(self) -> int:
        """Messages written but not confirmed yet (``until_confirmed=True`` only)."""
        return len(self._unconfirmed)

    def __len__(self) -> int:
        return len(self._pending) + len(self._unconfirmed)

    def messages(self) -> list[Message]:
        """A copy of the held messages, unconfirmed first, oldest first."""
        return [message for _, message in (*self._unconfirmed, *self._pending)]

    def send_nowait(self, message: Message) -> int:
        """Write ``message`` now if connected and nothing waits, else hold it.

        Returns its sequence number (1, 2, 3...), for :meth:`confirm`. Never
        waits: the write buffer may grow past ``write_limit`` (use
        :meth:`send` to wait for it). Raises :class:`OutgoingQueueFull` when
        full with ``when_full="raise"``.
        """
        if isinstance(message, (bytearray, memoryview)):
            message = bytes(message)
        if not isinstance(message, (str, bytes)):
            raise TypeError(f"cannot send {type(message).__name__}: expected str or bytes")
        self._seq += 1
        seq = self._seq
        connection = self._connection
        direct = connection is not None and not self._pending
        # Written at once without until_confirmed, a message takes no room.
        if (self.until_confirmed or not direct) and not self._make_room():
            return seq
        if direct and connection is not None and self._write(connection, seq, message):
            return seq
        if not self.until_confirmed and direct and not self._make_room():
            return seq
        self._pending.append((seq, message))
        return seq

    async def send(self, message: Message) -> int:
        """Like :meth:`send_nowait`, then wait while the connection's write
        buffer is over ``write_limit`` (backpressure). Returns the sequence
        number."""
        seq = self.send_nowait(message)
        connection = self._connection
        if connection is not None:
            await _drain(connection)
        return seq

    def confirm(self, seq: int) -> int:
        """Forget every unconfirmed message up to sequence number ``seq``
        (cumulative); returns how many. Only with ``until_confirmed=True``."""
        count = 0
        while self._unconfirmed and self._unconfirmed[0][0] <= seq:
            self._unconfirmed.popleft()
            count += 1
        return count

    def clear(self) -> int:
        """Forget every held message; returns how many."""
        count = len(self)
        self._pending.clear()
        self._unconfirmed.clear()
        return count

    # ------------------------------------------------------------------
    # Used by the reconnecting loop

    async def flush(self, connection: ClientConnection) -> bool:
        """Write the held messages (unconfirmed first) to a new connection, in
        order, then send later messages straight to it. Returns ``False``,
        keeping what was not written, if the connection closed meanwhile."""
        self._connection = None
        if self._unconfirmed:
            self._pending.extendleft(reversed(self._unconfirmed))
            self._unconfirmed.clear()
        while self._pending:
            seq, message = self._pending[0]
            if not self._write(connection, seq, message, pending=True):
                return False
            try:
                await _drain(connection)
            except ConnectionClosed:
                return False
        if connection.state is not State.OPEN:
            return False
        self._connection = connection
        connection.add_close_callback(self._detach)
        return True

    def _detach(self, connection: Any) -> None:
        if self._connection is connection:
            self._connection = None

    def _write(
        self, connection: ClientConnection, seq: int, message: Message, pending: bool = False
    ) -> bool:
        try:
            connection.send_nowait(message)
        except ConnectionClosed:
            # Closing or closed: nothing was written (send_nowait raises
            # before writing). Other errors (a fragmented message of yours
            # in progress on this connection) are raised to the caller.
            self._detach(connection)
            return False
        if pending:
            self._pending.popleft()
        if self.until_confirmed:
            self._unconfirmed.append((seq, message))
        return True

    def _make_room(self) -> bool:
        """Apply the ``when_full`` policy; False if the new message is dropped."""
        if len(self) < self.maxsize:
            return True
        if self.when_full == "raise":
            raise OutgoingQueueFull(f"the outgoing queue is full ({self.maxsize} messages)")
        self.dropped += 1
        if self.when_full == "drop_newest":
            logger.warning("outgoing queue full (%d): dropped the newest message", self.maxsize)
            return False
        (self._unconfirmed or self._pending).popleft()
        logger.warning("outgoing queue full (%d): dropped the oldest message", self.maxsize)
        return True


async def _drain(connection: ClientConnection) -> None:
    """Wait while the connection's write buffer is over its limit."""
    if connection._write_paused:
        await connection._drain()


class Reconnecting:
    """The iterator behind ``async for ws in tether.connect(url)``.

    Each ``__anext__`` returns a new open connection (after flushing the
    outgoing queue into it). See the module docstring for the rules; the
    settings come from the ``retry``, ``outbox`` and ``on_attempt`` keywords
    of :func:`tether.connect`.
    """

    def __init__(
        self,
        client: connect,
        retry: Retry | None = None,
        outbox: OutgoingQueue | None = None,
        on_attempt: Callable[[Attempt], Any] | None = None,
    ) -> None:
        self.client = client
        self.retry = retry or Retry()
        self.outbox = outbox
        self.on_attempt = on_attempt
        #: The last :data:`HISTORY` attempts, oldest first.
        self.attempts: collections.deque[Attempt] = collections.deque(maxlen=HISTORY)
        #: The connection last yielded, while it is the current one.
        self.connection: ClientConnection | None = None
        self._attempt: Attempt | None = None
        self._number = 0
        self._level = 0  # retries so far in this run: the backoff exponent
        self._run_attempts = 0
        self._run_started: float | None = None
        self._retry_after = 0.0
        self._closing_ours = False
        self._done = False
        self._sleeping: asyncio.Future[Any] | None = None
        loop = asyncio.get_running_loop()
        self._clock = self.retry.clock or loop.time
        self._sleep = self.retry.sleep or asyncio.sleep
        self._random = self.retry.random or random_module.random

    def __aiter__(self) -> Reconnecting:
        return self

    async def __anext__(self) -> ClientConnection:
        if self._done:
            raise StopAsyncIteration
        previous = self.connection
        if previous is not None:
            self.connection = None
            await self._finish(previous)
        while True:
            delay = self._next_delay()
            if delay > 0:
                self._sleeping = asyncio.ensure_future(self._sleep(delay))
                try:
                    await self._sleeping
                except asyncio.CancelledError:
                    if not self._done:
                        raise
                finally:
                    self._sleeping = None
            if self._done:
                raise StopAsyncIteration
            connection = await self._try(delay)
            if connection is None:
                continue
            if self._done:
                await connection.close()
                raise StopAsyncIteration
            if self.outbox is not None and not await self.outbox.flush(connection):
                # It dropped while the queue was flushed: handle it like any drop.
                await self._finish(connection)
                continue
            self.connection = connection
            return connection

    async def aclose(self) -> None:
        """Stop: close the current connection (1000) and end the loop (a
        pending wait for the next attempt ends at once)."""
        self._done = True
        if self._sleeping is not None:
            self._sleeping.cancel()
        connection, self.connection = self.connection, None
        if connection is not None:
            await connection.close()

    # ------------------------------------------------------------------

    def _next_delay(self) -> float:
        """The delay before the next attempt; raises the last error when
        ``max_attempts`` or ``max_time`` is spent."""
        retry = self.retry
        now = self._clock()
        if self._number == 0:
            self._run_started = now
            return 0.0
        if self._run_started is None:
            self._run_started = now
        last = self.attempts[-1] if self.attempts else None
        spent = retry.max_attempts is not None and self._run_attempts >= retry.max_attempts
        delay = 0.0 if spent else retry.delay(self._level, self._random())
        if self._retry_after:
            delay = max(delay, min(self._retry_after, retry.cap))
            self._retry_after = 0.0
        late = retry.max_time is not None and now + delay - self._run_started > retry.max_time
        if spent or late:
            self._done = True
            if last is not None:
                last.will_retry = False
            why = f"{self._run_attempts} attempts" if spent else f"{retry.max_time} s of retrying"
            logger.error("giving up on %s after %s", self.client.uri, why)
            error = (last.error or last.closed) if last is not None else None
            if error is None:  # pragma: no cover - a run always has an attempt
                raise StopAsyncIteration
            raise error
        self._level += 1
        logger.info("reconnecting to %s in %.3f s", self.client.uri, delay)
        return delay

    async def _try(self, delay: float) -> ClientConnection | None:
        """One attempt; ``None`` after a failure that may be retried."""
        self._number += 1
        self._run_attempts += 1
        attempt = Attempt(self._number, delay, self._clock())
        self._attempt = attempt
        self.attempts.append(attempt)
        logger.info("connecting to %s (attempt %d)", self.client.uri, attempt.number)
        self._notify(attempt)
        try:
            connection = await self.client._connect()
        except Exception as exc:
            attempt.outcome = "failed"
            attempt.error = exc
            attempt.ended = self._clock()
            should_retry = self.retry.should_retry or is_retryable
            attempt.will_retry = bool(should_retry(exc))
            self._retry_after = _retry_after(exc)
            if attempt.will_retry:
                logger.warning("attempt %d failed: %s", attempt.number, _describe(exc))
            else:
                logger.error("attempt %d failed for good: %s", attempt.number, _describe(exc))
            self._notify(attempt)
            if not attempt.will_retry:
                self._done = True
                raise
            return None
        attempt.outcome = "open"
        attempt.opened = self._clock()
        logger.info("connected to %s (attempt %d)", self.client.uri, attempt.number)
        self._notify(attempt)
        connection.add_close_callback(lambda _: self._closed(connection, attempt))
        return connection

    def _closed(self, connection: ClientConnection, attempt: Attempt | None = None) -> None:
        """Record how a connection ended (called once, when it closes)."""
        attempt = attempt or self._attempt
        if attempt is None or attempt.outcome == "closed":
            return
        attempt.outcome = "closed"
        attempt.ended = self._clock()
        attempt.closed = connection.closed_exception
        closed = attempt.closed
        logger.info(
            "connection to %s closed after %.3f s: %s",
            self.client.uri,
            attempt.uptime or 0.0,
            closed,
        )
        if (attempt.uptime or 0.0) >= self.retry.reset_after:
            # It stayed up long enough: the next drop starts a fresh run.
            self._level = 0
            self._run_attempts = 0
            self._run_started = None
        self._notify(attempt)

    async def _finish(self, connection: ClientConnection) -> None:
        """Decide, after the connection last yielded, whether to go on."""
        if connection.state is not State.CLOSED:
            # The loop body came back with the connection open: replace it.
            self._closing_ours = True
            await connection.close()
        closed = connection.closed_exception
        attempt = self._attempt
        if attempt is not None and attempt.outcome != "closed":
            self._closed(connection, attempt)
        ours, self._closing_ours = self._closing_ours, False
        if closed is None:  # pragma: no cover - close() waited until closed
            return
        by_you = (
            not ours
            and closed.sent is not None
            and closed.rcvd_then_sent is not True
            and closed.__cause__ is None
        )
        final = closed.rcvd is not None and closed.rcvd.code in self.retry.final_close_codes
        if by_you or final:
            self._done = True
            if attempt is not None:
                attempt.will_retry = False
                self._notify(attempt)
            why = "you closed it" if by_you else f"close code {closed.code} is final"
            logger.info("not reconnecting to %s: %s", self.client.uri, why)
            if final and not isinstance(closed, ConnectionClosedOK):
                raise closed
            raise StopAsyncIteration
        if attempt is not None:
            attempt.will_retry = True

    def _notify(self, attempt: Attempt) -> None:
        if self.on_attempt is not None:
            try:
                self.on_attempt(attempt)
            except Exception:
                logger.exception("error in on_attempt")


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _retry_after(exc: BaseException) -> float:
    """Seconds from a ``Retry-After`` header of a refused upgrade (RFC 9110
    section 10.2.3, the delay-seconds form), else 0."""
    if not isinstance(exc, InvalidStatus):
        return 0.0
    value = exc.response.headers.get("Retry-After")
    if value is None or not value.strip().isdigit():
        return 0.0
    return float(value.strip())
