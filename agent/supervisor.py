"""The per-attempt supervisor: ``python -m corral.agent.supervisor <control-dir>``.

(The agent runs it as ``python -S -E <path of this file> <control-dir>``: the same, faster to start.)

It owns one shell attempt for its whole life and outlives the agent that started it (its own
session; SIGHUP and SIGPIPE ignored). It reads ``spec.json``, holds the flock on ``lock`` until it
exits (lock free = supervisor dead), starts the task in a fresh cgroup when the host has one and
always as its child subreaper in a new session, pumps the task's pipes into capped, redacted
``stdout.log``/``stderr.log``, and ends the attempt when:

- the task's main process exits (whatever is left of its tree is killed at once);
- ``timeout_s`` passes (SIGTERM to the tree, ``kill_grace_s``, SIGKILL to the cgroup and tree);
- the agent asks (``stop`` file + SIGUSR1), with the grace it gives;
- it is fenced: a ``stop`` attempt whose lease (a CLOCK_BOOTTIME deadline in the agent's lease file,
  read every 0.5 s) is past, or whose lease file disappeared.

Nothing waits on a pipe: killing is a tree kill, and pipes still held by something are drained for
at most a second after it. Every child is reaped; ``status.json`` is written atomically at the end.
The first line on stdout tells the agent the task started (``started <task pid> <own pid>``) or
could not (``failed``: status.json says why).

Standard library only (plus corral's own stdlib-only modules): this runs on every shell task's path.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import json
import os
import select
import signal
import sys
import time
from pathlib import Path

# typing costs ~5 ms to import and is only needed by the type checker (mypy treats any name
# TYPE_CHECKING as true): this module is on the start path of every shell task.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

if TYPE_CHECKING or __package__:
    from corral.agent.cgroup import Cgroup, create
    from corral.agent.lease import LeaseFile, boottime
    from corral.agent.output import PipeCapture
    from corral.agent.usage import supervised_usage
else:
    # Run as a script (``python -S -E <agent dir>/supervisor.py``, how the agent starts it): no site,
    # no package import, the stdlib-only siblings straight from this directory. ~40 ms less per task.
    from cgroup import Cgroup, create
    from lease import LeaseFile, boottime
    from output import PipeCapture
    from usage import supervised_usage

__all__ = ["STOP_OUTCOMES", "lock_held", "main", "read_status", "write_json"]

_PR_SET_CHILD_SUBREAPER = 36
_CHUNK = 65536
_LEASE_CHECK_S = 0.5
_DRAIN_S = 1.0
_KILL_WAIT_S = 5.0
#: A stop request's reason -> the outcome recorded in status.json.
STOP_OUTCOMES = {
    "cancelled": "cancelled",
    "timed out": "timed_out",
    "killed": "killed",
    "drained": "drained",
    "fenced": "fenced",
}


def write_json(path: Path, value: Any, mode: int = 0o600) -> None:
    """Write ``value`` as JSON atomically (tmp + rename): a reader sees all of it or nothing."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    with os.fdopen(fd, "w") as file:
        json.dump(value, file)
    os.replace(tmp, path)


