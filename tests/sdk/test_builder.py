"""The workflow builder: wiring, validation as it builds, freezing, composition, YAML round trips."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from corral.controller.sdk import (
    FailedPreconditionError,
    InvalidArgumentError,
    Workflow,
    WorkflowSpec,
    as_spec,
    spec_to_yaml,
)
from corral.controller.spec import load_workflow_file, parse_workflow_text


def deps(spec: WorkflowSpec) -> dict[str, list[str]]:
    return {t.name: list(t.dependencies) for t in spec.tasks}


def test_tasks_and_rshift_build_the_same_spec_as_the_loader() -> None:
    wf = Workflow("etl", labels={"team": "data"}, priority=70)
    extract = wf.task("extract", agent_type="shell", command=["./extract.sh"], timeout=600)
    clean = wf.python("clean", "etl.steps:clean", kwargs={"day": "2024-05-01"}, retries=2)
    load = wf.shell("load", shell="psql -f load.sql", resources={"memory_mb": 512, "cpu_cores": 1.5})
    assert extract >> clean >> load is load
    spec = wf.build()

    assert isinstance(spec, WorkflowSpec)
    assert deps(spec) == {"extract": [], "clean": ["extract"], "load": ["clean"]}
    assert spec.tasks[1].payload == {"function": "etl.steps:clean", "kwargs": {"day": "2024-05-01"}}
    assert spec.tasks[1].agent_type == "python" and spec.tasks[1].retries == 2
    assert spec.tasks[2].resources.memory_mb == 512
    # The same workflow written as a file loads to an equal spec: one source of truth.
    text = """
name: etl
labels: {team: data}
priority: 70
tasks:
  - name: extract
    payload: {command: [./extract.sh]}
    timeout: 600
  - name: clean
    agent_type: python
    payload: {function: "etl.steps:clean", kwargs: {day: "2024-05-01"}}
    retries: 2
    dependencies: [extract]
  - name: load
    payload: {shell: psql -f load.sql}
    resources: {memory_mb: 512, cpu_cores: 1.5}
    dependencies: [clean]
