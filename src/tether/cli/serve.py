"""``tether serve module:attr``: serve an app, in one process or many.

::

    tether serve myapp:app                        # 127.0.0.1:8000, one process
    tether serve myapp:app --workers 4 --port 8080 --redis redis://127.0.0.1:6379/0

``module:attr`` follows uvicorn's convention: import ``module`` (the current
folder, or ``--app-dir``, is put first on ``sys.path``) and take its attribute
``attr`` (dots allowed: ``pkg.mod:factory.app``). The attribute is anything
:func:`tether.serve` takes: an async handler ``async def handler(ws)``, a
:class:`~tether.routing.Routes`, or any app with ``__tether_dispatch__`` (the
faces' apps are).

``--workers N`` (N > 1) starts a supervisor and N worker processes. Each
worker listens on the same port with ``SO_REUSEPORT``, so the kernel spreads
new connections among them. The supervisor restarts a worker that dies (after
0.1 s, backing off to 5 s if it keeps dying at once), and on SIGTERM or SIGINT
tells every worker to shut down: each sends a close frame with 1001 (going
away) to its clients and waits for the closing handshakes, then exits.

``--redis URL`` makes the workers share hub topics: it sets
``TETHER_REDIS_URL`` in their environment, and
:func:`tether.hub.default_hub` then uses a Redis backplane. Apps that publish
through ``default_hub()`` need no change between one process and many. Each
worker also gets ``TETHER_WORKER_ID`` (1..N).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import logging
import os
import signal
import socket
import sys
from typing import Any

from tether.allocator import tune_server
from tether.cli.common import add_engine_options, engine_options

__all__ = ["WORKER_ID_ENV", "Supervisor", "Worker", "add_parser", "load_app", "main"]

#: Set in each worker's environment: its number, from 1.
WORKER_ID_ENV = "TETHER_WORKER_ID"

logger = logging.getLogger("tether.serve")

_RESTART_DELAY = 0.1
_MAX_RESTART_DELAY = 5.0
_STABLE_AFTER = 5.0  # a worker that lived this long resets the restart delay


def add_parser(subparsers: Any) -> None:
    """Register ``tether serve``."""
    parser = subparsers.add_parser(
        "serve",
        help="serve an app (module:attr), in one process or several workers",
        description="Serve module:attr (an async handler, a Routes, or an app with "
        "__tether_dispatch__). With --workers N, N processes share the port (SO_REUSEPORT); "
        "with --redis URL their hub topics are shared through Redis.",
    )
    parser.add_argument("app", metavar="module:attr", help="the app to serve, e.g. myapp:app")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port to bind (default 8000)")
    parser.add_argument(
        "--workers", type=int, default=1, help="worker processes sharing the port (default 1)"
    )
    parser.add_argument(
        "--redis", metavar="URL", default=None,
        help="Redis URL for the hub backplane (sets TETHER_REDIS_URL for the app)",
    )  # fmt: skip
    parser.add_argument(
        "--app-dir", default=".", help="folder put first on sys.path to import the app (default .)"
    )
    parser.add_argument(
        "--shutdown-timeout", type=float, default=20.0,
        help="seconds the supervisor waits for workers to exit before killing them (default 20)",
    )  # fmt: skip
    parser.add_argument("--worker-id", type=int, default=None, help=argparse.SUPPRESS)
    add_engine_options(parser)
    parser.set_defaults(run=run)


def load_app(spec: str, app_dir: str = ".") -> Any:
    """Import ``module:attr`` and return the attribute (a handler or an app).

    Raises ``ValueError`` with a clear message for a bad spec, a missing
    attribute or an object :func:`tether.serve` cannot serve.
    """
    module_name, colon, attrs = spec.partition(":")
    if not colon or not module_name or not attrs:
        raise ValueError(f"expected module:attr (like myapp:app), not {spec!r}")
    path = os.path.abspath(app_dir)
    if path not in sys.path:
        sys.path.insert(0, path)
    module = importlib.import_module(module_name)
    target: Any = module
    for attr in attrs.split("."):
        try:
            target = getattr(target, attr)
        except AttributeError:
            raise ValueError(f"{module_name} has no attribute {attrs!r}") from None
    if hasattr(target, "__tether_dispatch__"):
        return target
    if inspect.iscoroutinefunction(target) or callable(target):
        return target
    raise ValueError(
        f"{spec} is a {type(target).__name__}: expected an async handler, a Routes, "
        "or an app with __tether_dispatch__"
    )


def _say(line: str) -> None:
    """One line on stderr, in one write (workers share the supervisor's stderr)."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def run(args: argparse.Namespace) -> int:
    """Run ``tether serve``: one server, or a supervisor of workers."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.redis:
        os.environ["TETHER_REDIS_URL"] = args.redis
    if args.workers < 1:
        _say("tether serve: --workers must be at least 1")
        return 2
    if args.workers == 1 or args.worker_id is not None:
        try:
            app = load_app(args.app, args.app_dir)
        except (ValueError, ImportError) as exc:
            _say(f"tether serve: {exc}")
            return 2
        tune_server()
        return asyncio.run(Worker(app, args).run())
    return asyncio.run(Supervisor(args).run())


def _on_signals(stop: Any) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)


# ----------------------------------------------------------------------
# One server (a worker, or the whole thing with --workers 1)


class Worker:
    """Serves ``app`` until :meth:`stop` (SIGINT/SIGTERM), then shuts down
    gracefully: 1001 to every client, then the default hub is closed.

    With ``args.worker_id`` set it binds with ``SO_REUSEPORT`` (its
    siblings share the port) and stops by itself if its supervisor dies.
    """

    def __init__(self, app: Any, args: argparse.Namespace) -> None:
        self.app = app
        self.args = args
        self.port: int | None = None
        self._stop: asyncio.Future[None] | None = None

    def stop(self) -> None:
        """Start the graceful shutdown."""
        if self._stop is not None and not self._stop.done():
            self._stop.set_result(None)

    async def run(self, signals: bool = True) -> int:
        from tether.aio.server import serve
        from tether.hub import set_default_hub

        loop = asyncio.get_running_loop()
        args = self.args
        worker = args.worker_id
        self._stop = loop.create_future()
        server = await serve(
            self.app, args.host, args.port, reuse_port=worker is not None, **engine_options(args)
        )
        self.port = server.port
        if signals:
            _on_signals(self.stop)
        watcher = None
        if worker is not None:
            # A worker whose supervisor died (SIGKILL) would serve on
            # forever: notice the new parent and shut down.
            watcher = loop.create_task(self._watch_parent(os.getppid()))
            name = f"worker {worker} (pid {os.getpid()})"
        else:
            name = f"pid {os.getpid()}"
        _say(f"tether: {name} listening on ws://{args.host}:{server.port}/")
        await self._stop
        # Server.close sends 1001 (going away) to every client and waits for
        # the closing handshakes (bounded by close_timeout).
        server.close()
        await server.wait_closed()
        if watcher is not None:
            watcher.cancel()
        hub = set_default_hub(None)
        if hub is not None:
            await hub.close()
        _say(f"tether: {name} stopped")
        return 0

    async def _watch_parent(self, parent: int) -> None:
        while os.getppid() == parent:
            await asyncio.sleep(1.0)
        self.stop()


# ----------------------------------------------------------------------
# The supervisor


def _reserve_port(host: str, port: int) -> socket.socket:
    """Bind (without listening) a SO_REUSEPORT socket on host:port: it picks
    the port when 0 is asked, and holds it while the workers bind theirs."""
    info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(info[0], socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(info[4])
    return sock


class Supervisor:
    """Runs ``args.workers`` worker processes on one port; restarts a worker
    that exits; on :meth:`stop` (SIGINT/SIGTERM) sends SIGTERM to every
    worker, waits ``args.shutdown_timeout`` for them, then kills the rest.

    ``pids`` maps each worker number (from 1) to its current process id.
    """

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.port: int | None = None
        self.pids: dict[int, int] = {}
        self._stopping: asyncio.Event | None = None
        self._procs: dict[int, asyncio.subprocess.Process] = {}

    def stop(self) -> None:
        """Start the graceful shutdown of every worker."""
        if self._stopping is not None:
            self._stopping.set()

    def command(self, worker: int) -> list[str]:
        """The command line of worker number ``worker``."""
        args = self.args
        command = [
            sys.executable, "-m", "tether.cli.serve", args.app,
            "--host", args.host, "--port", str(self.port),
            "--app-dir", os.path.abspath(args.app_dir), "--worker-id", str(worker),
        ]  # fmt: skip
        if args.max_size is not None:
            command += ["--max-size", str(args.max_size)]
        if args.no_compression:
            command.append("--no-compression")
        if args.ping_interval is not None:
            command += ["--ping-interval", str(args.ping_interval)]
        return command

    async def run(self, signals: bool = True) -> int:
        if not hasattr(socket, "SO_REUSEPORT"):  # pragma: no cover - Windows
            _say("tether serve: --workers needs SO_REUSEPORT (Linux, BSD, macOS)")
            return 2
        args = self.args
        self._stopping = stopping = asyncio.Event()
        reserved = _reserve_port(args.host, args.port)
        self.port = int(reserved.getsockname()[1])
        if signals:
            _on_signals(self.stop)
        _say(
            f"tether: supervisor (pid {os.getpid()}) serving {args.app} on "
            f"ws://{args.host}:{self.port}/ with {args.workers} workers"
        )
        slots = [asyncio.ensure_future(self._keep_running(n)) for n in range(1, args.workers + 1)]
        try:
            await stopping.wait()
            _say("tether: supervisor shutting down the workers")
            for proc in self._procs.values():
                if proc.returncode is None:
                    proc.send_signal(signal.SIGTERM)
            await asyncio.wait(slots, timeout=args.shutdown_timeout)
            for proc in self._procs.values():
                if proc.returncode is None:
                    _say(f"tether: killing worker pid {proc.pid}")
                    proc.kill()
        finally:
            for slot in slots:
                slot.cancel()
            await asyncio.gather(*slots, return_exceptions=True)
            await asyncio.gather(*(proc.wait() for proc in self._procs.values()))
            reserved.close()
        _say("tether: supervisor stopped")
        return 0

    async def _keep_running(self, worker: int) -> None:
        loop = asyncio.get_running_loop()
        stopping = self._stopping
        assert stopping is not None
        delay = _RESTART_DELAY
        env = dict(os.environ, **{WORKER_ID_ENV: str(worker)})
        while not stopping.is_set():
            started = loop.time()
            proc = await asyncio.create_subprocess_exec(*self.command(worker), env=env)
            self._procs[worker] = proc
            self.pids[worker] = proc.pid
            if stopping.is_set():
                proc.terminate()
            code = await proc.wait()
            if stopping.is_set():
                return
            if loop.time() - started > _STABLE_AFTER:
                delay = _RESTART_DELAY
            _say(
                f"tether: worker {worker} (pid {proc.pid}) exited with code {code}; "
                f"restarting in {delay:.1f} s"
            )
            try:
                await asyncio.wait_for(stopping.wait(), delay)
            except asyncio.TimeoutError:
                pass
            delay = min(delay * 2, _MAX_RESTART_DELAY)


def main(argv: list[str] | None = None) -> int:
    """``python -m tether.cli.serve ...``: ``tether serve`` alone (the workers
    run this way, without importing the other subcommands)."""
    parser = argparse.ArgumentParser(prog="tether")
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["serve", *(sys.argv[1:] if argv is None else argv)])
    return int(args.run(args))


if __name__ == "__main__":
    raise SystemExit(main())
