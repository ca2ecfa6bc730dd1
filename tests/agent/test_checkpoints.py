"""The agent's side of checkpoints: the file watch (fake clock) and the python task context."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest

import corral.task
from corral.agent.checkpoints import MAX_CHECKPOINT_BYTES, CheckpointWatch
from corral.task import TaskContext


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _write(path: Path, value: object) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(value))
    os.replace(tmp, path)


def test_changes_are_reported_at_most_once_a_second(tmp_path: Path) -> None:
    sent: list[tuple[str, bytes]] = []
    clock = _Clock()
    watch = CheckpointWatch(lambda a, d: sent.append((a, d)), clock)
    path = tmp_path / "checkpoint.json"
    watch.watch("att", path)
    watch.poll()
    assert sent == []  # no file yet
    _write(path, {"n": 10})
    watch.poll()
    assert sent == [("att", b'{"n": 10}')]
    watch.poll()
    assert len(sent) == 1  # unchanged
    _write(path, {"n": 20})
    clock.now += 0.5
    watch.poll()
    assert len(sent) == 1  # changed, but within the second
    clock.now += 0.5
    watch.poll()
    assert sent[-1] == ("att", b'{"n": 20}')


def test_half_written_and_oversized_files_are_skipped(tmp_path: Path) -> None:
    sent: list[tuple[str, bytes]] = []
    clock = _Clock()
    watch = CheckpointWatch(lambda a, d: sent.append((a, d)), clock)
    path = tmp_path / "checkpoint.json"
    watch.watch("att", path)
    path.write_text('{"n": 1')  # written in place, caught halfway
    watch.poll()
    path.write_text("x" * (MAX_CHECKPOINT_BYTES + 1))
    clock.now += 1
    watch.poll()
    assert sent == []
    _write(path, {"n": 2})
    clock.now += 1
    watch.poll()
    assert sent == [("att", b'{"n": 2}')]


def test_the_last_state_is_read_at_the_end_and_waits_out_the_second(tmp_path: Path) -> None:
    sent: list[tuple[str, bytes]] = []
    watch = CheckpointWatch(lambda a, d: sent.append((a, d)))
    path = tmp_path / "checkpoint.json"
    extra = tmp_path / "checkpoint-in.json"
    extra.write_text("1")
    watch.watch("att", path, remove=True, extra=str(extra))
    _write(path, 1)
    watch.poll()
    _write(path, 2)
    final = watch.take_final("att")
    assert not path.exists() and not extra.exists()  # read, then removed: the worker's folder stays clean

    async def send() -> float:
        loop = asyncio.get_running_loop()
        began = loop.time()
        await watch.send_final("att", final)
        return loop.time() - began

    waited = asyncio.run(send())
    assert sent == [("att", b"1"), ("att", b"2")]
    assert 0.5 < waited < 3.0  # the rest of the second since the first report (upper bound: 3x slack)
    assert watch.take_final("att") is None


def test_task_context_saves_atomically_and_reads_the_last_state(tmp_path: Path) -> None:
    out = tmp_path / "checkpoint.json"
    given = tmp_path / "in.json"
    given.write_text('{"n": 50}')
    env = {"CORRAL_TASK_NAME": "count", "CORRAL_CHECKPOINT_FILE": str(out), "CORRAL_CHECKPOINT_IN": str(given)}
    corral.task._begin(env)
    try:
        ctx = corral.task.current()
        assert corral.task.current() is ctx and ctx.task_name == "count"
        assert ctx.checkpoint_state == {"n": 50}
        ctx.checkpoint({"n": 60})
        assert json.loads(out.read_text()) == {"n": 60}
        assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.json", "in.json"]  # no temporary left
        with pytest.raises(ValueError, match="limit"):
            ctx.checkpoint("x" * MAX_CHECKPOINT_BYTES)
        with pytest.raises(ValueError, match="JSON"):
            ctx.checkpoint({"n": float("nan")})
        assert json.loads(out.read_text()) == {"n": 60}  # a refused state leaves the last one
    finally:
        assert corral.task._end() is True  # it checkpointed: the agent reads its files
    with pytest.raises(RuntimeError):
        corral.task.current()
    assert TaskContext({}).checkpoint_state is None  # first attempt: nothing to resume from


def test_a_python_tasks_files_are_in_its_workers_folder_and_untouched_ones_say_so(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path), "CORRAL_ATTEMPT_ID": "att", "CORRAL_TASK_NAME": "split"}
    corral.task._begin(env)
    assert corral.task._end() is False  # never asked for its context: nothing to read
    corral.task._begin(env)
    try:
        ctx = corral.task.current()
        ctx.checkpoint([1])
        assert ctx.spawn("a", "m:f", kwargs={"x": 1}, dependencies=["split"]) == "split/a"
        ctx.spawn_many([{"name": "b", "payload": {"shell": "true"}}])
    finally:
        assert corral.task._end() is True
    assert json.loads(Path(corral.task.checkpoint_path(str(tmp_path), "att")).read_text()) == [1]
    lines = Path(corral.task.spawn_path(str(tmp_path), "att")).read_text().splitlines()
    assert [json.loads(line) for line in lines] == [
        [
            {
                "name": "a",
                "agent_type": "python",
                "payload": {"function": "m:f", "kwargs": {"x": 1}},
                "dependencies": ["split"],
            }
        ],
        [{"name": "b", "payload": {"shell": "true"}}],
    ]


def test_spawn_lines_are_reported_whole_and_once(tmp_path: Path) -> None:
    spawns: list[tuple[str, bytes]] = []
    watch = CheckpointWatch(lambda a, d: None, _Clock(), spawn=lambda a, d: spawns.append((a, d)))
    path = tmp_path / "spawn.jsonl"
    watch.watch("att", tmp_path / "checkpoint.json", spawn_path=path)
    path.write_bytes(b'[{"name": "a"}]\n[{"name": "b"')  # the second line is still being written
    watch.poll()
    assert spawns == [("att", b'[{"name": "a"}]')]
    with path.open("ab") as out:
        out.write(b"}]\n")
    watch.take_final("att")
    assert spawns == [("att", b'[{"name": "a"}]'), ("att", b'[{"name": "b"}]')]
