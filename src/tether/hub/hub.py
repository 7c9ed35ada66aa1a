"""The broadcast hub: topics of connections, one frame per message, many sockets.

::

    hub = Hub()                                   # in-process (MemoryBackplane)

    async def handler(ws):
        hub.subscribe(ws, "news")                 # unsubscribed when ws closes
        async for message in ws:
            await hub.publish("news", message)    # to every subscriber of "news"

:meth:`Hub.publish` serializes the message into a frame once (and compresses
it once per compression setting where RFC 7692 allows sharing), then writes
that frame to each subscriber's transport with
:meth:`~tether.aio.connection.Connection.write_frame`: no task and no await
per subscriber. A subscriber whose outgoing buffer is over ``max_buffer``
bytes is a *slow consumer*: the hub drops the message for it (``"drop"``,
counted) or closes it with ``close_code`` (``"close"``).

A :class:`Backplane` relays every publish to the hubs of other processes: the
default :class:`~tether.hub.memory.MemoryBackplane` relays nothing (or to the
other hubs of this process that share it);
:class:`~tether.hub.redis.RedisBackplane` relays through Redis pub/sub.

What to call next: :meth:`Hub.subscribe`, :meth:`Hub.publish`,
:meth:`Hub.statistics`, and :func:`default_hub` for the process-wide hub that
``tether serve --redis URL`` configures.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

from tether import limits
from tether.protocol import accel
from tether.protocol.deflate import DeflateOptions, DeflateParams, PerMessageDeflate
from tether.protocol.frames import check_close_code

if TYPE_CHECKING:  # pragma: no cover
    from tether.aio.connection import Connection

__all__ = [
    "MAX_BUFFER",
    "REDIS_URL_ENV",
    "Backplane",
    "BackplaneUnavailable",
    "Hub",
    "HubStatistics",
    "default_hub",
    "set_default_hub",
]

logger = logging.getLogger("tether.hub")

#: Default ``max_buffer`` (see :data:`tether.limits.HUB_MAX_BUFFER`).
MAX_BUFFER = limits.HUB_MAX_BUFFER

#: The environment variable :func:`default_hub` reads: a ``redis://`` URL makes
#: the default hub use a :class:`~tether.hub.redis.RedisBackplane`.
REDIS_URL_ENV = "TETHER_REDIS_URL"

SlowPolicy = Literal["drop", "close"]
#: What a hub hands its backplane's relay: (topic, is_text, payload).
Deliver = Callable[[str, bool, bytes], int]


class BackplaneUnavailable(Exception):
    """A publish could not be relayed to other processes (the backplane is
    down or full) and the backplane was told to raise rather than drop."""


class Backplane:
    """How a :class:`Hub` reaches the hubs of other processes.

    A hub calls :meth:`attach` once with its delivery function, tells the
    backplane which topics have local subscribers (:meth:`topic_added`,
    :meth:`topic_removed`), and hands it each publish with :meth:`relay`
    after delivering it locally. The backplane calls the delivery function of
    every *other* hub subscribed to the topic, and must never call back the
    hub the message came from (it was delivered there already).

    Subclasses: :class:`~tether.hub.memory.MemoryBackplane`,
    :class:`~tether.hub.redis.RedisBackplane`.
    """

    def attach(self, deliver: Deliver) -> None:
        """Start relaying to ``deliver(topic, is_text, payload)``. Called from the
        event loop, before the first relay."""
        raise NotImplementedError

    def detach(self, deliver: Deliver) -> None:
        """Stop relaying to ``deliver``."""
        raise NotImplementedError

    def topic_added(self, deliver: Deliver, topic: str) -> None:
        """The hub behind ``deliver`` has its first subscriber to ``topic``."""
        raise NotImplementedError

    def topic_removed(self, deliver: Deliver, topic: str) -> None:
        """The hub behind ``deliver`` has no subscriber to ``topic`` any more."""
        raise NotImplementedError

    async def relay(self, deliver: Deliver, topic: str, text: bool, payload: bytes) -> None:
        """Send a publish from the hub behind ``deliver`` to the other hubs."""
        raise NotImplementedError

    async def synced(self) -> None:
        """Wait until every topic added so far receives what other processes
        publish (a no-op in memory; with Redis, until the SUBSCRIBEs are
        confirmed)."""

    def statistics(self) -> dict[str, Any]:
        """Counters of this backplane (names differ per backplane)."""
        return {}

    async def close(self) -> None:
        """Stop relaying and release connections."""


@dataclass(frozen=True, slots=True)
class HubStatistics:
    """A snapshot of a hub's counters (see :meth:`Hub.statistics`)."""

    #: Topics with at least one local subscriber.
    topics: int
    #: Connections subscribed to at least one topic.
    connections: int
    #: (connection, topic) pairs.
    subscriptions: int
    #: Calls of :meth:`Hub.publish` in this process.
    published: int
    #: Messages that came from other processes through the backplane.
    received: int
    #: Frames written to local subscribers.
    delivered: int
    #: Messages not written to a slow consumer (policy ``"drop"``).
    dropped: int
    #: Slow consumers closed (policy ``"close"``).
    closed: int
    #: The backplane's counters (``relayed``, ``relay_dropped``, ``connected``...).
    backplane: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        """The snapshot as a plain dict (JSON-ready)."""
        return asdict(self)


