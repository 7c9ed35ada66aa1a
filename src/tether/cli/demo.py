"""``tether demo``: the ZIO HTTP seed's advanced server and its page.

``GET /`` is a page that talks to the ``/subscriptions`` WebSocket;
``GET /greet/{name}`` answers ``Greetings {name}!``. Binds 0.0.0.0:8080 by
default (every interface: open the page from another machine too); SIGINT
or SIGTERM shut it down gracefully (1001 to every client). See
:mod:`tether.examples.demo`.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from typing import Any

from tether.allocator import tune_server
from tether.cli.common import add_engine_options, engine_options

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> None:
    """Register ``tether demo``."""
    parser = subparsers.add_parser(
        "demo", help="run the seed's demo server and its page (http://HOST:8080/)"
    )
    parser.add_argument(
        "--host", default="0.0.0.0", help="address to bind (default 0.0.0.0: every interface)"
    )
    parser.add_argument("--port", type=int, default=8080, help="port to bind (default 8080)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every connection event")
    add_engine_options(parser)
    parser.set_defaults(run=run)


async def serve_demo(host: str, port: int, options: dict[str, Any]) -> None:
    """Serve the demo until SIGINT/SIGTERM, then shut down gracefully."""
    from tether.examples.demo import routes
    from tether.faces.server_runner import HttpServer

    def ready(server: Any) -> None:
        shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
        print(
            f"tether demo: listening on {host}:{server.port}; "
            f"open http://{shown}:{server.port}/ (WebSocket: ws://{shown}:{server.port}"
            "/subscriptions); Ctrl-C to stop",
            file=sys.stderr,
            flush=True,
        )

    await HttpServer(host=host, port=port).serve(routes(), ready=ready, **options)
    print("tether demo: stopped", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM."""
    level = logging.INFO if args.verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    tune_server()
    asyncio.run(serve_demo(args.host, args.port, engine_options(args)))
    return 0
