"""``tether connect``: one-shot mode and piped input as subprocesses (with
their exit codes), and the interactive prompt in a real terminal (tmux:
send-keys to type, capture-pane to read the screen) against ``tether demo``."""

from __future__ import annotations

import asyncio
import os
import pathlib
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

import tether
from conftest import echo_handler
from test_reconnect import ROOT, free_port
from tether.aio.server import Upgrade

PYTHON = sys.executable
ENV = dict(os.environ, PYTHONPATH=str(ROOT / "src"), NO_COLOR="")
ENV.pop("NO_COLOR")
for _name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
    ENV.pop(_name, None)


async def tether_connect(
    *args: str, stdin: bytes | None = None, timeout: float = 30
) -> tuple[int, str, str]:
    """Run ``python -m tether connect ARGS``; (exit status, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        PYTHON, "-m", "tether", "connect", *args,
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV,
    )  # fmt: skip
    try:
        out, err = await asyncio.wait_for(proc.communicate(stdin), timeout)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


class Scripted:
    """An app: records requests; the first message decides what the server does."""

    def __init__(self) -> None:
        self.requests: list[Any] = []

    def __tether_dispatch__(self, connection: Any, request: Any) -> Any:
        self.requests.append(request)
        if request.url_path == "/missing":
            return tether.Response.text("no such feed\nsecond line", 404)
        return Upgrade(self.handler)

    async def handler(self, ws: tether.Connection) -> None:
        async for message in ws:
            if message == "close 4000":
                await ws.close(4000, "nope")
            elif message == "close 1000":
                await ws.close(1000, "done")
            elif message == "binary":
                await ws.send(b"\x00\x01\xfe\xff")
            elif message == "escape":
                await ws.send("\x1b[31mred\x07")
            elif message == "silence":
                pass
            else:
                await ws.send(message)


@pytest.fixture
async def scripted() -> AsyncIterator[tuple[Scripted, str]]:
    app = Scripted()
    async with tether.serve(app, "127.0.0.1", 0) as server:
        yield app, f"ws://127.0.0.1:{server.port}"


# ----------------------------------------------------------------------
# One-shot mode


async def test_one_shot_prints_the_replies_and_exits_0(scripted: tuple[Scripted, str]) -> None:
    app, url = scripted
    status, out, err = await tether_connect(
        f"{url}/feed", "-x", "hello", "-x", "wörld", "-n", "2",
        "-H", "X-Token: abc", "-s", "chat", "--origin", "https://me.example",
    )  # fmt: skip
    assert (status, out) == (0, "hello\nwörld\n")
    assert "Traceback" not in err
    headers = app.requests[0].headers
    assert headers["X-Token"] == "abc"
    assert headers["Sec-WebSocket-Protocol"] == "chat"
    assert headers["Origin"] == "https://me.example"
    assert headers["User-Agent"] == "tether-connect"


async def test_one_shot_waits_for_the_timeout_without_count(
    scripted: tuple[Scripted, str],
) -> None:
    start = time.monotonic()
    status, out, _ = await tether_connect(f"{scripted[1]}/", "-x", "one", "--timeout", "0.5")
    assert (status, out) == (0, "one\n")
    assert time.monotonic() - start >= 0.5


async def test_one_shot_exit_4_when_replies_are_missing(scripted: tuple[Scripted, str]) -> None:
    status, out, err = await tether_connect(
        f"{scripted[1]}/", "-x", "silence", "-n", "1", "--timeout", "0.3"
    )
    assert (status, out) == (4, "")
    assert "0 of 1 replies within 0.3 s" in err


async def test_one_shot_close_codes(scripted: tuple[Scripted, str]) -> None:
    status, _, err = await tether_connect(f"{scripted[1]}/", "-x", "close 4000")
    assert status == 3
    assert "* closed: 4000 (application) nope" in err
    status, _, err = await tether_connect(f"{scripted[1]}/", "-x", "close 1000")
    assert status == 0
    assert "* closed: 1000 (OK) done" in err


async def test_binary_is_shown_distinctly_and_control_characters_escaped(
    scripted: tuple[Scripted, str],
) -> None:
    url = f"{scripted[1]}/"
    status, out, _ = await tether_connect(url, "-x", "binary", "-n", "1")
    assert (status, out) == (0, "[binary 4 B] 0001feff\n")
    status, out, _ = await tether_connect(
        url, "-x", "binary", "-n", "1", "--binary-format", "base64"
    )
    assert (status, out) == (0, "[binary 4 B, base64] AAH+/w==\n")
    status, out, _ = await tether_connect(url, "-x", "escape", "-n", "1")
    assert (status, out) == (0, "\\x1b[31mred\\x07\n")  # nothing reaches the terminal raw
    assert "\x1b" not in out


async def test_connection_failures_are_one_line_and_exit_1(
    scripted: tuple[Scripted, str],
) -> None:
    port = free_port()
    status, out, err = await tether_connect(f"ws://127.0.0.1:{port}/", "-x", "hi")
    assert status == 1 and out == ""
    assert err == f"tether connect: cannot connect to ws://127.0.0.1:{port}/: Connection refused\n"
    status, _, err = await tether_connect(f"{scripted[1]}/missing", "-x", "hi")
    assert status == 1
    assert err == (
        "tether connect: the server refused the upgrade: HTTP 404 Not Found: no such feed\n"
    )
    status, _, err = await tether_connect(
        f"ws://127.0.0.1:{port}/", "-x", "hi", "--proxy", f"http://127.0.0.1:{port}"
    )
    assert status == 1
    assert err == (
        f"tether connect: cannot connect to ws://127.0.0.1:{port}/: "
        f"cannot reach proxy http://127.0.0.1:{port}: Connection refused\n"
    )


async def test_tls_failures_say_what_to_do(
    tls_files: tuple[pathlib.Path, pathlib.Path], server_ssl: Any
) -> None:
    async with tether.serve(echo_handler, "127.0.0.1", 0, ssl=server_ssl) as server:
        url = f"wss://localhost:{server.port}/"
        status, _, err = await tether_connect(url, "-x", "hi")
        assert status == 1
        assert "certificate verify failed" not in err or "--cacert" in err
        assert err.startswith(f"tether connect: cannot connect to {url}: TLS certificate: ")
        assert err.endswith("(use --cacert FILE, or --insecure)\n")
        status, out, _ = await tether_connect(
            url, "-x", "hi", "-n", "1", "--cacert", str(tls_files[0])
        )
        assert (status, out) == (0, "hi\n")
        status, out, _ = await tether_connect(url, "-x", "hi", "-n", "1", "-k")
        assert (status, out) == (0, "hi\n")


@pytest.mark.parametrize(
    "args",
    [
        ["http://127.0.0.1/", "-x", "hi"],
        ["ws://127.0.0.1:9/", "-x", "hi", "-H", "no colon here"],
        ["ws://127.0.0.1:9/", "--no-such-flag"],
        ["ws://127.0.0.1:9/", "-x", "hi", "-n", "0"],
        [],
    ],
)
async def test_usage_errors_exit_2(args: list[str]) -> None:
    status, out, err = await tether_connect(*args)
    assert status == 2 and out == ""
    assert err.strip() and "Traceback" not in err


async def test_piped_lines_are_sent_then_the_connection_closes(
    scripted: tuple[Scripted, str],
) -> None:
    status, out, err = await tether_connect(
        f"{scripted[1]}/", "-n", "4", stdin=b"one\n//slash\n/binary 00ff\nbinary\n"
    )
    assert status == 0
    assert out == "one\n/slash\n[binary 2 B] 00ff\n[binary 4 B] 0001feff\n"
    assert "* connected to" in err and "* closed: 1000 (OK)" in err
    assert "\x1b[" not in out + err  # not a terminal: no colour


async def test_piped_lines_wait_for_a_reconnect() -> None:
    attempts = 0

    class Flaky:
        """Refuses the first upgrade (503, retried), then echoes; the
        second connection is closed with 1012, the third stays."""

        def __tether_dispatch__(self, connection: Any, request: Any) -> Any:
            nonlocal attempts
            attempts += 1
            if attempts == 1:
                return tether.Response(503)
            return Upgrade(self.handler)

        async def handler(self, ws: tether.Connection) -> None:
            async for message in ws:
                await ws.send(message)
                if attempts == 2:
                    await ws.close(1012, "restarting")

    async with tether.serve(Flaky(), "127.0.0.1", 0) as server:
        status, out, err = await tether_connect(
            f"ws://127.0.0.1:{server.port}/", "--reconnect", "-n", "1", stdin=b"queued\n"
        )
    assert status == 0, err
    assert "attempt 1 failed: the server refused the upgrade: HTTP 503" in err
    assert "queued (1 waiting)" in err
    assert "closed: 1012 (service restart) restarting" in err
    assert attempts >= 2
    assert out == "queued\n"


# ----------------------------------------------------------------------
# A real terminal: tmux


class Tmux:
    """One tmux server of our own (its own socket), one window."""

    def __init__(self, tmp: pathlib.Path) -> None:
        self.socket = f"tether-test-{uuid.uuid4().hex[:8]}"
        self.tmp = tmp

    def run(self, *args: str) -> str:
        result = subprocess.run(
            ["tmux", "-L", self.socket, *args],
            capture_output=True, text=True, timeout=10, check=True,
        )  # fmt: skip
        return result.stdout

    def start(self, command: str) -> None:
        env = " ".join(
            f"{name}='{value}'"
            for name, value in {
                "PYTHONPATH": str(ROOT / "src"),
                "XDG_STATE_HOME": str(self.tmp / "state"),
                "TERM": "xterm-256color",
            }.items()
        )
        # After the client exits, say how, and keep the window for reading.
        shell = f'env {env} {command}; echo "[exit $?]"; sleep 60'
        self.run("new-session", "-d", "-s", "main", "-x", "110", "-y", "30", shell)

    def keys(self, *keys: str) -> None:
        self.run("send-keys", "-t", "main", *keys)

    def screen(self, escapes: bool = False) -> str:
        return self.run("capture-pane", "-p", *(["-e"] if escapes else []), "-t", "main")

    def lines(self) -> list[str]:
        return [line.rstrip() for line in self.screen().splitlines() if line.strip()]

    def wait_for(self, predicate: Callable[[str], bool], what: str, timeout: float = 15) -> str:
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen()
            if predicate(screen):
                return screen
            if time.monotonic() > deadline:
                pytest.fail(f"waited {timeout} s for {what}; the screen:\n{screen}")
            time.sleep(0.05)

    def kill(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True, timeout=10)


@pytest.fixture
def tmux(tmp_path: pathlib.Path) -> Iterator[Tmux]:
    assert shutil.which("tmux"), "tmux is needed (scripts/setup installs it)"
    terminal = Tmux(tmp_path)
    try:
        yield terminal
    finally:
        terminal.kill()


def start_server(*command: str) -> subprocess.Popen[bytes]:
    """A server subprocess; returns once it accepts connections."""
    port = int(command[command.index("--port") + 1]) if "--port" in command else int(command[-1])
    proc = subprocess.Popen(
        [PYTHON, *command], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, env=ENV,
    )  # fmt: skip
    deadline = time.monotonic() + 20
    import socket

    while True:
        assert proc.poll() is None, f"{command} exited with {proc.returncode}"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"{command} did not start")
            time.sleep(0.05)


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.kill()
    proc.wait(10)


def test_interactive_against_tether_demo(tmux: Tmux) -> None:
    port = free_port()
    demo = start_server("-m", "tether", "demo", "--host", "127.0.0.1", "--port", str(port))
    try:
        tmux.start(f"{PYTHON} -m tether connect ws://127.0.0.1:{port}/subscriptions")
        tmux.wait_for(lambda s: "< Greetings!" in s, "the demo's greeting")
        tmux.wait_for(lambda s: s.rstrip().endswith(">"), "the prompt")
        assert "* connected to ws://127.0.0.1:" in tmux.screen()
        # Colour on a terminal: incoming text in green.
        assert "\x1b[32m" in tmux.screen(escapes=True)

        tmux.keys("foo", "Enter")
        screen = tmux.wait_for(lambda s: "< bar" in s, "bar in answer to foo")
        lines = [line for line in tmux.lines() if not line.startswith("*")]
        assert lines[lines.index("> foo") + 1] == "< bar"

        # Line editing: fix a typo in the middle, then recall with Up.
        tmux.keys("bxr", "Left", "BSpace", "a", "Enter")  # bxr -> br -> bar
        tmux.wait_for(lambda s: "> bar\n< foo" in s, "foo in answer to bar")
        tmux.keys("Up")
        tmux.wait_for(lambda s: s.rstrip().endswith("> bar"), "history recalls the last line")
        tmux.keys("C-u", "/ping", "Enter")
        tmux.wait_for(lambda s: "* pong in " in s, "the pong")

        tmux.keys("/close 1000", "Enter")
        screen = tmux.wait_for(lambda s: "[exit " in s, "the client to exit")
        assert "* closed: 1000 (OK)" in screen
        assert "[exit 0]" in screen
        assert "Traceback" not in screen
    finally:
        stop(demo)


#: A server that sends "tick N" every 0.15 s (30 times) and echoes what it gets.
TICK_SERVER = """
import asyncio, sys, tether