def read_status(control: Path) -> dict[str, Any] | None:
    """The supervisor's status.json, or None when there is none (yet)."""
    try:
        value = json.loads((control / "status.json").read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def lock_held(control: Path) -> bool:
    """Whether an attempt's supervisor is alive: it holds the flock on ``lock`` for its whole life."""
    try:
        fd = os.open(control / "lock", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)  # also releases the lock if we just took it
    return False


def _set_subreaper() -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def _proc_children() -> dict[int, list[int]]:
    """ppid -> pids, for every process on the host (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as file:
                stat = file.read()
        except OSError:
            continue
        # The command name may contain spaces and parentheses: fields follow the last ")".
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) > 1:
            children.setdefault(int(fields[1]), []).append(int(entry))
    return children


def _descendants(root: int) -> list[int]:
    tree = _proc_children()
    found: list[int] = []
    stack = list(tree.get(root, ()))
    while stack:
        pid = stack.pop()
        found.append(pid)
        stack.extend(tree.get(pid, ()))
    return found


class Supervisor:
    """One attempt's supervision: start, pump, stop, reap, report."""

    def __init__(self, control: Path, spec: dict[str, Any]) -> None:
        self.control = control
        self.spec = spec
        self.task_pid = 0
        self.exit_status: int | None = None  # the raw wait status of the task's main process
        self.stop_reason: str | None = None
        self.kill_at: float | None = None  # monotonic time of the SIGKILL that ends a stop
        self.killed = False
        self.cgroup: Cgroup | None = None
        self.cgroup_error = ""
        self.lease: LeaseFile | None = None
        self.had_lease = False
        self.flags: set[int] = set()
        self.fds: dict[int, PipeCapture] = {}
        self.captures: dict[str, PipeCapture] = {}
        self.truncated = False

    # -- signals ------------------------------------------------------------------------------------

    def _on_signal(self, signum: int, _frame: object) -> None:
        self.flags.add(signum)

    def install_signals(self) -> int:
        """Handlers that only note the signal; the loop wakes through the returned fd."""
        for sig in (signal.SIGHUP, signal.SIGPIPE):
            signal.signal(sig, signal.SIG_IGN)
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        for sig in (signal.SIGCHLD, signal.SIGUSR1, signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        return wake_r

    # -- start ----------------------------------------------------------------------------------------

    def _lease_expired(self) -> bool:
        if self.lease is None:
            return False
        deadline = self.lease.read()
        if deadline is None:
            # No lease yet is no lease; a lease that disappeared is one the agent no longer renews.
            return self.had_lease and not self.lease.path.exists()
        self.had_lease = True
        return deadline < boottime()

    def start(self) -> str:
        """Fork and exec the task; "" when it runs, else why it could not start."""
        spec = self.spec
        if spec.get("on_disconnect", "stop") == "stop" and spec.get("lease_path"):
            self.lease = LeaseFile(Path(spec["lease_path"]))
            if self._lease_expired():
                # Two-phase take-back: an assignment whose lease ran out may already run elsewhere.
                return "fenced: the lease expired before the task started"
        parent = spec.get("cgroup_parent")
        if parent:
            self.cgroup, self.cgroup_error = create(parent, spec["attempt_id"])
        if self.cgroup is not None:
            try:
                if int(spec.get("memory_mb") or 0) > 0:
                    self.cgroup.memory_limit(int(spec["memory_mb"]))
                if int(spec.get("pids_max") or 0) > 0:
                    self.cgroup.pids_limit(int(spec["pids_max"]))
            except OSError as exc:
                self.cgroup_error = f"cannot set the cgroup's limits: {exc}"
            write_json(self.control / "cgroup.json", self.cgroup.describe())
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        report_r, report_w = os.pipe2(os.O_CLOEXEC)
        procs_files = [str(p) for p in self.cgroup.procs_files()] if self.cgroup is not None else []
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child execs or exits
            self._exec_child(out_w, err_w, report_w, procs_files)
        for fd in (out_w, err_w, report_w):
            os.close(fd)
        self.task_pid = pid
        with os.fdopen(report_r, "rb") as report:
            failure = report.read()
        if failure:
            os.waitpid(pid, 0)
            self.task_pid = 0
            os.close(out_r)
            os.close(err_r)
            return failure.decode(errors="replace")
        cap = int(spec.get("output_cap", 1 << 20))
        secrets = spec.get("secrets") or {}
        line_keep = int(spec.get("line_keep", 8192))
        for fd, name, keep in ((out_r, "stdout", line_keep), (err_r, "stderr", 8192)):
            os.set_blocking(fd, False)
            capture = PipeCapture(cap, self.control / f"{name}.log", secrets=secrets, line_keep=keep, stream=False)
            self.fds[fd] = self.captures[name] = capture
        return ""

    def _exec_child(self, out_w: int, err_w: int, report_w: int, procs_files: list[str]) -> None:
        """In the forked child: new session, cgroup, identity, cwd, fds, exec (never returns)."""
        spec = self.spec
        stage = "cannot start"
        try:
            os.setsid()
            for path in procs_files:
                with open(path, "w") as file:
                    file.write("0")
            signal.set_wakeup_fd(-1)
            for sig in (signal.SIGHUP, signal.SIGPIPE, signal.SIGCHLD, signal.SIGUSR1, signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, signal.SIG_DFL)
            devnull = os.open(os.devnull, os.O_RDONLY)
            os.dup2(devnull, 0)
            os.dup2(out_w, 1)
            os.dup2(err_w, 2)
            stage = "cannot enter the working directory"
            os.chdir(spec["cwd"])
            if spec.get("uid") is not None:
                stage = "cannot switch to the run-as user"
                os.setgroups(list(spec.get("groups") or []))
                os.setgid(int(spec["gid"]))
                os.setuid(int(spec["uid"]))
            stage = "exec"
            argv = list(spec["argv"])
            os.execvpe(argv[0], argv, dict(spec["env"]))
        except BaseException as exc:  # everything goes back to the parent as text
            if stage == "exec" and isinstance(exc, FileNotFoundError):
                message = f"command not found: {spec['argv'][0]}"
            elif stage == "exec" and isinstance(exc, PermissionError):
                message = f"permission denied: {spec['argv'][0]}"
            elif stage == "exec":
                message = f"cannot start {spec['argv'][0]}: {exc}"
            else:
                message = f"{stage}: {exc}"
            with contextlib.suppress(OSError):
                os.write(report_w, message.encode())
        finally:
            os._exit(127)

    # -- stopping ---------------------------------------------------------------------------------------

    def _signal_tree(self, sig: int) -> None:
        """``sig`` to the task's session/group, every cgroup member, and every descendant we reap."""
        if self.task_pid:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.task_pid, sig)
        members = self.cgroup.pids() if self.cgroup is not None else []
        for pid in {*members, *_descendants(os.getpid())}:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)

    def kill_tree(self) -> None:
        """SIGKILL the whole tree: the cgroup (freeze, kill, thaw), then every descendant left, until none."""
        if self.cgroup is not None:
            self.cgroup.kill()
        # Bounded: a process stuck in the kernel (D state) dies when it returns from it, not before.
        deadline = time.monotonic() + _KILL_WAIT_S
        while time.monotonic() < deadline:
            self.reap()
            if not self._has_children():
                return
            pids = _descendants(os.getpid())
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.002)

    @staticmethod
    def _has_children() -> bool:
        # As the subreaper, no children at all means no descendants at all (orphans come back to us).
        # WNOWAIT: look without reaping (the task's exit status must not be lost here).
        try:
            os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return False
        return True

    def begin_stop(self, reason: str, grace_s: float, force: bool) -> None:
        """SIGTERM the tree now (SIGKILL with ``force`` or no grace); SIGKILL it after ``grace_s``."""
        if self.exit_status is not None:
            return  # the task ended by itself first: that is its outcome
        now = time.monotonic()
        if self.stop_reason is None:
            self.stop_reason = reason
            if force or grace_s <= 0:
                self.kill_at = now
            else:
                self._signal_tree(signal.SIGTERM)
                self.kill_at = now + grace_s
        elif force:
            self.kill_at = now
        elif self.kill_at is not None:
            self.kill_at = min(self.kill_at, now + max(grace_s, 0.0))

    def check_stop_file(self) -> None:
        """Apply the agent's stop request, if it wrote one."""
        try:
            request = json.loads((self.control / "stop").read_text())
        except (OSError, ValueError):
            return
        if not isinstance(request, dict):
            return
        reason = str(request.get("reason", "cancelled"))
        if reason not in STOP_OUTCOMES:
            reason = "cancelled"
        try:
            grace = float(request.get("grace_s", 0.0))
        except (TypeError, ValueError):
            grace = 0.0
        # Applied again on every look: a second request may only bring the SIGKILL closer.
        self.begin_stop(reason, grace, bool(request.get("force", False)))

    # -- the loop ---------------------------------------------------------------------------------------

    def reap(self) -> None:
        """Reap every exited child; note the task's own exit status."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid == self.task_pid and self.exit_status is None:
                self.exit_status = status

    def _read(self, fd: int) -> None:
        capture = self.fds[fd]
        try:
            data = os.read(fd, _CHUNK)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            capture.feed(data)
            if capture.truncated and not self.truncated:
                self.truncated = True
                with contextlib.suppress(OSError):
                    (self.control / "truncated").touch()
            return
        capture.close()
        os.close(fd)
        del self.fds[fd]

    def run(self, wake_r: int) -> None:
        """Pump, watch and stop until the task is over, its tree dead and its pipes drained."""
        spec = self.spec
        started = time.monotonic()
        timeout = float(spec.get("timeout_s") or 0.0)
        grace = float(spec.get("kill_grace_s", 10.0))
        timeout_at = started + timeout if timeout > 0 else None
        next_lease = started + _LEASE_CHECK_S
        drain_until: float | None = None
        poller = select.poll()
        poller.register(wake_r, select.POLLIN)
        for fd in self.fds:
            poller.register(fd, select.POLLIN)
        self.check_stop_file()
        while True:
            now = time.monotonic()
            wakes = [next_lease]
            if timeout_at is not None and self.stop_reason is None:
                wakes.append(timeout_at)
            if self.kill_at is not None and not self.killed:
                wakes.append(self.kill_at)
            if drain_until is not None:
                wakes.append(drain_until)
            wait_ms = max(0, int((min(wakes) - now) * 1000) + 1)
            for fd, _ in poller.poll(wait_ms):
                if fd == wake_r:
                    with contextlib.suppress(BlockingIOError):
                        os.read(wake_r, 512)
                elif fd in self.fds:
                    self._read(fd)
                    if fd not in self.fds:
                        poller.unregister(fd)
            flags, self.flags = self.flags, set()
            if signal.SIGCHLD in flags:
                self.reap()
            if signal.SIGUSR1 in flags:
                self.check_stop_file()
            if flags & {signal.SIGTERM, signal.SIGINT}:
                self.begin_stop("killed", grace, force=False)
            now = time.monotonic()
            if self.exit_status is None:
                if timeout_at is not None and now >= timeout_at and self.stop_reason is None:
                    self.begin_stop("timed out", grace, force=False)
                if now >= next_lease:
                    next_lease = now + _LEASE_CHECK_S
                    self.check_stop_file()
                    if self.stop_reason is None and self._lease_expired():
                        self.begin_stop("fenced", grace, force=False)
                if self.kill_at is not None and now >= self.kill_at and not self.killed:
                    self.killed = True
                    self.kill_tree()
                    self.reap()
                continue
            if drain_until is None:
                # The task is over: nothing it started may outlive it, and no pipe holder is waited for.
                self.kill_tree()
                drain_until = now + _DRAIN_S
            if not self.fds or now >= drain_until:
                break
        for fd in list(self.fds):
            # Whatever is still buffered in the pipe is read; then the pipe is closed.
            with contextlib.suppress(OSError):
                while data := os.read(fd, _CHUNK):
                    self.fds[fd].feed(data)
            self.fds[fd].close()
            os.close(fd)
        self.fds.clear()
        self.kill_tree()
        self.reap()

    # -- the report -----------------------------------------------------------------------------------

    def status(self, start_error: str = "") -> dict[str, Any]:
        """status.json's content."""
        stdout, stderr = self.captures.get("stdout"), self.captures.get("stderr")
        line, size = stdout.last_line_bytes() if stdout else (b"", 0)
        oom = self.cgroup.oom_killed() if self.cgroup is not None else False
        code, sig = 0, None
        if self.exit_status is not None:
            if os.WIFSIGNALED(self.exit_status):
                sig = os.WTERMSIG(self.exit_status)
                code = -sig
            else:
                code = os.waitstatus_to_exitcode(self.exit_status)
        if start_error:
            outcome = "fenced" if start_error.startswith("fenced") else "failed"
        elif self.stop_reason is not None:
            outcome = STOP_OUTCOMES[self.stop_reason]
        else:
            outcome = "succeeded" if code == 0 else "failed"
        return {
            "outcome": outcome,
            "exit_code": code,
            "signal": sig,
            "oom_killed": oom,
            "error": start_error,
            "start_failed": bool(start_error),
            "result_json": None,
            "ended_boot": boottime(),
            "stdout_line": line.decode("latin-1"),
            "stdout_line_size": size,
            "stderr_line": stderr.last_line() if stderr else "",
            "truncated": self.truncated,
            "cgroup_error": self.cgroup_error,
            # What supervising cost (user + system CPU of this process; a forked one starts at 0).
            "supervisor_cpu_s": round(os.times().user + os.times().system, 4),
            # What the task used (its tree is reaped by now): peak_rss_bytes and cpu_s.
            **supervised_usage(self.cgroup),
        }


