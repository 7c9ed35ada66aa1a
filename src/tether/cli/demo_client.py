"""``tether demo-client [URL]``: the ZIO HTTP seed's advanced console client.

Each line typed is sent over one connection (through an asyncio queue and a
background task); what arrives is printed. ``end`` or Ctrl-D closes cleanly.
See :mod:`tether.examples.demo_client`.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from typing import Any

from tether.cli.common import add_engine_options, engine_options

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> None:
    """Register ``tether demo-client``."""
    from tether.examples.demo_client import DEFAULT_URL

    parser = subparsers.add_parser(
        "demo-client", help="the seed's console client for `tether demo`"
    )
    parser.add_argument(
        "url", nargs="?", default=DEFAULT_URL, help=f"WebSocket URL (default {DEFAULT_URL})"
    )
    add_engine_options(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run until the connection closes; the exit status says how it closed."""
    from tether.examples.demo_client import run as run_client

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return asyncio.run(run_client(args.url, **engine_options(args)))
