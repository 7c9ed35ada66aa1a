"""Helpers for the hub tests: a real redis-server, `tether serve` subprocesses,
and the memory of a process.

Nothing here is a test; test_hub*.py, test_serve_workers.py and
test_browser_chat.py import it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

TESTS = Path(__file__).resolve().parent
#: How the tests start `tether serve` (the workers it spawns run
#: `python -m tether.cli.serve`).
SERVE_COMMAND = ["-m", "tether", "serve"]
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, timeout: float = 10.0) -> None:
    """Wait until something accepts TCP connections on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on 127.0.0.1:{port}") from None
            time.sleep(0.02)


class RedisServer:
    """Debian's redis-server on a free loopback port, in a temporary folder,
    with persistence off. :meth:`stop` kills it (SIGKILL: a crash), :meth:`start`
    starts it again on the same port."""

    def __init__(self) -> None:
        if not os.path.exists(REDIS_SERVER):
            raise RuntimeError("redis-server is not installed: run scripts/setup")
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="tether-redis-")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--dir", self.dir,
                "--daemonize", "no", "--loglevel", "warning"]  # fmt: skip
        self.proc = subprocess.Popen(args, cwd=self.dir, stdout=subprocess.DEVNULL)
        wait_port(self.port)

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None

    def close(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    def command(self, *args: str) -> bytes:
        """Run one command with a tiny RESP client (no redis-py: usable from
        sync code and while the event loop is busy)."""
        parts = [f"*{len(args)}\r\n".encode()]
        for arg in args:
            data = arg.encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            sock.sendall(b"".join(parts))
            return sock.recv(65536)

    def numsub(self, channel: str) -> int:
        """Subscribers of ``channel`` (PUBSUB NUMSUB)."""
        reply = self.command("PUBSUB", "NUMSUB", channel).split(b"\r\n")
        return int(reply[-2].lstrip(b":"))


@contextlib.contextmanager
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    try:
        server.start()
        yield server
    finally:
        server.close()


class Serve:
    """`tether serve SPEC ...` in a subprocess; stderr is collected in ``lines``."""

    def __init__(self, spec: str, *args: str, cwd: Path = TESTS, env: dict[str, str] | None = None):
        self.port = free_port()
        command = [sys.executable, *SERVE_COMMAND, spec, "--port", str(self.port), *args]
        environ = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
        self.proc = subprocess.Popen(
            command, cwd=cwd, env=environ, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            start_new_session=True,
        )  # fmt: skip
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            with self._cond:
                self.lines.append(raw.decode(errors="replace").rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def wait_for(self, text: str, count: int = 1, timeout: float = 20.0) -> list[str]:
        """Wait until ``count`` stderr lines contain ``text``; returns them."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [line for line in self.lines if text in line]
                if len(found) >= count:
                    return found
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    raise TimeoutError(
                        f"{text!r} x{count} not seen; stderr:\n" + "\n".join(self.lines[-40:])
                    )
                self._cond.wait(min(left, 0.2))

    def terminate(self, timeout: float = 20.0) -> int:
        """SIGTERM, then wait; SIGKILL to the whole group if it hangs."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
            raise

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(Exception):
                self.terminate(10)
        if self.proc.poll() is None:  # pragma: no cover - last resort
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)


def rss_kib(pid: int) -> int:
    """The resident set size of process ``pid`` in KiB (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


async def clients_on_workers(
    port: int, per_worker: int, workers: int = 2
) -> tuple[dict[str, list[Any]], dict[str, int]]:
    """Connect to ``hub_app`` on ``port`` until each of ``workers`` workers has
    ``per_worker`` clients (the kernel picks the worker of each connection);
    extra connections are closed. Returns ``({worker id: [client, ...]},
    {worker id: pid})``."""
    import asyncio
    import json

    import tether

    found: dict[str, list[Any]] = {}
    pids: dict[str, int] = {}
    for _ in range(40 * per_worker * workers):
        client = await tether.connect(f"ws://127.0.0.1:{port}/")
        try:
            hello = json.loads(await asyncio.wait_for(client.recv(), 10))
        except BaseException:
            client.abort()
            for group in found.values():
                for other in group:
                    other.abort()
            raise
        pids[hello["hello"]] = hello["pid"]
        group = found.setdefault(hello["hello"], [])
        if len(group) < per_worker:
            group.append(client)
        else:
            await client.close()
        if len(found) == workers and all(len(g) == per_worker for g in found.values()):
            return found, pids
    for group in found.values():
        for client in group:
            await client.close()
    raise AssertionError(f"connections did not spread over {workers} workers: {found}")
