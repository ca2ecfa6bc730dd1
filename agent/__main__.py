"""``python -m corral.agent``: run the agent daemon."""

from __future__ import annotations

import sys

from corral.agent.cli import main

__all__: list[str] = []

if __name__ == "__main__":
    sys.exit(main())
