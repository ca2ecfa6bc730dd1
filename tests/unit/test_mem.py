"""Memory per task and at boot (issue 13): structural checks, never an RSS or a timing.

Leaf tasks keep no dependents list; small results are one object per value; a workflow bigger
than the learned-duration book feeds only its fingerprint's average; the daemon's imports leave
out the web server, cryptography, metrics rendering, cron and YAML until something asks for them.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from corral.controller.core.dependents import Dependents
from corral.controller.core.durations import FINGERPRINT, TASK, DurationSource
from corral.controller.core.machine import MachineConfig
from corral.controller.core.model import Task, shared_result
from corral.controller.sim import Fleet, Simulator
from corral.controller.spec import parse_workflow
from corral.controller.store import codec
from corral.controller.store.sqlite import MIGRATIONS, SqliteStore


def _spec(name: str, count: int, *, chain: bool = False) -> Any:
    tasks = [
        {
            "name": f"t{i}",
            "agent_type": "python",
            "payload": {"function": "mod:work", "args": [i]},
            "dependencies": [f"t{i - 1}"] if i and chain else [],
        }
        for i in range(count)
    ]
    return parse_workflow({"name": name, "tasks": tasks})


def test_leaf_tasks_have_no_dependents_entry_and_read_as_empty() -> None:
    sim = Simulator(Fleet(agents=1, slots=1), default_duration_s=0.1)
    spec = parse_workflow(
        {
            "name": "shape",
            "tasks": [
                {"name": "a", "payload": {"shell": "true"}},
                {"name": "b", "payload": {"shell": "true"}, "dependencies": ["a"]},
                {"name": "c", "payload": {"shell": "true"}, "dependencies": ["a"]},
                {"name": "lone", "payload": {"shell": "true"}},
            ],
        }
    )
    assert sim.run(spec).state == "completed"
    machine = sim.machine
    assert isinstance(machine.dependents, Dependents)
    ids = {machine.tasks[t].name: t for t in next(iter(machine.workflows.values())).task_ids}
    assert sorted(machine.dependents) == [ids["a"]]  # only the task others depend on
    assert sorted(machine.dependents[ids["a"]]) == sorted([ids["b"], ids["c"]])
    assert type(machine.dependents[ids["a"]]) is tuple  # sealed after the submission's batch
    assert machine.dependents[ids["lone"]] == ()
    assert ids["lone"] not in machine.dependents  # a read does not store


def test_dependents_reopen_a_sealed_entry_and_seal_it_again() -> None:
    dependents = Dependents()
    dependents.add("a", "b")
    dependents.add("a", "c")
    assert dependents["a"] == ["b", "c"]
    dependents.seal()
    assert dependents["a"] == ("b", "c")
    dependents.add("a", "d")  # a task spawned later depends on it too
    assert dependents["a"] == ["b", "c", "d"]
    dependents.seal()
    assert dependents["a"] == ("b", "c", "d") and dependents["z"] == ()


def test_small_results_are_shared_and_big_ones_kept_as_given() -> None:
    one, two = b"".join([b"nu", b"ll"]), b"".join([b"n", b"ull"])
    assert one is not two
    assert shared_result(one) is shared_result(two) == b"null"
    assert shared_result(None) == b"null"
    three, four = b"".join([b"4", b"2"]), b"".join([b"4", b"2"])
    assert shared_result(three) is shared_result(four) == b"42"
    big = b'{"rows": [' + b"1," * 20 + b"1]}"
    assert shared_result(big) is big


def test_a_workflow_bigger_than_the_book_learns_only_its_fingerprint() -> None:
    sim = Simulator(Fleet(agents=2, slots=2), config=MachineConfig(max_learned_durations=5), default_duration_s=0.5)
    assert sim.run(_spec("big", 8)).state == "completed"
    book = sim.machine.ordering.book
    kinds = {group[0] for group in book._groups}
    assert kinds == {FINGERPRINT}
    assert book.expected("default", "big", "t0", 0.0, "python:mod:work")[1] is DurationSource.FINGERPRINT
    # A workflow that fits learns per task, as before.
    assert sim.run(_spec("small", 3, chain=True)).state == "completed"
    learned = {(*key, name) for key, names in book._groups.items() if key[0] == TASK for name in names}
    assert learned == {(TASK, "default", "small", f"t{i}") for i in range(3)}
    assert book.expected("default", "small", "t1", 0.0, "")[1] is DurationSource.LEARNED


def test_the_daemon_imports_neither_the_web_server_nor_cryptography_at_boot() -> None:
    # aiohttp and cryptography cost ~10 MiB of RSS each, prometheus-client ~2, croniter and yaml
    # ~1: a controller without --http, TLS, a secret key, a cron schedule or a YAML config never
    # uses them.
    lazy = ("aiohttp", "cryptography", "prometheus_client", "croniter", "yaml")
    probe = f"import sys, corral.controller.daemon; print(sorted(m for m in {lazy!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("daemon", ["controller", "agent"])
def test_the_corral_command_starts_a_daemon_without_the_cli_or_rich(daemon: str) -> None:
    # `corral controller` / `corral agent` (the deployed images' commands) skip the CLI's modules
    # and keep rich out (~7 MiB); --help shows the daemon's own flags, as through the CLI.
    probe = (
        f"import sys; sys.argv = ['corral', {daemon!r}, '--help']\n"
        "from corral.controller import entry\n"
        "try:\n    entry.main()\nexcept SystemExit as stop:\n    code = stop.code\n"
        "loaded = [m for m in ('rich', 'pygments', 'corral.controller.cli.main') if sys.modules.get(m) is not None]\n"
        "print('RESULT', code, loaded)"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60)
    assert "--help" in out.stdout  # the daemon's usage
    assert out.stdout.strip().splitlines()[-1] == "RESULT 0 []"


@pytest.mark.parametrize("daemon", ["controller", "agent"])
def test_python_dash_m_starts_a_daemon_without_rich(daemon: str) -> None:
    # `python -m corral.controller` / `python -m corral.agent` (the bench's and the tests' way)
    # keep rich out as the `corral` command does.
    probe = (
        f"import runpy, sys; sys.argv = ['corral.{daemon}', '--help']\n"
        "try:\n"
        f"    runpy.run_module('corral.{daemon}', run_name='__main__', alter_sys=True)\n"
        "except SystemExit as stop:\n    code = stop.code\n"
        "loaded = [m for m in ('rich', 'pygments') if sys.modules.get(m) is not None]\n"
        "print('RESULT', code, loaded)"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60)
    assert "--help" in out.stdout
    assert out.stdout.strip().splitlines()[-1] == "RESULT 0 []"


def test_an_up_to_date_sqlite_file_opens_without_sqlite_utils(tmp_path: Path) -> None:
    # Migrations need sqlite-utils; a file already at the current schema (every restart) does not.
    db = tmp_path / "state.db"
    SqliteStore(str(db)).close()
    probe = (
        "import sys\n"
        "from corral.controller.store.sqlite import SqliteStore\n"
        f"store = SqliteStore({str(db)!r})\n"
        "print('RESULT', store.schema_version, 'sqlite_utils' in sys.modules)\n"
        "store.close()"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip().splitlines()[-1] == f"RESULT {len(MIGRATIONS)} False"


def test_other_commands_still_take_the_cli() -> None:
    probe = (
        "import sys; sys.argv = ['corral', '--help']\n"
        "from corral.controller import entry\n"
        "try:\n    entry.main()\nexcept SystemExit as stop:\n    code = stop.code\n"
        "print('RESULT', code, 'corral.controller.cli.main' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60)
    assert "controller" in out.stdout and out.stdout.strip().splitlines()[-1] == "RESULT 0 True"


def test_rare_task_fields_cost_one_slot_until_set_and_behave_as_fields() -> None:
    plain = Task("t-1", "wf-1", "a", 0, "shell", b"{}")
    assert plain._rare is None and not hasattr(plain, "__dict__")
    assert (plain.preemptions, plain.failure_reason, plain.max_disconnect_s, plain.compensate) == (0, "", None, b"")
    assert len(Task.__slots__) + 25 == 53  # 28 slots: 27 fields and the record, instead of 52
    assert sys.getsizeof(plain) <= 256  # GC and object headers and 28 slots (with 52 slots: 448 B)
    assert (plain.gang, plain.constraints, plain.dynamic, plain.on_disconnect) == ("", {}, None, "stop")
    plain.preemptions = 2
    plain.failure_reason = "poison"
    assert plain._rare is not None and (plain.preemptions, plain.failure_reason) == (2, "poison")
    copy = dataclasses.replace(plain, error="again")
    copy.preemptions = 3
    assert plain.preemptions == 2  # replace() copied the record: no aliasing
    assert copy != plain and dataclasses.replace(copy, error="", preemptions=2) != copy
    plain.preemptions, plain.failure_reason = 0, ""
    assert plain._rare is None  # back at defaults: the record goes, and it equals a fresh task
    assert plain == Task("t-1", "wf-1", "a", 0, "shell", b"{}")
    built = Task("t-2", "wf-1", "b", 1, "shell", b"{}", compensates="t-1", cache_source="w/t/a", agent_losses=1)
    assert (built.compensates, built.cache_source, built.agent_losses) == ("t-1", "w/t/a", 1)
    assert codec.decode_task(codec.encode_task(built)) == built
    placed = Task(
        "t-3", "wf-1", "c", 2, "shell", b"{}", constraints={"zone": "a"}, gang="g", deadline=5.0, on_disconnect="keep"
    )
    assert (placed.constraints, placed.gang, placed.deadline, placed.on_disconnect) == ({"zone": "a"}, "g", 5.0, "keep")
    assert codec.decode_task(codec.encode_task(placed)) == placed
    assert Task("t-4", "wf-1", "d", 3, "shell", b"{}", constraints={}, affinity={})._rare is None  # empty: no record
