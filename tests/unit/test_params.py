"""Workflow parameters (issue 10): declared defaults, supplied values and ${params.name} at submit."""

from __future__ import annotations

import json
from typing import Any

import pytest

from corral.controller.core.params import resolve_params, substitute
from corral.controller.errors import InvalidArgument
from corral.controller.rpc.admission import admit
from corral.controller.rpc.wire_spec import spec_to_proto
from corral.controller.spec import WorkflowSpec, parse_workflow

_IDS = iter(range(10**6))


def _spec(params: dict[str, Any], *payloads: dict[str, Any]) -> WorkflowSpec:
    tasks = [{"name": f"t{i}", "payload": p} for i, p in enumerate(payloads)]
    return parse_workflow({"name": "wf", "params": params, "tasks": tasks})


def _admit(spec: WorkflowSpec, supplied: dict[str, str] | None = None) -> Any:
    return admit(spec_to_proto(spec), True, lambda: f"{next(_IDS):06d}", params=supplied)


def _paths(exc: pytest.ExceptionInfo[InvalidArgument]) -> list[str]:
    return [v.field for v in exc.value.violations]


def test_defaults_and_supplied_values_are_substituted_at_submit() -> None:
    spec = _spec(
        {"day": "2024-01-01", "n": 3, "rate": 0.5, "loud": False},
        {"shell": "echo ${params.day} n=${params.n} $${params.day}"},
    )
    admitted = _admit(spec, {"n": "7", "loud": "true"})
    (task,) = admitted.tasks
    assert json.loads(task.payload) == {"shell": "echo 2024-01-01 n=7 ${params.day}"}
    assert json.loads(admitted.workflow.params) == {"day": "2024-01-01", "n": 7, "rate": 0.5, "loud": True}


def test_a_whole_string_reference_keeps_the_type() -> None:
    spec = parse_workflow(
        {
            "name": "wf",
            "params": {"n": 3, "who": None},
            "tasks": [
                {
                    "name": "p",
                    "agent_type": "python",
                    "payload": {"function": "m:f", "kwargs": {"n": "${params.n}", "who": "${params.who}"}},
                }
            ],
        }
    )
    (task,) = _admit(spec, {"who": "ann"}).tasks
    assert json.loads(task.payload)["kwargs"] == {"n": 3, "who": "ann"}


def test_bad_parameters_are_invalid_argument_with_their_paths() -> None:
    spec = _spec({"n": 3, "who": None}, {"shell": "echo ${params.n} ${params.who}"})
    with pytest.raises(InvalidArgument) as exc:
        _admit(spec, {"n": "three", "nope": "1"})
    assert sorted(_paths(exc)) == ["params.n", "params.nope", "params.who"]
    with pytest.raises(InvalidArgument) as exc:
        _admit(spec, {"who": "x" * 5000})
    assert _paths(exc) == ["params.who"]


def test_an_unknown_parameter_in_a_template_names_the_string() -> None:
    with pytest.raises(InvalidArgument) as exc:
        _spec({}, {"shell": "echo ok"}, {"command": ["echo", "${params.missing}"]})
    assert _paths(exc) == ["tasks[1].payload.command[1]"]
    assert "unknown parameter 'missing'" in exc.value.violations[0].description
    # The same through the rpc edge (a client that skipped the file check): nothing admitted.
    message = spec_to_proto(_spec({}, {"shell": "echo ok"}))
    message.tasks[0].payload_json = b'{"shell": "echo ${params.missing}"}'
    with pytest.raises(InvalidArgument) as exc:
        admit(message, True, lambda: "x")
    assert _paths(exc) == ["spec.tasks[0].payload_json.shell"]


def test_a_bad_default_names_the_declared_parameter() -> None:
    with pytest.raises(InvalidArgument) as exc:
        parse_workflow({"name": "wf", "params": {"n": [1, 2]}, "tasks": [{"name": "a", "payload": {"shell": "x"}}]})
    assert all(p.startswith("params.n") for p in _paths(exc))
    message = spec_to_proto(_spec({}, {"shell": "x"}))
    message.params_json = b'{"bad name": 1}'
    with pytest.raises(InvalidArgument) as exc:
        admit(message, True, lambda: "x")
    assert _paths(exc)[0].startswith("spec.params_json")


def test_a_substitution_over_the_payload_limit_is_refused() -> None:
    spec = _spec({"big": "x" * 4000}, {"shell": "${params.big}" * 20})
    with pytest.raises(InvalidArgument) as exc:
        _admit(spec)
    assert _paths(exc) == ["spec.tasks[0].payload_json"]


def test_resolve_and_substitute_directly() -> None:
    values = resolve_params({"a": 1, "b": "x", "c": 1.5}, {"c": "2"})
    assert values == {"a": 1, "b": "x", "c": 2.0}
    assert substitute({"k": ["${params.a}-${params.b}", 5]}, values, "p") == {"k": ["1-x", 5]}
    with pytest.raises(InvalidArgument):
        resolve_params({}, {str(i): "1" for i in range(65)})


def test_a_plan_needs_no_values() -> None:
    # GetExecutionPlan / AnalyzeDependencies admit without values: required parameters are not asked for.
    spec = _spec({"who": None, "n": 2}, {"shell": "echo ${params.who} ${params.n}"})
    (task,) = _admit(spec, None).tasks
    assert json.loads(task.payload) == {"shell": "echo null 2"}
    with pytest.raises(InvalidArgument) as exc:
        _admit(spec, {})  # a submission must give them
    assert _paths(exc) == ["params.who"]
