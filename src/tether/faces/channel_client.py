"""The channel face as a client: ``await app.connect(url)`` and reconnection.

::

    client = await app.connect("ws://127.0.0.1:8080/subscriptions",
                               headers={"Authorization": "Bearer ..."})
    await client.wait()              # until the app's handler returns

    async with app.connect(url, reconnect=True) as client:   # a long-lived bot
        ...                          # reconnects with backoff until close()

Each connection runs the app's handler once, with a fresh
:class:`~tether.faces.channel_socket.WebSocketChannel`; so with
``reconnect=True`` the handler sees ``Registered`` ... ``Unregistered`` once
per connection.

Reconnection is the engine's (``async for ws in tether.connect(url,
retry=...)``, :mod:`tether.aio.reconnect`): capped exponential backoff with
full jitter, retries only where retrying can help (network errors, timeouts,
429, 5xx; a 403 or 404 is final), and no reconnection after the app itself
closed the connection. ``reconnect=True`` uses the default
:class:`~tether.aio.reconnect.Retry`; pass a ``Retry`` to tune it.

What to call next: :meth:`WebSocketClient.wait`, :meth:`WebSocketClient.close`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Generator, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from tether.aio.client import ClientConnection, connect
from tether.aio.options import Options
from tether.aio.reconnect import Attempt, Reconnecting, Retry
from tether.exceptions import ConnectionClosed, HandshakeTimeout
from tether.faces.channel_events import UserEvent
from tether.faces.channel_socket import WebSocketChannel, run_channel_app

if TYPE_CHECKING:  # pragma: no cover
    from tether.faces.channel import WebSocketApp

__all__ = ["WebSocketClient"]

HeadersLike = Mapping[str, str] | Iterable[tuple[str, str]]


class WebSocketClient:
    """A :class:`~tether.faces.channel.WebSocketApp` running as a client; what
    :meth:`WebSocketApp.connect <tether.faces.channel.WebSocketApp.connect>`
    returns.

    ``await app.connect(...)`` returns it once the first opening handshake
    succeeded, or raises: :class:`~tether.exceptions.InvalidStatus` when the
    server refused the upgrade (``.response.status`` is 403, 404...),
    ``OSError`` when it could not be reached,
    :class:`~tether.exceptions.HandshakeTimeout`... With ``reconnect``, the
    errors that retrying can help are retried first.

    The client stops when the app closes the connection itself
    (``channel.shutdown()``, a ``Close`` frame, or its handler returning),
    when :meth:`close` is called, when the handler raises (the connection is
    closed with 1011, the error logged once and raised by :meth:`wait`), or,
    without ``reconnect``, when the connection closes.

    ``channel`` is the channel of the current (or last) connection;
    ``connections`` counts the connections opened so far; ``attempts`` lists
    the engine's :class:`~tether.aio.reconnect.Attempt` records (with
    ``reconnect``).
    """

    def __init__(
        self,
        app: WebSocketApp,
        url: str,
        *,
        headers: HeadersLike | None = None,
        reconnect: bool | Retry = False,
        connect_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        self.app = app
        self.url = url
        kwargs = dict(connect_kwargs or {})
        base: Options | None = kwargs.pop("options", None)
        self._user_on_attempt: Callable[[Attempt], Any] | None = kwargs.pop("on_attempt", None)
        retry = reconnect if isinstance(reconnect, Retry) else Retry() if reconnect else None
        self._connector = connect(
            url,
            additional_headers=headers,
            options=app.config.to_options(base),
            retry=retry,
            on_attempt=self._on_attempt if retry is not None else None,
            **kwargs,
        )
        self._retry = retry
        self.channel: WebSocketChannel | None = None
        self.connections = 0
        self._task: asyncio.Task[Any] | None = None
        self._stopping = False
        self._in_cycle = False
        self._timeouts: list[asyncio.Task[Any]] = []

    @property
    def reconnecting(self) -> bool:
        """Whether this client reconnects when a connection drops."""
        return self._retry is not None

    @property
    def attempts(self) -> list[Attempt]:
        """The engine's records of the connection attempts (with ``reconnect``)."""
        return list(self._connector.attempts)

    @property
    def done(self) -> bool:
        """Whether the client has stopped (for good)."""
        return self._task is not None and self._task.done()

    def __await__(self) -> Generator[Any, None, WebSocketClient]:
        return self._start().__await__()

    async def __aenter__(self) -> WebSocketClient:
        return await self._start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _start(self) -> WebSocketClient:
        if self._task is not None:
            return self
        loop = asyncio.get_running_loop()
        opened: asyncio.Future[None] = loop.create_future()
        self._task = loop.create_task(self._run(opened))
        self._task.add_done_callback(_retrieve)
        try:
            await asyncio.shield(opened)
        except BaseException:
            self._stopping = True
            self._task.cancel()
            raise
        return self

    async def wait(self) -> Any:
        """Wait until the client stops; return what the handler of the last
        connection returned. Raises the handler's exception, or the
        connection error that ended the retries."""
        if self._task is None:
            raise RuntimeError("the client was not started: await app.connect(...) first")
        return await asyncio.shield(self._task)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Stop reconnecting, close the current connection (``code``) and
        wait until the handler returned (at most ``close_timeout`` more, then
        it is cancelled). The handler's outcome stays with :meth:`wait`."""
        self._stopping = True
        task = self._task
        if task is None or task.done():
            return
        if not self._in_cycle:
            task.cancel()  # connecting or waiting to reconnect: just stop
        channel = self.channel
        if channel is not None and channel.is_open:
            try:
                await channel.shutdown(code, reason)
            except ConnectionClosed:  # pragma: no cover - closed meanwhile
                pass
        await asyncio.wait((task,), timeout=self._connector.options.close_timeout)
        if not task.done():
            task.cancel()
            await asyncio.wait((task,))

    # ------------------------------------------------------------------

    async def _run(self, opened: asyncio.Future[None]) -> Any:
        try:
            if self._retry is None:
                return await self._run_once(opened)
            return await self._run_reconnecting(opened)
        except asyncio.CancelledError:
            if self._stopping:
                return None
            raise
        finally:
            for task in self._timeouts:
                task.cancel()

    async def _run_once(self, opened: asyncio.Future[None]) -> Any:
        try:
            connection = await self._connector
        except Exception as exc:
            if isinstance(exc, HandshakeTimeout):
                await self._cycle(None, UserEvent.HandshakeTimeout)
            opened.set_exception(exc)
            return None
        self.connections += 1
        opened.set_result(None)
        return await self._cycle(connection, UserEvent.HandshakeComplete)

    async def _run_reconnecting(self, opened: asyncio.Future[None]) -> Any:
        iterator: Reconnecting = self._connector.__aiter__()
        result: Any = None
        try:
            while not self._stopping:
                try:
                    connection = await iterator.__anext__()
                except StopAsyncIteration:
                    break
                except Exception as exc:
                    if not opened.done():
                        opened.set_exception(exc)
                        return None
                    raise
                await self._flush_timeouts()
                self.connections += 1
                if not opened.done():
                    opened.set_result(None)
                result = await self._cycle(connection, UserEvent.HandshakeComplete)
        finally:
            await iterator.aclose()
            await self._flush_timeouts()
        return result

    def _on_attempt(self, attempt: Attempt) -> None:
        """The engine's report of each attempt: a handshake that timed out
        becomes a ``UserEventTriggered(HandshakeTimeout)`` cycle."""
        if attempt.outcome == "failed" and isinstance(attempt.error, HandshakeTimeout):
            task = asyncio.get_running_loop().create_task(
                self._cycle(None, UserEvent.HandshakeTimeout)
            )
            task.add_done_callback(_retrieve)
            self._timeouts.append(task)
        if self._user_on_attempt is not None:
            self._user_on_attempt(attempt)

    async def _flush_timeouts(self) -> None:
        """Let the handshake-timeout cycles finish before the next real one
        (so that the handler sees the events in order)."""
        timeouts, self._timeouts = self._timeouts, []
        if timeouts:
            await asyncio.wait(timeouts)

    async def _cycle(self, connection: ClientConnection | None, user_event: UserEvent) -> Any:
        """Run the handler once over ``connection`` (or over a channel that
        only says the handshake timed out)."""
        channel = WebSocketChannel(connection, self.app.config, user_event=user_event)
        self._in_cycle = connection is not None
        if connection is not None:
            self.channel = channel
        try:
            return await run_channel_app(self.app.handler, channel)
        except Exception as exc:
            self._connector.options.logger.error(
                "error in WebSocket app handler (client of %s)", self.url, exc_info=exc
            )
            if connection is None:
                return None  # the timeout is the error that counts
            self._stopping = True
            raise
        finally:
            if connection is not None:
                self._in_cycle = False

    def __repr__(self) -> str:
        state = "done" if self.done else "running" if self._task is not None else "new"
        return f"<WebSocketClient {self.url} {state} connections={self.connections}>"


def _retrieve(task: asyncio.Task[Any]) -> None:
    # The outcome is delivered through wait(); don't warn when nobody waits.
    if not task.cancelled():
        task.exception()
