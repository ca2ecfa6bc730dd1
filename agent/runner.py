"""Shell attempts: argv or a ``/bin/sh -c`` string in its own process group, with captured output.

The task talks to the agent through environment variables (``CORRAL_*``) and files in its attempt
folder (``inputs.json``, ``result.json``, ``stdout.log``, ``stderr.log``); the folder is deleted once
the controller has acknowledged the attempt's Finished report (or a bounded time after it ended).

Policy: the task starts in its attempt folder (a relative ``cwd`` must stay inside it), from a clean
environment (see :mod:`corral.agent.taskenv`), as the ``--run-as`` user when there is one; shell
tasks are refused by ``--no-shell``. Every refusal happens before the process is started.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from corral.agent.attempt import AttemptResult, StopReason
from corral.agent.output import PipeCapture
from corral.agent.policy import (
    MAX_RESULT_BYTES,
    ExecPolicy,
    PayloadError,
    confine_cwd,
    over_limit,
    safe_component,
)
from corral.agent.proctree import terminate_tree
from corral.agent.runas import RunAs, make_task_dir
from corral.agent.taskenv import base_env, identity_env, payload_env
from corral.v1 import types_pb2

__all__ = ["INPUTS_ENV_LIMIT", "PayloadError", "ShellContext", "ShellRun", "decode_inputs", "start_shell"]

INPUTS_ENV_LIMIT = 64 * 1024
_CHUNK = 65536
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


class ShellRun:
    """One running shell attempt (implements :class:`corral.agent.attempt.Run`)."""

    def __init__(
        self,
        proc: asyncio.subprocess.Process,
        folder: Path,
        stdout: PipeCapture,
        stderr: PipeCapture,
        shell_form: bool,
    ) -> None:
        self._proc = proc
        self._folder = folder
        self._stdout = stdout
        self._stderr = stderr
        self._shell_form = shell_form
        self._stop: StopReason | None = None
        self._stoppers: list[asyncio.Task[None]] = []
        self._readers = [
            asyncio.create_task(self._pump(proc.stdout, stdout)),
            asyncio.create_task(self._pump(proc.stderr, stderr)),
        ]

    @property
    def pid(self) -> int:
        """The process group leader."""
        return self._proc.pid

    @staticmethod
    async def _pump(stream: asyncio.StreamReader | None, capture: PipeCapture) -> None:
        if stream is None:
            return
        while chunk := await stream.read(_CHUNK):
            capture.feed(chunk)

    def take_output(self) -> tuple[bytes, bytes, bool]:
        """New output since the previous call."""
        return self._stdout.take(), self._stderr.take(), self._stdout.truncated or self._stderr.truncated

    def request_stop(self, reason: StopReason, *, force: bool, grace_s: float) -> None:
        """SIGTERM the group now (or SIGKILL with ``force``); SIGKILL the tree after ``grace_s``."""
        if self._stoppers and not force:
            return
        if self._stop is None:
            self._stop = reason
        self._stoppers.append(asyncio.create_task(terminate_tree(self.pid, grace_s, force=force)))

    async def finish(self) -> AttemptResult:
        """Wait for the process, clean up its group, and build the Finished report."""
        code = await self._proc.wait()
        # The task is over: nothing it started in its process group may outlive it.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        # A process that escaped the group could hold the pipes open: do not wait for it forever.
        _, pending = await asyncio.wait(self._readers, timeout=2.0)
        for reader in pending:
            reader.cancel()
        for stopper in self._stoppers:
            await stopper
        self._stdout.close()
        self._stderr.close()
        return self._result(code)

    def _result(self, code: int) -> AttemptResult:
        if self._stop is not None:
            return AttemptResult.stopped(self._stop, exit_code=code)
        if code == 0:
            try:
                return AttemptResult(types_pb2.ATTEMPT_OUTCOME_SUCCEEDED, result_json=self._result_json())
            except PayloadError as exc:
                return AttemptResult.failed(str(exc), retryable=False, exit_code=code)
        error = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
        detail = self._stderr.last_line()
        if detail:
            error = f"{error}: {detail}"
        retryable = not (self._shell_form and code in _NOT_FOUND_CODES)
        return AttemptResult.failed(error, retryable=retryable, exit_code=code)

    def _result_json(self) -> bytes:
        raw = _read_result_file(self._folder / "result.json")
        if raw.strip():
            try:
                json.loads(raw)
                return raw.strip()
            except ValueError:
                pass
        line, size = self._stdout.last_line_bytes()
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


async def start_shell(assignment: types_pb2.TaskAssignment, ctx: ShellContext) -> ShellRun | AttemptResult:
    """Start a shell attempt; a result instead when it cannot start (policy, bad payload, missing command)."""
    try:
        argv, folder, workdir, env, secrets = _prepare(assignment, ctx)
    except PayloadError as exc:
        return AttemptResult.failed(str(exc), retryable=False)
    run_as = ctx.run_as
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
        stdout = PipeCapture(ctx.output_cap, folder / "stdout.log", secrets=secrets, line_keep=MAX_RESULT_BYTES + 1)
        stderr = PipeCapture(ctx.output_cap, folder / "stderr.log", secrets=secrets)
    except OSError as exc:
        return AttemptResult.failed(f"cannot prepare the attempt folder: {exc}", retryable=True)
    if len(inputs_text) < INPUTS_ENV_LIMIT:
        env["CORRAL_INPUTS"] = inputs_text
    identity: dict[str, Any] = {}
    if run_as is not None:
        identity = {"user": run_as.uid, "group": run_as.gid, "extra_groups": list(run_as.groups)}
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=workdir,
            env=env,
            start_new_session=True,
            **identity,
        )
    except (FileNotFoundError, PermissionError, OSError) as exc:
        stdout.close()
        stderr.close()
        if isinstance(exc, FileNotFoundError):
            return AttemptResult.failed(f"command not found: {argv[0]}", retryable=False)
        if isinstance(exc, PermissionError):
            return AttemptResult.failed(f"permission denied: {argv[0]}", retryable=False)
        return AttemptResult.failed(f"cannot start {argv[0]}: {exc}", retryable=True)
    return ShellRun(proc, folder, stdout, stderr, shell_form=argv[0] == "/bin/sh")
