"""Summarise a py-spy ``-f raw`` (collapsed stacks) file: the hottest functions, inclusive and self.

::

    python -m bench.pyspy_top /tmp/prof/controller-1234.txt [--top 25] [--grep corral]

Inclusive counts a function once per sample it is on the stack; self counts the leaf frame only.
Idle samples (the event loop waiting in ``select``/``epoll``) are reported apart.
"""

from __future__ import annotations

import argparse
import collections
import re
import sys
from pathlib import Path

__all__ = ["main", "summarise"]

_IDLE = re.compile(r"\b(select|epoll|poll|_run_once \(asyncio|wait \(threading)")
_LINE = re.compile(r"\s*\(([^()]*):\d+\)$")


def _frame(frame: str) -> str:
    """``func (path/to/file.py:123)`` -> ``func (file.py)``: group a function's lines together."""
    match = _LINE.search(frame)
    if not match:
        return frame.strip()
    return f"{frame[: match.start()].strip()} ({Path(match.group(1)).name})"


def summarise(path: Path) -> tuple[int, collections.Counter[str], collections.Counter[str], int]:
    inclusive: collections.Counter[str] = collections.Counter()
    leaf: collections.Counter[str] = collections.Counter()
    total = idle = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame(f) for f in stack.split(";") if f and not f.startswith("process ")]
        frames = [f for f in frames if not f.startswith("thread ")]
        total += count
        if frames and _IDLE.search(frames[-1]):
            idle += count
            continue
        for name in set(frames):
            inclusive[name] += count
        if frames:
            leaf[frames[-1]] += count
    return total, inclusive, leaf, idle


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pyspy_top", description=__doc__.splitlines()[0])
    parser.add_argument("file", type=Path)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--grep", default="", help="only functions whose name or file contains this")
    args = parser.parse_args(argv)
    total, inclusive, leaf, idle = summarise(args.file)
    if not total:
        print("no samples")
        return 1
    print(f"{total} samples, {idle} idle ({100 * idle / total:.0f}%)")
    for title, counter in (("inclusive", inclusive), ("self", leaf)):
        print(f"\n-- {title} --")
        rows = [(n, c) for n, c in counter.most_common() if args.grep in n][: args.top]
        for name, count in rows:
            print(f"{100 * count / total:6.1f}%  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
