"""The advanced WebSocket server of the ZIO HTTP seed, in tether's channel face.

Rules of ``/subscriptions`` (a WebSocket):

- when the handshake completes, the server sends ``Greetings!``;
- ``foo`` is answered with ``bar``, and ``bar`` with ``foo``;
- ``end`` closes the connection (1000, normal closure);
- any other text is sent back 10 times.

Plain HTTP: ``GET /greet/{name}`` answers ``Greetings {name}!``; ``GET /``
serves a page (``static/index.html``: inline JS and CSS, no build step) that
talks to ``/subscriptions`` from a browser.

Run it with ``tether demo`` (0.0.0.0:8080), or::

    python -m tether.examples.demo --port 8080

What to call next: :func:`routes` (to serve it your way), and
:mod:`tether.examples.demo_client` (the seed's console client).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from importlib import resources

from tether.faces.channel import (
    ChannelEvent,
    Handler,
    HttpServer,
    UserEvent,
    WebSocketApp,
    WebSocketChannel,
    WebSocketFrame,
)
from tether.protocol.http import Request, Response
from tether.routing import Routes

__all__ = ["ECHO_COUNT", "main", "page", "routes", "socket_app"]

#: How many times the server sends back a text it has no rule for.
ECHO_COUNT = 10

logger = logging.getLogger("tether.examples.demo")


async def subscriptions(channel: WebSocketChannel) -> None:
    """The WebSocket handler: the seed's rules, one ``case`` each."""

    async def on_event(event: ChannelEvent) -> None:
        match event:
            case ChannelEvent.Read(WebSocketFrame.Text("end")):
                await channel.shutdown()

            # Send a "bar" if the client sends a "foo"
            case ChannelEvent.Read(WebSocketFrame.Text("foo")):
                await channel.send(ChannelEvent.Read(WebSocketFrame.text("bar")))

            # Send a "foo" if the client sends a "bar"
            case ChannelEvent.Read(WebSocketFrame.Text("bar")):
                await channel.send(ChannelEvent.Read(WebSocketFrame.text("foo")))

            # Echo the same message 10 times if it's not "foo" or "bar"
            case ChannelEvent.Read(WebSocketFrame.Text(text)):
                await channel.send_all(
                    ChannelEvent.Read(WebSocketFrame.text(text)) for _ in range(ECHO_COUNT)
                )

            # Send a "greeting" message to the client once the connection is established
            case ChannelEvent.UserEventTriggered(UserEvent.HandshakeComplete):
                await channel.send(ChannelEvent.Read(WebSocketFrame.text("Greetings!")))

            # Log when the channel is getting closed
            case ChannelEvent.Read(WebSocketFrame.Close(status, reason)):
                logger.info("closing channel with status %s and reason %r", status, reason)

            # Log when a connection broke
            case ChannelEvent.ExceptionCaught(cause):
                logger.info("channel error: %s", cause)

            case _:
                pass

    await channel.receive_all(on_event)


def socket_app() -> WebSocketApp:
    """The ``/subscriptions`` app."""
    return Handler.web_socket(subscriptions)


def page() -> str:
    """The demo page (``static/index.html``)."""
    return resources.files("tether.examples").joinpath("static/index.html").read_text("utf-8")


def routes() -> Routes:
    """``GET /``, ``GET /greet/{name}`` and the ``/subscriptions`` WebSocket."""
    app = socket_app()
    html = page()
    table = Routes()

    @table.get("/")
    def index(request: Request) -> Response:
        return Response.html(html, headers={"Cache-Control": "no-store"})

    @table.get("/greet/{name}")
    def greet(request: Request, name: str) -> Response:
        return Response.text(f"Greetings {name}!")

    @table.get("/subscriptions")
    def subscribe(request: Request) -> WebSocketApp:
        return app.to_response()

    return table


async def main(host: str = "0.0.0.0", port: int = 8080) -> None:
    """Serve the demo until SIGINT or SIGTERM."""

    def ready(server: object) -> None:
        shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
        port_ = getattr(server, "port", port)
        print(f"tether demo: open http://{shown}:{port_}/ (Ctrl-C to stop)", flush=True)

    await HttpServer(host=host, port=port).serve(routes(), ready=ready)


if __name__ == "__main__":  # pragma: no cover - python -m tether.examples.demo
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    asyncio.run(main(args.host, args.port))
