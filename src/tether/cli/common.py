"""Helpers shared by the CLI subcommands: engine options and a server runner
with graceful shutdown on SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from typing import Any

from tether.allocator import tune_server

__all__ = ["add_engine_options", "engine_options", "run_server"]


def add_engine_options(parser: argparse.ArgumentParser, *, max_size: int | None = None) -> None:
    """Add the engine's main limits as flags."""
    group = parser.add_argument_group("engine options")
    group.add_argument(
        "--max-size",
        type=int,
        default=max_size,
        help="largest incoming message in bytes (default: the library default, 1 MiB)",
    )
    group.add_argument("--no-compression", action="store_true", help="turn permessage-deflate off")
    group.add_argument(
        "--ping-interval", type=float, default=None, help="seconds between keepalive pings (0: off)"
    )


def engine_options(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments for serve()/connect() from the flags of add_engine_options."""
    options: dict[str, Any] = {}
    if getattr(args, "max_size", None) is not None:
        options["max_size"] = args.max_size
        options["max_fragments"] = None
    if getattr(args, "no_compression", False):
        options["compression"] = None
    if getattr(args, "ping_interval", None) is not None:
        options["ping_interval"] = args.ping_interval or None
    return options


def _set_once(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def run_server(
    app: Any, host: str, port: int, options: dict[str, Any], args: argparse.Namespace
) -> int:
    """Serve ``app`` until SIGINT or SIGTERM, then shut down gracefully (1001)."""
    from tether.aio.server import serve

    tune_server()

    loop = asyncio.get_running_loop()
    server = await serve(app, host, port, **options)
    stop = loop.create_future()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, _set_once, stop)
    print(f"tether: listening on ws://{host}:{server.port}/", file=sys.stderr, flush=True)
    await stop
    server.close()
    await server.wait_closed()
    return 0
