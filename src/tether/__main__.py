"""``python -m tether``: the same as the ``tether`` command (see :mod:`tether.cli`)."""

from tether.cli import main

raise SystemExit(main())