async def main():
    async def handler(ws):
        async def ticks():
            for n in range(1, 31):
                await asyncio.sleep(0.15)
                await ws.send(f"tick {n}")
        task = asyncio.create_task(ticks())
        try:
            async for message in ws:
                await ws.send(message)
        finally:
            task.cancel()
    async with tether.serve(handler, "127.0.0.1", int(sys.argv[1])):
        await asyncio.Future()

asyncio.run(main())
"""


def test_messages_arriving_while_typing_do_not_break_the_line(tmux: Tmux) -> None:
    port = free_port()
    server = start_server("-c", TICK_SERVER, str(port))
    try:
        tmux.start(f"{PYTHON} -m tether connect ws://127.0.0.1:{port}/")
        tmux.wait_for(lambda s: "< tick 1" in s, "the first tick")
        tmux.wait_for(lambda s: s.rstrip().endswith(">"), "the prompt")
        tmux.keys("half typ")
        captures: list[list[str]] = []

        def settled(screen: str) -> bool:
            lines = [line.rstrip() for line in screen.splitlines() if line.strip()]
            captures.append(lines)
            return "< tick 6" in lines and lines[-1] == "> half typ"

        # Each tick erases the prompt, prints above it and redraws it: a
        # capture may fall between the two, but the typed text must never be
        # mixed into a message line, and the prompt must come back whole.
        screen = tmux.wait_for(settled, "ticks while typing, then the prompt redrawn")
        for lines in captures:
            assert all("tick" not in line for line in lines if "half" in line), lines
        lines = [line.rstrip() for line in screen.splitlines() if line.strip()]
        assert all("half" not in line for line in lines[:-1])
        ticks = [line for line in lines if line.startswith("< tick")]
        assert ticks == [f"< tick {n}" for n in range(1, len(ticks) + 1)]
        tmux.keys("ed", "Enter")
        screen = tmux.wait_for(lambda s: "< half typed" in s, "the echo of the line")
        assert "> half typed" in screen
        tmux.keys("C-d")
        screen = tmux.wait_for(lambda s: "[exit " in s, "the client to exit")
        assert "[exit 0]" in screen
    finally:
        stop(server)


def test_interactive_connection_failure_is_one_line(tmux: Tmux) -> None:
    port = free_port()
    tmux.start(f"{PYTHON} -m tether connect ws://127.0.0.1:{port}/")
    screen = tmux.wait_for(lambda s: "[exit " in s, "the client to exit")
    assert tmux.lines() == [
        f"tether connect: cannot connect to ws://127.0.0.1:{port}/: Connection refused",
        "[exit 1]",
    ]
    assert "Traceback" not in screen
