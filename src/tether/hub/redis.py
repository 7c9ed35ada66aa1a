"""The Redis backplane: hubs in many processes (or machines) share topics.

::

    from tether.hub import Hub
    from tether.hub.redis import RedisBackplane

    hub = Hub(RedisBackplane("redis://127.0.0.1:6379/0"))

Needs ``redis-py`` (``pip install 'tether[redis]'``). Each process's hub
SUBSCRIBEs to the Redis channel of a topic (``prefix + topic``) while it has
local subscribers to it, and PUBLISHes every message published in this
process. A message is delivered to local subscribers at once, in the
publishing process, and reaches the others through Redis; each process
ignores its own messages when Redis echoes them back, so every subscriber
gets each message once. Messages from one publisher arrive in the order they
were published: one connection writes them, and Redis keeps the order of a
connection's commands.

Failures: the backplane keeps two connections to Redis (one subscribed, one
publishing) and, when either breaks (Redis restarted, network cut), closes
both and reconnects with exponential backoff (``reconnect_delay`` doubling up
to ``max_reconnect_delay``), then subscribes again to every topic. While it is
down, publishes are still delivered to local subscribers, and their relay to
other processes is **dropped and counted** (``relay_dropped`` in the
statistics) by default, or raises
:class:`~tether.hub.hub.BackplaneUnavailable` with
``on_unavailable="raise"``. Messages that other processes publish while the
subscribed connection is down are lost: Redis pub/sub keeps nothing. Nothing
here blocks the event loop: all I/O is redis-py's asyncio client.

Wire format of a relayed message: one byte ``T`` (text) or ``B`` (binary),
the publishing process's 8-byte origin id, then the payload.

What to call next: :meth:`RedisBackplane.statistics`, :meth:`Hub.synced
<tether.hub.hub.Hub.synced>` (waits for the SUBSCRIBEs to be confirmed).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
from typing import Any, Literal

try:
    import redis.asyncio as aioredis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff
except ImportError as exc:  # pragma: no cover - the extra is not installed
    raise ImportError("the Redis backplane needs redis-py: pip install 'tether[redis]'") from exc

from tether.hub.hub import Backplane, BackplaneUnavailable, Deliver

__all__ = ["RedisBackplane"]

logger = logging.getLogger("tether.hub.redis")

_TEXT = ord("T")
_HEADER = 9  # kind byte + origin id
_BATCH = 512  # PUBLISH commands per pipeline round trip


class RedisBackplane(Backplane):
    """Relays publishes between processes through Redis pub/sub.

    ``url``: the Redis server (``redis://host:port/db``, ``rediss://`` for
    TLS, ``unix://``). ``prefix``: put before each topic to make its Redis
    channel. ``on_unavailable``: ``"drop"`` (default: count the relay in
    ``relay_dropped``; local subscribers still get the message) or ``"raise"``
    (:class:`~tether.hub.hub.BackplaneUnavailable` from ``hub.publish``)
    when Redis is not connected. ``max_pending``: messages waiting to be
    written to Redis; when that many wait, ``hub.publish`` waits for room
    (Redis is slower than the publishers). ``connect_timeout``: seconds for
    connecting, and for any PUBLISH round trip, before the connection counts
    as broken. Other keywords go to :meth:`redis.asyncio.Redis.from_url`.
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "tether:",
        on_unavailable: Literal["drop", "raise"] = "drop",
        max_pending: int = 10_000,
        reconnect_delay: float = 0.1,
        max_reconnect_delay: float = 2.0,
        connect_timeout: float = 5.0,
        **client_options: Any,
    ) -> None:
        if on_unavailable not in ("drop", "raise"):
            raise ValueError(f"on_unavailable must be 'drop' or 'raise', not {on_unavailable!r}")
        if max_pending <= 0:
            raise ValueError(f"max_pending must be positive, not {max_pending!r}")
        self.url = url
        self.prefix = prefix
        self.on_unavailable = on_unavailable
        self.max_pending = max_pending
        self.reconnect_delay = reconnect_delay
        self.max_reconnect_delay = max_reconnect_delay
        self.connect_timeout = connect_timeout
        self.client_options = client_options
        self.origin = os.urandom(8)
        self._deliver: Deliver | None = None
        self._prefix = prefix.encode()
        self._channels: dict[str, bytes] = {}
        self._wanted: set[str] = set()
        self._sent: set[str] = set()
        self._active: set[bytes] = set()
        self._pending: collections.deque[tuple[bytes, bytes]] = collections.deque()
        self._connected = False
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._changed: asyncio.Event | None = None
        self._state: asyncio.Event | None = None
        self._space: asyncio.Event | None = None
        self._relayed = 0
        self._relay_dropped = 0
        self._received = 0
        self._connects = 0
        self._last_error = ""

    # ------------------------------------------------------------------
    # The Backplane interface

    def attach(self, deliver: Deliver) -> None:
        if self._deliver is not None and self._deliver != deliver:
            raise ValueError("a RedisBackplane serves one hub")
        self._deliver = deliver
        if self._task is None:
            self._closing = False
            self._wake = asyncio.Event()
            self._changed = asyncio.Event()
            self._state = asyncio.Event()
            self._space = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._run())

    def detach(self, deliver: Deliver) -> None:
        if self._deliver == deliver:
            self._deliver = None

    def topic_added(self, deliver: Deliver, topic: str) -> None:
        self._wanted.add(topic)
        if self._changed is not None:
            self._changed.set()

    def topic_removed(self, deliver: Deliver, topic: str) -> None:
        self._wanted.discard(topic)
        if self._changed is not None:
            self._changed.set()

    async def relay(self, deliver: Deliver, topic: str, text: bool, payload: bytes) -> None:
        if not self._connected:
            self._unavailable()
            return
        pending = self._pending
        while len(pending) >= self.max_pending:
            # Redis takes them slower than they come: wait for room. The
            # writer sets the event as it takes a batch, and the supervisor
            # when the connection breaks (then this publish is unavailable).
            assert self._space is not None
            self._space.clear()
            await self._space.wait()
            if not self._connected:
                self._unavailable()
                return
        channel = self._channels.get(topic)
        if channel is None:
            channel = self._channels[topic] = self._prefix + topic.encode()
        pending.append((channel, (b"T" if text else b"B") + self.origin + payload))
        assert self._wake is not None
        self._wake.set()

    def _unavailable(self) -> None:
        if self.on_unavailable == "raise":
            raise BackplaneUnavailable(f"Redis at {self.url} is not connected: {self._last_error}")
        self._relay_dropped += 1

    async def synced(self) -> None:
        """Wait until connected to Redis and subscribed (confirmed) to the
        channel of every topic that has local subscribers."""
        assert self._state is not None, "attach() first (subscribe to a topic)"
        while not (self._connected and self._active >= self._wanted_channels()):
            self._state.clear()
            await self._state.wait()

    def _wanted_channels(self) -> set[bytes]:
        return {self._prefix + topic.encode() for topic in self._wanted}

    @property
    def connected(self) -> bool:
        """Whether both connections to Redis are up."""
        return self._connected

    def statistics(self) -> dict[str, Any]:
        return {
            "kind": "redis",
            "connected": self._connected,
            "connects": self._connects,
            "relayed": self._relayed,
            "relay_dropped": self._relay_dropped,
            "received": self._received,
            "pending": len(self._pending),
            "topics": len(self._wanted),
            "last_error": self._last_error,
        }

    async def close(self) -> None:
        """Stop the connections to Redis; pending relays are dropped."""
        self._closing = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

    # ------------------------------------------------------------------
    # The connection supervisor

    async def _run(self) -> None:
        """Connect, run the reader, writer and subscription manager until one
        of them fails, clean up, wait, and connect again; until closed."""
        delay = self.reconnect_delay
        warned = False
        while not self._closing:
            try:
                client, pubsub = await self._connect()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._last_error = f"{type(exc).__name__}: {exc}"
                (logger.debug if warned else logger.warning)(
                    "cannot connect to Redis at %s (%s); retrying in %.1f s",
                    self.url,
                    self._last_error,
                    delay,
                )
                warned = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_reconnect_delay)
                continue
            delay = self.reconnect_delay
            if warned or self._connects:
                logger.warning("connected to Redis at %s again", self.url)
            warned = False
            self._connects += 1
            self._connected = True
            self._notify()
            tasks = [
                asyncio.ensure_future(self._read(pubsub)),
                asyncio.ensure_future(self._write(client)),
                asyncio.ensure_future(self._manage(pubsub)),
            ]
            try:
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    error = task.exception()
                    self._last_error = f"{type(error).__name__}: {error}" if error else "closed"
                logger.warning(
                    "lost the connection to Redis at %s (%s)", self.url, self._last_error
                )
                warned = True
            finally:
                self._connected = False
                self._sent = set()
                self._active = set()
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                if self._pending:
                    self._relay_dropped += len(self._pending)
                    self._pending.clear()
                self._notify()
                await self._disconnect(client, pubsub)
            if not self._closing:
                await asyncio.sleep(delay)

    async def _connect(self) -> tuple[Any, Any]:
        options = {
            "socket_connect_timeout": self.connect_timeout,
            "socket_timeout": self.connect_timeout,
            "socket_keepalive": True,
            # Reconnection is ours: one attempt per command, no hidden retries.
            "retry": Retry(NoBackoff(), 0),
            **self.client_options,
        }
        client = aioredis.Redis.from_url(self.url, **options)
        pubsub = client.pubsub()
        try:
            await asyncio.wait_for(client.ping(), self.connect_timeout)
            # A channel of our own keeps the subscribed connection open (and
            # its reader reading) even with no topic.
            control = self._prefix + b"\x00origin:" + self.origin.hex().encode()
            await asyncio.wait_for(pubsub.subscribe(control), self.connect_timeout)
        except BaseException:
            await self._disconnect(client, pubsub)
            raise
        return client, pubsub

    async def _disconnect(self, client: Any, pubsub: Any) -> None:
        for closer in (pubsub.aclose, client.aclose):
            try:
                await asyncio.wait_for(closer(), 1.0)
            except Exception as exc:  # already broken: nothing more to release
                logger.debug("while closing a Redis connection: %s", exc)

    def _notify(self) -> None:
        if self._state is not None:
            self._state.set()
        if self._space is not None:
            self._space.set()

    async def _read(self, pubsub: Any) -> None:
        """The subscribed connection: messages, and SUBSCRIBE confirmations."""
        prefix = len(self._prefix)
        origin = self.origin
        while True:
            message = await pubsub.get_message(timeout=None)
            if message is None:
                continue
            kind = message["type"]
            if kind == "message":
                data = message["data"]
                if len(data) < _HEADER or data[1:_HEADER] == origin:
                    continue  # ours (delivered locally already) or not a hub message
                deliver = self._deliver
                if deliver is None:
                    continue
                self._received += 1
                try:
                    deliver(message["channel"][prefix:].decode(), data[0] == _TEXT, data[_HEADER:])
                except Exception:
                    logger.exception("error while delivering a message from Redis")
            elif kind == "subscribe":
                self._active.add(message["channel"])
                self._notify()
            elif kind == "unsubscribe":
                self._active.discard(message["channel"])
                self._notify()

    async def _manage(self, pubsub: Any) -> None:
        """Keep the SUBSCRIBEd channels equal to the topics with local subscribers."""
        changed = self._changed
        assert changed is not None
        while True:
            changed.clear()
            wanted = set(self._wanted)
            add = wanted - self._sent
            remove = self._sent - wanted
            if add:
                await pubsub.subscribe(*(self._prefix + topic.encode() for topic in add))
                self._sent |= add
            if remove:
                await pubsub.unsubscribe(*(self._prefix + topic.encode() for topic in remove))
                self._sent -= remove
            if not changed.is_set():
                await changed.wait()

    async def _write(self, client: Any) -> None:
        """The publishing connection: PUBLISH pending messages, in order,
        up to _BATCH per round trip."""
        pending = self._pending
        wake = self._wake
        space = self._space
        assert wake is not None and space is not None
        timeout = self.connect_timeout
        while True:
            if not pending:
                wake.clear()
                await wake.wait()
                continue
            batch = [pending.popleft() for _ in range(min(_BATCH, len(pending)))]
            space.set()
            try:
                if len(batch) == 1:
                    await asyncio.wait_for(client.publish(*batch[0]), timeout)
                else:
                    pipe = client.pipeline(transaction=False)
                    for channel, data in batch:
                        pipe.publish(channel, data)
                    await asyncio.wait_for(pipe.execute(), timeout)
            except BaseException:
                self._relay_dropped += len(batch)
                raise
            self._relayed += len(batch)

    def __repr__(self) -> str:
        state = "connected" if self._connected else "disconnected"
        return f"<RedisBackplane {self.url} {state}>"
