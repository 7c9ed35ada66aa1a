"""tether against its peers: echo servers under the C load generator, clients against the C echo.

    .venv/bin/python bench/run.py                  # 3 runs of everything, ~12 minutes
    .venv/bin/python bench/run.py --quick          # 1 short run, ~3 minutes
    .venv/bin/python bench/run.py --only a,b,seq --runs 5 --loop uvloop

Each server (tether, websockets, aiohttp, picows, and wsecho, the C ceiling) is
started fresh for each measurement, pinned to CPU 0 (``taskset -c 0``); wsload
and the benchmark clients run on CPU 1. Runs are interleaved (every server
once per run, in a rotating order) so that the machine's drift hits all of
them alike; the table shows medians, and the ratios are medians of the
per-run ratios (tether / peer, from the same run). The raw results go to
``artifacts/bench/<time>.json``.

Workloads (wsload arguments, see ../shared/tools/wsload/README.md):
(a) ``-c 1 -s 16``, (b) ``-c 64 -s 64``, (c) ``-c 64 -s 16384``, (d) ``-c 4 -s 1048576``,
(e) idle ``-i -c 1000`` and ``-i -c 10000`` (server RSS per connection, handshakes/s);
client workloads against wsecho: ``seq`` (send 16 B, await its echo) and
``pipe`` (bursts of 1000 x 16 B), see bench/peers/clients.py; ``seq`` also
runs paired (the clients alternating in one process, see clients.py).

Servers side by side: for (a)-(d), tether, picows and wsecho also run at once
(started together, all pinned to CPU 0) while wsload alternates between them in
windows of 2 s, ``--side-by-side ROUNDS`` rounds (8; 0 for none) in a rotating
order. Neighbouring windows see the same level of the machine, so the medians
of their per-round ratios are steadier than those of whole runs, which can
land on different levels.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
PEERS = REPO / "bench" / "peers"
PYTHON = sys.executable

SERVERS = ["tether", "websockets", "aiohttp", "picows", "wsecho"]
# tether's echo written with `async for` + `await send()` (tether echo uses a
# message handler): run in the same rotation for these workloads, shown apart.
AWAIT_SERVER = "tether-await"
AWAIT_WORKLOADS = ("a", "b", "d")
PYTHON_PEERS = ["websockets", "aiohttp", "picows"]
CLIENTS = ["tether", "tether-cb", "websockets", "aiohttp", "picows"]
# Servers side by side (see measure_side_by_side): the targets' workloads and peers.
SIDE_BY_SIDE_WORKLOADS = ("a", "b", "c", "d")
SIDE_BY_SIDE_SERVERS = ("tether", "picows", "wsecho")
# wsecho made to answer whole messages only (see whole_message_echo): the
# ceiling for (d) of a server that hands complete messages to its handler, as
# tether, picows, websockets and aiohttp do. wsecho streams each read back.
WHOLE_ECHO = "wsecho-whole"
SIDE_BY_SIDE_EXTRA = {"d": (WHOLE_ECHO,)}


@dataclass(frozen=True)
class Workload:
    """One row of the table: wsload arguments (server workloads) or a client mode."""

    key: str
    title: str
    args: tuple[str, ...] = ()
    metric: str = "msgs_per_s"
    unit: str = "msg/s"
    client_mode: str = ""
    higher_is_better: bool = True


WORKLOADS = [
    Workload("a", "(a) 1 conn x 16 B", ("-c", "1", "-s", "16")),
    Workload("b", "(b) 64 conns x 64 B", ("-c", "64", "-s", "64")),
    Workload("c", "(c) 64 conns x 16 KiB", ("-c", "64", "-s", "16384"), "mb_per_s", "MB/s"),
    Workload("d", "(d) 4 conns x 1 MiB", ("-c", "4", "-s", "1048576"), "mb_per_s", "MB/s"),
    Workload(
        "e1k",
        "(e) idle RSS per conn, 1,000",
        ("-i", "-c", "1000"),
        "rss_per_conn_kb",
        "KB",
        higher_is_better=False,
    ),
    Workload(
        "e10k",
        "(e) idle RSS per conn, 10,000",
        ("-i", "-c", "10000"),
        "rss_per_conn_kb",
        "KB",
        higher_is_better=False,
    ),
    Workload("hs", "handshakes/s opening 10,000", ("-i", "-c", "10000"), "handshakes_per_s", "/s"),
    Workload("seq", "client, 1 conn, send+await 16 B", client_mode="seq"),
    Workload("pipe", "client, pipelined 16 B (bursts of 1000)", client_mode="pipe"),
]
# "hs" comes from the same wsload run as "e10k".
DERIVED = {"hs": "e10k"}


def log(*parts: object) -> None:
    print(*parts, file=sys.stderr, flush=True)


# (what wsecho.c says, what wsecho-whole says instead)
WHOLE_ECHO_EDITS = [
    # Reserve the whole reply when a data frame's header arrives: one
    # allocation per message, not a buffer doubling as the payload comes in.
    (
        "ob_put(c, h, put_hdr(h, c->hdr[0], len));",
        "ob_reserve(c, len + 14);\n                ob_put(c, h, put_hdr(h, c->hdr[0], len));",
    ),
    # Keep that buffer between messages (wsecho frees one past 1 MiB).
    ("if (c->ocap > (1u << 20))", "if (c->ocap > (1u << 26))"),
    # Write only when no frame is half read: whole messages, not each read.
    (
        "    }\n    do_flush(c);\n}",
        "    }\n    if (c->state != S_OPEN || c->rstate == R_HDR) do_flush(c);\n}",
    ),
]


def whole_message_echo(source: str) -> str:
    """wsecho.c's text, edited to echo whole messages (WHOLE_ECHO_EDITS)."""
    for old, new in WHOLE_ECHO_EDITS:
        if source.count(old) != 1:
            raise RuntimeError(f"wsecho.c changed: {old!r} is not there once; update bench/run.py")
        source = source.replace(old, new)
    return source


