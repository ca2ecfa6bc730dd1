"""A task that fails on its first attempt and succeeds on the retry.

The first attempt leaves a marker file behind and raises; the next attempt finds the marker,
removes it (so the example can be run again) and succeeds. The marker lives in ``marker_dir``, or
in ``$CORRAL_EXAMPLES_STATE``, or in the system temp directory.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["STATE_ENV", "fail_once"]

STATE_ENV = "CORRAL_EXAMPLES_STATE"


def _marker(key: str, marker_dir: str | None) -> Path:
    directory = Path(marker_dir or os.environ.get(STATE_ENV) or tempfile.gettempdir())
    directory.mkdir(parents=True, exist_ok=True)
    return directory / f"corral-flaky-{key}.marker"


def fail_once(key: str = "flaky", marker_dir: str | None = None) -> dict[str, object]:
    """Raise on the first call for ``key``; return ``{"key": key, "recovered": True}`` on the next."""
    marker = _marker(key, marker_dir)
    try:
        marker.unlink()
    except FileNotFoundError:
        marker.write_text("first attempt failed here\n", encoding="utf-8")
        raise RuntimeError(f"simulated transient failure of {key!r} (the retry will succeed)") from None
    return {"key": key, "recovered": True}
