"""One warm python worker seen from the agent: its request/response pipes and its output pipes.

Dispatch is a pickle written to the request pipe; the answer is a frame on the response pipe,
split by :class:`ResponseReader` and resolved on the worker's waiting future. Output pipes are read
on readiness into the current task's captures (made on the first output: most tasks print nothing).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pickle
import select
from collections.abc import Mapping
from pathlib import Path

from corral.agent.childproc import ChildProcess
from corral.agent.output import PipeCapture
from corral.agent.pycgroup import WorkerCgroup
from corral.agent.pyframes import HEADER
from corral.agent.pyworker import RETIRE, Request, Response

__all__ = ["PyWorker", "ResponseReader", "WorkerDied"]

_READ = 65536
# Reads per readiness callback: a task printing without pause must not monopolise the event loop.
_READS_PER_CALLBACK = 16
_DRAIN_READS = 32
_RETIRE_FRAME = pickle.dumps(RETIRE, protocol=pickle.HIGHEST_PROTOCOL)


class WorkerDied(Exception):
    """The worker process exited while running a task."""


class ResponseReader(asyncio.Protocol):
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
    """One warm worker process, its request/response pipes and its output pipes."""

    def __init__(
        self,
        index: int,
        proc: ChildProcess,
        home: Path,
        out_fd: int,
        err_fd: int,
        cgroup: WorkerCgroup | None = None,
    ) -> None:
        self.index = index
        self.proc = proc
        self.pid = proc.pid
        self.home = home
        self.cgroup = cgroup
        self.alive = True
        # The workflow this worker serves (None until its first task).
        self.workflow: str | None = None
        # The current task's captures, made on its first output (most tasks print nothing).
        self.captures: list[PipeCapture | None] = [None, None]
        self._capture_args: tuple[int, Mapping[str, str]] | None = None
        self._fds = [out_fd, err_fd]
        self._writer: asyncio.WriteTransport | None = None
        self._reader: asyncio.ReadTransport | None = None
        self._waiter: asyncio.Future[Response] | None = None
        self._loop = asyncio.get_running_loop()
        # One poll(2) call tells whether either pipe holds anything (the usual answer: no).
        self._poll = select.poll()
        for fd in self._fds:
            os.set_blocking(fd, False)
            self._loop.add_reader(fd, self._readable, fd)
            self._poll.register(fd, select.POLLIN)
        # Resolved by the worker's first frame, sent once its interpreter and imports are up.
        self.ready: asyncio.Future[None] = self._loop.create_future()

    def begin(self, cap: int, secrets: Mapping[str, str]) -> None:
        """Route the output pipes into a new task's captures (``cap`` bytes each, ``secrets`` redacted)."""
        self.captures = [None, None]
        self._capture_args = (cap, secrets)

    def end(self) -> tuple[PipeCapture | None, PipeCapture | None]:
        """Stop routing output to the task; its captures (None for a stream that stayed silent)."""
        out, err = self.captures
        self.captures = [None, None]
        self._capture_args = None
        return out, err

    def capture(self, index: int) -> PipeCapture | None:
        """The current task's capture of stdout (0) or stderr (1), made on first use."""
        capture = self.captures[index]
        if capture is None and self._capture_args is not None:
            cap, secrets = self._capture_args
            capture = self.captures[index] = PipeCapture(cap, secrets=secrets)
        return capture

    def send(self, request: Request) -> asyncio.Future[Response]:
        """Dispatch one task; the future resolves with its response or fails with WorkerDied."""
        waiter: asyncio.Future[Response] = self._loop.create_future()
        if not self.alive or self._writer is None:
            waiter.set_exception(WorkerDied(f"python worker {self.pid} is gone"))
            return waiter
        self._waiter = waiter
        frame = pickle.dumps(request, protocol=pickle.HIGHEST_PROTOCOL)
        self._writer.write(HEADER.pack(len(frame)) + frame)
        return waiter

    def retire(self) -> None:
        """End the child of this idle worker's workflow now (it ended): the next workflow's first
        task then finds a fresh child, and the switch (emptying the folder, the hand-over) is done
        while nothing waits for it. No response comes for it."""
        self.workflow = None
        if self.alive and self._writer is not None:
            self._writer.write(HEADER.pack(len(_RETIRE_FRAME)) + _RETIRE_FRAME)

    def _readable(self, fd: int) -> None:
        self._read(fd, _READS_PER_CALLBACK)

    def _read(self, fd: int, reads: int) -> None:
        """Read what the pipe holds (at most ``reads`` chunks) into the current task's capture
        (dropped between tasks)."""
        capture = self.capture(0 if fd == self._fds[0] else 1)
        for _ in range(reads):
            try:
                data = os.read(fd, _READ)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self._stop_reading(fd)
                return
            if capture is not None:
                capture.feed(data)

    def drain(self) -> None:
        """Read everything already written to the output pipes (all of it precedes the response)."""
        for fd, _ in self._poll.poll(0):
            if fd in self._fds:
                # Bounded: a child the task left behind may keep writing; what precedes the
                # response fits in the pipe's buffer.
                self._read(fd, _DRAIN_READS)

    def _stop_reading(self, fd: int) -> None:
        index = self._fds.index(fd)
        self._loop.remove_reader(fd)
        self._poll.unregister(fd)
        with contextlib.suppress(OSError):
            os.close(fd)
        self._fds[index] = -1

    def _on_response(self, response: Response) -> None:
        if not self.ready.done():
            self.ready.set_result(None)
            return
        self.drain()
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(response)

    def _on_lost(self) -> None:
        self.alive = False
        if not self.ready.done():
            self.ready.set_exception(WorkerDied(f"python worker {self.pid} exited while starting"))
        self.drain()
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(WorkerDied(f"python worker {self.pid} exited"))

    def close_pipes(self) -> None:
        """Close every pipe (a live worker exits on EOF of its request pipe)."""
        for transport in (self._writer, self._reader):
            if transport is not None:
                transport.close()
        self._writer = self._reader = None
        for fd in list(self._fds):
            if fd >= 0:
                self._stop_reading(fd)