def build_wsload() -> Path:
    """Build wsload, wsecho and wsecho-whole (gcc -O2) into a cache folder,
    if the sources changed."""
    src = SHARED / "tools" / "wsload"
    out = Path(tempfile.gettempdir()) / f"tether-bench-wsload-{os.getuid()}"
    newest = max(p.stat().st_mtime for p in [*src.glob("*.c"), Path(__file__)])
    binaries = [out / "wsload", out / "wsecho", out / WHOLE_ECHO]
    if not all(b.exists() and b.stat().st_mtime >= newest for b in binaries):
        subprocess.run(
            ["sh", str(src / "build.sh"), str(out)], check=True, stdout=subprocess.DEVNULL
        )
        whole = out / f"{WHOLE_ECHO}.c"
        whole.write_text(whole_message_echo((src / "wsecho.c").read_text()))
        subprocess.run(["gcc", "-O2", "-Wall", "-o", str(out / WHOLE_ECHO), str(whole)], check=True)
    return out


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def server_command(name: str, port: int, loop: str, tools: Path, compression: bool) -> list[str]:
    if name in ("wsecho", WHOLE_ECHO):
        return [str(tools / name), str(port)]
    script = PEERS / f"{name.replace('-', '_')}_echo.py"
    cmd = [PYTHON, str(script), "--port", str(port), "--loop", loop]
    return cmd + (["--compression"] if compression else [])


@contextlib.contextmanager
def running_server(
    name: str,
    loop: str,
    tools: Path,
    compression: bool = False,
    env: dict[str, str] | None = None,
) -> Iterator[tuple[int, int]]:
    """Start one echo server pinned to CPU 0; yields (port, pid)."""
    port = free_port()
    cmd = ["taskset", "-c", "0", *server_command(name, port, loop, tools, compression)]
    env = dict(os.environ, PYTHONPATH=str(PEERS), **(env or {}))
    proc = subprocess.Popen(
        cmd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        preexec_fn=raise_nofile,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited: {proc.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not listen on {port}")
            time.sleep(0.05)
        time.sleep(0.2)  # let the listener settle (the probe connection closes)
        yield port, proc.pid  # taskset execs the server: same pid
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        if proc.stderr is not None:
            proc.stderr.close()


def run_wsload(
    tools: Path, port: int, pid: int, args: tuple[str, ...], seconds: float, warmup: float
) -> dict[str, float]:
    cmd = ["taskset", "-c", "1", str(tools / "wsload"), "-p", str(port), "-P", str(pid), *args]
    if "-i" not in args:
        cmd += ["-d", "1", "-t", str(seconds), "-w", str(warmup)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=180, preexec_fn=raise_nofile)
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(
            f"wsload {' '.join(args)} failed: {out.stdout[-500:]} {out.stderr[-500:]}"
        )
    result: dict[str, float] = json.loads(lines[-1])
    if "rss_per_conn_bytes" in result:
        result["rss_per_conn_kb"] = result["rss_per_conn_bytes"] / 1024
    return result


def run_client(
    lib: str, mode: str, port: int, loop: str, seconds: float, warmup: float
) -> dict[str, float]:
    cmd = [
        "taskset", "-c", "1", PYTHON, str(PEERS / "clients.py"), lib, mode,
        "--port", str(port), "--seconds", str(seconds), "--warmup", str(warmup), "--loop", loop,
    ]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + warmup + 60)
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"client {lib} {mode} failed: {out.stderr[-1500:]}")
    result: dict[str, float] = json.loads(lines[-1])
    return result


