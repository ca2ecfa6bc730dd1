"""The SDK side of issue 10: the builder's ``cache`` and ``params``, submission options, helper specs."""

from __future__ import annotations

import pytest

from corral.controller.sdk.builder import Workflow
from corral.controller.sdk.durable import helper_spec, submit_options
from corral.controller.sdk.errors import InvalidArgumentError
from corral.controller.spec import parse_workflow_text


def test_builder_takes_cache_and_params_and_round_trips_through_yaml() -> None:
    wf = Workflow("etl", params={"day": None, "parts": 4})
    extract = wf.shell("extract", shell="./extract.sh ${params.day}", cache=True)
    wf.shell("load", shell="./load.sh", cache={"ttl": "1d", "version": "2"}, depends_on=[extract])
    spec = wf.build()
    assert spec.params == {"day": None, "parts": 4}
    assert spec.tasks[0].cache is not None and spec.tasks[0].cache.key is None
    assert spec.tasks[1].cache is not None and spec.tasks[1].cache.ttl == 86400.0
    assert parse_workflow_text(wf.to_yaml()) == spec
    assert Workflow.from_spec(spec).build() == spec


def test_builder_refuses_bad_cache_and_unknown_references() -> None:
    wf = Workflow("etl")
    with pytest.raises(InvalidArgumentError) as exc:
        wf.shell("a", shell="true", cache={"ttl": 0})
    assert [v.field for v in exc.value.violations] == ["tasks[0].cache.ttl"]
    wf.shell("b", shell="echo ${params.nope}")
    with pytest.raises(InvalidArgumentError) as exc:
        wf.build()
    assert [v.field for v in exc.value.violations] == ["tasks[0].payload.shell"]


def test_submit_options_send_values_as_text() -> None:
    assert submit_options({"params": {"n": 3, "flag": True, "s": "x"}, "no_cache": True}) == {
        "params": {"n": "3", "flag": "true", "s": "x"},
        "no_cache": True,
    }
    assert submit_options({}) == {}


def test_helper_specs() -> None:
    tasks = [{"name": f"t{i}", "payload": {"shell": "true"}, "dependencies": ["x"]} for i in range(3)]
    chain = helper_spec("s", tasks, chain=True)
    assert [t.dependencies for t in chain.tasks] == [[], ["t0"], ["t1"]]
    wide = helper_spec("p", tasks, max_workers=2)
    assert wide.max_parallel == 2 and all(not t.dependencies for t in wide.tasks)
    with pytest.raises(InvalidArgumentError) as exc:
        helper_spec("p", tasks, max_workers=0)
    assert [v.field for v in exc.value.violations] == ["max_workers"]
    with pytest.raises(InvalidArgumentError):
        helper_spec("p", [])
