"""The pool of warm python workers, seen from the agent: spawn, dispatch, replace.

Dispatch is a pickle written to the worker's request pipe and a future resolved when the
response frame arrives on its response pipe: no thread, no file created per task. A worker whose
task timed out or was cancelled is killed with its whole process tree and replaced.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pickle
import sys
from collections import deque
from pathlib import Path

import structlog

from corral.agent.attempt import AttemptResult, StopReason
from corral.agent.output import FileCapture, last_line
from corral.agent.proctree import terminate_tree
from corral.agent.pyworker import HEADER, Request, Response
from corral.v1 import types_pb2

__all__ = ["PyWorker", "PythonRun", "WorkerDied", "WorkerPool"]

log = structlog.get_logger("corral.agent.pypool")

_SUCCEEDED = types_pb2.ATTEMPT_OUTCOME_SUCCEEDED
_NO_OUTPUT = (b"", b"", False)


class WorkerDied(Exception):
    """The worker process exited while running a task."""


WORKER_START_TIMEOUT_S = 60.0


class _ResponseReader(asyncio.Protocol):
    """Splits the response pipe into frames and hands each to its worker."""

    def __init__(self, worker: PyWorker) -> None:
        self._worker = worker
        self._buffer = bytearray()

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        if not buffer and len(data) >= HEADER.size and HEADER.unpack_from(data)[0] == len(data) - HEADER.size:
            # The usual case: exactly one whole frame, no copy.
            self._worker._on_response(pickle.loads(memoryview(data)[HEADER.size :]))
            return
        buffer += data
        while len(buffer) >= HEADER.size:
            size = HEADER.unpack_from(buffer)[0]
            end = HEADER.size + size
            if len(buffer) < end:
                break
            frame = bytes(buffer[HEADER.size : end])
            del buffer[:end]
            self._worker._on_response(pickle.loads(frame))

    def connection_lost(self, exc: Exception | None) -> None:
        self._worker._on_lost()


class PyWorker:
    """One warm worker process and its two pipes."""

    def __init__(self, index: int, proc: asyncio.subprocess.Process, out: FileCapture, err: FileCapture) -> None:
        self.index = index
        self.proc = proc
        self.pid = proc.pid
        self.out = out
        self.err = err
        self.alive = True
        self._writer: asyncio.WriteTransport | None = None
        self._reader: asyncio.ReadTransport | None = None
        self._waiter: asyncio.Future[Response] | None = None
        # Resolved by the worker's first frame, sent once its interpreter and imports are up.
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def send(self, request: Request) -> asyncio.Future[Response]:
        """Dispatch one task; the future resolves with its response or fails with WorkerDied."""
        waiter: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        if not self.alive or self._writer is None:
            waiter.set_exception(WorkerDied(f"python worker {self.pid} is gone"))
            return waiter
        self._waiter = waiter
        frame = pickle.dumps(request, protocol=pickle.HIGHEST_PROTOCOL)
        self._writer.write(HEADER.pack(len(frame)) + frame)
        return waiter

    def _on_response(self, response: Response) -> None:
        if not self.ready.done():
            self.ready.set_result(None)
            return
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(response)

    def _on_lost(self) -> None:
        self.alive = False
        if not self.ready.done():
            self.ready.set_exception(WorkerDied(f"python worker {self.pid} exited while starting"))
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(WorkerDied(f"python worker {self.pid} exited"))

    def close_pipes(self) -> None:
        """Close both pipes (a live worker exits on EOF) and the capture files."""
        for transport in (self._writer, self._reader):
            if transport is not None:
                transport.close()
        self._writer = self._reader = None
        for fd in (self.out.fd, self.err.fd):
            with contextlib.suppress(OSError):
                os.close(fd)


class WorkerPool:
    """``size`` warm workers; :meth:`start_task` hands a python attempt to a free one."""

    def __init__(self, size: int, work_dir: Path, output_cap: int, extra_paths: list[str] | None = None) -> None:
        self.size = size
        self._folder = work_dir / "pyworkers"
        self._work_dir = work_dir
        self._cap = output_cap
        self._paths = extra_paths if extra_paths is not None else [os.getcwd(), str(work_dir)]
        self._idle: deque[PyWorker] = deque()
        self._waiters: deque[asyncio.Future[PyWorker]] = deque()
        self._all: set[PyWorker] = set()
        self._spawning: set[asyncio.Task[None]] = set()
        self._closed = False
        self._next_index = 0

    @property
    def pids(self) -> list[int]:
        """Process ids of the current workers."""
        return sorted(w.pid for w in self._all)

    async def start(self) -> None:
        """Spawn all workers."""
        self._folder.mkdir(parents=True, exist_ok=True)
        workers = await asyncio.gather(*(self._spawn() for _ in range(self.size)))
        for worker in workers:
            self._release(worker)

    async def _spawn(self) -> PyWorker:
        index = self._next_index
        self._next_index += 1
        loop = asyncio.get_running_loop()
        req_r, req_w = os.pipe()
        resp_r, resp_w = os.pipe()
        flags = os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
        out_fd = os.open(self._folder / f"worker-{index}.out", flags, 0o600)
        err_fd = os.open(self._folder / f"worker-{index}.err", flags, 0o600)
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "corral.agent.pyworker",
                str(req_r),
                str(resp_w),
                *self._paths,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out_fd,
                stderr=err_fd,
                pass_fds=(req_r, resp_w),
                start_new_session=True,
                cwd=self._work_dir,
            )
        finally:
            os.close(req_r)
            os.close(resp_w)
        worker = PyWorker(index, proc, FileCapture(out_fd, self._cap), FileCapture(err_fd, self._cap))
        writer, _ = await loop.connect_write_pipe(asyncio.Protocol, os.fdopen(req_w, "wb", buffering=0))
        reader, _ = await loop.connect_read_pipe(lambda: _ResponseReader(worker), os.fdopen(resp_r, "rb", buffering=0))
        worker._writer = writer
        worker._reader = reader
        self._all.add(worker)
        # Hand out only warm workers: a task must not pay for an interpreter starting up.
        await asyncio.wait_for(asyncio.shield(worker.ready), WORKER_START_TIMEOUT_S)
        return worker

    def _release(self, worker: PyWorker) -> None:
        if self._closed or not worker.alive:
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(worker)
                return
        self._idle.append(worker)

    async def _acquire(self) -> PyWorker:
        while self._idle:
            worker = self._idle.popleft()
            if worker.alive:
                return worker
            self._discard(worker)
        waiter: asyncio.Future[PyWorker] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        return await waiter

    def _discard(self, worker: PyWorker) -> None:
        """Forget a dead or killed worker and spawn its replacement."""
        if worker not in self._all:
            return
        self._all.discard(worker)
        worker.close_pipes()
        if self._closed:
            return

        async def replace() -> None:
            try:
                self._release(await self._spawn())
            except Exception:
                log.exception("python worker could not be replaced")

        task = asyncio.create_task(replace())
        self._spawning.add(task)
        task.add_done_callback(self._spawning.discard)

    async def start_task(self, assignment: types_pb2.TaskAssignment, has_gpus: bool) -> PythonRun:
        """Hand an attempt to a free worker (waiting for one if all are busy)."""
        worker = await self._acquire()
        worker.out.reset()
        worker.err.reset()
        cuda = ",".join(map(str, assignment.gpu_ids)) if (assignment.gpu_ids or has_gpus) else None
        inputs = dict(assignment.inputs_json) if assignment.inputs_json else None
        identity = (assignment.task_id, assignment.task_name, assignment.workflow_id, assignment.attempt_id, cuda)
        return PythonRun(self, worker, worker.send((assignment.payload_json, inputs, identity)))

    async def close(self) -> None:
        """Stop every worker (EOF first, then kill whatever did not exit)."""
        self._closed = True
        for task in list(self._spawning):
            with contextlib.suppress(BaseException):
                await task
        for waiter in self._waiters:
            waiter.cancel()
        workers = list(self._all)
        self._all.clear()
        self._idle.clear()
        for worker in workers:
            worker.close_pipes()
        for worker in workers:
            try:
                await asyncio.wait_for(worker.proc.wait(), 2.0)
            except TimeoutError:
                await terminate_tree(worker.pid, 0, force=True)
                await worker.proc.wait()


class PythonRun:
    """A python attempt running in a warm worker (implements :class:`corral.agent.attempt.Run`)."""

    def __init__(self, pool: WorkerPool, worker: PyWorker, response: asyncio.Future[Response]) -> None:
        self._pool = pool
        self._worker = worker
        self._response = response
        self._stop: StopReason | None = None
        self._stoppers: list[asyncio.Task[None]] = []
        self._final: tuple[bytes, bytes, bool] | None = None

    @property
    def pid(self) -> int:
        """The worker's process id."""
        return self._worker.pid

    def take_output(self) -> tuple[bytes, bytes, bool]:
        """New output of the task (read from the worker's capture files)."""
        if self._final is not None:
            final, self._final = self._final, (b"", b"", self._final[2])
            return final
        worker = self._worker
        return worker.out.read_new(), worker.err.read_new(), worker.out.truncated or worker.err.truncated

    def request_stop(self, reason: StopReason, *, force: bool, grace_s: float) -> None:
        """Kill the worker's process tree (SIGTERM, grace, SIGKILL); it is replaced afterwards."""
        if self._response.done() or (self._stoppers and not force):
            return
        if self._stop is None:
            self._stop = reason
        self._stoppers.append(asyncio.create_task(terminate_tree(self._worker.pid, grace_s, force=force)))

    async def finish(self) -> AttemptResult:
        """Wait for the task's response (or the worker's death) and build the report."""
        worker = self._worker
        try:
            response: Response | None = await self._response
        except WorkerDied:
            response = None
        if response is None or self._stop is not None:
            for stopper in self._stoppers:
                await stopper
            if self._stop is None:
                # Died by itself (os._exit, a crash, the OOM killer): finish off its children.
                await terminate_tree(worker.pid, 0, force=True)
            code = await worker.proc.wait()
            self._final = (worker.out.read_new(), worker.err.read_new(), worker.out.truncated or worker.err.truncated)
            tail = last_line(worker.err.read_tail(worker.err.offset)) if self._stop is None else ""
            self._pool._discard(worker)
            if self._stop is not None:
                return AttemptResult.stopped(self._stop)
            error = f"python worker died (exit code {code})" + (f": {tail}" if tail else "")
            return AttemptResult.failed(error, retryable=True, exit_code=code)
        ok, result, error, retryable, out_size, err_size = response
        if out_size or err_size:
            self._final = (
                worker.out.read_new(out_size),
                worker.err.read_new(err_size),
                worker.out.truncated or worker.err.truncated,
            )
        else:
            # Nothing written: the final take_output() must not touch the files at all.
            self._final = _NO_OUTPUT
        self._pool._release(worker)
        if ok:
            return AttemptResult(_SUCCEEDED, result_json=result)
        return AttemptResult.failed(error, retryable=retryable, exit_code=1)
