"""Shell attempts: argv or a ``/bin/sh -c`` string, owned by a per-attempt supervisor process.

The agent checks everything, writes the attempt's ``spec.json`` into its control folder
``<work_dir>/supervise/<attempt_id>/`` and starts :mod:`corral.agent.supervisor` in a session of its
own; the supervisor starts the task (in a cgroup when the host has one, always as its subreaper),
captures its output into ``stdout.log``/``stderr.log`` there and writes ``status.json`` at the end. The
returned :class:`SupervisedRun` tails those files and reads that status, so the attempt survives an
agent restart (see :mod:`corral.agent.adopt`).

The task talks to the agent through environment variables (``CORRAL_*``) and files in its attempt
folder ``<work_dir>/attempts/<attempt_id>/`` (``inputs.json``, ``result.json``); both folders are
deleted once the controller has acknowledged the attempt's Finished report.

Policy: the task starts in its attempt folder (a relative ``cwd`` must stay inside it), from a clean
environment (see :mod:`corral.agent.taskenv`), as the ``--run-as`` user when there is one; shell
tasks are refused by ``--no-shell``. Every refusal happens before the process is started.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import signal
import stat
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from corral.agent import supervisor as _supervisor_module
from corral.agent.attempt import AttemptResult, StopReason
from corral.agent.cgroup import load as load_cgroup
from corral.agent.cgroup import prepare_agent
from corral.agent.forkserver import ForkServer
from corral.agent.policy import (
    MAX_RESULT_BYTES,
    ExecPolicy,
    PayloadError,
    confine_cwd,
    over_limit,
    safe_component,
)
from corral.agent.proctree import kill_tree
from corral.agent.runas import RunAs, make_task_dir
from corral.agent.supervisor import lock_held, read_status, write_json
from corral.agent.taskenv import base_env, identity_env, payload_env
from corral.v1 import types_pb2

__all__ = [
    "DEFAULT_PIDS_MAX",
    "INPUTS_ENV_LIMIT",
    "PayloadError",
    "ShellContext",
    "SupervisedRun",
    "Supervision",
    "control_dir",
    "decode_inputs",
    "kill_leftovers",
    "result_from_status",
    "start_shell",
]

INPUTS_ENV_LIMIT = 64 * 1024
# Started as a script without site (see the supervisor's module docstring): it imports no package.
_SUPERVISOR = str(Path(_supervisor_module.__file__).resolve())
#: The pids limit of an attempt's cgroup (processes and threads): a fork bomb stops there.
DEFAULT_PIDS_MAX = 4096
# Exit status of /bin/sh when the command does not exist (126: found but not executable).
_NOT_FOUND_CODES = (126, 127)
# A result line starting like a JSON document: over the limit it fails the task instead of being null.
_JSON_STARTS = (b"{", b"[", b'"')


@dataclass(frozen=True)
class ShellContext:
    """What shell attempts need from the agent."""

    work_dir: Path
    output_cap: int
    has_gpus: bool = False
    policy: ExecPolicy = field(default_factory=ExecPolicy)
    passed_env: Mapping[str, str] = field(default_factory=dict)
    run_as: RunAs | None = None
    #: SIGTERM-to-SIGKILL grace of timeouts and fencing (the controller's Welcome overrides it).
    kill_grace_s: float = 10.0
    #: The agent's lease file (``<work_dir>/lease``); None: attempts are never fenced.
    lease_path: Path | None = None
    #: Whether attempts get a cgroup when the host has one; its parent path below the agent's own
    #: cgroup ("" derives one unique to this work dir: two agents on a host never share it).
    cgroups: bool = True
    cgroup_parent: str = ""
    pids_max: int = DEFAULT_PIDS_MAX
    #: Fork supervisors from a pre-imported server (a few ms each) instead of a new interpreter each.
    fork_server: bool = True

    def cgroup_path(self) -> str:
        """The cgroup parent of this agent's attempts, relative to the agent's own cgroup."""
        if self.cgroup_parent:
            return self.cgroup_parent
        digest = hashlib.sha1(str(self.work_dir.resolve()).encode()).hexdigest()[:12]
        return f"corral/{digest}"


@dataclass(frozen=True)
class Supervision:
    """What the controller's Welcome and the assignment decide about supervising one attempt."""

    kill_grace_s: float
    lease_path: Path | None
    #: "stop" (fenced when the lease runs out) or "keep" (never fenced); None: from the assignment.
    on_disconnect: str | None = None
    #: keep attempts: how long the controller lets them run cut off (recorded; never fenced here).
    max_disconnect_s: float = 0.0