"""
    assert parse_workflow_text(text) == spec


def test_fan_out_and_fan_in_with_lists() -> None:
    wf = Workflow("fan")
    a = wf.shell("a", ["true"])
    b, c = wf.shell("b", ["true"]), wf.shell("c", ["true"])
    d = wf.shell("d", ["true"])
    a >> [b, c]
    [b, c] >> d
    assert deps(wf.build()) == {"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"]}


def test_lshift_depends_on_and_names_and_repeated_edges() -> None:
    wf = Workflow("w")
    a = wf.shell("a", "echo a")
    b = wf.shell("b", "echo b", depends_on=[a])
    c = wf.shell("c", "echo c")
    c << b
    c.depends_on("a")
    b >> c  # the same edge twice is harmless
    assert deps(wf.build()) == {"a": [], "b": ["a"], "c": ["b", "a"]}
    assert wf["c"].dependencies == ("b", "a")


def test_timedelta_durations() -> None:
    wf = Workflow("w")
    wf.shell("a", ["sleep", "1"], timeout=timedelta(minutes=2), estimated_duration=timedelta(seconds=3))
    task = wf.build().tasks[0]
    assert task.timeout == 120.0 and task.estimated_duration == 3.0


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"name": "bad name", "shell": "x"}, "tasks[0].name"),
        ({"name": "a", "shell": "x", "priority": 101}, "tasks[0].priority"),
        ({"name": "a", "shell": "x", "timeout": -1}, "tasks[0].timeout"),
        ({"name": "a", "shell": "x", "resources": {"gpu_count": -1}}, "tasks[0].resources.gpu_count"),
    ],
)
def test_bad_fields_raise_at_once_with_their_path(kwargs: dict[str, object], field: str) -> None:
    wf = Workflow("w")
    name = str(kwargs.pop("name"))
    with pytest.raises(InvalidArgumentError) as info:
        wf.shell(name, **kwargs)  # type: ignore[arg-type]
    assert [v.field for v in info.value.violations] == [field]
    assert len(wf) == 0  # nothing half-added


def test_shell_payload_needs_a_command() -> None:
    with pytest.raises(InvalidArgumentError) as info:
        Workflow("w").shell("a")
    assert "exactly one of 'command'" in info.value.violations[0].description


def test_duplicate_and_unknown_dependency() -> None:
    wf = Workflow("w")
    wf.shell("a", "true")
    with pytest.raises(InvalidArgumentError) as info:
        wf.shell("a", "true")
    assert info.value.violations == [("tasks[1].name", "duplicate task name 'a'")]
    with pytest.raises(InvalidArgumentError) as info:
        wf.shell("b", "true", depends_on=["nope"])
    assert "unknown task 'nope'" in info.value.violations[0].description


def test_cycle_raises_when_wired_and_changes_nothing() -> None:
    wf = Workflow("w")
    a, b, c = (wf.shell(n, "true") for n in "abc")
    a >> b >> c
    with pytest.raises(InvalidArgumentError) as info:
        c >> a
    assert info.value.violations[0].description == "dependency cycle: a -> b -> c -> a"
    with pytest.raises(InvalidArgumentError, match="depends on itself"):
        a >> a
    assert deps(wf.build()) == {"a": [], "b": ["a"], "c": ["b"]}


def test_handles_of_another_workflow_are_refused() -> None:
    one, two = Workflow("one"), Workflow("two")
    a = one.shell("a", "true")
    b = two.shell("b", "true")
    with pytest.raises(InvalidArgumentError, match="another workflow"):
        a >> b


def test_bad_header_and_empty_workflow() -> None:
    with pytest.raises(InvalidArgumentError) as info:
        Workflow("no spaces allowed", priority=200)
    assert {v.field for v in info.value.violations} == {"name", "priority"}
    with pytest.raises(InvalidArgumentError) as info:
        Workflow("empty").build()
    assert info.value.violations[0].field == "tasks"


def test_build_freezes_the_builder() -> None:
    wf = Workflow("w")
    a = wf.shell("a", "true")
    spec = wf.build()
    assert wf.build() is spec and wf.built
    with pytest.raises(FailedPreconditionError):
        wf.shell("b", "true")
    with pytest.raises(FailedPreconditionError):
        a >> a
    with pytest.raises(FailedPreconditionError):
        wf.include(spec, prefix="again")
    with pytest.raises(Exception, match="frozen"):
        spec.name = "other"  # type: ignore[misc]


def test_include_prefixes_names_rewrites_dependencies_and_wires_segments() -> None:
    ingest = Workflow("ingest", priority=80)
    fetch = ingest.shell("fetch", "curl -O x")
    unpack = ingest.shell("unpack", "tar xf x", priority=10)
    fetch >> unpack

    wf = Workflow("main")
    setup = wf.shell("setup", "mkdir -p data")
    seg = wf.include(ingest, prefix="ingest")
    report = wf.python("report", "reports:make")
    setup >> seg >> report

    spec = wf.build()
    assert deps(spec) == {
        "setup": [],
        "ingest.fetch": ["setup"],
        "ingest.unpack": ["ingest.fetch"],
        "report": ["ingest.unpack"],
    }
    assert [t.name for t in seg.roots] == ["ingest.fetch"] and [t.name for t in seg.leaves] == ["ingest.unpack"]
    assert seg["unpack"].name == "ingest.unpack"
    by_name = {t.name: t for t in spec.tasks}
    # the included workflow's default priority is kept per task; an explicit one wins
    assert by_name["ingest.fetch"].priority == 80 and by_name["ingest.unpack"].priority == 10
    assert not ingest.built  # including does not freeze the source


def test_include_the_same_segment_twice_needs_distinct_prefixes() -> None:
    part = Workflow("part")
    part.shell("x", "true")
    wf = Workflow("w")
    wf.include(part.build(), prefix="one")
    with pytest.raises(InvalidArgumentError, match=r"duplicate task name 'one\.x'"):
        wf.include(part, prefix="one")
    wf.include(part, prefix="two")
    assert [t.name for t in wf.tasks] == ["one.x", "two.x"]


def test_yaml_round_trip(tmp_path: Path) -> None:
    wf = Workflow("rt", metadata={"owner": "me", "n": [1, 2]}, priority=5)
    a = wf.shell("a", ["echo", "a"], env={"X": "1"}, cwd="/tmp", constraints={"zone": "eu"})
    b = wf.python("b", "m.mod:fn", args=[1, "two"], resources={"gpu_count": 1, "custom_resources": {"licence": 1}})
    c = wf.task("c", agent_type="docker", payload={"image": "alpine"}, type="io", retry_backoff=2.5)
    a >> [b, c]
    text = wf.to_yaml()
    path = tmp_path / "rt.yaml"
    path.write_text(text)
    assert load_workflow_file(path) == wf.build()
    assert Workflow.from_file(path).build() == wf.build()
    assert spec_to_yaml(wf.build()) == text


def test_from_spec_is_open_for_more() -> None:
    base = Workflow("base")
    base.shell("a", "true")
    wf = Workflow.from_spec(base.build())
    wf.shell("b", "true", depends_on=["a"])
    assert deps(wf.build()) == {"a": [], "b": ["a"]}


def test_from_file_reports_every_problem_with_its_path(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "name: bad\ntasks:\n"
        "  - {name: a, payload: {shell: x}, dependencies: [zzz]}\n"
        "  - {name: a, payload: {shell: x}}\n"
    )
    with pytest.raises(InvalidArgumentError) as info:
        Workflow.from_file(path)
    assert info.value.violations == [
        ("tasks[1].name", "duplicate task name 'a'"),
        ("tasks[0].dependencies[0]", "unknown task 'zzz'"),
    ]


def test_as_spec_accepts_builders_specs_and_mappings() -> None:
    wf = Workflow("w")
    wf.shell("a", "true")
    spec = as_spec(wf)
    assert not wf.built
    assert as_spec(spec) is spec
    assert as_spec({"name": "w", "tasks": [{"name": "a", "payload": {"shell": "true"}}]}) == spec
    with pytest.raises(InvalidArgumentError):
        as_spec({"name": "w", "tasks": []})
