"""The agent's python import path (issue 11): ``--python-path`` then ``$PYTHONPATH``, relative
entries resolved against the directory the agent was started from."""

from __future__ import annotations

import os
from pathlib import Path

from corral.agent.importpath import import_path, pythonpath_entries


def test_relative_pythonpath_resolves_against_the_start_directory(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "lib").mkdir()
    environ = {"PYTHONPATH": os.pathsep.join(["src", "", "missing", str(tmp_path / "lib"), "src"])}
    folders, skipped = pythonpath_entries(environ, tmp_path)
    assert folders == [(tmp_path / "src").resolve(), (tmp_path / "lib").resolve()]
    assert skipped == ["missing"]
    assert pythonpath_entries({}, tmp_path) == ([], [])


def test_flags_come_first_without_duplicates(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "flag").mkdir()
    paths, _ = import_path([Path("flag"), Path("src")], {"PYTHONPATH": "src"}, tmp_path)
    assert paths == ((tmp_path / "flag").resolve(), (tmp_path / "src").resolve())
    assert all(p.is_absolute() for p in paths)
