"""The Autobahn|Testsuite, cases 1.x to 10.x, against tether's server and client.

Runs ``scripts/autobahn.sh --quick --side both`` (about a minute a side): it fails on any FAILED,
UNIMPLEMENTED, badly closed or NON-STRICT case not excused in scripts/autobahn-allowed.txt. The
suite's tools come from ../shared/tools/autobahn/ (set up by scripts/setup); the reports stay in
artifacts/autobahn/. TETHER_NO_SPEEDUPS, when set, carries over: the pure-Python run of the test
suite runs the conformance cases in pure Python too.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("TETHER_SHARED", ROOT.parent / "shared"))
TOOLS = SHARED / "tools" / "autobahn"
SCRIPT = ROOT / "scripts" / "autobahn.sh"
TIMEOUT = 600  # seconds for both sides


@pytest.mark.slow
@pytest.mark.timeout(TIMEOUT + 60)
def test_autobahn_quick_both_sides(capsys: pytest.CaptureFixture[str]) -> None:
    assert (TOOLS / "fuzz-server.sh").is_file(), (
        f"the Autobahn tools are missing: {TOOLS} does not exist. shared/ must sit beside the "
        "repository (or set TETHER_SHARED), and scripts/setup installs the suite."
    )
    process = subprocess.Popen(
        ["bash", str(SCRIPT), "--quick", "--side", "both"],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # so that a timeout can stop wstest and the servers too
    )
    try:
        output, _ = process.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        pytest.fail(f"scripts/autobahn.sh --quick took more than {TIMEOUT} s:\n{output[-5000:]}")

    # Everything goes to the captured output (shown when the test fails); the counts also go
    # straight to the terminal, so that CI logs show them on success too.
    print(output)
    verdict = output.rpartition("== autobahn summary")[2].strip()
    with capsys.disabled():
        print(f"\n== autobahn summary{verdict}")
    assert process.returncode == 0, (
        f"scripts/autobahn.sh --quick --side both exited {process.returncode} "
        f"(reports in {ROOT / 'artifacts' / 'autobahn'}):\n{verdict[-4000:]}"
    )
