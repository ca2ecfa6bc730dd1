"""``python -m corral.controller``: the controller daemon (same flags as ``corral controller``)."""

from __future__ import annotations

import sys

from corral.controller.daemon import main

if __name__ == "__main__":
    sys.exit(main())
