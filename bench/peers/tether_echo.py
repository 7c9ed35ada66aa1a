"""tether's echo server for the benchmark: exactly ``tether echo --no-compression``,
on the chosen event loop."""

from __future__ import annotations

import sys

from _common import parse, set_loop

from tether.cli import main

args = parse(__doc__ or "")
set_loop(args.loop)
argv = ["echo", "--host", args.host, "--port", str(args.port)]
if not args.compression:
    argv.append("--no-compression")
sys.exit(main(argv))