def rotated(names: Sequence[str], turn: int) -> list[str]:
    """``names`` starting at the turn-th one, wrapping around: each run or
    round visits every subject once, in an order that rotates."""
    shift = turn % len(names)
    return [*names[shift:], *names[:shift]]


def measure(args: argparse.Namespace) -> dict[str, dict[str, list[float | None]]]:
    """results[workload][subject] = one value per run (None: the run failed)."""
    tools = build_wsload()
    keys = [w.key for w in WORKLOADS]
    wanted = set(keys) if not args.only else set(args.only.split(","))
    if "hs" in wanted:
        wanted.add("e10k")
    results: dict[str, dict[str, list[float | None]]] = {k: {} for k in keys}
    seconds, warmup = (1.5, 0.5) if args.quick else (args.seconds, 1.0)
    for run in range(args.runs):
        log(f"--- run {run + 1}/{args.runs}")
        for w in WORKLOADS:
            if w.key not in wanted or w.key in DERIVED:
                continue
            subjects = CLIENTS if w.client_mode else SERVERS
            if w.key in AWAIT_WORKLOADS:
                subjects = [*subjects, AWAIT_SERVER]
            for subject in rotated(subjects, run):
                values: dict[str, float | None] = {}
                try:
                    if w.client_mode:
                        with running_server("wsecho", args.loop, tools) as (port, _):
                            out = run_client(
                                subject, w.client_mode, port, args.loop, seconds, warmup
                            )
                    else:
                        with running_server(subject, args.loop, tools) as (port, pid):
                            out = run_wsload(tools, port, pid, w.args, seconds, warmup)
                    if out.get("errors"):
                        log(f"  {w.key} {subject}: {out['errors']} errors")
                    values[w.key] = out.get(w.metric)
                    for derived, source in DERIVED.items():
                        if source == w.key:
                            values[derived] = out.get(
                                next(x.metric for x in WORKLOADS if x.key == derived)
                            )
                except Exception as exc:  # one failure must not lose the run
                    log(f"  {w.key} {subject}: FAILED {exc}")
                    values = {w.key: None, **{d: None for d, s in DERIVED.items() if s == w.key}}
                for key, value in values.items():
                    results[key].setdefault(subject, []).append(value)
                log(f"  {w.key:5} {subject:11} " + " ".join(f"{k}={v}" for k, v in values.items()))
    if "seq" in wanted:
        # The seq row swings with the machine (whole runs drift between
        # levels); slices of the clients alternating in one process are
        # compared under the same conditions (bench/peers/clients.py).
        results["seq-paired"] = {}
        for run in range(args.runs):
            try:
                with running_server("wsecho", args.loop, tools) as (port, _):
                    out = run_client("paired", "seq", port, args.loop, seconds * 3, 0)
            except Exception as exc:  # one failure must not lose the run
                log(f"  seq-paired: FAILED {exc}")
                continue
            log(f"  seq-paired run {run + 1}: {out}")
            for key, value in out.items():
                results["seq-paired"].setdefault(key, []).append(value)
    if args.side_by_side:
        results["side-by-side"] = measure_side_by_side(
            tools, args.loop, wanted, args.side_by_side, 1.0 if args.quick else 2.0, 0.5
        )
    if args.compression_rss and not args.quick and ("e10k" in wanted):
        # wsload never offers permessage-deflate: a small Python client does.
        results["e10k-deflate"] = {}
        for subject in ("tether", "websockets"):
            try:
                with running_server(subject, args.loop, tools, compression=True) as (port, pid):
                    cmd = [
                        "taskset", "-c", "1", PYTHON, str(PEERS / "idle_deflate.py"),
                        "--port", str(port), "--pid", str(pid), "-c", "10000",
                    ]  # fmt: skip
                    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
                    out = json.loads(done.stdout.strip().splitlines()[-1])
                log(f"  e10k-deflate {subject}: {out}")
                results["e10k-deflate"][subject] = [out.get("rss_per_conn_kb")]
            except Exception as exc:  # one failure must not lose the run
                log(f"  e10k-deflate {subject}: FAILED {exc}")
        # tether without its compiled transports (aiofastnet's, where installed):
        # what tether._transport saves per idle connection.
        with running_server("tether", args.loop, tools, env={"TETHER_NO_CTRANSPORT": "1"}) as (
            port,
            pid,
        ):
            out = run_wsload(tools, port, pid, ("-i", "-c", "10000"), 0, 0)
        results["e10k-noctransport"] = {"tether": [out.get("rss_per_conn_kb")]}
    return results


