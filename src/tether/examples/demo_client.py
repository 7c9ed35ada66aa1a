"""The advanced WebSocket client of the ZIO HTTP seed, in tether's channel face.

Lines typed at the console go into an :class:`asyncio.Queue`; once the
handshake completes, a background task takes them from the queue and sends
them over the one connection; received messages are printed as they come.
``end`` (which the demo server answers by closing with 1000) or Ctrl-D
(end of input: the client closes with 1000) ends it cleanly.

Run it against ``tether demo``::

    tether demo-client ws://localhost:8080/subscriptions

What to call next: :func:`client_app` (the app, to run with your own queue),
:func:`run`.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Callable
from typing import IO, Any

from tether.exceptions import InvalidHandshake
from tether.faces.channel import (
    ChannelEvent,
    Handler,
    UserEvent,
    WebSocketApp,
    WebSocketChannel,
    WebSocketFrame,
)

__all__ = ["DEFAULT_URL", "client_app", "main", "run"]

DEFAULT_URL = "ws://localhost:8080/subscriptions"

#: What the queue holds: a line to send, or ``None`` for the end of input.
Line = str | None


def client_app(queue: asyncio.Queue[Line], show: Callable[[str], Any] = print) -> WebSocketApp:
    """The client app: sends what arrives in ``queue`` (``None``: close with
    1000), calls ``show(text)`` for each text received."""

    async def handle(channel: WebSocketChannel) -> None:
        sender: asyncio.Task[None] | None = None

        async def send_lines() -> None:
            # The seed's `queue.take.flatMap(channel.send).forever.forkDaemon`.
            while True:
                line = await queue.get()
                if line is None:
                    await channel.shutdown()
                    return
                await channel.send(ChannelEvent.Read(WebSocketFrame.text(line)))

        async def on_event(event: ChannelEvent) -> None:
            nonlocal sender
            match event:
                case ChannelEvent.UserEventTriggered(UserEvent.HandshakeComplete):
                    sender = asyncio.create_task(send_lines())
                case ChannelEvent.Read(WebSocketFrame.Text(text)):
                    show(text)
                case ChannelEvent.ExceptionCaught(cause):
                    show(f"[error: {cause}]")
                case _:
                    pass

        try:
            await channel.receive_all(on_event)
        finally:
            if sender is not None and not sender.done():
                sender.cancel()

    return Handler.web_socket(handle)


def _read_lines(
    stream: IO[str], loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[Line]
) -> None:
    """Read ``stream`` line by line into ``queue`` (from a thread: reading a
    terminal blocks); ``None`` at the end of input."""
    try:
        for line in stream:
            loop.call_soon_threadsafe(queue.put_nowait, line.rstrip("\r\n"))
    except (OSError, ValueError):  # pragma: no cover - stdin closed under us
        pass
    try:
        loop.call_soon_threadsafe(queue.put_nowait, None)
    except RuntimeError:  # pragma: no cover - the loop is already closed
        pass


async def run(
    url: str = DEFAULT_URL,
    *,
    stdin: IO[str] | None = None,
    stdout: IO[str] | None = None,
    stderr: IO[str] | None = None,
    **connect_kwargs: Any,
) -> int:
    """Connect to ``url`` and run the console client; returns an exit status
    (0: closed cleanly, 1: could not connect or closed with an error)."""
    stdin = stdin if stdin is not None else sys.stdin
    out = stdout if stdout is not None else sys.stdout
    err = stderr if stderr is not None else sys.stderr
    queue: asyncio.Queue[Line] = asyncio.Queue()

    def show(text: str) -> None:
        print(text, file=out, flush=True)

    app = client_app(queue, show)
    try:
        client = await app.connect(url, **connect_kwargs)
    except (OSError, InvalidHandshake) as exc:
        print(f"tether demo-client: cannot connect to {url}: {exc}", file=err, flush=True)
        return 1
    print(
        f"tether demo-client: connected to {url}; type lines, Ctrl-D to quit", file=err, flush=True
    )
    reader = threading.Thread(
        target=_read_lines, args=(stdin, asyncio.get_running_loop(), queue), daemon=True
    )
    reader.start()
    try:
        await client.wait()
    except Exception as exc:  # the handler failed: already logged
        print(f"tether demo-client: {exc}", file=err, flush=True)
        return 1
    finally:
        await client.close()
    channel = client.channel
    code = channel.close_code if channel is not None else None
    reason = channel.close_reason if channel is not None else None
    detail = f" ({reason})" if reason else ""
    print(f"tether demo-client: connection closed with code {code}{detail}", file=err, flush=True)
    return 0 if code in (1000, 1001) else 1


def main(argv: list[str] | None = None) -> int:
    """``python -m tether.examples.demo_client [URL]``."""
    args = sys.argv[1:] if argv is None else argv
    return asyncio.run(run(args[0] if args else DEFAULT_URL))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