def control_dir(work_dir: Path, attempt_id: str) -> Path:
    """An attempt's supervisor folder."""
    return work_dir / "supervise" / attempt_id


def decode_inputs(inputs_json: Any) -> dict[str, Any]:
    """Dependency results (name -> JSON bytes) as Python values; undecodable ones become None."""
    inputs: dict[str, Any] = {}
    for name, raw in inputs_json.items():
        try:
            inputs[name] = json.loads(raw) if raw else None
        except ValueError:
            inputs[name] = None
    return inputs


def task_env(assignment: types_pb2.TaskAssignment, has_gpus: bool) -> dict[str, str]:
    """The CORRAL_* identity variables and CUDA_VISIBLE_DEVICES of an attempt."""
    return identity_env(
        assignment.task_id,
        assignment.task_name,
        assignment.workflow_id,
        assignment.attempt_id,
        list(assignment.gpu_ids),
        has_gpus,
    )


def _parse_payload(raw: bytes) -> tuple[list[str], Any, str | None]:
    try:
        payload = json.loads(raw or b"{}")
    except ValueError as exc:
        raise PayloadError(f"payload is not valid JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise PayloadError("payload must be a JSON object")
    command, shell = payload.get("command"), payload.get("shell")
    if command is not None:
        if isinstance(command, str):
            command = [command]
        if not (isinstance(command, list) and command and all(isinstance(a, str) for a in command)):
            raise PayloadError("payload.command must be a non-empty list of strings")
        argv = list(command)
    elif isinstance(shell, str) and shell:
        argv = ["/bin/sh", "-c", shell]
    else:
        raise PayloadError("payload needs 'command' (argv list) or 'shell' (string)")
    if any("\x00" in a for a in argv):
        raise PayloadError("payload.command contains a NUL character")
    cwd = payload.get("cwd")
    if cwd is not None and not isinstance(cwd, str):
        raise PayloadError("payload.cwd must be a string")
    return argv, payload.get("env"), cwd


_STOPPED = {
    "cancelled": StopReason.CANCELLED,
    "timed_out": StopReason.TIMED_OUT,
    "killed": StopReason.KILLED,
    "drained": StopReason.DRAINED,
    "fenced": StopReason.FENCED,
}


class SupervisedRun:
    """A shell attempt owned by its supervisor (implements :class:`corral.agent.attempt.Run`).

    Made by :func:`start_shell` (``proc`` is the supervisor, a child of the agent) or re-attached by
    :func:`corral.agent.adopt.scan` after an agent restart (``proc`` None: the supervisor is watched
    through a pidfd, which works for a process that is not our child).
    """

    def __init__(
        self,
        control: Path,
        folder: Path,
        *,
        task_pid: int,
        supervisor_pid: int,
        pidfd: int | None,
        proc: asyncio.subprocess.Process | None = None,
        offsets: tuple[int, int] = (0, 0),
    ) -> None:
        self.control = control
        self.folder = folder
        self.supervisor_pid = supervisor_pid
        self._task_pid = task_pid
        self._pidfd: int | None = pidfd
        self._proc = proc
        self._offsets = list(offsets)
        self._stop_sent = False

    @property
    def pid(self) -> int:
        """The task's main process."""
        return self._task_pid

    def take_output(self) -> tuple[bytes, bytes, bool]:
        """What the supervisor wrote to stdout.log/stderr.log since the previous call."""
        chunks = []
        for index, name in enumerate(("stdout.log", "stderr.log")):
            try:
                with open(self.control / name, "rb") as file:
                    file.seek(self._offsets[index])
                    data = file.read()
            except OSError:
                data = b""
            self._offsets[index] += len(data)
            chunks.append(data)
        return chunks[0], chunks[1], (self.control / "truncated").exists()

    def request_stop(self, reason: StopReason, *, force: bool, grace_s: float) -> None:
        """Write the ``stop`` request and wake the supervisor (SIGUSR1); a later ``force`` escalates."""
        if (self._stop_sent and not force) or self._pidfd is None:
            return
        self._stop_sent = True
        request = {"reason": reason.value, "grace_s": grace_s, "force": force}
        with contextlib.suppress(OSError):
            write_json(self.control / "stop", request)
        with contextlib.suppress(ProcessLookupError, OSError):
            signal.pidfd_send_signal(self._pidfd, signal.SIGUSR1)

    async def _wait_supervisor(self) -> None:
        if self._proc is not None:
            await self._proc.wait()
            return
        pidfd = self._pidfd
        if pidfd is None:
            return
        loop = asyncio.get_running_loop()
        exited: asyncio.Future[None] = loop.create_future()

        def on_exit() -> None:
            if not exited.done():
                exited.set_result(None)

        # A pidfd turns readable when its process exits (our child or not).
        loop.add_reader(pidfd, on_exit)
        try:
            await exited
        finally:
            loop.remove_reader(pidfd)

    async def finish(self) -> AttemptResult:
        """Wait for the supervisor to exit, then build the Finished report from its status.json."""
        try:
            await self._wait_supervisor()
        finally:
            if self._pidfd is not None:
                os.close(self._pidfd)
                self._pidfd = None
        status = read_status(self.control)
        if status is None:
            # The supervisor died without a word (SIGKILLed): its task must not outlive it.
            kill_leftovers(self.control, self._task_pid)
            return AttemptResult.failed("the attempt's supervisor died", retryable=True)
        return result_from_status(status, self.control, self.folder)


def _argv0_is_shell(control: Path) -> bool:
    try:
        spec = json.loads((control / "spec.json").read_text())
        return bool(spec["argv"][0] == "/bin/sh")
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return False


def result_from_status(status: dict[str, Any], control: Path, folder: Path) -> AttemptResult:
    """The Finished report of an attempt whose supervisor wrote ``status``."""
    outcome = str(status.get("outcome", "failed"))
    code = int(status.get("exit_code") or 0)
    stopped = _STOPPED.get(outcome)
    if status.get("start_failed"):
        error = str(status.get("error", "cannot start"))
        if stopped is not None:
            return AttemptResult.stopped(stopped, error.partition(": ")[2])
        permanent = error.startswith(("command not found", "permission denied"))
        return AttemptResult.failed(error, retryable=not permanent)
    if stopped is not None:
        return AttemptResult.stopped(stopped, exit_code=code)
    if outcome == "succeeded":
        try:
            line = str(status.get("stdout_line", "")).encode("latin-1")
            size = int(status.get("stdout_line_size") or 0)
            return AttemptResult(types_pb2.ATTEMPT_OUTCOME_SUCCEEDED, result_json=_result_json(folder, line, size))
        except PayloadError as exc:
            return AttemptResult.failed(str(exc), retryable=False, exit_code=code)
    if status.get("oom_killed"):
        limit = _memory_mb(control)
        error = f"out of memory (limit {limit} MB)" if limit else "out of memory"
        return dataclasses.replace(AttemptResult.failed(error, retryable=True, exit_code=code), oom_killed=True)
    error = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
    detail = str(status.get("stderr_line", ""))
    if detail:
        error = f"{error}: {detail}"
    retryable = not (_argv0_is_shell(control) and code in _NOT_FOUND_CODES)
    return AttemptResult.failed(error, retryable=retryable, exit_code=code)


def _memory_mb(control: Path) -> int:
    try:
        return int(json.loads((control / "spec.json").read_text()).get("memory_mb") or 0)
    except (OSError, ValueError, TypeError, AttributeError):
        return 0


def _result_json(folder: Path, line: bytes, size: int) -> bytes:
    """result.json when it holds JSON, else the last stdout line when it is JSON, else null."""
    raw = _read_result_file(folder / "result.json")
    if raw.strip():
        try:
            json.loads(raw)
            return raw.strip()
        except ValueError:
            pass
    if size > MAX_RESULT_BYTES:
        if line.startswith(_JSON_STARTS):
            raise PayloadError(f"{over_limit(size)} (the last line of stdout)")
        return b"null"
    if line:
        try:
            json.loads(line)
            return line
        except ValueError:
            pass
    return b"null"


def kill_leftovers(control: Path, task_pid: int) -> None:
    """Kill what a dead supervisor left behind: its cgroup, and its task's tree when it is still ours."""
    try:
        group = load_cgroup(json.loads((control / "cgroup.json").read_text()))
    except (OSError, ValueError):
        group = None
    if group is not None:
        group.kill()
        group.remove()
    if task_pid > 0 and _is_attempt_process(task_pid, control.name):
        kill_tree(task_pid)


def _is_attempt_process(pid: int, attempt_id: str) -> bool:
    """Whether ``pid`` still is this attempt's task (not a reused pid): its environment says so."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False
    return f"CORRAL_ATTEMPT_ID={attempt_id}".encode() in environ.split(b"\0")


def _read_result_file(path: Path) -> bytes:
    """The task's result.json: a regular file (never followed through a symlink), within the limit."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return b""
    with os.fdopen(fd, "rb") as file:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return b""
        if info.st_size > MAX_RESULT_BYTES:
            raise PayloadError(f"{over_limit(info.st_size)} (the result file)")
        return file.read(MAX_RESULT_BYTES + 1)


def _prepare(
    assignment: types_pb2.TaskAssignment, ctx: ShellContext
) -> tuple[list[str], Path, Path, dict[str, str], dict[str, str]]:
    """Everything checked and made before the process starts: (argv, folder, cwd, env, secrets)."""
    argv, raw_env, cwd = _parse_payload(assignment.payload_json)
    ctx.policy.check_shell()
    secrets = dict(assignment.secrets)
    extra_env, _ = payload_env(raw_env, ctx.policy, secrets)
    if not safe_component(assignment.attempt_id):
        raise PayloadError(f"attempt id {assignment.attempt_id[:128]!r} is not usable as a folder name")
    folder = ctx.work_dir / "attempts" / assignment.attempt_id
    workdir = confine_cwd(folder, cwd)
    env = base_env(folder, ctx.passed_env)
    env.update(extra_env)
    env.update(task_env(assignment, ctx.has_gpus))
    env["CORRAL_INPUTS_FILE"] = str(folder / "inputs.json")
    env["CORRAL_RESULT_FILE"] = str(folder / "result.json")
    return argv, folder, workdir, env, secrets


_cgroups_prepared: list[bool] = []


def _prepare_cgroups() -> None:
    # Once per agent process (cgroup v2 only): the agent into a leaf, so attempts' cgroups can nest.
    if not _cgroups_prepared:
        _cgroups_prepared.append(True)
        prepare_agent()


_FORK_SERVER = ForkServer()


async def _read_line(fd: int) -> str:
    """The first line written to the pipe ``fd`` ("" at EOF without one); closes ``fd``."""
    loop = asyncio.get_running_loop()
    data = b""
    try:
        os.set_blocking(fd, False)
        while b"\n" not in data:
            readable: asyncio.Future[None] = loop.create_future()

            def ready(future: asyncio.Future[None] = readable) -> None:
                if not future.done():
                    future.set_result(None)

            loop.add_reader(fd, ready)
            try:
                await readable
            finally:
                loop.remove_reader(fd)
            try:
                chunk = os.read(fd, 4096)
            except BlockingIOError:
                continue
            if not chunk:
                break
            data += chunk
    finally:
        os.close(fd)
    return data.partition(b"\n")[0].decode(errors="replace")


async def _launch(control: Path, fork_server: bool) -> tuple[str, asyncio.subprocess.Process | None]:
    """Start the supervisor of ``control``: (its first line, the process when it is our child)."""
    if fork_server:
        try:
            fd = _FORK_SERVER.request(control)
        except OSError:
            pass  # no fork server: a new interpreter, as below
        else:
            return await _read_line(fd), None
    log = os.open(control / "supervisor.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-S",
            "-E",
            _SUPERVISOR,
            str(control),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=log,
            # Its own session: a signal to the agent's process group (Ctrl-C, systemd) never reaches it.
            start_new_session=True,
        )
    finally:
        os.close(log)
    assert proc.stdout is not None
    return (await proc.stdout.readline()).decode(errors="replace"), proc


def _open_pidfd(pid: int, control: Path) -> int | None:
    """A pidfd of the supervisor ``pid``, or None when it is already over."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return None
    # Still holding its lock after the pidfd was opened: the pid was not reused, the pidfd is its.
    if not lock_held(control):
        os.close(pidfd)
        return None
    return pidfd


def _spec(
    assignment: types_pb2.TaskAssignment,
    ctx: ShellContext,
    supervision: Supervision | None,
    argv: list[str],
    workdir: Path,
    env: dict[str, str],
    secrets: dict[str, str],
) -> dict[str, Any]:
    """The supervisor's spec.json."""
    on_disconnect = supervision.on_disconnect if supervision is not None else None
    if on_disconnect is None:
        keep = assignment.on_disconnect == types_pb2.ON_DISCONNECT_KEEP
        on_disconnect = "keep" if keep else "stop"
    lease_path = supervision.lease_path if supervision is not None else ctx.lease_path
    run_as = ctx.run_as
    return {
        "kind": "shell",
        "attempt_id": assignment.attempt_id,
        "argv": argv,
        "cwd": str(workdir),
        "env": env,
        "uid": run_as.uid if run_as is not None else None,
        "gid": run_as.gid if run_as is not None else None,
        "groups": list(run_as.groups) if run_as is not None else [],
        "timeout_s": assignment.timeout_s,
        "kill_grace_s": supervision.kill_grace_s if supervision is not None else ctx.kill_grace_s,
        "on_disconnect": on_disconnect,
        "max_disconnect_s": supervision.max_disconnect_s if supervision is not None else assignment.max_disconnect_s,
        "lease_path": str(lease_path) if lease_path is not None else None,
        "memory_mb": int(assignment.resources.memory_mb) if ctx.cgroups else 0,
        "pids_max": ctx.pids_max,
        "cgroup_parent": ctx.cgroup_path() if ctx.cgroups else None,
        "output_cap": ctx.output_cap,
        "line_keep": MAX_RESULT_BYTES + 1,
        "secrets": secrets,
    }


async def start_shell(
    assignment: types_pb2.TaskAssignment, ctx: ShellContext, supervision: Supervision | None = None
) -> SupervisedRun | AttemptResult:
    """Start a shell attempt under its supervisor; a result instead when it cannot start (policy, bad
    payload, missing command, a lease already expired)."""
    try:
        argv, folder, workdir, env, secrets = _prepare(assignment, ctx)
    except PayloadError as exc:
        return AttemptResult.failed(str(exc), retryable=False)
    run_as = ctx.run_as
    control = control_dir(ctx.work_dir, assignment.attempt_id)
    if ctx.cgroups:
        _prepare_cgroups()
    try:
        make_task_dir(folder, run_as)
        make_task_dir(folder / "tmp", run_as)
        # Each level of a relative cwd is made (and owned by the run-as user) inside the attempt folder.
        root = folder.resolve()
        for level in reversed([workdir, *workdir.parents]):
            if level != root and level.is_relative_to(root):
                make_task_dir(level, run_as)
        inputs_text = json.dumps(decode_inputs(assignment.inputs_json))
        inputs_file = folder / "inputs.json"
        inputs_file.write_text(inputs_text)
        if run_as is not None:
            os.chown(inputs_file, run_as.uid, run_as.gid)
        if len(inputs_text) < INPUTS_ENV_LIMIT:
            env["CORRAL_INPUTS"] = inputs_text
        # A leftover of an earlier start of this attempt id (its supervisor is dead: never two at once,
        # the lock would refuse the second) is replaced.
        shutil.rmtree(control, ignore_errors=True)
        control.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        control.mkdir(mode=0o700)
        write_json(control / "spec.json", _spec(assignment, ctx, supervision, argv, workdir, env, secrets))
    except OSError as exc:
        return AttemptResult.failed(f"cannot prepare the attempt folder: {exc}", retryable=True)
    try:
        line, proc = await _launch(control, ctx.fork_server)
    except OSError as exc:
        return AttemptResult.failed(f"cannot start the attempt's supervisor: {exc}", retryable=True)
    # The supervisor's first line: "started <task pid> <supervisor pid>", or "failed" (status.json
    # says why); nothing at all when it crashed.
    words = line.split()
    if len(words) == 3 and words[0] == "started" and words[1].isdigit() and words[2].isdigit():
        supervisor_pid = int(words[2])
        return SupervisedRun(
            control,
            folder,
            task_pid=int(words[1]),
            supervisor_pid=supervisor_pid,
            pidfd=_open_pidfd(supervisor_pid, control),
            proc=proc,
        )
    if proc is not None:
        await proc.wait()
    status = read_status(control)
    if status is not None:
        return result_from_status(status, control, folder)
    try:
        detail = (control / "supervisor.log").read_text(errors="replace").strip().splitlines()[-1:]
    except OSError:
        detail = []
    why = f": {detail[0]}" if detail else ""
    return AttemptResult.failed(f"the attempt's supervisor failed to start{why}", retryable=True)
