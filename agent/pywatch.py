"""The python worker as the supervisor of its tasks: subreaper, self-fencing, surviving the agent.

The worker's template process (:mod:`corral.agent.pyworker`) never runs a task; the child it forks
per workflow does, reading requests straight from the agent's pipe. So the template learns what
its child runs from a page of shared memory (:class:`Shared`: a few stores per task, no syscall)
and watches with one ``poll`` that wakes on the child's end, on the agent's death (the request pipe
hangs up) and every :data:`TICK_S` for the lease:

- **Subreaper.** Template and child are child subreapers, so whatever a task double-forks comes back
  to them and can be killed as a descendant; the child kills what a task left behind before it
  answers (:func:`kill_leftovers`: one ``waitpid`` when nothing was left).
- **Self-fencing.** While a ``stop`` task runs, the template reads the agent's lease file each tick;
  past its CLOCK_BOOTTIME deadline it stops the task's tree (SIGTERM, the task's kill grace,
  SIGKILL) and answers the request with the outcome "fenced".
- **Surviving the agent.** When the agent dies while a task runs, the template creates
  ``<work_dir>/supervise/<attempt_id>/`` (``lock`` held while it lives, ``supervisor.pid``,
  ``task.pid``), keeps enforcing the timeout, the lease and stop requests (a ``stop`` file and
  SIGUSR1), and writes ``status.json`` when the task ends. An idle worker whose agent died exits.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import functools
import json
import mmap
import os
import pickle
import select
import signal
import struct
import time
from typing import Any

from corral.agent.pyframes import HEADER, write_all_fd
from corral.agent.usage import clean

__all__ = [
    "ABORTED",
    "FINISHING",
    "IDLE",
    "RESPONDING",
    "RUNNING",
    "TICK_S",
    "Shared",
    "Watcher",
    "become_subreaper",
    "die_with_parent",
    "kill_descendants",
    "kill_leftovers",
]

_PR_SET_CHILD_SUBREAPER = 36
_PR_SET_PDEATHSIG = 1
#: How often the template looks at the lease (and, once the agent is gone, the timeout).
TICK_S = 0.5

# The child's task state in the shared page (byte 0).
IDLE, RUNNING, FINISHING, RESPONDING, ABORTED = 0, 1, 2, 3, 4
# state, keep (on_disconnect KEEP), started (monotonic), timeout_s, grace_s, attempt id.
_TASK = struct.Struct("<BBxxxxxxddd128s")
# Set by the template when it stops the running task: the child must not answer it.
_STOP_AT = 256
# Set by the template while the agent's lease is expired: the child starts no ``stop`` task.
_EXPIRED_AT = 257
_SIZE = 512
_POLL_S = 0.02

_STOP_OUTCOMES = {
    "cancelled": "cancelled",
    "timed out": "timed_out",
    "killed": "killed",
    "drained": "drained",
    "fenced": "fenced",
}


@functools.cache
def _prctl() -> Any:
    """libc's ``prctl``, looked up once: the template's children (one per workflow) inherit it
    instead of loading libc again (a fifth of a millisecond per child, on the switch's heels)."""
    return ctypes.CDLL(None, use_errno=True).prctl


def become_subreaper() -> bool:
    """Make this process a child subreaper (orphaned descendants are re-parented to it)."""
    try:
        return int(_prctl()(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def die_with_parent(parent: int) -> None:
    """SIGKILL this process when its parent dies (PR_SET_PDEATHSIG); at once if it already has."""
    with contextlib.suppress(OSError, AttributeError):
        _prctl()(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(1)


def _boottime() -> float:
    """Seconds on CLOCK_BOOTTIME (the lease's clock: it keeps counting through a suspend)."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def _read_lease(path: str) -> float | None:
    """The lease file's deadline ("%.3f\\n", CLOCK_BOOTTIME), or None when there is none."""
    try:
        # Plain descriptors, not open(): it is read on every workflow switch, before the next child
        # may start (three syscalls instead of six).
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            return float(os.read(fd, 64).strip())
        finally:
            os.close(fd)
    except (OSError, ValueError):
        return None


class Shared:
    """The page the template and its children share (anonymous MAP_SHARED: it survives fork)."""

    def __init__(self) -> None:
        self.mem = mmap.mmap(-1, _SIZE)

    # -- the child's side (the hot path: plain stores, no syscall) ------------------------------------

    def begin(self, attempt_id: bytes, keep: bool, timeout_s: float, grace_s: float) -> None:
        """A task starts."""
        _TASK.pack_into(self.mem, 0, RUNNING, keep, time.monotonic(), timeout_s, grace_s, attempt_id)

    def may_answer(self) -> bool:
        """The task ended: True when the child answers it, False when the template is stopping it."""
        mem = self.mem
        mem[0] = FINISHING
        if mem[_STOP_AT]:
            mem[0] = ABORTED
            return False
        mem[0] = RESPONDING
        return True

    def idle(self) -> None:
        """The answer is written."""
        self.mem[0] = IDLE

    def expired(self) -> bool:
        """Whether the agent's lease was expired at the template's last look (a memory read)."""
        return self.mem[_EXPIRED_AT] == 1

    # -- the template's side ------------------------------------------------------------------------

    def snapshot(self) -> tuple[int, bool, float, float, float, str]:
        """(state, keep, started, timeout_s, grace_s, attempt id), read consistently."""
        while True:
            first = self.mem[: _TASK.size]
            if first == self.mem[: _TASK.size]:
                break
        state, keep, started, timeout_s, grace_s, attempt = _TASK.unpack(first)
        return state, bool(keep), started, timeout_s, grace_s, attempt.rstrip(b"\0").decode(errors="replace")

    def state(self) -> int:
        """The child's task state (byte 0)."""
        return self.mem[0]

    def set_stop(self, value: bool) -> None:
        """Tell the child not to answer the task it runs (or no longer)."""
        self.mem[_STOP_AT] = 1 if value else 0

    def set_expired(self, value: bool) -> None:
        """Publish whether the agent's lease is expired."""
        self.mem[_EXPIRED_AT] = 1 if value else 0


def reap() -> None:
    """Collect every child that has exited (never blocks)."""
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0] != 0:
            pass


def _live_descendants(exclude: frozenset[int] = frozenset()) -> list[Any]:
    import psutil  # only on the stop paths: the worker boots without it

    found = []
    try:
        children = psutil.Process().children(recursive=True)
    except psutil.Error:
        return []
    for proc in children:
        if proc.pid in exclude:
            continue
        with contextlib.suppress(psutil.Error):
            if proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
    return found


def kill_descendants(grace_s: float = 0.0, *, exclude: frozenset[int] = frozenset()) -> None:
    """Stop every descendant of this process (a subreaper: nothing it started can escape it).

    With a grace: SIGTERM (and SIGCONT, so a stopped one can act on it), wait up to ``grace_s``
    for them to exit; then SIGKILL until none is left. Every child is reaped.
    """
    if grace_s > 0:
        signalled: set[int] = set()
        deadline = time.monotonic() + grace_s
        while True:
            reap()
            procs = _live_descendants(exclude)
            if not procs or time.monotonic() >= deadline:
                break
            for proc in procs:
                if proc.pid not in signalled:
                    signalled.add(proc.pid)
                    with contextlib.suppress(Exception):
                        proc.send_signal(signal.SIGTERM)
                        proc.send_signal(signal.SIGCONT)
            time.sleep(_POLL_S)
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline:
        reap()
        procs = _live_descendants(exclude)
        if not procs:
            break
        for proc in procs:
            with contextlib.suppress(Exception):
                proc.kill()
        time.sleep(_POLL_S / 4)
    reap()


def kill_leftovers() -> None:
    """Kill whatever the task that just ended left running (one waitpid when it left nothing)."""
    try:
        while True:
            if os.waitpid(-1, os.WNOHANG)[0] == 0:
                kill_descendants()
                return
    except ChildProcessError:
        return


def _write_json(path: str, value: Any) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as file:
        json.dump(value, file)
    os.replace(tmp, path)


def _write_text(path: str, text: str) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(text)
    os.replace(tmp, path)


class Watcher:
    """The template's watch over the child running tasks (see the module docstring)."""

    def __init__(self, shared: Shared, config: dict[str, Any], requests_fd: int, responses_fd: int) -> None:
        self.shared = shared
        self.requests_fd = requests_fd
        self.responses_fd = responses_fd
        work_dir = config.get("work_dir") or ""
        self.work_dir: str = work_dir
        self.lease_path: str = config.get("lease") or (os.path.join(work_dir, "lease") if work_dir else "")
        # The read ends of the response and output pipes, held so the agent's death breaks no pipe
        # of a running task (and read once it is gone).
        self.response_reader: int = int(config.get("response_reader", -1))
        self.output_readers: list[int] = [int(fd) for fd in config.get("output_readers", []) if int(fd) >= 0]
        self.cgroup: dict[str, Any] | None = config.get("cgroup")
        self.lock_fd = int(config.get("lock", -1))
        self.seen_lease = False
        self.statuses: dict[int, int] = {}  # exit statuses of children reaped while stopping them
        # Children that handed their last request back and are exiting: reaped without waiting
        # (a dying process takes milliseconds to go), at the next switch or the next watch tick.
        self.ending: set[int] = set()

    # -- the normal watch (the agent is alive) ------------------------------------------------------

    def watch(self, pid: int, handoff: int) -> bytes:
        """Wait until the child ``pid`` writes on ``handoff`` and closes it (what it wrote: it
        handed a request of another workflow on to the next child) or ends (b"")."""
        poller = select.poll()
        poller.register(handoff, select.POLLIN)
        # No events asked: poll reports only the hang-up, when the agent's end is closed.
        poller.register(self.requests_fd, 0)
        while True:
            events = dict(poller.poll(TICK_S * 1000))
            if handoff in events:
                return _read_all(handoff)
            self.reap_ending()
            if self.requests_fd in events:
                self._orphaned(pid, handoff)  # never returns
            if self._lease_expired():
                self._fence(pid)

    def reap_ending(self) -> None:
        """Reap the children in :attr:`ending` that have exited by now; never waits."""
        for pid in list(self.ending):
            try:
                done = os.waitpid(pid, os.WNOHANG)[0] != 0
            except ChildProcessError:
                done = True
            if done or self.statuses.pop(pid, None) is not None:
                self.ending.discard(pid)

    def exit_status(self, pid: int) -> int:
        """The wait status of child ``pid`` (it has ended)."""
        status = self.statuses.pop(pid, None)
        if status is not None:
            return status
        try:
            return os.waitpid(pid, 0)[1]
        except ChildProcessError:
            return 0

    def refresh_lease(self) -> bool:
        """Read the lease file, publish whether it is expired (for the child), return that."""
        if not self.lease_path:
            return False
        deadline = _read_lease(self.lease_path)
        if deadline is None:
            # No lease yet (an agent that never had one), unless one was there before: then gone.
            expired = self.seen_lease
        else:
            self.seen_lease = True
            expired = _boottime() > deadline
        self.shared.set_expired(expired)
        return expired

    def _lease_expired(self) -> bool:
        """Whether a ``stop`` task runs past the lease (the lease is looked at every tick)."""
        expired = self.refresh_lease()
        state, keep, *_ = self.shared.snapshot()
        return expired and state in (RUNNING, FINISHING) and not keep

    def _stop_task(self, pid: int, grace_s: float) -> bool:
        """Stop the task the child runs; False when it had already ended (its answer stands).

        The child is stopped (SIGSTOP, and waited for) before its state is read, so the state cannot
        change under the decision: a task still running is killed, one whose answer is being
        written is let go.
        """
        shared = self.shared
        shared.set_stop(True)
        exited = False
        try:
            os.kill(pid, signal.SIGSTOP)
            waited, status = os.waitpid(pid, os.WUNTRACED)
            if waited == pid and not os.WIFSTOPPED(status):
                self.statuses[pid] = status
                exited = True
        except (ProcessLookupError, ChildProcessError):
            exited = True
        state = shared.state()
        if state == FINISHING and not exited:
            # It read the stop flag or is about to: let it decide, it takes microseconds.
            os.kill(pid, signal.SIGCONT)
            deadline = time.monotonic() + 1.0
            while shared.state() == FINISHING and time.monotonic() < deadline:
                time.sleep(0.001)
            state = shared.state()
        if state in (IDLE, RESPONDING):
            shared.set_stop(False)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
            return False
        kill_descendants(grace_s)
        return True

    def _fence(self, pid: int) -> None:
        """The lease ran out under a ``stop`` task: kill it, answer "fenced", retire this worker."""
        _, _, _, _, grace_s, _attempt = self.shared.snapshot()
        if not self._stop_task(pid, grace_s):
            return
        reply = pickle.dumps((False, b"", "fenced: the agent's lease expired", True, "fenced"))
        with contextlib.suppress(OSError):
            write_all_fd(self.responses_fd, HEADER.pack(len(reply)) + reply)
        kill_descendants()
        os._exit(0)

    # -- the agent is gone ------------------------------------------------------------------------

    def _orphaned(self, pid: int, handoff: int) -> None:
        """The agent died: supervise the running task to its end on our own, or exit when idle."""
        state, _keep, started, timeout_s, grace_s, attempt = self.shared.snapshot()
        unread = self.response_reader >= 0 and _readable(self.response_reader)
        if (state == IDLE and not unread) or not self.work_dir or not _safe(attempt):
            kill_descendants()
            os._exit(0)
        control = os.path.join(self.work_dir, "supervise", attempt)
        # Before anyone can find this supervisor: a stop request (SIGUSR1) must not kill it.
        stop_requested = [False]
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGUSR1, lambda *_: stop_requested.__setitem__(0, True))
        try:
            os.makedirs(control, mode=0o700, exist_ok=True)
            lock = os.open(os.path.join(control, "lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            fcntl.flock(lock, fcntl.LOCK_EX)  # held until this process exits: "supervisor alive"
            _write_text(os.path.join(control, "supervisor.pid"), f"{os.getpid()}\n")
            _write_text(os.path.join(control, "task.pid"), f"{pid}\n")
            if self.cgroup:
                # Whoever finds this supervisor dead kills what is left of the worker through it.
                _write_json(os.path.join(control, "cgroup.json"), self.cgroup)
            if self.lock_fd >= 0:
                # Registered: a restarted agent waiting for its old workers (settle_orphans) may go on.
                os.write(self.lock_fd, f"{os.getpid()}\n".encode())
        except OSError:
            # No control folder (e.g. --run-as: the task's user may not write there): nobody could
            # adopt this task, so it dies with the agent, as before.
            kill_descendants()
            os._exit(1)
        poller = select.poll()
        for fd in (handoff, wake_r, *self.output_readers):
            poller.register(fd, select.POLLIN)
        if self.response_reader >= 0:
            poller.register(self.response_reader, select.POLLIN)
        frames = bytearray()
        stopped: str | None = None
        child_ended = False
        while not child_ended:
            for fd, _ in poller.poll(TICK_S * 1000):
                if fd == handoff:
                    child_ended = True
                elif fd == self.response_reader:
                    frames += _read_some(fd)
                elif not _read_some(fd) and fd != wake_r:
                    # Output nobody reads any more is drained and dropped (the worker does not know
                    # the task's secrets to redact it on disk); at its end, stop watching it.
                    poller.unregister(fd)
            if child_ended:
                break
            reason, grace = self._orphan_stop_reason(control, stop_requested[0], started, timeout_s, grace_s)
            if reason is not None and self._stop_task(pid, grace):
                stopped = reason
                break
        if self.response_reader >= 0:
            while _readable(self.response_reader):
                chunk = _read_some(self.response_reader)
                if not chunk:
                    break
                frames += chunk
        kill_descendants()
        status = self._status(pid, stopped, _last_frame(frames))
        if status["result_json"] is not None:
            # Also where the shell supervisor's readers look for a result (attempts/<id>/result.json).
            with contextlib.suppress(OSError):
                folder = os.path.join(self.work_dir, "attempts", attempt)
                os.makedirs(folder, mode=0o700, exist_ok=True)
                _write_text(os.path.join(folder, "result.json"), status["result_json"])
        _write_json(os.path.join(control, "status.json"), status)
        os._exit(0)

    def _orphan_stop_reason(
        self, control: str, requested: bool, started: float, timeout_s: float, grace_s: float
    ) -> tuple[str | None, float]:
        if requested or os.path.exists(os.path.join(control, "stop")):
            try:
                with open(os.path.join(control, "stop")) as file:
                    request = json.load(file)
                reason = str(request.get("reason", "cancelled"))
                grace = 0.0 if request.get("force") else float(request.get("grace_s", grace_s))
                if reason in _STOP_OUTCOMES:
                    return reason, grace
            except (OSError, ValueError, AttributeError, TypeError):
                pass
        if timeout_s > 0 and time.monotonic() > started + timeout_s:
            return "timed out", grace_s
        if self._lease_expired():
            return "fenced", grace_s
        return None, grace_s

    def _status(self, pid: int, stopped: str | None, frame: Any) -> dict[str, Any]:
        status = self.exit_status(pid)
        code, sig = 0, None
        if os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
            code = -sig
        elif os.WIFEXITED(status):
            code = os.WEXITSTATUS(status)
        result: dict[str, Any] = {
            "outcome": "failed",
            "exit_code": code,
            "signal": sig,
            "oom_killed": False,
            "error": "",
            "retryable": True,
            "result_json": None,
            "ended_boot": _boottime(),
            "python": True,
            # The shell supervisor's fields, so one reader serves both.
            "stdout_line": "",
            "stdout_line_size": 0,
            "stderr_line": "",
        }
        if stopped is not None:
            result["outcome"] = _STOP_OUTCOMES[stopped]
            result["error"] = stopped
        elif isinstance(frame, tuple) and len(frame) >= 4:
            ok, value, error, retryable = frame[:4]
            if len(frame) >= 7:
                result["peak_rss_bytes"], result["cpu_s"] = clean(frame[5], frame[6])
            if ok:
                result.update(outcome="succeeded", exit_code=0, result_json=bytes(value).decode())
            else:
                result.update(error=str(error), retryable=bool(retryable), exit_code=1, stderr_line=str(error))
        else:
            result["error"] = f"python worker died (exit code {code})"
        return result


def _safe(attempt_id: str) -> bool:
    """Whether ``attempt_id`` can name a folder (it came through the agent, but stay careful)."""
    return bool(attempt_id) and "/" not in attempt_id and "\0" not in attempt_id and attempt_id not in (".", "..")


def _readable(fd: int) -> bool:
    return bool(select.select([fd], [], [], 0)[0])


def _read_some(fd: int) -> bytes:
    try:
        return os.read(fd, 65536)
    except (BlockingIOError, InterruptedError):
        return b""
    except OSError:
        return b""


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1 << 16):
        chunks.append(chunk)
    return b"".join(chunks)


def _last_frame(buffer: bytearray) -> Any:
    """The last whole frame of ``buffer`` unpickled (None when there is none)."""
    frame: Any = None
    offset = 0
    while len(buffer) - offset >= HEADER.size:
        size = HEADER.unpack_from(buffer, offset)[0]
        end = offset + HEADER.size + size
        if end > len(buffer):
            break
        with contextlib.suppress(Exception):
            frame = pickle.loads(bytes(buffer[offset + HEADER.size : end]))
        offset = end
    return frame
