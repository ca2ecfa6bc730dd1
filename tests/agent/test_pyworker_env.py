"""The python worker's per-task environment (``pyenv.TaskEnv``): the clean base plus the task's variables."""

from __future__ import annotations

import os
from typing import Any

import pytest

from corral.agent import pyenv


@pytest.fixture
def rebuilds(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, str]]:
    """Every full rebuild of the environment (the slow path), which still happens."""
    calls: list[dict[str, str]] = []
    real = pyenv.restore_env

    def counting(environ: Any, wanted: dict[str, str]) -> None:
        calls.append(wanted)
        real(environ, wanted)

    monkeypatch.setattr(pyenv, "restore_env", counting)
    return calls


@pytest.fixture
def clean(monkeypatch: pytest.MonkeyPatch) -> None:
    """CORRAL_TEST_BASE=base, and no CORRAL_TEST_TASK or CORRAL_TEST_LEAK; all put back as they
    were afterwards (set, then deleted: monkeypatch then restores the first state it saw)."""
    monkeypatch.setenv("CORRAL_TEST_BASE", "base")
    for name in ("CORRAL_TEST_TASK", "CORRAL_TEST_LEAK"):
        monkeypatch.setenv(name, "placeholder")
        monkeypatch.delenv(name)


def test_the_first_task_of_a_fresh_worker_sets_only_its_own_variables(
    clean: None, rebuilds: list[dict[str, str]]
) -> None:
    env = pyenv.TaskEnv()
    env.apply({"CORRAL_TEST_TASK": "t1"})
    assert rebuilds == []  # the environment is the base: nothing to rebuild
    assert os.environ["CORRAL_TEST_TASK"] == "t1" and os.environ["CORRAL_TEST_BASE"] == "base"
    env.apply({})
    assert "CORRAL_TEST_TASK" not in os.environ and rebuilds == []


def test_a_task_that_changed_the_environment_gets_it_rebuilt(clean: None, rebuilds: list[dict[str, str]]) -> None:
    env = pyenv.TaskEnv()
    env.apply({"CORRAL_TEST_TASK": "t1"})
    os.environ["CORRAL_TEST_BASE"] = "changed by the task"
    os.environ["CORRAL_TEST_LEAK"] = "left by the task"
    env.apply({"CORRAL_TEST_TASK": "t2"})
    assert len(rebuilds) == 1
    assert os.environ["CORRAL_TEST_BASE"] == "base" and "CORRAL_TEST_LEAK" not in os.environ
    assert os.environ["CORRAL_TEST_TASK"] == "t2"
