"""Python task functions run by the agents of the end-to-end tests, imported as ``e2e_tasks:NAME``.

The folder holding this module is put on the agents' PYTHONPATH by ``tests/e2e/conftest.py``. The
module doubles as a tiny command line (``python -m e2e_tasks sum K``) that shell tasks use to read
``$CORRAL_INPUTS`` and print their result as the last line of stdout.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Mapping
from typing import Any

__all__ = ["constant", "ledger_sum", "main", "pid", "plus", "slow_value"]


def constant(value: Any) -> Any:
    """Return ``value`` unchanged: a task whose result is known in advance."""
    return value


def pid() -> int:
    """The id of the process the task ran in (a python worker's per-workflow child)."""
    return os.getpid()


def plus(inputs: Mapping[str, Any], k: int = 0) -> int:
    """The sum of the dependencies' results, plus ``k``."""
    return int(sum(inputs.values())) + k


def slow_value(value: Any, seconds: float) -> Any:
    """Sleep, then return ``value`` (keeps a python task RUNNING for a while)."""
    time.sleep(seconds)
    return value


def ledger_sum(inputs: Mapping[str, Any], ledger: str, k: int = 0, seconds: float = 0.0) -> int:
    """Like :func:`plus` after ``seconds`` of work; appends ``'<task name> <attempt id>'`` to ``ledger`` at the end."""
    time.sleep(seconds)
    value = int(sum(inputs.values())) + k
    with open(ledger, "a", encoding="utf-8") as out:
        out.write(f"{os.environ['CORRAL_TASK_NAME']} {os.environ['CORRAL_ATTEMPT_ID']}\n")
    return value


def main(argv: list[str]) -> int:
    """``sum K``: print the sum of the $CORRAL_INPUTS values plus K as JSON (the shell tasks' helper)."""
    if len(argv) != 2 or argv[0] != "sum":
        print("usage: python -m e2e_tasks sum K", file=sys.stderr)
        return 2
    inputs = json.loads(os.environ["CORRAL_INPUTS"])
    print(f"{os.environ['CORRAL_TASK_NAME']}: adding {len(inputs)} inputs")
    print(json.dumps(int(sum(inputs.values())) + int(argv[1])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
