"""tether.allocator.tune_malloc: glibc tuning for servers that receive large
messages (checked in a child process: the setting is process-wide)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

CHECK = """
import ctypes, ctypes.util, sys
from tether.allocator import tune_malloc
tuned = tune_malloc()
print(tuned)
"""


def _run(env: dict[str, str]) -> str:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "TETHER_NO_M"))}
    full.update(env)
    out = subprocess.run(
        [sys.executable, "-c", CHECK], env=full, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt is Linux-only")
def test_tunes_glibc_on_linux() -> None:
    assert _run({}) == "True"


def test_opt_out_and_user_settings_win() -> None:
    assert _run({"TETHER_NO_MALLOC_TUNING": "1"}) == "False"
    assert _run({"MALLOC_TOP_PAD_": "1048576"}) == "False"
