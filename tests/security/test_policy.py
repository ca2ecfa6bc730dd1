"""The agent's execution policy: every escape fails with a ``policy:`` error before anything runs.

Real executors, real warm python workers, real shell processes (and a real agent against the
scripted gateway where the Hello matters). Each refused payload would create a marker file if it
ran; the tests check that the marker is not there.
"""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from corral.agent.config import AgentConfig
from corral.agent.executor import Executor
from corral.agent.output import LastLine, Redactor
from corral.agent.policy import MAX_RESULT_BYTES, ExecPolicy, ModuleRule, PolicyError, confine_cwd
from corral.agent.pypool import WorkerPool
from corral.agent.runas import RunAs, RunAsError, resolve_run_as
from corral.controller.sdk import SyncClient
from corral.v1 import types_pb2
from tests.agent.conftest import (
    REPO,
    AgentFactory,
    FakeGateway,
    RecordingSink,
    eventually,
    gateway,  # noqa: F401  (fixture)
    make_agent,  # noqa: F401  (fixture)
    shell_task,
)
from tests.procs import Cluster

SUCCEEDED = types_pb2.ATTEMPT_OUTCOME_SUCCEEDED
FAILED = types_pb2.ATTEMPT_OUTCOME_FAILED
TASKS = "tests.security.policy_tasks"

Make = Callable[..., Awaitable[Executor]]


def py_task(attempt_id: str, function: str, *args: Any, workflow: str = "wf-1", **payload: Any) -> Any:
    """A python assignment of ``function`` (``module:attr``; bare names are in policy_tasks)."""
    spec = function if ":" in function else f"{TASKS}:{function}"
    body = {"function": spec, "args": list(args), **payload}
    return types_pb2.TaskAssignment(
        attempt_id=attempt_id,
        task_id=f"task-{attempt_id}",
        workflow_id=workflow,
        task_name=f"name-{attempt_id}",
        agent_type="python",
        payload_json=json.dumps(body).encode(),
        attempt_number=1,
    )


@pytest.fixture
def sink() -> RecordingSink:
    return RecordingSink()


@pytest.fixture
async def make(tmp_path: Path, sink: RecordingSink) -> AsyncIterator[Make]:
    """Executors with a given policy (and a warm pool when ``workers`` > 0); torn down after."""
    made: list[tuple[Executor, WorkerPool | None]] = []

    async def build(
        *,
        policy: ExecPolicy | None = None,
        workers: int = 1,
        slots: int = 2,
        output_cap: int = 1 << 20,
        work_dir: Path | None = None,
        run_as: RunAs | None = None,
        passed_env: dict[str, str] | None = None,
        dir_keep_s: float = 300.0,
    ) -> Executor:
        work = work_dir or tmp_path / "work"
        work.mkdir(parents=True, exist_ok=True)
        pool = None
        if workers:
            pool = WorkerPool(workers, work, output_cap, [REPO], policy=policy, passed_env=passed_env, run_as=run_as)
            await pool.start()
        executor = Executor(
            slots=slots,
            agent_types=("shell", "python"),
            work_dir=work,
            sink=sink,
            pool=pool,
            kill_grace_s=0.5,
            output_cap=output_cap,
            policy=policy,
            passed_env=passed_env,
            run_as=run_as,
            dir_keep_s=dir_keep_s,
        )
        executor.start()
        made.append((executor, pool))
        return executor

    yield build
    for executor, pool in made:
        await executor.kill_all()
        await executor.close()
        if pool is not None:
            await pool.close()


async def refused(sink: RecordingSink, attempt_id: str, *needles: str) -> str:
    """Wait for ``attempt_id``: FAILED, not retryable, never started, error ``policy: ...``."""
    result = await sink.result(attempt_id)
    assert result.outcome == FAILED, result
    assert not result.retryable, result
    assert result.error.startswith("policy: "), result.error
    for needle in needles:
        assert needle in result.error, (needle, result.error)
    assert attempt_id not in sink.pids, "a refused attempt must not start"
    return result.error


# -- cwd ------------------------------------------------------------------------------------------