class _Sub:
    """One subscribed connection: its topics and how it takes frames."""

    __slots__ = ("codec", "connection", "dropped", "topics")

    def __init__(self, connection: Connection, codec: Any) -> None:
        self.connection = connection
        #: None: the plain frame; a PerMessageDeflate: the frame compressed by
        #: that shared codec; _OWN: the connection's own codec.
        self.codec = codec
        self.topics: set[str] = set()
        self.dropped = 0


#: Marks subscribers whose deflater keeps its context between messages.
_OWN = object()


class Hub:
    """Topics of connections, and fan-out of messages to them.

    ``backplane``: where publishes go besides local subscribers (default: a
    private :class:`~tether.hub.memory.MemoryBackplane`, i.e. this hub only).

    ``max_buffer``: the bound, in bytes, on a subscriber's outgoing buffer
    (:meth:`Connection.backlog`) for hub traffic; a frame that would
    take it over the bound is not written (a frame into an empty buffer
    always is, whatever its size). ``slow_consumer``: what happens then:
    ``"drop"`` (the default) skips the message for that socket and counts it;
    ``"close"`` starts the closing handshake with ``close_code`` (1013, "Try
    Again Later", by default; 1008, "Policy Violation", is the other usual
    choice) and ``close_reason``, and unsubscribes it at once.

    ``compress_own``: what subscribers get whose permessage-deflate keeps its
    context between messages (see :meth:`publish`): True (the default) has
    their own deflater compress the message, one compression per such socket;
    False sends them the uncompressed frame, which RFC 7692 allows (section
    6: "An endpoint MAY send uncompressed messages") and costs nothing extra.
    """

    def __init__(
        self,
        backplane: Backplane | None = None,
        *,
        max_buffer: int = MAX_BUFFER,
        slow_consumer: SlowPolicy = "drop",
        close_code: int = 1013,
        close_reason: str = "slow consumer: too much hub traffic buffered",
        compress_own: bool = True,
    ) -> None:
        if slow_consumer not in ("drop", "close"):
            raise ValueError(f"slow_consumer must be 'drop' or 'close', not {slow_consumer!r}")
        if not check_close_code(close_code):
            raise ValueError(f"close code {close_code} may not be sent (RFC 6455 7.4)")
        if len(close_reason.encode()) > 123:
            raise ValueError("close_reason is over 123 bytes of UTF-8 (RFC 6455 5.5)")
        if max_buffer <= 0:
            raise ValueError(f"max_buffer must be positive, not {max_buffer!r}")
        if backplane is None:
            from tether.hub.memory import MemoryBackplane

            backplane = MemoryBackplane()
        self.backplane = backplane
        self.max_buffer = max_buffer
        self.slow_consumer = slow_consumer
        self.close_code = close_code
        self.close_reason = close_reason
        self.compress_own = compress_own
        self._topics: dict[str, dict[Connection, _Sub]] = {}
        self._subs: dict[Connection, _Sub] = {}
        self._codecs: dict[tuple[int, int, int, int], PerMessageDeflate] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self._attached = False
        self._published = 0
        self._received = 0
        self._delivered = 0
        self._dropped = 0
        self._closed = 0

    # ------------------------------------------------------------------
    # Subscriptions

    def subscribe(self, connection: Connection, topic: str) -> None:
        """Add ``connection`` to ``topic`` (again: no effect). It leaves every
        topic by itself when it closes. Call from the event loop."""
        self._attach()
        sub = self._subs.get(connection)
        if sub is None:
            if connection.closed_exception is not None:
                return
            sub = self._subs[connection] = _Sub(connection, self._codec_for(connection))
            connection.add_close_callback(self._on_close)
        if topic in sub.topics:
            return
        sub.topics.add(topic)
        members = self._topics.get(topic)
        if members is None:
            members = self._topics[topic] = {}
            self.backplane.topic_added(self._deliver, topic)
        members[connection] = sub

    def unsubscribe(self, connection: Connection, topic: str | None = None) -> None:
        """Remove ``connection`` from ``topic``, or from every topic if
        ``topic`` is None. Unknown pairs are ignored."""
        sub = self._subs.get(connection)
        if sub is None:
            return
        for name in [topic] if topic is not None else list(sub.topics):
            if name not in sub.topics:
                continue
            sub.topics.discard(name)
            members = self._topics.get(name)
            if members is not None:
                members.pop(connection, None)
                if not members:
                    del self._topics[name]
                    self.backplane.topic_removed(self._deliver, name)
        if not sub.topics:
            del self._subs[connection]
            connection.remove_close_callback(self._on_close)

    def _on_close(self, connection: Connection) -> None:
        self.unsubscribe(connection)

    def topics(self) -> list[str]:
        """The topics that have at least one local subscriber."""
        return list(self._topics)

    def subscribers(self, topic: str) -> list[Connection]:
        """The local subscribers of ``topic``, in the order they subscribed."""
        return list(self._topics.get(topic, ()))

    # ------------------------------------------------------------------
    # Publishing

    async def publish(self, topic: str, message: str | bytes) -> int:
        """Send ``message`` (``str``: a text message, ``bytes``: binary) to
        every subscriber of ``topic``, here and, through the backplane, in
        other processes. Returns the number of local sockets written to.

        Local subscribers get it before this returns, with no await per
        subscriber; slow consumers are handled as ``slow_consumer`` says. The
        relay to other processes may wait while the backplane's send buffer
        is full; when the backplane is down the relay is dropped and counted,
        or :class:`BackplaneUnavailable` is raised, as the backplane's
        setting says (local subscribers got the message either way).
        """
        if isinstance(message, str):
            text, payload = True, message.encode()
        elif isinstance(message, (bytes, bytearray, memoryview)):
            text, payload = False, bytes(message)
        else:
            raise TypeError(f"a message is str or bytes, not {type(message).__name__}")
        self._attach()
        self._published += 1
        count = self._fan_out(topic, text, payload)
        await self.backplane.relay(self._deliver, topic, text, payload)
        return count

    def _deliver(self, topic: str, text: bool, payload: bytes) -> int:
        """A message from another process, handed over by the backplane."""
        self._received += 1
        return self._fan_out(topic, text, payload)

    def _fan_out(self, topic: str, text: bool, payload: bytes) -> int:
        members = self._topics.get(topic)
        if not members:
            return 0
        first = 0x81 if text else 0x82
        size = len(payload)
        # The frame is built once per form, on first need: plain, and one per
        # shared codec (see _codec_for). Server frames are not masked (RFC
        # 6455 section 5.1), so the bytes are the same for every socket.
        plain: bytes | None = None
        shared: dict[PerMessageDeflate, bytes] = {}
        message: str | bytes | None = None
        limit = self.max_buffer
        written = 0
        slow: list[_Sub] | None = None
        for connection, sub in members.items():
            # Gathered small writes are offered to the kernel first when
            # they could take this frame over the bound (Connection.backlog).
            buffered = connection.backlog(limit - size)
            if buffered and buffered + size > limit:
                if slow is None:
                    slow = []
                slow.append(sub)
                continue
            codec = sub.codec
            if codec is _OWN:
                # This socket's deflater carries its context from message to
                # message, or it masks its frames: only it can encode them.
                if message is None:
                    message = payload.decode() if text else payload
                try:
                    connection.send_nowait(message)
                except Exception:
                    continue  # closing: its close callback unsubscribes it
                written += 1
                continue
            if codec is None or size < codec.min_size:
                if plain is None:
                    plain = accel.build_frame(first, payload)
                frame = plain
            else:
                cached = shared.get(codec)
                if cached is None:
                    # RFC 7692 section 6.1: RSV1 on the first frame marks a
                    # compressed message.
                    cached = shared[codec] = accel.build_frame(
                        first | 0x40, codec.compress(payload)
                    )
                frame = cached
            if connection.write_frame(frame):
                written += 1
        self._delivered += written
        if slow is not None:
            self._slow(slow)
        return written

    def _slow(self, subs: list[_Sub]) -> None:
        if self.slow_consumer == "drop":
            for sub in subs:
                sub.dropped += 1
            self._dropped += len(subs)
            return
        for sub in subs:
            connection = sub.connection
            self.unsubscribe(connection)
            self._closed += 1
            logger.info(
                "closing slow consumer %s: %d bytes buffered",
                connection.remote_address,
                connection.buffered_amount,
            )
            task = asyncio.get_running_loop().create_task(
                connection.close(self.close_code, self.close_reason)
            )
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    def _codec_for(self, connection: Connection) -> Any:
        """How ``connection`` takes hub frames: None (the plain frame), a
        shared codec, or _OWN (its own encoder: its deflater, its masks)."""
        if connection.is_client:
            # Client frames are masked with a fresh key each (RFC 6455
            # section 5.3): no two sockets share the bytes; it encodes its own.
            return _OWN
        # The negotiated parameters (fixed for the connection's life).
        params = connection.compression
        if params is None:
            return None
        if not params.server_no_context_takeover:
            # RFC 7692 section 7.1.1.1: without server_no_context_takeover the
            # client's inflater keeps the LZ77 window of earlier messages, and
            # this server's per-connection deflater keeps the same window: the
            # next message it compresses may refer back into it. A frame
            # compressed elsewhere (by a shared codec) would go into the
            # client's window but not into that deflater's, so the two
            # windows would differ and every later back-reference would
            # inflate to the wrong bytes. So: its own deflater, or no
            # compression (an uncompressed message leaves both windows alone).
            return _OWN if self.compress_own else None
        # With server_no_context_takeover the client inflates each message
        # with a fresh window: a message compressed once, with a window no
        # larger than the agreed server_max_window_bits, is valid for every
        # such client, so one compression serves all sockets with the same
        # window bits and deflate settings.
        options = connection.options.compression or DeflateOptions()
        key = (
            params.server_max_window_bits,
            options.compress_level,
            options.mem_level,
            options.min_size,
        )
        codec = self._codecs.get(key)
        if codec is None:
            codec = self._codecs[key] = PerMessageDeflate(
                DeflateParams(
                    server_no_context_takeover=True,
                    server_max_window_bits=params.server_max_window_bits,
                ),
                True,
                options,
            )
        return codec

    # ------------------------------------------------------------------

    def _attach(self) -> None:
        if not self._attached:
            self._attached = True
            self.backplane.attach(self._deliver)

    async def synced(self) -> None:
        """Wait until the backplane relays every current topic to this hub
        (with Redis: until the SUBSCRIBEs are confirmed)."""
        await self.backplane.synced()

    def statistics(self) -> HubStatistics:
        """A snapshot of the counters."""
        return HubStatistics(
            topics=len(self._topics),
            connections=len(self._subs),
            subscriptions=sum(len(members) for members in self._topics.values()),
            published=self._published,
            received=self._received,
            delivered=self._delivered,
            dropped=self._dropped,
            closed=self._closed,
            backplane=self.backplane.statistics(),
        )

    def dropped(self, connection: Connection) -> int:
        """Messages dropped for ``connection`` (a slow consumer) so far."""
        sub = self._subs.get(connection)
        return sub.dropped if sub is not None else 0

    async def close(self) -> None:
        """Forget every subscription and close the backplane (the
        connections themselves stay open)."""
        for connection in list(self._subs):
            self.unsubscribe(connection)
        if self._attached:
            self._attached = False
            self.backplane.detach(self._deliver)
        await self.backplane.close()

    async def __aenter__(self) -> Hub:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return (
            f"<tether.Hub {len(self._topics)} topics, {len(self._subs)} connections, "
            f"{type(self.backplane).__name__}>"
        )


# ----------------------------------------------------------------------
# The process-wide hub

_default: Hub | None = None


def default_hub() -> Hub:
    """The hub of this process, made on first call.

    It uses a :class:`~tether.hub.redis.RedisBackplane` when the environment
    variable ``TETHER_REDIS_URL`` is set (``tether serve --redis URL`` sets it
    for every worker), else an in-memory backplane. Apps that call it work
    unchanged in one process or many. Replace it with :func:`set_default_hub`.
    """
    global _default
    if _default is None:
        url = os.environ.get(REDIS_URL_ENV)
        if url:
            from tether.hub.redis import RedisBackplane

            _default = Hub(RedisBackplane(url))
        else:
            _default = Hub()
    return _default


def set_default_hub(hub: Hub | None) -> Hub | None:
    """Make ``hub`` the one :func:`default_hub` returns (None: make a new one
    on next call). Returns the previous one, which is not closed."""
    global _default
    previous, _default = _default, hub
    return previous
