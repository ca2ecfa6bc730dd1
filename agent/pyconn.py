"""One warm python worker seen from the agent: its request/response pipes and its output pipes.

Dispatch is a pickle written to the request pipe; the answer is a frame on the response pipe,
split by :class:`ResponseReader` and resolved on the worker's waiting future. Output pipes are read
on readiness into the current task's captures (made on the first output: most tasks print nothing).

A second request may be *staged* while a task runs (:meth:`PyWorker.stage`): the worker starts it
as soon as it has answered the first, if it can take the stage token first (one byte on a pipe both
it and the agent read: whoever reads it wins, so :meth:`PyWorker.withdraw` takes a request back
exactly when it had not started; the worker then answers it :data:`SKIPPED`). A staged task's
output follows a boundary (the request's, written by the worker to both output pipes before it
starts), so each byte is the task's that wrote it, whichever pipe the agent reads first.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pickle
import select
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path

from corral.agent.childproc import ChildProcess
from corral.agent.output import PipeCapture
from corral.agent.pycgroup import WorkerCgroup
from corral.agent.pyframes import HEADER
from corral.agent.pyworker import RETIRE, Request, Response

__all__ = ["SKIPPED", "NotStarted", "PyWorker", "ResponseReader", "WorkerDied"]

#: The ``stop`` of the worker's answer to a staged request that was withdrawn (never started).
SKIPPED = "withdrawn"
_TOKEN = b"t"

_READ = 65536
# Reads per readiness callback: a task printing without pause must not monopolise the event loop.
_READS_PER_CALLBACK = 16
_DRAIN_READS = 32
_RETIRE_FRAME = pickle.dumps(RETIRE, protocol=pickle.HIGHEST_PROTOCOL)


class WorkerDied(Exception):
    """The worker process exited while running a task."""


class NotStarted(WorkerDied):
    """The worker exited before it took a staged request's token: that task never started."""


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
        token: tuple[int, int] = (-1, -1),
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
        # One future per request written, answered in order (a running task, then a staged one).
        self._waiters: deque[asyncio.Future[Response]] = deque()
        # The stage token pipe (read end, also the worker's; write end): -1 when there is none.
        self._token_r, self._token_w = token
        # A staged request's output boundary still to be found, per stream (None: nothing staged
        # there), the bytes held back in case they begin it, and where the output after it goes.
        self._cut: list[bytes | None] = [None, None]
        self._held: list[bytes] = [b"", b""]
        self._after: list[PipeCapture | None] = [None, None]
        self._after_args: tuple[int, Mapping[str, str]] | None = None
        #: PythonRuns handed this worker and not finished (the pool frees it only at zero).
        self.owners = 0
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
        """Stop routing output to the task; its captures (None for a stream that stayed silent).

        With a staged task behind it, that one's output (after its boundary) is routed on."""
        if self._cut[0] is not None or self._cut[1] is not None:
            # All of this task's output was written before its answer, so it is in the pipes: what
            # is held back now is the end of that output, unless the boundary (written whole, in
            # one write) follows it there. Read what is there; what is still held is this task's.
            self.drain()
            for index in (0, 1):
                held, self._held[index] = self._held[index], b""
                if held and self._cut[index] is not None:
                    self._feed(index, held)
        out, err = self.captures
        if self._after_args is not None:
            self.captures, self._capture_args = self._after, self._after_args
            self._after, self._after_args = [None, None], None
        else:
            self.captures = [None, None]
            self._capture_args = None
        return out, err

    @property
    def busy(self) -> bool:
        """Whether a request is still unanswered (a task, a staged one, or a withdrawn one)."""
        return bool(self._waiters)

    def can_stage(self, running: asyncio.Future[Response]) -> bool:
        """Whether a request may be staged behind ``running`` (its only unanswered request)."""
        waiters = self._waiters
        return (
            self.alive
            and self._token_w >= 0
            and self._writer is not None
            and len(waiters) == 1
            and waiters[0] is running
            and not running.done()
            and self._after_args is None
            # The boundary of the last staged request is still to come: one cut at a time.
            and self._cut[0] is None
            and self._cut[1] is None
        )

    def stage(
        self, request: Request, boundary: bytes, cap: int, secrets: Mapping[str, str]
    ) -> asyncio.Future[Response]:
        """Write ``request`` (staged: its last field is ``boundary``) and its token; its future."""
        if self.alive and self._writer is not None:
            # The token first: a worker that has answered already reads the request at once, and
            # must find its token there (else it skips a request nobody withdrew).
            os.write(self._token_w, _TOKEN)
            self._cut = [boundary, boundary]
            self._after_args = (cap, secrets)
        return self.send(request)

    def withdraw(self, waiter: asyncio.Future[Response]) -> bool:
        """Take a staged request back: True when it had not started (the worker skips it).

        False when the worker took its token (it has answered the task before it and runs this
        one). Withdrawn, its future is cancelled, and the worker's skip answer is consumed.
        """
        try:
            taken = os.read(self._token_r, 1) != _TOKEN
        except BlockingIOError:
            taken = True
        except OSError:
            taken = True  # the pipe is closed (the worker let go): never assume it did not start
        if taken:
            return False
        waiter.cancel()
        # No boundary will come: what was held back is the running task's output.
        for index in (0, 1):
            self._cut[index] = None
            held, self._held[index] = self._held[index], b""
            if held:
                self._feed(index, held)
        self._after, self._after_args = [None, None], None
        return True

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
        self._waiters.append(waiter)
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
        index = 0 if fd == self._fds[0] else 1
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
            if self._cut[index] is None:
                capture = self.capture(index)
                if capture is not None:
                    capture.feed(data)
            else:
                self._split(index, data)

    def _feed(self, index: int, data: bytes) -> None:
        capture = self.capture(index)
        if capture is not None:
            capture.feed(data)

    def _split(self, index: int, data: bytes) -> None:
        """Route a chunk of a stream that awaits a staged task's boundary: before it, the running
        task's; after it, the staged one's (the boundary itself is dropped)."""
        cut = self._cut[index]
        assert cut is not None
        data = self._held[index] + data
        at = data.find(cut)
        if at < 0:
            keep = len(cut) - 1  # the end of the chunk may be the start of the boundary
            self._held[index] = data[-keep:] if len(data) > keep else data
            if len(data) > keep:
                self._feed(index, data[:-keep])
            return
        self._held[index] = b""
        self._cut[index] = None
        if at:
            self._feed(index, data[:at])
        rest = data[at + len(cut) :]
        if self._after_args is None:  # the running task has ended already: the staged one is current
            if rest:
                self._feed(index, rest)
            return
        if rest:
            after = self._after[index]
            if after is None:
                cap, secrets = self._after_args
                after = self._after[index] = PipeCapture(cap, secrets=secrets)
            after.feed(rest)

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
        if self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(response)
            elif not self._waiters and self.on_free is not None:
                self.on_free(self)  # a withdrawn request's skip: nothing of it is left

    #: Called when the answer to a withdrawn request leaves the worker with nothing unanswered.
    on_free: Callable[[PyWorker], None] | None = None

    def _on_lost(self) -> None:
        self.alive = False
        if not self.ready.done():
            self.ready.set_exception(WorkerDied(f"python worker {self.pid} exited while starting"))
        self.drain()
        waiters, self._waiters = self._waiters, deque()
        staged_left = False
        if self._token_r >= 0:
            # A byte still there is a staged request (the last one) the worker never took.
            with contextlib.suppress(OSError):
                staged_left = os.read(self._token_r, 1) == _TOKEN
        for index, waiter in enumerate(waiters):
            if not waiter.done():
                last = index == len(waiters) - 1
                error = NotStarted if staged_left and last else WorkerDied
                waiter.set_exception(error(f"python worker {self.pid} exited"))

    def close_pipes(self) -> None:
        """Close every pipe (a live worker exits on EOF of its request pipe)."""
        for transport in (self._writer, self._reader):
            if transport is not None:
                transport.close()
        self._writer = self._reader = None
        for fd in list(self._fds):
            if fd >= 0:
                self._stop_reading(fd)
        for fd in (self._token_r, self._token_w):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._token_r = self._token_w = -1