def _main(control: Path) -> int:
    spec = json.loads((control / "spec.json").read_text())
    lock = os.open(control / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print("busy", flush=True)
        return 3
    supervisor = Supervisor(control, spec)
    wake_r = supervisor.install_signals()
    _set_subreaper()
    (control / "supervisor.pid").write_text(f"{os.getpid()}\n")
    error = supervisor.start()
    if error:
        write_json(control / "status.json", supervisor.status(error))
        if supervisor.cgroup is not None:
            supervisor.cgroup.remove()
        print("failed", flush=True)
        return 0
    (control / "task.pid").write_text(f"{supervisor.task_pid}\n")
    with contextlib.suppress(OSError):
        print(f"started {supervisor.task_pid} {os.getpid()}", flush=True)
    # From here on the agent may be gone: nothing more is written to its pipe.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)
    supervisor.run(wake_r)
    write_json(control / "status.json", supervisor.status())
    if supervisor.cgroup is not None:
        supervisor.cgroup.remove()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point: supervise the attempt described in ``<control-dir>/spec.json``."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m corral.agent.supervisor CONTROL_DIR", file=sys.stderr)
        return 2
    try:
        return _main(Path(args[0]))
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            print(f"supervisor: {exc}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Nothing to tear down that the kernel does not (files are closed, children reaped): skip the
    # interpreter's shutdown, which is most of what is left of this process's time.
    os._exit(code)
