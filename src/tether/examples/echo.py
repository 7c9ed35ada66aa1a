"""``WebSocketEcho``, the third listing of the ZIO HTTP seed, in tether's
channel face: ``FOO`` gets ``BAR``, ``BAR`` gets ``FOO``, any other text is
sent back 10 times; ``GET /greet/{name}`` answers ``Greetings {name}!``.

Unlike :mod:`tether.examples.demo` it reads with ``receive_all`` and a plain
``match`` and nothing else: no greeting, no ``end``, no page.

Run it::

    python -m tether.examples.echo --port 8080

What to call next: :func:`routes`, or :mod:`tether.examples.demo`.
"""

from __future__ import annotations

import argparse
import asyncio

from tether.faces.channel import (
    ChannelEvent,
    Handler,
    HttpServer,
    WebSocketApp,
    WebSocketChannel,
    WebSocketFrame,
)
from tether.protocol.http import Request, Response
from tether.routing import Routes

__all__ = ["ECHO_COUNT", "routes", "socket_app"]

#: How many times an unknown text is sent back.
ECHO_COUNT = 10


async def echo(channel: WebSocketChannel) -> None:
    """FOO -> BAR, BAR -> FOO, anything else back ``ECHO_COUNT`` times."""

    async def on_event(event: ChannelEvent) -> None:
        match event:
            case ChannelEvent.Read(WebSocketFrame.Text("FOO")):
                await channel.send(ChannelEvent.Read(WebSocketFrame.Text("BAR")))
            case ChannelEvent.Read(WebSocketFrame.Text("BAR")):
                await channel.send(ChannelEvent.Read(WebSocketFrame.Text("FOO")))
            case ChannelEvent.Read(WebSocketFrame.Text(text)):
                for _ in range(ECHO_COUNT):
                    await channel.send(ChannelEvent.Read(WebSocketFrame.Text(text)))
            case _:
                pass

    await channel.receive_all(on_event)


def socket_app() -> WebSocketApp:
    """The echo app."""
    return Handler.web_socket(echo)


def routes() -> Routes:
    """``GET /greet/{name}`` and the ``/subscriptions`` WebSocket."""
    app = socket_app()

    def greet(request: Request, name: str) -> Response:
        return Response.text(f"Greetings {name}!")

    return Routes().get("/greet/{name}", greet).get("/subscriptions", app)


if __name__ == "__main__":  # pragma: no cover - python -m tether.examples.echo
    parser = argparse.ArgumentParser(
        description="WebSocketEcho (the ZIO HTTP seed's third listing)"
    )
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()
    asyncio.run(HttpServer(host=args.host, port=args.port).serve(routes()))
