"""``tether connect URL``: talk to a WebSocket server from a terminal.

Interactive (stdin is a terminal): a prompt with line editing and history
(prompt_toolkit, ``pip install 'tether[cli]'``; without it, plain lines).
Each line you type is sent as a text message; incoming messages are printed
above the prompt as they arrive, without disturbing the line being typed::

    $ tether connect ws://127.0.0.1:8080/subscriptions
    * connected to ws://127.0.0.1:8080/subscriptions (permessage-deflate)
    > foo
    < bar
    > /close 1000
    * closed: 1000 (OK)

Incoming text is shown after ``<``; binary as ``<< [binary N B]`` then hex
or base64 (``--binary-format``); ``*`` lines are about the connection.
Control characters a server sends are shown escaped (``\\x1b``), never
passed to your terminal. Commands: ``/ping [PAYLOAD]``, ``/close [CODE
[REASON]]``, ``/binary HEX``, ``/quit`` (or Ctrl-D), ``/help``; ``//text``
sends ``/text``.

One-shot (``-x MESSAGE``, repeatable): sends the messages, prints each reply
on a line of stdout (text as is, binary as above) until ``--timeout``
seconds pass, ``--count`` replies arrived, or the server closes. With stdin
not a terminal, each line read from it is sent (commands work too), and
after the last one the replies are printed the same way.

Exit status: 0 ok; 1 the connection could not be opened (one line on stderr
says why); 2 usage (bad option, URL or header); 3 the connection closed with
an error code or broke; 4 ``--count`` replies did not arrive within
``--timeout``; 130 interrupted (Ctrl-C).

Colour only when stdout is a terminal (``--color``, and ``NO_COLOR``).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import os
import pathlib
import re
import socket
import ssl
import sys
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TextIO

from tether.cli.common import add_engine_options, engine_options

__all__ = [
    "EXIT_ABNORMAL_CLOSE",
    "EXIT_CONNECT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_NO_REPLY",
    "EXIT_OK",
    "EXIT_USAGE",
    "add_parser",
    "run",
]

EXIT_OK = 0
EXIT_CONNECT_FAILED = 1
EXIT_USAGE = 2
EXIT_ABNORMAL_CLOSE = 3
EXIT_NO_REPLY = 4
EXIT_INTERRUPTED = 130

HELP = """\
commands:
  /ping [PAYLOAD]          send a ping, show the round trip
  /close [CODE [REASON]]   close the connection (default 1000) and exit
  /binary HEX              send a binary message, given in hex
  /base64 DATA             send a binary message, given in base64
  /quit                    close with 1000 and exit (also Ctrl-D)
  /help                    this text
  //TEXT                   send "/TEXT" (a leading / is doubled)"""

EPILOG = (
    """\
exit status: 0 ok; 1 connection failed; 2 usage; 3 closed with an error code
or broken; 4 fewer than --count replies within --timeout; 130 interrupted.

"""
    + HELP
)


