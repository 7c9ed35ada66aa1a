""":class:`HttpServer`: serve routes (or any app) until SIGINT or SIGTERM,
then shut down gracefully. ZIO HTTP's ``Server.serve(routes)`` with
``Server.default``.

::

    await HttpServer.serve(routes, port=8080)        # 0.0.0.0:8080 unless told
    await HttpServer.default.serve(routes)            # the same: 0.0.0.0:8080
    await HttpServer(host="127.0.0.1", port=0).serve(routes, ready=print)

Graceful shutdown: on SIGINT or SIGTERM (or when the ``stop`` future given to
:meth:`HttpServer.serve` completes, or the serving task is cancelled) the
server stops accepting, sends a close frame with 1001 (going away) to every
open WebSocket, waits for the closing handshakes (at most
``close_timeout``), then returns. The previous signal handlers are restored.

Named ``HttpServer`` at the top level because ``tether.Server`` is the
engine's running server (what :func:`tether.serve` returns); in
:mod:`tether.faces.channel` it is also available as ``Server``, ZIO's name.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from tether.aio.server import Server, serve
from tether.faces.channel_config import WebSocketConfig

__all__ = ["HttpServer"]

#: The signals that stop :meth:`HttpServer.serve`.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class _Serve(Protocol):
    def __call__(
        self,
        app: Any,
        *,
        host: str | None = None,
        port: int | None = None,
        config: WebSocketConfig | None = None,
        ready: Callable[[Server], Any] | None = None,
        stop: asyncio.Future[Any] | None = None,
        handle_signals: bool = True,
        **serve_kwargs: Any,
    ) -> Coroutine[Any, Any, None]: ...


class _ServeMethod:
    """``serve`` works on the class (with :attr:`HttpServer.default`'s
    settings) and on an instance (with its own)."""

    def __get__(self, instance: HttpServer | None, owner: type[HttpServer]) -> _Serve:
        server = instance if instance is not None else owner.default
        return server._serve


@dataclass(frozen=True)
class HttpServer:
    """Where and how to serve: ``host`` and ``port`` (default 0.0.0.0:8080,
    every interface, as ZIO's ``Server.default``), ``config`` (a
    :class:`~tether.faces.channel_config.WebSocketConfig` for the whole
    server: limits, timeouts, compression...), and ``serve_kwargs`` for
    :func:`tether.serve` (``ssl``, ``origins``, ``process_request``...).

    What to call next: :meth:`serve` (runs until a signal) or :meth:`start`
    (returns the running :class:`tether.Server`).
    """

    default: ClassVar[HttpServer]

    host: str = "0.0.0.0"
    port: int = 8080
    config: WebSocketConfig | None = None
    serve_kwargs: dict[str, Any] = field(default_factory=dict)

    serve: ClassVar[_ServeMethod] = _ServeMethod()

    async def start(
        self,
        app: Any,
        *,
        host: str | None = None,
        port: int | None = None,
        config: WebSocketConfig | None = None,
        **serve_kwargs: Any,
    ) -> Server:
        """Start serving ``app`` (:class:`~tether.routing.Routes`, a
        ``WebSocketApp``, any :func:`tether.serve` handler) and return the
        running server; stop it with ``server.close()`` and
        ``await server.wait_closed()``."""
        config = config or self.config
        kwargs = {**self.serve_kwargs, **serve_kwargs}
        if config is not None:
            kwargs["options"] = config.to_options(kwargs.get("options"))
        return await serve(
            app,
            self.host if host is None else host,
            self.port if port is None else port,
            **kwargs,
        )

    async def _serve(
        self,
        app: Any,
        *,
        host: str | None = None,
        port: int | None = None,
        config: WebSocketConfig | None = None,
        ready: Callable[[Server], Any] | None = None,
        stop: asyncio.Future[Any] | None = None,
        handle_signals: bool = True,
        **serve_kwargs: Any,
    ) -> None:
        """Serve ``app`` until SIGINT/SIGTERM (or ``stop`` completes, or the
        task is cancelled), then shut down gracefully (1001 to every client).

        ``ready(server)`` is called once listening (``server.port`` is the
        port, useful with ``port=0``). ``handle_signals=False`` leaves the
        signal handlers alone (they can only be set in the main thread; in
        another thread they are left alone anyway).
        """
        loop = asyncio.get_running_loop()
        server = await self.start(app, host=host, port=port, config=config, **serve_kwargs)
        stopped: asyncio.Future[Any] = stop if stop is not None else loop.create_future()
        installed = _install_signal_handlers(loop, stopped) if handle_signals else []
        try:
            if ready is not None:
                ready(server)
            await asyncio.shield(stopped)
        finally:
            for sig, previous in installed:
                loop.remove_signal_handler(sig)
                if previous is not None:
                    signal.signal(sig, previous)
            server.close()
            await server.wait_closed()


HttpServer.default = HttpServer()


def _install_signal_handlers(
    loop: asyncio.AbstractEventLoop, stopped: asyncio.Future[Any]
) -> list[tuple[signal.Signals, Any]]:
    """Make SIGINT and SIGTERM complete ``stopped``; return what to restore."""
    if threading.current_thread() is not threading.main_thread():
        return []

    def on_signal() -> None:
        if not stopped.done():
            stopped.set_result(None)

    installed = []
    for sig in STOP_SIGNALS:
        previous = signal.getsignal(sig)
        try:
            loop.add_signal_handler(sig, on_signal)
        except (NotImplementedError, RuntimeError):  # pragma: no cover - not on Windows
            continue
        installed.append((sig, previous))
    return installed
