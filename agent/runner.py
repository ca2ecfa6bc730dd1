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

import hashlib
import json
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from corral.agent.attempt import AttemptResult
from corral.agent.cgroup import prepare_agent, sweep_stale
from corral.agent.checkpoints import write_checkpoint_in
from corral.agent.policy import (
    MAX_RESULT_BYTES,
    ExecPolicy,
    PayloadError,
    confine_cwd,
    safe_component,
)
from corral.agent.runas import RunAs, make_task_dir
from corral.agent.supervised import (
    SupervisedRun,
    attach,
    control_dir,
    kill_leftovers,
    launch,
    open_pidfd,
    result_from_status,
)
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
#: The pids limit of an attempt's cgroup (processes and threads): a fork bomb stops there.
DEFAULT_PIDS_MAX = 4096


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
    env["CORRAL_CHECKPOINT_FILE"] = str(folder / "checkpoint.json")  # issue 10; CORRAL_CHECKPOINT_IN below
    env["CORRAL_SPAWN_FILE"] = str(folder / "spawn.jsonl")
    return argv, folder, workdir, env, secrets


_cgroups_prepared: list[bool] = []


def _prepare_cgroups() -> None:
    # Once per agent process (cgroup v2 only): the agent into a leaf, so attempts' cgroups can nest.
    if not _cgroups_prepared:
        _cgroups_prepared.append(True)
        prepare_agent()
        sweep_stale()  # levels that killed agents left behind (empty, idle for 10 minutes)


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
    if lock_held(control):
        # Already supervised here (assigned again after an agent restart): never a second copy.
        running = attach(control, ctx.work_dir / "attempts" / assignment.attempt_id)
        if running is not None:
            return running
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
        if assignment.checkpoint_json:  # resuming: the last checkpoint of an earlier attempt
            owner = (run_as.uid, run_as.gid) if run_as is not None else None
            env["CORRAL_CHECKPOINT_IN"] = write_checkpoint_in(
                folder / "checkpoint-in.json", assignment.checkpoint_json, owner
            )
        # A leftover of an earlier start of this attempt id (its supervisor is dead) is replaced.
        shutil.rmtree(control, ignore_errors=True)
        control.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        control.mkdir(mode=0o700)
        write_json(control / "spec.json", _spec(assignment, ctx, supervision, argv, workdir, env, secrets))
    except OSError as exc:
        return AttemptResult.failed(f"cannot prepare the attempt folder: {exc}", retryable=True)
    try:
        line, proc = await launch(control, ctx.fork_server)
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
            pidfd=open_pidfd(supervisor_pid, control),
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
