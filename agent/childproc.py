"""A child process started with :class:`subprocess.Popen` and awaited on any asyncio event loop.

The agent runs on uvloop when it is installed (:mod:`corral.eventloop`), and uvloop's
``subprocess_exec`` refuses ``user``, ``group`` and ``extra_groups``, which ``--run-as`` needs to
switch identity between fork and exec (:mod:`corral.agent.runas`). ``Popen`` does that switch in C
(``_posixsubprocess``, safe in a process with threads), exactly as asyncio's own loop does
underneath; the exit is then awaited through a pidfd, which turns readable when the process ends,
so no loop-specific child watcher is involved.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import warnings
from collections.abc import Sequence
from typing import Any

__all__ = ["ChildProcess", "spawn"]


class ChildProcess:
    """The parts of ``asyncio.subprocess.Process`` the agent uses: ``pid``, ``returncode``, ``wait``."""

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self._popen = popen
        self.pid = popen.pid
        # Opened right after the fork, while the child cannot have been reaped yet: the pid is ours.
        self._pidfd: int | None = os.pidfd_open(popen.pid)
        self._exited: asyncio.Future[int] | None = None

    @property
    def returncode(self) -> int | None:
        """The exit status once reaped (negative: the signal that ended it), else None."""
        return self._popen.returncode

    async def wait(self) -> int:
        """Wait for the process to end and reap it; every caller gets the same exit status."""
        if self._popen.returncode is not None:
            return self._popen.returncode
        if self._exited is None:
            loop = asyncio.get_running_loop()
            self._exited = loop.create_future()
            pidfd = self._pidfd
            assert pidfd is not None  # closed only once returncode is set
            loop.add_reader(pidfd, self._reap, loop)
        # shield: one waiter cancelled (a wait_for timing out) must not cancel the others' future.
        return await asyncio.shield(self._exited)

    def _reap(self, loop: asyncio.AbstractEventLoop) -> None:
        pidfd = self._pidfd
        if pidfd is None:
            return
        loop.remove_reader(pidfd)
        self._pidfd = None
        os.close(pidfd)
        code = self._popen.wait()  # it has exited: this only collects the status
        if self._exited is not None and not self._exited.done():
            self._exited.set_result(code)

    def __del__(self) -> None:
        # A process never waited for (a detached pool leaves its workers running on purpose, or the
        # agent is stopping): do not leak the descriptor.
        if self._pidfd is not None:
            with contextlib.suppress(OSError):
                os.close(self._pidfd)
            self._pidfd = None
        popen = self.__dict__.pop("_popen", None)
        if popen is not None and popen.returncode is None:
            # Popen keeps a running child in its list to reap later; its ResourceWarning is about a
            # forgotten child, which this is not.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ResourceWarning)
                del popen


def spawn(argv: Sequence[str], **popen_kwargs: Any) -> ChildProcess:
    """Start ``argv`` (``Popen`` keyword arguments as given) and return it as a :class:`ChildProcess`."""
    return ChildProcess(subprocess.Popen(list(argv), **popen_kwargs))
