"""tether.allocator: glibc and garbage-collector tuning for servers (checked
in a child process: the settings are process-wide)."""

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


GC_CHECK = """
import gc
from tether.allocator import tune_gc
before = gc.get_threshold()
tuned = tune_gc()
print(tuned, gc.get_threshold() != before, gc.get_freeze_count() > 0, gc.get_threshold()[0])
"""


def _run_gc(env: dict[str, str]) -> str:
    full = {k: v for k, v in os.environ.items() if not k.startswith("TETHER_NO_GC")}
    full.update(env)
    out = subprocess.run(
        [sys.executable, "-c", GC_CHECK], env=full, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_tune_gc_freezes_start_up_and_raises_the_young_threshold() -> None:
    assert _run_gc({}) == "True True True 10000"


def test_tune_gc_opt_out() -> None:
    assert _run_gc({"TETHER_NO_GC_TUNING": "1"}) == "False False False 700"
