"""The demo page in a real browser: headless Chromium (Debian's, driven by
playwright-core through tests/browser/run_page.js) opens the page served by
`tether.examples.demo`, waits for the greeting, sends `foo`, sees `bar`, sends
`end` and sees the close code 1000. The screenshot is kept as
artifacts/demo-page-open.png (after foo/bar) and artifacts/demo-page.png (closed)."""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import shutil
from typing import Any

import pytest

import tether
from tether.examples import demo

ROOT = pathlib.Path(__file__).resolve().parent.parent
RUN_PAGE = ROOT / "tests" / "browser" / "run_page.js"
PEERS = ROOT / "tests" / "peers" / "node_modules" / "playwright-core"
CHROMIUM = os.environ.get("TETHER_CHROMIUM", "/usr/bin/chromium")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


def _missing() -> str | None:
    if shutil.which("node") is None:
        return "node"
    if not PEERS.is_dir():
        return "tests/peers/node_modules/playwright-core"
    if not os.path.exists(CHROMIUM):
        return CHROMIUM
    return None


async def run_page(script: dict[str, Any]) -> tuple[int, list[dict[str, Any]], str]:
    """Run a browser script; (exit status, JSON events, stderr)."""
    process = await asyncio.create_subprocess_exec(
        "node",
        str(RUN_PAGE),
        "-",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    try:
        out, err = await asyncio.wait_for(
            process.communicate(json.dumps(script).encode()), timeout=90
        )
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    events = [json.loads(line) for line in out.decode().splitlines() if line.startswith("{")]
    assert process.returncode is not None
    return process.returncode, events, err.decode()


async def test_demo_page_in_chromium() -> None:
    missing = _missing()
    if missing is not None:
        # CI installs all three (scripts/setup); a missing one is a broken setup.
        pytest.fail(f"{missing} is missing: run scripts/setup")
    async with tether.serve(demo.routes(), "127.0.0.1", 0) as server:
        page_url = f"http://127.0.0.1:{server.port}/"
        script = {
            "name": "demo-page",
            "url": page_url,
            "timeout_ms": 15000,
            "steps": [
                {"wait_for_text": ["#log .in", "Greetings!"]},
                {"fill": ["#message", "foo"]},
                {"press": ["#message", "Enter"]},
                {"wait_for_text": ["#log .in", "bar"]},
                {"screenshot": "demo-page-open.png"},
                {"fill": ["#message", "hello"]},
                {"click": "#send"},
                {
                    "eval": "new Promise(r => { const f = () => document.querySelectorAll("
                    "'#log .in').length >= 12 ? r(true) : setTimeout(f, 20); f(); })"
                },
                {"fill": ["#message", "end"]},
                {"click": "#send"},
                {"wait_for_text": ["#close-code", "1000"]},
                {"text": "#close-code"},
                {"eval": "document.getElementById('close-code').dataset.code"},
                {
                    "eval": "Array.from(document.querySelectorAll('#log .in .text'))"
                    ".map(e => e.textContent)"
                },
                {"eval": "document.getElementById('status').dataset.state"},
                {"screenshot": "demo-page.png"},
            ],
        }
        status, events, err = await run_page(script)
    assert status == 0, f"browser script failed: {events} {err}"
    assert events[-1] == {"done": True}
    steps = [e for e in events if "step" in e]
    assert all(e["ok"] for e in steps)
    assert steps[0]["url"] == page_url
    results = {json.dumps(e["step"]): e for e in steps}
    close_text = results[json.dumps({"text": "#close-code"})]["text"]
    assert close_text == "Closed with code 1000"
    evals = [e["value"] for e in steps if "eval" in e["step"]]
    assert evals[1] == "1000"
    assert evals[2] == ["Greetings!", "bar"] + ["hello"] * 10
    assert evals[3] == "closed"
    assert not [e for e in events if "pageerror" in e]
    screenshot = pathlib.Path(steps[-1]["file"])
    assert screenshot.is_file() and screenshot.stat().st_size > 10_000
    assert screenshot.name == "demo-page.png"
