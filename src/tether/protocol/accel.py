"""Picks the hot-path functions: compiled (``tether._speedups``) or pure Python.

Set ``TETHER_NO_SPEEDUPS=1`` in the environment to force the pure-Python
twins in :mod:`tether.protocol.frames`; the test suite runs both ways and the
results must be identical. ``SPEEDUPS`` tells which one is in use.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from tether.protocol import frames as _pure

__all__ = ["SPEEDUPS", "PayloadSink", "apply_mask", "build_frame", "masking_key", "scan_frames"]

apply_mask: Callable[..., bytes] = _pure.apply_mask
build_frame: Callable[..., bytes] = _pure.build_frame
masking_key: Callable[[], bytes] = _pure.masking_key
PayloadSink: Any = _pure.PayloadSink
scan_frames: Callable[..., Any] = _pure.scan_frames
SPEEDUPS = False

if not os.environ.get("TETHER_NO_SPEEDUPS"):
    try:
        from tether import _speedups
    except ImportError:  # pragma: no cover - the extension failed to build
        pass
    else:
        apply_mask = _speedups.apply_mask
        build_frame = _speedups.build_frame
        masking_key = _speedups.masking_key
        PayloadSink = _speedups.PayloadSink
        scan_frames = _speedups.scan_frames
        SPEEDUPS = True