def add_parser(subparsers: Any) -> None:
    """Register ``tether connect``."""
    parser = subparsers.add_parser(
        "connect",
        help="talk to a WebSocket server from a terminal (or a script: -x)",
        description="Connect to a WebSocket server: type lines to send them, see what comes "
        "back. With -x, send messages, print the replies and exit.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("url", metavar="URL", help="ws:// or wss:// URL")
    parser.add_argument(
        "-x", "--execute", action="append", metavar="MESSAGE",
        help="send MESSAGE (repeatable), print the replies, exit",
    )  # fmt: skip
    parser.add_argument(
        "-t", "--timeout", type=float, default=3.0,
        help="with -x or piped input: seconds to wait for replies (default 3)",
    )  # fmt: skip
    parser.add_argument(
        "-n",
        "--count",
        type=int,
        help="with -x or piped input: exit after N replies (status 4 if they miss)",
    )
    parser.add_argument(
        "-H", "--header", action="append", default=[], metavar="'NAME: VALUE'",
        help="add a request header (repeatable)",
    )  # fmt: skip
    parser.add_argument(
        "-s", "--subprotocol", action="append", default=[], metavar="NAME",
        help="offer a subprotocol (repeatable, in order of preference)",
    )  # fmt: skip
    parser.add_argument("--origin", help="the Origin header")
    parser.add_argument("--user-agent", default="tether-connect", help="the User-Agent header")
    parser.add_argument(
        "--proxy", metavar="URL",
        help="http://[user:pass@]host:port or socks5://...; default: HTTPS_PROXY etc.",
    )  # fmt: skip
    parser.add_argument("--no-proxy", action="store_true", help="ignore proxy variables")
    parser.add_argument("--cacert", metavar="FILE", help="trust this CA certificate (PEM)")
    parser.add_argument(
        "-k", "--insecure", action="store_true", help="do not verify the TLS certificate"
    )
    parser.add_argument(
        "--follow-redirects", action="store_true", help="follow 3xx answers to the upgrade"
    )
    parser.add_argument(
        "--reconnect", action="store_true",
        help="reconnect with backoff when the connection drops; lines typed meanwhile are "
        "queued and sent after reconnecting",
    )  # fmt: skip
    parser.add_argument(
        "--open-timeout", type=float, default=10.0, help="seconds to connect (default 10)"
    )
    parser.add_argument(
        "--binary-format", choices=["hex", "base64"], default="hex",
        help="how to show binary messages (default hex)",
    )  # fmt: skip
    parser.add_argument(
        "--color", choices=["auto", "always", "never"], default="auto",
        help="colour output (default: only on a terminal, and not with NO_COLOR)",
    )  # fmt: skip
    add_engine_options(parser)
    parser.set_defaults(run=run)


# ----------------------------------------------------------------------
# Output


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def visible(text: str) -> str:
    """``text`` with control characters (but tab and newline) escaped, so a
    server cannot move the cursor or retitle the terminal."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


class Output:
    """Prints messages and notes; colour when asked."""

    COLORS = {"in": "32", "bin": "35", "info": "36", "error": "31"}

    def __init__(self, color: bool, binary_format: str, prefix: bool, stream: TextIO) -> None:
        self.color = color
        self.binary_format = binary_format
        self.prefix = prefix
        self.stream = stream

    def _paint(self, kind: str, text: str) -> str:
        if not self.color:
            return text
        return f"\x1b[{self.COLORS[kind]}m{text}\x1b[0m"

    def _print(self, text: str, stream: TextIO | None = None) -> None:
        print(text, file=stream or sys.stdout, flush=True)

    def message(self, message: str | bytes) -> None:
        if isinstance(message, str):
            text = visible(message)
            self._print(self._paint("in", "< ") + text if self.prefix else text)
            return
        if self.binary_format == "base64":
            shown = base64.b64encode(message).decode()
            label = f"[binary {len(message)} B, base64]"
        else:
            shown = message.hex()
            label = f"[binary {len(message)} B]"
        head = f"<< {label}" if self.prefix else label
        self._print(f"{self._paint('bin', head)} {shown}".rstrip())

    def info(self, text: str) -> None:
        """A note about the connection: on stdout when interactive, else stderr."""
        line = self._paint("info", f"* {text}")
        self._print(line, None if self.prefix else sys.stderr)

    def error(self, text: str) -> None:
        self._print(self._paint("error", f"tether connect: {text}"), sys.stderr)


def use_color(choice: str, stream: TextIO) -> bool:
    if choice != "auto":
        return choice == "always"
    return stream.isatty() and "NO_COLOR" not in os.environ


def describe_error(exc: BaseException, url: str) -> str:
    """One line that says why the connection could not be opened."""
    from tether.aio.proxy import ProxyError
    from tether.exceptions import InvalidStatus

    if isinstance(exc, InvalidStatus):
        response = exc.response
        text = f"the server refused the upgrade: HTTP {response.status} {response.reason}"
        body = response.body.decode("utf-8", "replace").strip().splitlines()
        if body:
            text += f": {visible(body[0])[:200]}"
        location = response.headers.get("Location")
        if location and 300 <= response.status < 400:
            text += f" (redirect to {location}; add --follow-redirects)"
        return text
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (
            f"cannot connect to {url}: TLS certificate: {exc.verify_message} "
            "(use --cacert FILE, or --insecure)"
        )
    if isinstance(exc, ProxyError):
        return str(exc)
    if isinstance(exc, socket.gaierror):
        return f"cannot connect to {url}: {exc.strerror}"
    if isinstance(exc, OSError) and not isinstance(exc, TimeoutError):
        reason = exc.strerror or str(exc)
        if reason.startswith("Connect call failed") and exc.errno and exc.errno > 0:
            reason = os.strerror(exc.errno)  # asyncio's wording hides the cause
        return f"cannot connect to {url}: {reason}"
    return f"cannot connect to {url}: {exc}"


def describe_close(closed: Any) -> str:
    """``closed: 1000 (OK) bye`` from a ConnectionClosed."""
    from tether.protocol.frames import CloseCode

    code = closed.code
    try:
        name = CloseCode(code).name.replace("_", " ").lower()
    except ValueError:
        name = "application" if 3000 <= code < 5000 else "unknown"
    if code == 1000:
        name = "OK"
    reason = f" {visible(closed.reason)}" if closed.reason else ""
    return f"closed: {code} ({name}){reason}"


# ----------------------------------------------------------------------
# Running


def run(args: argparse.Namespace) -> int:
    """Entry point of ``tether connect``."""
    try:
        return asyncio.run(main(args))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def connect_options(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments for :func:`tether.connect` from the flags; raises
    ``ValueError`` for a malformed ``--header``."""
    headers = []
    for header in args.header:
        name, colon, value = header.partition(":")
        if not colon or not name.strip():
            raise ValueError(f"--header {header!r}: expected 'Name: value'")
        headers.append((name.strip(), value.strip()))
    options: dict[str, Any] = dict(engine_options(args))
    options.update(
        additional_headers=headers or None,
        subprotocols=args.subprotocol or None,
        origin=args.origin,
        user_agent=args.user_agent or None,
        open_timeout=args.open_timeout,
        follow_redirects=args.follow_redirects,
    )
    if args.no_proxy:
        options["proxy"] = None
    elif args.proxy:
        options["proxy"] = args.proxy
    if args.url.lower().startswith("wss:"):
        context = ssl.create_default_context(cafile=args.cacert)
        if args.insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        options["ssl"] = context
    return options


async def main(args: argparse.Namespace) -> int:
    from tether.exceptions import InvalidURI
    from tether.protocol.uri import parse_uri

    interactive = not args.execute and sys.stdin.isatty()
    out = Output(use_color(args.color, sys.stdout), args.binary_format, interactive, sys.stdout)
    try:
        parse_uri(args.url)
        options = connect_options(args)
    except (InvalidURI, ValueError, OSError) as exc:
        out.error(str(exc))
        return EXIT_USAGE
    if args.count is not None and args.count < 1:
        out.error("--count must be at least 1")
        return EXIT_USAGE
    if args.execute:
        return await one_shot(args, options, out)
    return await Session(args, options, out, interactive).run()


async def one_shot(args: argparse.Namespace, options: dict[str, Any], out: Output) -> int:
    """Send the ``-x`` messages, print replies until timeout, count or close."""
    import tether

    try:
        ws = await tether.connect(args.url, **options)
    except Exception as exc:
        out.error(describe_error(exc, args.url))
        return EXIT_CONNECT_FAILED
    loop = asyncio.get_running_loop()
    received = 0
    try:
        for message in args.execute:
            await ws.send(message)
        deadline = loop.time() + args.timeout
        while args.count is None or received < args.count:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                message = await asyncio.wait_for(ws.recv(), remaining)
            except asyncio.TimeoutError:
                break
            out.message(message)
            received += 1
    except tether.ConnectionClosed as exc:
        out.info(describe_close(exc))
        if not isinstance(exc, tether.ConnectionClosedOK):
            return EXIT_ABNORMAL_CLOSE
        return EXIT_NO_REPLY if args.count is not None and received < args.count else EXIT_OK
    await ws.close()
    if args.count is not None and received < args.count:
        out.error(f"{received} of {args.count} replies within {args.timeout} s")
        return EXIT_NO_REPLY
    return EXIT_OK


class Session:
    """An interactive (or piped) session: one task reads the connection(s),
    one reads your lines."""

    def __init__(
        self,
        args: argparse.Namespace,
        options: dict[str, Any],
        out: Output,
        interactive: bool,
    ) -> None:
        self.args = args
        self.options = options
        self.out = out
        self.interactive = interactive
        self.ws: Any = None
        self.client: Any = None
        self.outbox: Any = None
        self.status = EXIT_OK
        self.received = 0
        self.eof = False
        self.background: set[asyncio.Task[Any]] = set()

    async def run(self) -> int:
        import tether
        from tether.aio.reconnect import OutgoingQueue, Retry

        if self.args.reconnect:
            self.outbox = OutgoingQueue(1000, "drop_oldest")
            self.client = tether.connect(
                self.args.url,
                retry=Retry(initial=0.5, cap=30.0),
                outbox=self.outbox,
                on_attempt=self._on_attempt,
                **self.options,
            )
            connections: Awaitable[None] = self._reconnecting()
        else:
            try:
                self.ws = await tether.connect(self.args.url, **self.options)
            except Exception as exc:
                self.out.error(describe_error(exc, self.args.url))
                return EXIT_CONNECT_FAILED
            self._connected(self.ws)
            connections = self._read(self.ws)
        if self.interactive:
            self.out.info("type /help for commands, Ctrl-D to quit")
        reading = asyncio.ensure_future(connections)
        typing = asyncio.ensure_future(self._input())
        try:
            await asyncio.wait({reading, typing}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not typing.done():
                typing.cancel()
            if not reading.done():
                if self.eof and not self.interactive:
                    await self._linger(reading)
                await self._close(1000, "")
            try:
                await asyncio.wait_for(reading, 15)
            except asyncio.TimeoutError:  # pragma: no cover - close_timeout is shorter
                reading.cancel()
            except Exception as exc:
                self.out.error(describe_error(exc, self.args.url))
                self.status = EXIT_CONNECT_FAILED
            await asyncio.gather(typing, *self.background, return_exceptions=True)
        return self.status

    async def _linger(self, reading: asyncio.Future[None]) -> None:
        """After the last piped line: print replies for ``--timeout``
        seconds (less once ``--count`` replies arrived and nothing is queued),
        as ``-x`` does."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.args.timeout
        count = self.args.count
        outbox = self.outbox
        while not reading.done() and loop.time() < deadline:
            queued = outbox is not None and outbox.pending > 0
            if count is not None and self.received >= count and not queued:
                break
            await asyncio.sleep(0.02)
        if outbox is not None and outbox.pending:
            self.out.info(f"{outbox.pending} queued message(s) not sent")
        if count is not None and self.received < count:
            self.out.error(f"{self.received} of {count} replies within {self.args.timeout} s")
            self.status = EXIT_NO_REPLY

    # -- connections

    def _connected(self, ws: Any) -> None:
        notes = []
        if ws.subprotocol:
            notes.append(f"subprotocol {ws.subprotocol}")
        extensions = ws.response.headers.get("Sec-WebSocket-Extensions") if ws.response else None
        if extensions:
            notes.append(extensions.split(";")[0])
        extra = f" ({', '.join(notes)})" if notes else ""
        self.out.info(f"connected to {self.args.url}{extra}")

    async def _read(self, ws: Any) -> None:
        import tether

        try:
            async for message in ws:
                self.out.message(message)
                self.received += 1
            closed = ws.closed_exception
        except tether.ConnectionClosed as exc:
            closed = exc
        if self.args.reconnect:
            return  # _on_attempt says how each connection ended
        self.out.info(describe_close(closed))
        if not isinstance(closed, tether.ConnectionClosedOK):
            self.status = EXIT_ABNORMAL_CLOSE

    async def _reconnecting(self) -> None:
        async for ws in self.client:
            self.ws = ws
            self._connected(ws)
            await self._read(ws)
            self.ws = None

    def _on_attempt(self, attempt: Any) -> None:
        if attempt.outcome == "failed" and attempt.will_retry:
            self.out.info(
                f"attempt {attempt.number} failed: {describe_error(attempt.error, self.args.url)}"
                "; retrying"
            )
        elif attempt.outcome == "closed" and attempt.closed is not None:
            self.out.info(describe_close(attempt.closed))

    async def _close(self, code: int, reason: str) -> None:
        if self.ws is not None:
            await self.ws.close(code, reason)
        if self.client is not None and self.client.reconnecting is not None:
            await self.client.reconnecting.aclose()

    # -- input

    async def _input(self) -> None:
        read_line = self._prompt_reader() if self.interactive else None
        if read_line is None:
            read_line = self._line_reader()
            await self._input_loop(read_line)
            return
        from prompt_toolkit.patch_stdout import patch_stdout

        # While the prompt is up, whatever is printed goes above it and the
        # line being typed is redrawn intact.
        with patch_stdout(raw=True):
            await self._input_loop(read_line)

    async def _input_loop(self, read_line: Callable[[], Awaitable[str | None]]) -> None:
        while True:
            try:
                line = await read_line()
            except EOFError:
                self.eof = True
                return
            except KeyboardInterrupt:
                self.status = EXIT_INTERRUPTED
                return
            if line is None:
                self.eof = True
                return
            if not await self._handle(line):
                return

    def _prompt_reader(self) -> Callable[[], Awaitable[str | None]] | None:
        try:
            from prompt_toolkit import PromptSession
            from prompt_toolkit.history import FileHistory, History, InMemoryHistory
        except ImportError:  # pragma: no cover - the [cli] extra is not installed
            return None
        history: History
        try:
            state = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
            path = pathlib.Path(state) / "tether" / "connect_history"
            path.parent.mkdir(parents=True, exist_ok=True)
            history = FileHistory(str(path))
        except OSError:
            history = InMemoryHistory()
        session: PromptSession[str] = PromptSession(history=history)

        async def read_line() -> str | None:
            return await session.prompt_async("> ")

        return read_line

    def _line_reader(self) -> Callable[[], Awaitable[str | None]]:
        """Lines from stdin, read by a daemon thread (it never blocks exit)."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[str | None] = asyncio.Queue()

        def pump() -> None:
            for line in sys.stdin:
                loop.call_soon_threadsafe(queue.put_nowait, line.rstrip("\n"))
            loop.call_soon_threadsafe(queue.put_nowait, None)

        threading.Thread(target=pump, name="tether-connect-stdin", daemon=True).start()
        return queue.get

    async def _handle(self, line: str) -> bool:
        """Act on one line; False to stop reading input."""
        if line.startswith("//"):
            return await self._send(line[1:])
        if not line.startswith("/"):
            return await self._send(line)
        command, _, rest = line[1:].partition(" ")
        rest = rest.strip()
        if command == "help":
            self.out._print(HELP)
        elif command == "quit":
            await self._close(1000, "")
            return False
        elif command == "close":
            code_text, _, reason = rest.partition(" ")
            try:
                code = int(code_text) if code_text else 1000
                await self._close(code, reason)
            except ValueError as exc:
                self.out.info(f"cannot close: {exc}")
                return True
            return False
        elif command == "ping":
            self._spawn(self._ping(rest))
        elif command == "binary":
            try:
                data = bytes.fromhex(rest)
            except ValueError:
                self.out.info("cannot send: /binary wants hex digits, like /binary 00ff10")
                return True
            return await self._send(data)
        elif command == "base64":
            try:
                data = base64.b64decode(rest, validate=True)
            except binascii.Error:
                self.out.info("cannot send: /base64 wants base64 text")
                return True
            return await self._send(data)
        else:
            self.out.info(f"unknown command /{command}: try /help (//{command} sends it)")
        return True

    async def _send(self, message: str | bytes) -> bool:
        import tether

        if self.outbox is not None:
            await self.outbox.send(message)
            if self.outbox.connection is None:
                self.out.info(f"not connected: queued ({self.outbox.pending} waiting)")
            return True
        try:
            await self.ws.send(message)
        except tether.ConnectionClosed:
            self.out.info("not sent: the connection is closed")
            return False
        return True

    async def _ping(self, payload: str) -> None:
        import tether

        ws = self.ws
        if ws is None:
            self.out.info("not connected")
            return
        try:
            latency = await asyncio.wait_for(ws.ping(payload or None), 30)
        except asyncio.TimeoutError:
            self.out.info("no pong within 30 s")
        except (tether.ConnectionClosed, ValueError) as exc:
            self.out.info(f"ping failed: {exc}")
        else:
            self.out.info(f"pong in {latency * 1000:.2f} ms")

    def _spawn(self, coroutine: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self.background.add(task)
        task.add_done_callback(self.background.discard)
