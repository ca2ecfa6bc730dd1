"""Where python tasks import from (issue 11): ``--python-path`` folders and the agent's ``$PYTHONPATH``.

Python workers run isolated (``python -I``): they never read ``PYTHONPATH`` themselves, and their
working directory is the agent's work dir. So the agent reads its own ``$PYTHONPATH`` once, at
start, resolves each relative entry against the directory it was started from (where the user
typed the command), and hands the folders to its workers with the ``--python-path`` ones; the
agent logs the result at start, so "ModuleNotFoundError" has an answer in its first lines.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["import_path", "pythonpath_entries"]


def pythonpath_entries(environ: Mapping[str, str], cwd: Path) -> tuple[list[Path], list[str]]:
    """``($PYTHONPATH folders made absolute against cwd, entries skipped because they are not folders)``."""
    folders: list[Path] = []
    skipped: list[str] = []
    for entry in environ.get("PYTHONPATH", "").split(os.pathsep):
        if not entry:
            continue  # an empty entry means "the current directory" to python: too implicit here
        folder = (cwd / Path(entry).expanduser()).resolve()
        if folder.is_dir():
            if folder not in folders:
                folders.append(folder)
        else:
            skipped.append(entry)
    return folders, skipped


def import_path(flags: Sequence[Path], environ: Mapping[str, str], cwd: Path) -> tuple[tuple[Path, ...], list[str]]:
    """The workers' import folders: ``--python-path`` first (resolved against cwd), then ``$PYTHONPATH``'s."""
    folders = [(cwd / Path(p).expanduser()).resolve() for p in flags]
    from_env, skipped = pythonpath_entries(environ, cwd)
    folders += [folder for folder in from_env if folder not in folders]
    return tuple(folders), skipped
