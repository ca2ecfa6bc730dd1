"""``python -m corral.agent``: run the agent daemon."""

from __future__ import annotations

import sys

from corral.controller.entry import keep_rich_out

keep_rich_out()  # before the agent's imports, as `python -m corral.controller` (see entry.py)

from corral.agent.cli import main  # noqa: E402

__all__: list[str] = []

if __name__ == "__main__":
    sys.exit(main())
