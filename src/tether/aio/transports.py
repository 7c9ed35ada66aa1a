"""Which transports the asyncio layer opens: compiled ones when it can.

On Linux, on asyncio's own selector loop and on uvloop, without TLS,
servers and clients use :mod:`tether._transport` (built with the package): the sockets of a
loop share one epoll instance that the loop watches as a single descriptor,
and a C callback accepts, reads and writes for all of them. Per connection,
that removes asyncio's Handle, selector key and Python accept path; per
readiness event, the trip through ``selectors.py`` and ``Handle._run``; and
writes that protocol callbacks make during one batch leave in one
``send()`` per connection. asyncio still resolves and connects a client's
socket (every address, happy eyeballs); the connected socket then moves
over. ``TETHER_NO_CTRANSPORT=1`` turns them off alone.

Elsewhere (another OS, or turned off), TCP goes through ``fastnet`` when it
applies: the ``aiofastnet`` module (compiled asyncio transports, the
``tether[fast]`` extra, by picows' author) when it is installed, else
asyncio's transports. ``TETHER_NO_FASTNET=1`` turns aiofastnet off alone;
``TETHER_NO_SPEEDUPS=1`` turns off both with the rest of the accelerator.
TLS always uses the loop's own transports.

What to call next: nothing; :func:`create_connection` and
:func:`create_server` are what the client and the server call.
"""

from __future__ import annotations

import asyncio
import os
import socket
from typing import Any, cast

from tether.protocol import accel

__all__ = ["CompiledServer", "compiled", "create_connection", "create_server", "fastnet"]

fastnet: Any = None
if accel.SPEEDUPS and not os.environ.get("TETHER_NO_FASTNET"):
    try:
        import aiofastnet as fastnet
    except ImportError:  # the optional extra is not installed
        fastnet = None

compiled: Any = None
if accel.SPEEDUPS and not os.environ.get("TETHER_NO_CTRANSPORT"):
    try:
        from tether import _transport as compiled
    except ImportError:  # not Linux, or the extension failed to build
        compiled = None


def _fastnet_for(loop: asyncio.AbstractEventLoop, kwargs: dict[str, Any]) -> Any:
    if (
        fastnet is not None
        and kwargs.get("ssl") is None
        and isinstance(loop, asyncio.SelectorEventLoop)
    ):
        return fastnet
    return None


def _poller(loop: asyncio.AbstractEventLoop) -> Any:
    """The loop's :class:`tether._transport.Poller` (one per loop, kept on
    the loop so that both go away together)."""
    poller = getattr(loop, "_tether_poller", None)
    if poller is None:
        poller = compiled.Poller(loop)
        loop._tether_poller = poller  # type: ignore[attr-defined]
    return poller


class _Handover(asyncio.Protocol):
    """Holds a freshly connected asyncio transport without reading from it,
    until its socket moves to a compiled transport."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        cast("asyncio.Transport", transport).pause_reading()


async def _compiled_connection(
    loop: asyncio.AbstractEventLoop, factory: Any, *args: Any, **kwargs: Any
) -> tuple[Any, Any]:
    # asyncio connects (every address, happy eyeballs, local_addr, TCP_NODELAY);
    # the connected socket then moves to a compiled transport.
    sock = kwargs.pop("sock", None)
    if sock is None:
        held, _ = await loop.create_connection(_Handover, *args, **_loop_kwargs(loop, kwargs))
        try:
            fd = os.dup(held.get_extra_info("socket").fileno())
        finally:
            held.abort()
    else:
        sock.setblocking(False)
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        fd = sock.detach()
    protocol = factory()
    try:
        transport = compiled.Transport(_poller(loop), fd, protocol)
    except BaseException:
        os.close(fd)
        raise
    return transport, protocol


def _compiled_for(loop: asyncio.AbstractEventLoop, kwargs: dict[str, Any]) -> bool:
    # The poller needs only add_reader/remove_reader/call_soon: asyncio's
    # selector loop, and uvloop's loop, whose own transports it also beats
    # (workload (b): ~95k msg/s against ~65k; handshakes 9.2k/s against 5.8k).
    return (
        compiled is not None
        and kwargs.get("ssl") is None
        and (
            isinstance(loop, asyncio.SelectorEventLoop)
            or type(loop).__module__.partition(".")[0] == "uvloop"
        )
    )


def create_connection(loop: asyncio.AbstractEventLoop, *args: Any, **kwargs: Any) -> Any:
    """``loop.create_connection``: tether's compiled transports on asyncio's
    selector loop or uvloop without TLS, else aiofastnet when it applies,
    else the loop's own."""
    if _compiled_for(loop, kwargs):
        return _compiled_connection(loop, *args, **kwargs)
    fast = _fastnet_for(loop, kwargs)
    if fast is not None:
        return fast.create_connection(loop, *args, **kwargs)
    return loop.create_connection(*args, **_loop_kwargs(loop, kwargs))


def _loop_kwargs(loop: asyncio.AbstractEventLoop, kwargs: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(loop, asyncio.BaseEventLoop):
        # uvloop's create_connection has no happy_eyeballs_delay: it tries
        # the addresses one after the other.
        kwargs.pop("happy_eyeballs_delay", None)
    return kwargs


class CompiledServer:
    """What :func:`create_server` returns on the compiled path: the part of
    :class:`asyncio.Server` that tether uses (``sockets``, ``close``,
    ``wait_closed``, ``is_serving``, ``get_loop``). asyncio creates and binds
    the sockets (every address of ``host``, dual stack, reuse options);
    :class:`tether._transport.Listener` listens and accepts."""

    def __init__(self, server: asyncio.Server, listeners: list[Any]) -> None:
        self._server = server
        self._listeners = listeners

    @property
    def sockets(self) -> tuple[Any, ...]:
        return self._server.sockets

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._server.get_loop()

    def is_serving(self) -> bool:
        return bool(self._listeners)

    def close(self) -> None:
        """Stop accepting and close the listening sockets (connections
        already accepted stay open)."""
        listeners, self._listeners = self._listeners, []
        for listener in listeners:
            listener.close()  # out of the epoll set before the socket closes
        self._server.close()

    async def wait_closed(self) -> None:
        await self._server.wait_closed()


async def _compiled_server(
    loop: asyncio.AbstractEventLoop, factory: Any, *args: Any, **kwargs: Any
) -> CompiledServer:
    backlog = kwargs.get("backlog", 100)
    server = await loop.create_server(factory, *args, start_serving=False, **kwargs)
    poller = _poller(loop)
    listeners = []
    try:
        for sock in server.sockets:
            tcp = sock.family in (socket.AF_INET, socket.AF_INET6)
            listeners.append(compiled.Listener(poller, sock.fileno(), factory, backlog, tcp))
    except BaseException:
        for listener in listeners:
            listener.close()
        server.close()
        raise
    return CompiledServer(server, listeners)


def create_server(loop: asyncio.AbstractEventLoop, *args: Any, **kwargs: Any) -> Any:
    """``loop.create_server``: tether's compiled transports on asyncio's
    selector loop or uvloop without TLS (see the module docstring), else
    aiofastnet when it applies, else the loop's own."""
    if _compiled_for(loop, kwargs):
        return _compiled_server(loop, *args, **kwargs)
    fast = _fastnet_for(loop, kwargs)
    if fast is not None:
        return fast.create_server(loop, *args, **kwargs)
    return loop.create_server(*args, **kwargs)