async def test_cwd_escapes_are_refused_and_nothing_runs(make: Make, sink: RecordingSink, tmp_path: Path) -> None:
    executor = await make(workers=0)
    outside = tmp_path / "outside"
    outside.mkdir()
    # A symlink out of the attempt folder, left there before the attempt starts.
    folder = tmp_path / "work" / "attempts" / "link"
    folder.mkdir(parents=True)
    (folder / "escape").symlink_to(outside)
    executor.submit(
        [
            shell_task("abs", "touch marker", cwd=str(outside)),
            shell_task("dotdot", "touch marker", cwd="../../../outside"),
            shell_task("inner-dotdot", "touch marker", cwd="a/../../x"),
            shell_task("link", "touch marker", cwd="escape"),
            shell_task("ok", "touch marker; pwd", cwd="inside"),
        ]
    )
    await refused(sink, "abs", "relative")
    await refused(sink, "dotdot", "'..'")
    await refused(sink, "inner-dotdot", "'..'")
    await refused(sink, "link", "outside the attempt")
    assert (await sink.result("ok")).outcome == SUCCEEDED
    assert not (outside / "marker").exists()
    assert list(outside.iterdir()) == []
    assert (tmp_path / "work" / "attempts" / "ok" / "inside" / "marker").exists()


def test_confine_cwd_resolves_symlinks(tmp_path: Path) -> None:
    root = tmp_path / "attempt"
    (root / "real").mkdir(parents=True)
    (root / "inner").symlink_to(root / "real")
    (root / "out").symlink_to(tmp_path)
    assert confine_cwd(root, None) == root.resolve()
    assert confine_cwd(root, "inner") == (root / "real").resolve()
    with pytest.raises(PolicyError, match="outside"):
        confine_cwd(root, "out")
    with pytest.raises(PolicyError, match="relative"):
        confine_cwd(root, "/etc")


# -- env ------------------------------------------------------------------------------------------


async def test_loader_and_interpreter_variables_are_refused(make: Make, sink: RecordingSink, tmp_path: Path) -> None:
    executor = await make(workers=1)
    marker = tmp_path / "marker"
    executor.submit(
        [
            shell_task("preload", f"touch {marker}", env={"LD_PRELOAD": "/tmp/evil.so"}),
            shell_task("pypath", f"touch {marker}", env={"PYTHONPATH": "/tmp"}),
            shell_task("path", f"touch {marker}", env={"PATH": "/tmp"}),
            shell_task("bashenv", f"touch {marker}", env={"BASH_ENV": "/tmp/x"}),
            shell_task("identity", f"touch {marker}", env={"CORRAL_TASK_ID": "forged"}),
            py_task("py-preload", "touch", str(marker), env={"LD_LIBRARY_PATH": "/tmp"}),
        ]
    )
    await refused(sink, "preload", "LD_PRELOAD", "--env-allow LD_PRELOAD")
    await refused(sink, "pypath", "PYTHONPATH", "--env-allow PYTHONPATH")
    await refused(sink, "path", "--env-allow PATH")
    await refused(sink, "bashenv", "BASH_ENV")
    await refused(sink, "identity", "CORRAL_")
    await refused(sink, "py-preload", "LD_LIBRARY_PATH")
    assert not marker.exists()


async def test_env_allow_lets_a_named_variable_through(make: Make, sink: RecordingSink) -> None:
    executor = await make(workers=0, policy=ExecPolicy(env_allow=frozenset({"PYTHONDONTWRITEBYTECODE"})))
    executor.submit(
        [shell_task("allowed", 'echo "\\"$PYTHONDONTWRITEBYTECODE\\""', env={"PYTHONDONTWRITEBYTECODE": "1"})]
    )
    result = await sink.result("allowed")
    assert result.outcome == SUCCEEDED, result
    assert json.loads(result.result_json) == "1"