def measure_side_by_side(
    tools: Path, loop: str, wanted: set[str], rounds: int, seconds: float, warmup: float
) -> dict[str, dict[str, list[float | None]]]:
    """results[workload][server] = one value per round: the servers run at
    once and wsload alternates between them, window after window."""
    results: dict[str, dict[str, list[float | None]]] = {}
    for w in WORKLOADS:
        if w.key not in SIDE_BY_SIDE_WORKLOADS or w.key not in wanted:
            continue
        servers = (*SIDE_BY_SIDE_SERVERS, *SIDE_BY_SIDE_EXTRA.get(w.key, ()))
        row: dict[str, list[float | None]] = {name: [] for name in servers}
        try:
            with contextlib.ExitStack() as stack:
                listening = {
                    name: stack.enter_context(running_server(name, loop, tools)) for name in servers
                }
                for round_ in range(rounds):
                    for name in rotated(servers, round_):
                        port, pid = listening[name]
                        try:
                            value = run_wsload(tools, port, pid, w.args, seconds, warmup)
                            row[name].append(value.get(w.metric))
                        except Exception as exc:  # one window must not lose the rest
                            log(f"  side by side {w.key} {name}: FAILED {exc}")
                            row[name].append(None)
        except Exception as exc:  # a server that did not start
            log(f"  side by side {w.key}: FAILED {exc}")
            continue
        log(f"  side by side {w.key}: {row}")
        results[w.key] = row
    return results


def median(values: list[float | None]) -> float | None:
    good = [v for v in values if v is not None]
    return statistics.median(good) if good else None


def run_ratios(mine: list[float | None], theirs: list[float | None], higher: bool) -> float | None:
    """Median of the per-run ratios tether/peer (for memory: peer/tether, so > 1 is better)."""
    ratios = []
    for a, b in zip(mine, theirs, strict=True):
        if a and b:
            ratios.append(a / b if higher else b / a)
    return statistics.median(ratios) if ratios else None


def fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def table(results: dict[str, dict[str, list[float | None]]]) -> str:
    servers = SERVERS
    head = [
        "workload",
        "tether",
        *[s for s in servers if s != "tether"],
        *[f"x {p}" for p in PYTHON_PEERS],
        "x wsecho",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for w in WORKLOADS:
        row = results.get(w.key) or {}
        if not row:
            continue
        if w.client_mode:
            cells = [f"{w.title} ({w.unit})", fmt(median(row.get("tether", [])))]
            cells += [fmt(median(row.get(s, []))) for s in servers if s not in ("tether", "wsecho")]
            cells += [""]
            mine = row.get("tether", [])
            cells += [fmt(run_ratios(mine, row.get(p, []), True)) for p in PYTHON_PEERS] + [""]
            lines.append("| " + " | ".join(cells) + " |")
            cb = row.get("tether-cb", [])
            cells = [f"{w.title}, tether callbacks ({w.unit})", fmt(median(cb)), "", "", "", ""]
            cells += [fmt(run_ratios(cb, row.get(p, []), True)) for p in PYTHON_PEERS] + [""]
            lines.append("| " + " | ".join(cells) + " |")
            continue
        mine = row.get("tether", [])
        cells = [f"{w.title} ({w.unit})", fmt(median(mine))]
        cells += [fmt(median(row.get(s, []))) for s in servers if s != "tether"]
        cells += [
            fmt(run_ratios(mine, row.get(p, []), w.higher_is_better))
            for p in [*PYTHON_PEERS, "wsecho"]
        ]
        lines.append("| " + " | ".join(cells) + " |")
    # Sentences under the table, each after a blank line.
    notes: list[str] = []
    awaited = []
    for w in WORKLOADS:
        row = results.get(w.key) or {}
        if AWAIT_SERVER in row:
            mine = row[AWAIT_SERVER]
            ratio = run_ratios(mine, row.get("picows", [None] * len(mine)), True)
            awaited.append(f"{w.title} {fmt(median(mine))} {w.unit} = {fmt(ratio)}x picows")
    if awaited:
        notes.append(
            "tether's echo as a coroutine (`async for message in ws: await ws.send(message)`,"
            " bench/peers/tether_await_echo.py; the tether column is `tether echo`, a message"
            " handler): " + "; ".join(awaited)
        )
    paired = results.get("seq-paired")
    if paired:
        notes.append(
            "Client seq, the clients alternating in one process (slices of 2,000 round trips,"
            f" medians of the per-slice ratios, median of {len(paired.get('rounds', []))} runs):"
            f" tether {fmt(median(paired.get('tether_x_picows', [])))}x picows,"
            f" tether callbacks {fmt(median(paired.get('tether-cb_x_picows', [])))}x picows,"
            f" tether {fmt(median(paired.get('tether_x_picows-await', [])))}x picows awaited"
            " (a future per echo),"
            f" tether {fmt(median(paired.get('tether_x_tether-coro', [])))}x its Python"
            " coroutines (`_py_send()` / `_py_recv()`, what the Operations replace)"
        )
        cpu = [
            f"{name} {fmt(median(paired[f'{name}_cpu_us']))}"
            for name in ("tether-cb", "picows", "tether", "tether-coro", "picows-await")
            if paired.get(f"{name}_cpu_us")
        ]
        if cpu:
            notes.append(
                "CPU time of the client per round trip in those slices (µs, medians): "
                + ", ".join(cpu)
            )
    side = results.get("side-by-side")
    if side:
        rows = []
        for w in WORKLOADS:
            row = side.get(w.key)
            if not row:
                continue
            mine = row.get("tether", [])
            text = (
                f"{w.title} tether {fmt(median(mine))} {w.unit} ="
                f" {fmt(run_ratios(mine, row.get('picows', []), True))}x picows,"
                f" {fmt(run_ratios(mine, row.get('wsecho', []), True))}x wsecho"
            )
            whole = row.get(WHOLE_ECHO)
            if whole:
                text += (
                    f", {fmt(run_ratios(mine, whole, True))}x {WHOLE_ECHO}"
                    f" (which is {fmt(run_ratios(whole, row.get('wsecho', []), True))}x wsecho)"
                )
            rows.append(text)
        rounds = len(next(iter(next(iter(side.values())).values())))
        notes.append(
            f"Servers side by side (tether, picows and wsecho running at once, wsload alternating"
            f" between them, {rounds} rounds; medians of the per-round ratios; for (d) also"
            f" {WHOLE_ECHO}, wsecho answering whole messages only): " + "; ".join(rows)
        )
    extra = results.get("e10k-deflate")
    if extra:
        notes.append(
            "Idle RSS per connection at 10,000 with permessage-deflate negotiated: "
            + ", ".join(f"{k} {fmt(median(v))} KB" for k, v in extra.items())
        )
    other = results.get("e10k-noctransport")
    if other:
        notes.append(
            "Idle RSS per connection at 10,000, tether with TETHER_NO_CTRANSPORT=1 (aiofastnet's "
            f"transports when installed, else asyncio's): {fmt(median(other['tether']))} KB"
        )
    for note in notes:
        lines += ["", note]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated workloads: " + ",".join(w.key for w in WORKLOADS),
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0, help="measured seconds per echo run")
    parser.add_argument("--quick", action="store_true", help="1 run, 1.5 s per measurement")
    parser.add_argument(
        "--side-by-side", type=int, default=8, metavar="ROUNDS",
        help="rounds of the servers side by side for (a)-(d) (0: none; --quick: 2)",
    )  # fmt: skip
    parser.add_argument(
        "--no-compression-rss", dest="compression_rss", action="store_false",
        help="skip the extra idle-RSS run with permessage-deflate negotiated",
    )  # fmt: skip
    args = parser.parse_args()
    if args.quick:
        args.runs = 1
        args.side_by_side = min(args.side_by_side, 2)
    raise_nofile()
    started = time.time()
    results = measure(args)
    text = table(results)
    print(
        f"\nloop={args.loop} runs={args.runs} ({time.time() - started:.0f} s);"
        " ratios: tether / peer, same run\n"
    )
    print(text)
    out_dir = REPO / "artifacts" / "bench"
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = out_dir / f"{stamp}-{args.loop}.json"
    path.write_text(
        json.dumps(
            {
                "loop": args.loop,
                "runs": args.runs,
                "quick": args.quick,
                "results": results,
                "table": text,
            },
            indent=1,
        )
    )
    log(f"wrote {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
