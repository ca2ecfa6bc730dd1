"""The builder's dynamic-task options (issue 10): ``map_over`` and ``after_spawned``."""

from __future__ import annotations

import pytest

from corral.controller.sdk.builder import Workflow
from corral.controller.sdk.errors import InvalidArgumentError


def test_map_over_and_after_spawned_build_the_file_fields() -> None:
    wf = Workflow("dyn")
    items = wf.python("items", "m:items")
    each = wf.python("each", "m:double", map_over=items)
    spawner = wf.python("spawner", "m:spawn")
    fan = wf.python("fan", "m:fan_in", after_spawned=[spawner])
    each >> fan  # wiring keeps the "spawner/*" dependency as written
    spec = wf.build()
    tasks = {t.name: t for t in spec.tasks}
    assert tasks["each"].map == "items" and tasks["each"].dependencies == ["items"]
    assert tasks["fan"].dependencies == ["spawner/*", "each"]


def test_a_group_dependency_on_an_unknown_task_is_refused() -> None:
    wf = Workflow("dyn")
    with pytest.raises(InvalidArgumentError) as caught:
        wf.python("fan", "m:fan_in", after_spawned=["nope"])
    assert "unknown task 'nope'" in str(caught.value)
