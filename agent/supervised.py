"""The agent's side of a supervisor: launching it, the Run that follows it, its result from files.

:func:`launch` asks the fork server (:mod:`corral.agent.forkserver`) for a supervisor, or starts a new
interpreter on ``supervisor.py``; :class:`SupervisedRun` tails the attempt's logs, sends stop requests
and awaits the supervisor's exit through a pidfd (or as its parent); :func:`result_from_status` turns
``status.json`` into the Finished report; :func:`attach` re-attaches to a live supervisor after an
agent restart; :func:`kill_leftovers` cleans up after one that died.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import signal
import stat
import sys
import time
from pathlib import Path
from typing import Any

from corral.agent import supervisor as _supervisor_module
from corral.agent import usage
from corral.agent.attempt import AttemptResult, StopReason
from corral.agent.cgroup import load as load_cgroup
from corral.agent.forkserver import ForkServer
from corral.agent.policy import MAX_RESULT_BYTES, PayloadError, over_limit
from corral.agent.proctree import kill_tree
from corral.agent.supervisor import lock_held, read_status, write_json
from corral.v1 import types_pb2

__all__ = [
    "SupervisedRun",
    "attach",
    "control_dir",
    "kill_leftovers",
    "launch",
    "open_pidfd",
    "result_from_status",
]

# Started as a script without site (see the supervisor's module docstring): it imports no package.
_SUPERVISOR = str(Path(_supervisor_module.__file__).resolve())
# Exit status of /bin/sh when the command does not exist (126: found but not executable).
_NOT_FOUND_CODES = (126, 127)
# A result line starting like a JSON document: over the limit it fails the task instead of being null.
_JSON_STARTS = (b"{", b"[", b'"')
# A supervisor alive but not yet past starting its task (the agent died right after asking for it).
_START_WAIT_S = 5.0


def control_dir(work_dir: Path, attempt_id: str) -> Path:
    """An attempt's supervisor folder."""
    return work_dir / "supervise" / attempt_id


_STOPPED = {
    "cancelled": StopReason.CANCELLED,
    "timed_out": StopReason.TIMED_OUT,
    "killed": StopReason.KILLED,
    "drained": StopReason.DRAINED,
    "fenced": StopReason.FENCED,
}


class SupervisedRun:
    """A shell attempt owned by its supervisor (implements :class:`corral.agent.attempt.Run`).

    Made by :func:`corral.agent.runner.start_shell` or re-attached by :func:`attach` after an agent
    restart. The supervisor's exit is awaited through a pidfd (it works for a process that is not
    our child: one forked by the fork server, or adopted); ``proc`` is set only when the agent
    started it as its own child (no fork server), and is then awaited as such.
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
    """The Finished report of an attempt whose supervisor wrote ``status``, with the usage it measured."""
    result = _outcome_from_status(status, control, folder)
    rss, cpu = usage.from_status(status)
    if rss or cpu:
        result = dataclasses.replace(result, peak_rss_bytes=rss, cpu_s=cpu)
    return result


def _outcome_from_status(status: dict[str, Any], control: Path, folder: Path) -> AttemptResult:
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


async def launch(control: Path, fork_server: bool) -> tuple[str, asyncio.subprocess.Process | None]:
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


def open_pidfd(pid: int, control: Path) -> int | None:
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


def _read_pid(path: Path) -> int:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return 0


def attach(control: Path, folder: Path, *, wait_s: float = _START_WAIT_S) -> SupervisedRun | None:
    """Re-attach to the live supervisor of ``control``; None when it is not (or no longer) alive.

    Synchronous (the agent adopts before it connects); it waits (up to ``wait_s``) only for a
    supervisor that is still starting its task. Output already written is not taken again.
    """
    deadline = time.monotonic() + wait_s
    while True:
        if not lock_held(control):
            return None
        supervisor_pid, task_pid = _read_pid(control / "supervisor.pid"), _read_pid(control / "task.pid")
        if supervisor_pid and task_pid:
            break
        if time.monotonic() > deadline:
            return None
        time.sleep(0.02)
    pidfd = open_pidfd(supervisor_pid, control)
    if pidfd is None:
        return None
    offsets = []
    for name in ("stdout.log", "stderr.log"):
        try:
            offsets.append((control / name).stat().st_size)
        except OSError:
            offsets.append(0)
    return SupervisedRun(
        control,
        folder,
        task_pid=task_pid,
        supervisor_pid=supervisor_pid,
        pidfd=pidfd,
        offsets=(offsets[0], offsets[1]),
    )