async def test_tasks_start_from_a_clean_environment(
    make: Make, sink: RecordingSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The agent's own environment (a credential, an import path) must not reach tasks.
    monkeypatch.setenv("AGENT_ONLY_SECRET", "agent-secret")
    monkeypatch.setenv("PYTHONPATH", "/nowhere")
    monkeypatch.setenv("OPERATOR_PROXY", "http://proxy")
    executor = await make(workers=1, passed_env={"OPERATOR_PROXY": "http://proxy"})
    names = ["AGENT_ONLY_SECRET", "PYTHONPATH", "OPERATOR_PROXY", "PATH", "LANG", "LC_ALL", "HOME", "TMPDIR"]
    script = "import json, os, sys; print(json.dumps({n: os.environ.get(n) for n in sys.argv[1:]}))"
    executor.submit(
        [
            shell_task("sh", command=["python3", "-c", script, *names]),
            py_task("py", "env_of", *names),
        ]
    )
    shell = json.loads((await sink.result("sh")).result_json)
    python = json.loads((await sink.result("py")).result_json)
    for seen in (shell, python):
        assert seen["AGENT_ONLY_SECRET"] is None
        assert seen["PYTHONPATH"] is None
        assert seen["OPERATOR_PROXY"] == "http://proxy"  # --pass-env
        assert seen["PATH"] == "/usr/local/bin:/usr/bin:/bin"
        assert seen["LANG"] == seen["LC_ALL"] == "C.UTF-8"
    attempt = str(Path(shell["HOME"]))
    assert attempt.endswith("/attempts/sh")
    assert shell["TMPDIR"] == attempt + "/tmp"
    assert "/pyworkers/worker-" in python["HOME"]


# -- python modules ---------------------------------------------------------------------------------


async def test_dangerous_modules_are_refused_by_default(make: Make, sink: RecordingSink, tmp_path: Path) -> None:
    executor = await make(workers=1)
    marker = tmp_path / "marker"
    executor.submit(
        [
            py_task("system", "os:system", f"touch {marker}"),
            py_task("eval", "builtins:eval", f"open({str(marker)!r}, 'w')"),
            py_task("subprocess", "subprocess:run", ["touch", str(marker)]),
            py_task("private", "_posixsubprocess:fork_exec"),
            py_task("through-attr", f"{TASKS}:os.system", f"touch {marker}"),
            py_task("reexported", "run_command", f"touch {marker}"),
            py_task("dunder", f"{TASKS}:touch.__globals__"),
            py_task("fine", "touch", str(tmp_path / "allowed-marker")),
        ]
    )
    await refused(sink, "system", "'os'", "--python-allow os")
    await refused(sink, "eval", "'builtins'", "--python-allow builtins")
    await refused(sink, "subprocess", "--python-allow subprocess")
    await refused(sink, "private", "_posixsubprocess")
    # Resolved in the worker, refused before the call: an allowed module cannot hand out os.system.
    assert (await sink.result("through-attr")).error.startswith("policy: ")
    assert (await sink.result("reexported")).error.startswith("policy: ")
    assert "'posix'" in sink.results["reexported"].error
    await refused(sink, "dunder", "dunder")
    assert (await sink.result("fine")).outcome == SUCCEEDED
    assert not marker.exists()
    assert (tmp_path / "allowed-marker").exists()


async def test_tls_agent_allows_no_module_until_listed(make: Make, sink: RecordingSink, tmp_path: Path) -> None:
    closed = ExecPolicy(modules=ModuleRule((), open_default=False))
    executor = await make(workers=1, policy=closed)
    marker = tmp_path / "marker"
    executor.submit([py_task("closed", "touch", str(marker))])
    error = await refused(sink, "closed")
    assert error == (
        f"policy: python module '{TASKS}' is not allowed on this agent; allow it with --python-allow tests"
    )
    assert not marker.exists()


async def test_python_allow_list_matches_module_prefixes(make: Make, sink: RecordingSink, tmp_path: Path) -> None:
    allow = ExecPolicy(modules=ModuleRule(("tests.security", "math"), open_default=False))
    executor = await make(workers=1, policy=allow)
    executor.submit(
        [
            py_task("listed", "touch", str(tmp_path / "listed")),
            py_task("prefix-only", "tests.securityx:f"),
            py_task("math", "math:floor", 2.5),
            py_task("os", "os:getpid"),
        ]
    )
    assert (await sink.result("listed")).outcome == SUCCEEDED
    await refused(sink, "prefix-only", "--python-allow tests")
    assert json.loads((await sink.result("math")).result_json) == 2
    await refused(sink, "os", "--python-allow os")


def test_agent_config_policy_defaults() -> None:
    dev = AgentConfig(name="a")
    assert dev.policy.modules.open_default and dev.policy.allow_shell
    tls = AgentConfig(name="a", ca=Path("ca.pem"))
    assert not tls.policy.modules.open_default
    assert AgentConfig(name="a", no_shell=True).offered_types == ("python",)
    with pytest.raises(ValueError, match="module name"):
        AgentConfig(name="a", python_allow=("bad name",))
    with pytest.raises(ValueError, match="not a directory"):
        AgentConfig(name="a", python_paths=(Path("/nonexistent/dir"),))
    assert AgentConfig(name="a", python_paths=(Path("."),)).python_paths == (Path.cwd(),)


# -- shell off ------------------------------------------------------------------------------------


async def test_no_shell_refuses_shell_tasks_and_does_not_offer_them(
    make_agent: AgentFactory,  # noqa: F811  (the fixture imported above)
    gateway: FakeGateway,  # noqa: F811
    tmp_path: Path,
) -> None:
    await make_agent(no_shell=True)
    connection = await gateway.connection()
    assert list(connection.hello.agent_types) == ["python"]
    marker = tmp_path / "marker"
    connection.assign(shell_task("sh", f"touch {marker}"))
    finished = (await connection.wait_event("sh", "finished")).finished
    assert finished.outcome == FAILED and not finished.retryable
    assert finished.error == "policy: shell tasks are disabled on this agent (--no-shell)"
    assert not connection.events("sh", "started")
    assert not marker.exists()


# -- warm workers -----------------------------------------------------------------------------------


async def test_warm_worker_state_never_crosses_workflows(make: Make, sink: RecordingSink, tmp_path: Path) -> None:
    executor = await make(workers=1, slots=1)
    marker = tmp_path / "imported-marker"
    executor.submit(
        [py_task("plant", "plant", str(marker), workflow="wf-A"), py_task("same", "probe", workflow="wf-A")]
    )
    planted_pid = json.loads((await sink.result("plant")).result_json)
    same = json.loads((await sink.result("same")).result_json)
    # The common case stays warm: the same workflow reuses the worker, with env, cwd and sys.path put back.
    assert same["pid"] == planted_pid
    assert same["env"] is None and not same["path_has_cwd"] and not same["imported"]
    assert same["cwd"].endswith(f"/pyworkers/worker-{0}")
    executor.submit([py_task("other", "probe", workflow="wf-B")])
    other = json.loads((await sink.result("other")).result_json)
    assert other["pid"] != planted_pid
    assert other == {
        "pid": other["pid"],
        "imported": False,
        "in_modules": False,
        "env": None,
        "cwd": other["cwd"],
        "path_has_cwd": False,
    }
    assert not marker.exists(), "the planted module ran in another workflow's task"
    # The worker's folder was emptied between the workflows: the planted module file is gone.
    assert not list((tmp_path / "work" / "pyworkers" / "worker-0").glob("*.py"))


# -- run-as -----------------------------------------------------------------------------------------


def _user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no 'nobody' user on this machine")


@pytest.mark.skipif(os.geteuid() != 0, reason="--run-as needs root")
async def test_run_as_runs_shell_tasks_as_the_user(make: Make, sink: RecordingSink) -> None:
    user = _user()
    # pytest's tmp_path is 0700 root: the user could not reach a work dir under it.
    base = Path(tempfile.mkdtemp(prefix="corral-runas-"))
    try:
        base.chmod(0o755)
        run_as = resolve_run_as("nobody", base / "work")
        executor = await make(workers=0, work_dir=base / "work", run_as=run_as)
        executor.submit(
            [
                shell_task("who", 'echo "[$(id -u), $(id -g)]"; touch mine'),
                shell_task("deep", "touch here", cwd="sub/deeper"),
            ]
        )
        result = await sink.result("who")
        assert result.outcome == SUCCEEDED, result
        assert json.loads(result.result_json) == [user.pw_uid, user.pw_gid]
        folder = base / "work" / "attempts" / "who"
        assert folder.stat().st_uid == user.pw_uid
        assert (folder / "mine").stat().st_uid == user.pw_uid
        assert (await sink.result("deep")).outcome == SUCCEEDED
        deep = base / "work" / "attempts" / "deep"
        assert [(deep / p).stat().st_uid for p in ("sub", "sub/deeper", "sub/deeper/here")] == [user.pw_uid] * 3
    finally:
        subprocess.run(["rm", "-rf", str(base)], check=False)


@pytest.mark.skipif(os.geteuid() != 0, reason="--run-as needs root")
async def test_run_as_runs_python_workers_as_the_user(make: Make, sink: RecordingSink) -> None:
    user = _user()
    try:
        usable = subprocess.run([sys.executable, "-c", "pass"], user=user.pw_uid, check=False).returncode == 0
    except OSError:
        usable = False
    if not usable:
        pytest.skip(f"the user {user.pw_name} cannot run this interpreter ({sys.executable})")
    base = Path(tempfile.mkdtemp(prefix="corral-runas-"))
    try:
        base.chmod(0o755)
        run_as = resolve_run_as("nobody", base / "work")
        executor = await make(workers=1, work_dir=base / "work", run_as=run_as)
        executor.submit([py_task("who", "identity")])
        result = await sink.result("who")
        assert result.outcome == SUCCEEDED, result
        seen = json.loads(result.result_json)
        assert (seen["uid"], seen["gid"]) == (user.pw_uid, user.pw_gid)
    finally:
        subprocess.run(["rm", "-rf", str(base)], check=False)


def test_run_as_is_refused_when_it_cannot_work(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        with pytest.raises(RunAsError, match="needs the agent to run as root"):
            resolve_run_as("nobody", tmp_path)
        return
    with pytest.raises(RunAsError, match="must not be root"):
        resolve_run_as("root", tmp_path)
    with pytest.raises(RunAsError, match="no such user"):
        resolve_run_as("no-such-user-corral", tmp_path)
    _user()
    # tmp_path sits under a 0700 folder of root: the user could never reach it.
    with pytest.raises(RunAsError, match="not searchable"):
        resolve_run_as("nobody", tmp_path / "work")
    proc = subprocess.run(
        [sys.executable, "-m", "corral.agent", "--run-as", "no-such-user-corral", "--work-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "no such user" in proc.stderr


# -- capture on disk ----------------------------------------------------------------------------------


def _disk_use(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                continue
    return total


async def test_capture_is_bounded_on_disk_and_removed(make: Make, sink: RecordingSink, tmp_path: Path) -> None:
    cap = 256 * 1024
    executor = await make(workers=1, output_cap=cap)
    work = tmp_path / "work"
    total = 50 * 1024 * 1024
    executor.submit(
        [
            py_task("py", "print_bytes", total),
            shell_task("sh", f"head -c {total} /dev/zero | tr '\\0' z"),
        ]
    )
    peak = 0
    while "py" not in sink.results or "sh" not in sink.results:
        peak = max(peak, _disk_use(work))
        await asyncio.sleep(0.01)
    peak = max(peak, _disk_use(work))
    assert sink.results["py"].outcome == sink.results["sh"].outcome == SUCCEEDED
    assert len(sink.stdout("py")) == len(sink.stdout("sh")) == cap
    # Python output never touches the disk; a shell attempt keeps at most the cap per stream.
    # (Plus the supervisor's few small control files: spec, pids, status.)
    assert peak <= 2 * cap + 16 * 1024, peak
    executor.forget(["py", "sh"])
    assert _disk_use(work) == 0
    assert not (work / "attempts" / "sh").exists()


async def test_attempt_folders_go_even_without_an_ack(make: Make, sink: RecordingSink, tmp_path: Path) -> None:
    executor = await make(workers=0, dir_keep_s=0.5)
    executor.submit([shell_task("unacked", "echo data > file.txt; head -c 100000 /dev/zero")])
    assert (await sink.result("unacked")).outcome == SUCCEEDED
    folder = tmp_path / "work" / "attempts" / "unacked"
    # The report is still waiting for its ack; the folder goes on the bounded schedule anyway.
    await eventually(lambda: not folder.exists(), timeout=10.0, what="the attempt folder to be removed")


# -- results over the limit -----------------------------------------------------------------------


async def test_over_limit_results_fail_clearly(make: Make, sink: RecordingSink) -> None:
    executor = await make(workers=1)
    size = MAX_RESULT_BYTES + 10
    executor.submit(
        [
            shell_task("stdout", f"python3 -c \"import json; print(json.dumps({{'x': 'a' * {size}}}))\""),
            shell_task("file", f"head -c {size} /dev/zero | tr '\\0' 1 > \"$CORRAL_RESULT_FILE\""),
            shell_task("text", f"head -c {size} /dev/zero | tr '\\0' t; echo"),
            py_task("python", "big_result", size),
        ]
    )
    stdout = await sink.result("stdout")
    assert stdout.outcome == FAILED and not stdout.retryable
    assert stdout.error.startswith(f"result is {size + 9} bytes, over the 262144-byte limit"), stdout.error
    file = await sink.result("file")
    assert file.outcome == FAILED and file.error.startswith(f"result is {size} bytes, over the 262144-byte limit")
    # A long line that is not JSON is output, not a result attempt.
    text = await sink.result("text")
    assert text.outcome == SUCCEEDED and text.result_json == b"null"
    python = await sink.result("python")
    assert python.outcome == FAILED and not python.retryable
    assert python.error == f"result is {size + 2} bytes, over the 262144-byte limit"


def test_last_line_tracks_true_length_past_what_it_keeps() -> None:
    tracker = LastLine(keep=8)
    tracker.feed(b"first\nsec")
    tracker.feed(b"ond-line-is-long")
    assert tracker.line() == (b"second-l", 19)
    tracker.feed(b"\n\n  \n")
    assert tracker.line() == (b"second-l", 19)
    tracker.feed(b"a\nb\nlast\n")
    assert tracker.line() == (b"last", 4)


# -- secrets ------------------------------------------------------------------------------------------

SECRET = "s3cr3t-Value-0123456789"


async def test_secrets_reach_the_env_and_are_redacted(make: Make, sink: RecordingSink, tmp_path: Path) -> None:
    executor = await make(workers=1)
    shell = shell_task(
        "sh",
        'printf "before %s" "${TOKEN%??????????}"; sleep 0.3; printf "%s after\\n" "${TOKEN#${TOKEN%??????????}}";'
        ' echo "whole $TOKEN" >&2',
        env={"TOKEN": {"secret": "api"}},
    )
    shell.secrets["api"] = SECRET
    python = py_task("py", "print_split", "TOKEN", env={"TOKEN": {"secret": "api"}})
    python.secrets["api"] = SECRET
    marker = tmp_path / "marker"
    missing = shell_task("missing", f"touch {marker}", env={"TOKEN": {"secret": "absent"}})
    executor.submit([shell, python, missing])
    for attempt_id in ("sh", "py"):
        result = await sink.result(attempt_id)
        assert result.outcome == SUCCEEDED, result
        out, err = sink.stdout(attempt_id), sink.stderr(attempt_id)
        assert SECRET.encode() not in out + err
        assert out == b"before [secret api] after\n", out
        assert err.strip() == b"whole [secret api]", err
    on_disk = (tmp_path / "work" / "supervise" / "sh" / "stdout.log").read_bytes()
    assert on_disk == b"before [secret api] after\n"
    result = await sink.result("missing")
    assert result.outcome == FAILED and not result.retryable
    assert "secret 'absent' was not delivered" in result.error
    assert "missing" not in sink.pids
    assert not marker.exists()


def test_redactor_finds_values_split_anywhere() -> None:
    secret = "abcdefgh"
    stream = b"xx" + secret.encode() + b"yy" + secret.encode()
    for cut in range(len(stream) + 1):
        redactor = Redactor({"k": secret})
        out = redactor.feed(stream[:cut]) + redactor.feed(stream[cut:]) + redactor.flush()
        assert out == b"xx[secret k]yy[secret k]", cut
    one_by_one = Redactor({"k": secret})
    out = b"".join(one_by_one.feed(bytes([b])) for b in stream) + one_by_one.flush()
    assert out == b"xx[secret k]yy[secret k]"


# -- through a real controller ------------------------------------------------------------------------


@pytest.mark.e2e
def test_refusals_through_a_real_controller_are_final(cluster: Cluster, tmp_path: Path) -> None:
    """A refused payload fails once (no retry spent on it), with the policy error, and nothing runs."""
    marker = tmp_path / "marker"
    cluster.add_agent("p1", slots=2)
    cluster.wait_for_agents(1)
    workflow = {
        "name": "policy",
        "tasks": [
            {"name": "cwd", "payload": {"shell": f"touch {marker}", "cwd": "/etc"}, "retries": 2},
            {"name": "env", "payload": {"shell": f"touch {marker}", "env": {"LD_PRELOAD": "x.so"}}, "retries": 2},
            {
                "name": "system",
                "agent_type": "python",
                "payload": {"function": "os:system", "args": [f"touch {marker}"]},
                "retries": 2,
            },
            {"name": "fine", "agent_type": "python", "payload": {"function": f"{TASKS}:identity"}},
        ],
    }
    with SyncClient(cluster.address) as client:
        result = client.execute(workflow, timeout=60)
    tasks = {t.name: t for t in result.tasks}
    assert tasks["fine"].state == "completed"
    for name in ("cwd", "env", "system"):
        assert tasks[name].state == "failed", tasks[name]
        assert tasks[name].attempts == 1, tasks[name]
        assert tasks[name].error.startswith("policy: "), tasks[name].error
    assert "--env-allow LD_PRELOAD" in tasks["env"].error
    assert "--python-allow os" in tasks["system"].error
    assert not marker.exists()
