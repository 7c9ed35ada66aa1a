"""Shared bits of the benchmark peers: argument parsing and the event loop choice."""

from __future__ import annotations

import argparse
import asyncio


def parse(description: str) -> argparse.Namespace:
    """``--port``, ``--loop asyncio|uvloop``, ``--compression`` (off by default)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    parser.add_argument(
        "--compression", action="store_true", help="offer/accept permessage-deflate"
    )
    return parser.parse_args()


def set_loop(name: str) -> None:
    """Install uvloop's policy if asked (before asyncio.run)."""
    if name == "uvloop":
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
