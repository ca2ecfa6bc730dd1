"""``python -m corral.controller``: the controller daemon (same flags as ``corral controller``)."""

from __future__ import annotations

import sys

from corral.controller.entry import keep_rich_out

keep_rich_out()  # before the daemon's imports (see entry.py)

from corral.controller.daemon import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
