"""A fork server for supervisors: one pre-imported process that forks a supervisor per shell attempt.

Starting a supervisor as a new interpreter costs tens of milliseconds (more on a loaded host); a fork
of a process that has already imported everything costs about one. The agent starts the server once
(``python -S -E forkserver.py <fd>``, in a session of its own) with one end of a SOCK_SEQPACKET
socketpair; each request is a message holding an attempt's control folder plus, passed with
SCM_RIGHTS, the write end of a pipe that becomes the new supervisor's stdout (its ``started ...``
line). The forked supervisor calls ``setsid`` and runs exactly as ``supervisor.py <control>`` would.

The server ignores SIGCHLD (its children, the supervisors, are reaped by the kernel: the agent
watches them through pidfds) and exits when the agent's end of the socketpair closes: when the agent
dies, the server goes, and the supervisors it forked stay.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import traceback
from pathlib import Path

TYPE_CHECKING = False
if TYPE_CHECKING or __package__:
    from corral.agent import supervisor
else:  # run as a script next to its stdlib-only siblings (see supervisor.py)
    import supervisor

__all__ = ["ForkServer", "serve"]

_MAX_MESSAGE = 8192


def _child(sock: socket.socket, message: bytes, ready_fd: int) -> None:
    """In the forked child: become the supervisor of ``message``'s control folder (never returns)."""
    code = 1
    try:
        sock.close()
        os.setsid()
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        os.dup2(ready_fd, 1)
        os.close(ready_fd)
        control = Path(os.fsdecode(message))
        log = os.open(control / "supervisor.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        os.dup2(log, 2)
        os.close(log)
        code = supervisor.main([str(control)])
    except BaseException:  # everything ends here: the child must never return into the server loop
        with contextlib.suppress(Exception):
            traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def serve(fd: int) -> int:
    """The server loop on the inherited socket ``fd``; returns when the agent closed its end."""
    sock = socket.socket(fileno=fd)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    while True:
        try:
            message, fds, _, _ = socket.recv_fds(sock, _MAX_MESSAGE, 1)
        except InterruptedError:
            continue
        except OSError:
            return 1
        if not message and not fds:
            return 0
        if len(fds) != 1 or not message:
            for extra in fds:
                os.close(extra)
            continue
        if os.fork() == 0:  # pragma: no cover - the child runs the supervisor and exits
            _child(sock, message, fds[0])
        os.close(fds[0])


class ForkServer:
    """The agent's handle on its fork server (started on first use, restarted if it died)."""

    def __init__(self) -> None:
        self._sock: socket.socket | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    def _start(self) -> socket.socket:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-S", "-E", str(Path(__file__).resolve()), str(theirs.fileno())],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                pass_fds=[theirs.fileno()],
                # Its own session: a signal to the agent's process group never reaches it.
                start_new_session=True,
            )
        finally:
            theirs.close()
        self._sock = ours
        return ours

    def _reap(self) -> None:
        if self._sock is not None:
            self._sock.close()  # EOF for the server: it exits
            self._sock = None
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=1.0)
            self._proc = None

    def request(self, control: Path) -> int:
        """Ask for a supervisor of ``control``; the read end of its stdout pipe (its first line).

        Raises OSError when no server can take the request.
        """
        for _ in range(2):
            sock = self._sock
            if sock is None or (self._proc is not None and self._proc.poll() is not None):
                self._reap()
                sock = self._start()
            read_end, write_end = os.pipe2(os.O_CLOEXEC)
            try:
                socket.send_fds(sock, [os.fsencode(str(control))], [write_end])
                return read_end
            except OSError:
                os.close(read_end)
                self._reap()  # it died since: start a new one and try once more
            finally:
                os.close(write_end)
        raise OSError("the supervisor fork server does not answer")

    def close(self) -> None:
        """Stop the server (it exits once its end of the socketpair reads EOF)."""
        self._reap()


if __name__ == "__main__":
    sys.exit(serve(int(sys.argv[1])))
