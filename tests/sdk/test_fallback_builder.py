"""The builder's issue 10 fields: fallback, allow_failure, min_success (checked at build) and approval."""

from __future__ import annotations

import pytest

from corral.controller.sdk.builder import Workflow
from corral.controller.sdk.errors import InvalidArgumentError
from corral.controller.spec import parse_workflow_text


def test_rules_build_and_round_trip_yaml() -> None:
    wf = Workflow("rules")
    a = wf.shell("a", "false", fallback={"shell": "true"}, allow_failure=True)
    b = wf.shell("b", "true")
    join = wf.shell("join", "true", min_success=1)  # wired below: checked at build
    [a, b] >> join
    gate = wf.task("gate", approval={"timeout": "1h", "message": "ok?"})
    join >> gate
    spec = wf.build()
    tasks = {t.name: t for t in spec.tasks}
    assert tasks["a"].fallback == {"shell": "true"} and tasks["a"].allow_failure
    assert tasks["join"].min_success == 1
    assert tasks["gate"].approval is not None and tasks["gate"].approval.timeout == 3600
    assert parse_workflow_text(wf.to_yaml()) == spec


def test_min_success_over_the_wired_dependencies_fails_at_build() -> None:
    wf = Workflow("rules")
    a = wf.shell("a", "true")
    join = wf.shell("join", "true", min_success=2)
    a >> join
    with pytest.raises(InvalidArgumentError, match="min_success"):
        wf.build()
