"""Every chaos scenario as a test: the fast subset by default, the long ones under ``-m chaos``.

A scenario returns a row; the test fails with the row's failures (the same text ``make chaos``
prints) and prints the row either way, so the measured figures show with ``-s``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chaos.__main__ import run_one
from tests.chaos.invariants import format_table
from tests.chaos.requirements import why_skip
from tests.chaos.scenarios import SCENARIOS, Scenario


def _param(scenario: Scenario) -> object:
    if scenario.fast:
        return pytest.param(scenario, id=scenario.name, marks=[pytest.mark.timeout(240)])
    return pytest.param(scenario, id=scenario.name, marks=[pytest.mark.chaos, pytest.mark.timeout(600)])


@pytest.mark.parametrize("scenario", [_param(s) for s in SCENARIOS])
def test_scenario(scenario: Scenario, tmp_path: Path) -> None:
    reason = why_skip(scenario, features=True)
    if reason:
        pytest.skip(reason)
    row = run_one(scenario, tmp_path, fast=scenario.fast)
    print(format_table([row]))
    assert row.ok, format_table([row])
