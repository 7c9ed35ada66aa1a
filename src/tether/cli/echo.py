"""``tether echo``: an echo server on every path (text as text, binary as binary).

Used by the Autobahn conformance suite and the benchmarks. Messages are echoed
from the connection's message handler, on the event loop, without a task per
connection.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from typing import Any

from tether.cli.common import add_engine_options, engine_options, run_server

__all__ = ["add_parser"]


def add_parser(subparsers: Any) -> None:
    """Register ``tether echo``."""
    parser = subparsers.add_parser("echo", help="run an echo server on every path")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=9001, help="port to bind (default 9001)")
    add_engine_options(parser, max_size=16 * 1024 * 1024)
    parser.set_defaults(run=run)


def echo_app() -> Any:
    """The echo app: a plain handler that installs a message handler."""
    from tether.aio.server import Upgrade

    def on_open(ws: Any) -> None:
        ws.set_message_handler(ws.send_nowait)

    class EchoApp:
        def __tether_dispatch__(self, connection: Any, request: Any) -> Upgrade:
            return Upgrade(on_open)

    return EchoApp()


def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return asyncio.run(run_server(echo_app(), args.host, args.port, engine_options(args), args))
