"""Exit codes in words (issue 11): ``exit code 3``, ``killed by SIGTERM (-15)``.

A negative exit code is the signal that killed the process (Python's ``subprocess`` convention,
which the agent reports). Used when an attempt ends without an error message of its own, so the
event log and ``corral status`` never show a bare ``-15`` with an empty error.
"""

from __future__ import annotations

import signal

__all__ = ["exit_words"]


def exit_words(code: int | None) -> str:
    """``""`` for None or 0, ``exit code N`` for a positive code, ``killed by SIGNAME (-N)`` for a signal."""
    if not code:
        return ""
    if code > 0:
        return f"exit code {code}"
    try:
        name = signal.Signals(-code).name
    except ValueError:
        name = f"signal {-code}"
    return f"killed by {name} ({code})"
