"""Shell attempts: argv or a ``/bin/sh -c`` string in its own process group, with captured output.

The task talks to the agent through environment variables (``CORRAL_*``) and files in its attempt
folder (``inputs.json``, ``result.json``, ``stdout.log``, ``stderr.log``); the folder is deleted once
the controller has acknowledged the attempt's Finished report.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from corral.agent.attempt import AttemptResult, StopReason
from corral.agent.output import PipeCapture
from corral.agent.proctree import terminate_tree
from corral.v1 import types_pb2

__all__ = ["INPUTS_ENV_LIMIT", "PayloadError", "ShellContext", "ShellRun", "decode_inputs", "start_shell"]

INPUTS_ENV_LIMIT = 64 * 1024
_CHUNK = 65536
# Exit status of /bin/sh when the command does not exist (126: found but not executable).
_NOT_FOUND_CODES = (126, 127)


class PayloadError(ValueError):
    """The payload can never run (wrong shape); the attempt fails without retry."""


@dataclass(frozen=True)
class ShellContext:
    """What shell attempts need from the agent."""

    work_dir: Path
    output_cap: int
    has_gpus: bool = False


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
    env = {
        "CORRAL_TASK_ID": assignment.task_id,
        "CORRAL_TASK_NAME": assignment.task_name,
        "CORRAL_WORKFLOW_ID": assignment.workflow_id,
        "CORRAL_ATTEMPT_ID": assignment.attempt_id,
    }
    if assignment.gpu_ids or has_gpus:
        # Empty on a GPU machine for tasks that got none: they must not grab a device by default.
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in assignment.gpu_ids)
    return env


def _parse_payload(raw: bytes) -> tuple[list[str], dict[str, str], str | None]:
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
    env = payload.get("env") or {}
    if not isinstance(env, dict):
        raise PayloadError("payload.env must be an object")
    cwd = payload.get("cwd")
    if cwd is not None and not isinstance(cwd, str):
        raise PayloadError("payload.cwd must be a string")
    return argv, {str(k): str(v) for k, v in env.items()}, cwd


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
            return AttemptResult(types_pb2.ATTEMPT_OUTCOME_SUCCEEDED, result_json=self._result_json())
        error = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
        detail = self._stderr.last_line()
        if detail:
            error = f"{error}: {detail}"
        retryable = not (self._shell_form and code in _NOT_FOUND_CODES)
        return AttemptResult.failed(error, retryable=retryable, exit_code=code)

    def _result_json(self) -> bytes:
        path = self._folder / "result.json"
        try:
            raw = path.read_bytes()
        except OSError:
            raw = b""
        if raw.strip():
            try:
                json.loads(raw)
                return raw.strip()
            except ValueError:
                pass
        line = self._stdout.last_line().encode()
        if line:
            try:
                json.loads(line)
                return line
            except ValueError:
                pass
        return b"null"


async def start_shell(assignment: types_pb2.TaskAssignment, ctx: ShellContext) -> ShellRun | AttemptResult:
    """Start a shell attempt; a result instead when it cannot start (bad payload, missing command)."""
    try:
        argv, extra_env, cwd = _parse_payload(assignment.payload_json)
    except PayloadError as exc:
        return AttemptResult.failed(str(exc), retryable=False)
    folder = ctx.work_dir / "attempts" / assignment.attempt_id
    try:
        folder.mkdir(parents=True, exist_ok=True)
        inputs_text = json.dumps(decode_inputs(assignment.inputs_json))
        inputs_file = folder / "inputs.json"
        inputs_file.write_text(inputs_text)
    except OSError as exc:
        return AttemptResult.failed(f"cannot prepare the attempt folder: {exc}", retryable=True)
    workdir = ctx.work_dir if cwd is None else ctx.work_dir / cwd
    if not workdir.is_dir():
        return AttemptResult.failed(f"cwd does not exist: {workdir}", retryable=False)
    env = dict(os.environ)
    env.update(extra_env)
    env.update(task_env(assignment, ctx.has_gpus))
    env["CORRAL_INPUTS_FILE"] = str(inputs_file)
    env["CORRAL_RESULT_FILE"] = str(folder / "result.json")
    if len(inputs_text) < INPUTS_ENV_LIMIT:
        env["CORRAL_INPUTS"] = inputs_text
    else:
        env.pop("CORRAL_INPUTS", None)
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=workdir,
            env=env,
            start_new_session=True,
        )
    except FileNotFoundError:
        return AttemptResult.failed(f"command not found: {argv[0]}", retryable=False)
    except PermissionError:
        return AttemptResult.failed(f"permission denied: {argv[0]}", retryable=False)
    except OSError as exc:
        return AttemptResult.failed(f"cannot start {argv[0]}: {exc}", retryable=True)
    stdout = PipeCapture(ctx.output_cap, folder / "stdout.log")
    stderr = PipeCapture(ctx.output_cap, folder / "stderr.log")
    return ShellRun(proc, folder, stdout, stderr, shell_form=argv[0] == "/bin/sh")
