"""A python attempt in a warm worker, seen from the agent: its answer, its output, its stop.

Made by :class:`corral.agent.pypool.WorkerPool` (started, or staged behind another attempt of
its workflow in the same worker, see :mod:`corral.agent.pyconn`); implements
:class:`corral.agent.attempt.Run` for the executor.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from corral.agent.attempt import AttemptResult, StopReason
from corral.agent.output import PipeCapture, Redactor
from corral.agent.pyconn import NotStarted, PyWorker, WorkerDied
from corral.agent.pyreap import stop_worker
from corral.agent.pyworker import Response
from corral.agent.usage import clean
from corral.v1 import types_pb2

if TYPE_CHECKING:
    from corral.agent.pypool import WorkerPool

__all__ = ["PythonRun"]

_SUCCEEDED = types_pb2.ATTEMPT_OUTCOME_SUCCEEDED
_NO_OUTPUT = (b"", b"", False)
_FENCED = "fenced"
_REFUSED = "refused"


class _Stopping(Exception):
    """Set on a task's response future by a stop request: finish() waits for the kill, not the pipe."""


class PythonRun:
    """A python attempt running in a warm worker (implements :class:`corral.agent.attempt.Run`)."""

    def __init__(
        self, pool: WorkerPool, worker: PyWorker, response: asyncio.Future[Response], redactor: Redactor | None = None
    ) -> None:
        self._pool = pool
        self._redactor = redactor
        self._worker = worker
        self._response = response
        self._stop: StopReason | None = None
        self._stoppers: list[asyncio.Task[None]] = []
        self._out: PipeCapture | None = None
        self._err: PipeCapture | None = None
        self._ended = False
        # Issue 10: the checkpoint handed to this attempt (a file in the worker's folder), and
        # whether the task wrote a checkpoint or spawned (None: unknown, the worker did not say).
        self.checkpoint_in: str | None = None
        self.touched: bool | None = None
        # Staging: the run this one is staged behind (None once it is a plain run), and, on a
        # leader, whether its follower has started (so it has answered: a stop would hit that one).
        self.leader: PythonRun | None = None
        self.answered = False

    @property
    def lost_before_start(self) -> bool:
        """Staged, and its worker died before taking it: it never started (start it elsewhere)."""
        response = self._response
        return response.done() and not response.cancelled() and isinstance(response.exception(), NotStarted)

    def release(self) -> None:
        """Let go of a staged run that will not be finished (it never started: see lost_before_start)."""
        self._worker.owners -= 1

    def withdraw(self) -> bool:
        """Take this staged run back from its worker: True when it had not started (drop it then)."""
        if self._response.done() and not self._response.cancelled():
            # Its worker is gone already: it had not started only if it never took the token.
            if self.lost_before_start:
                self._worker.owners -= 1
                return True
            return False
        if self._worker.withdraw(self._response):
            self._worker.owners -= 1
            return True
        if self.leader is not None:
            self.leader.answered = True
        return False

    @property
    def pid(self) -> int:
        """The worker's process id."""
        return self._worker.pid

    @property
    def home(self) -> str:
        """The worker's folder, where the attempt's checkpoint and spawn files are (issue 10)."""
        return str(self._worker.home)

    def take_output(self) -> tuple[bytes, bytes, bool]:
        """New output of the task (read from the worker's output pipes)."""
        if self._ended:
            out, err = self._out, self._err
        else:
            out, err = self._worker.captures
        if out is None and err is None:
            return _NO_OUTPUT
        return (
            out.take() if out is not None else b"",
            err.take() if err is not None else b"",
            (out is not None and out.truncated) or (err is not None and err.truncated),
        )

    def request_stop(self, reason: StopReason, *, force: bool, grace_s: float) -> None:
        """Kill the worker's process tree (SIGTERM, grace, SIGKILL); it is replaced afterwards."""
        if (self._response.done() and self._stop is None) or (self._stoppers and not force) or self.answered:
            # It has ended already (or answered: the task staged behind it runs in the worker now),
            # or a stop is under way and this one does not escalate.
            return
        if self._stop is None:
            self._stop = reason
            # The worker's answer, should it still come, is ignored (the future is done).
            self._response.set_exception(_Stopping())
        self._stoppers.append(asyncio.create_task(stop_worker(self._worker, grace_s, force=force)))

    def _end_output(self) -> None:
        worker = self._worker
        self._out, self._err = worker.end()
        self._ended = True
        for capture in (self._out, self._err):
            if capture is not None:
                capture.end()

    async def finish(self) -> AttemptResult:
        """Wait for the task's response, the worker's death or the end of a stop; build the report."""
        worker = self._worker
        try:
            response: Response | None = await self._response
        except NotStarted:
            # Staged, and its worker died before taking it (the token was still there).
            worker.owners -= 1
            worker.drain()
            self._end_output()
            self._pool._discard(worker)
            return AttemptResult.stopped(StopReason.DRAINED, "not started: its python worker died before it")
        except (WorkerDied, _Stopping):
            response = None
        worker.owners -= 1
        if response is not None and response[4] == _FENCED and self._stop is None:
            # The worker fenced itself (the agent's lease ran out): it killed the task and exits.
            self._stop = StopReason.FENCED
            self._stoppers.append(asyncio.create_task(stop_worker(worker, 0, force=True)))
        if response is None or self._stop is not None:
            for stopper in self._stoppers:
                await stopper
            if self._stop is None:
                # Died by itself (os._exit, a crash, the OOM killer): finish off its children.
                await stop_worker(worker, 0, force=True)
            code = await worker.proc.wait()
            worker.drain()
            self._end_output()
            tail = self._err.last_line() if self._stop is None and self._err is not None else ""
            self._pool._discard(worker)
            if self._stop is not None:
                return AttemptResult.stopped(self._stop)
            error = f"python worker died (exit code {code})" + (f": {tail}" if tail else "")
            return AttemptResult.failed(error, retryable=True, exit_code=code)
        ok, result, error, retryable, stop = response[:5]
        self._end_output()
        self._pool._release(worker)
        if stop == _REFUSED:
            # Never started (the lease had expired): the worker stays, the attempt is fenced.
            return AttemptResult.stopped(StopReason.FENCED, "not started")
        # The task's usage, measured in the worker (a task could write a frame: bounded here).
        rss, cpu = clean(response[5], response[6]) if len(response) >= 7 else (0, 0.0)
        self.touched = bool(response[7]) if len(response) >= 8 else None
        if ok:
            return AttemptResult(_SUCCEEDED, result_json=result, peak_rss_bytes=rss, cpu_s=cpu)
        if self._redactor is not None:
            error = self._redactor.text(error)
        return AttemptResult(
            types_pb2.ATTEMPT_OUTCOME_FAILED,
            exit_code=1,
            error=error,
            retryable=retryable,
            peak_rss_bytes=rss,
            cpu_s=cpu,
        )
