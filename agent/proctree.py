"""Stopping a process and everything it started: SIGTERM to its group, a grace, SIGKILL to the tree.

Descendants are collected *before* any signal is sent: once a parent dies its children are
re-parented and can no longer be found from the tree, so a late lookup would let them survive.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal

import psutil

__all__ = ["collect_tree", "kill_tree", "terminate_tree"]

_POLL_S = 0.05


def collect_tree(pid: int) -> list[psutil.Process]:
    """The process ``pid`` and all its descendants (recursively); empty when it is gone."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def _alive(procs: list[psutil.Process]) -> list[psutil.Process]:
    alive: list[psutil.Process] = []
    for proc in procs:
        try:
            # is_running() also guards against pid reuse; zombies are dead but not yet reaped.
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                alive.append(proc)
        except psutil.Error:
            continue
    return alive


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def kill_tree(pid: int, known: list[psutil.Process] | None = None) -> None:
    """SIGKILL ``pid``'s process group, its current descendants and any ``known`` process still alive."""
    procs = {p.pid: p for p in (known or [])}
    for proc in collect_tree(pid):
        procs.setdefault(proc.pid, proc)
    # Collect the survivors' descendants too (they may have forked since the last look).
    for proc in list(procs.values()):
        with contextlib.suppress(psutil.Error):
            for child in proc.children(recursive=True):
                procs.setdefault(child.pid, child)
    _signal_group(pid, signal.SIGKILL)
    for proc in _alive(list(procs.values())):
        with contextlib.suppress(psutil.Error):
            proc.kill()


async def terminate_tree(pid: int, grace_s: float, *, force: bool = False) -> None:
    """Stop the process group led by ``pid`` and its whole tree; return once nothing is left.

    Without ``force``: SIGTERM to the group, wait up to ``grace_s`` for the tree to exit, then
    SIGKILL whatever remains. With ``force``: SIGKILL everything at once.
    """
    known = collect_tree(pid)
    if not force and grace_s > 0:
        _signal_group(pid, signal.SIGTERM)
        # Processes that left the group (setsid) are in the tree; they get SIGTERM too.
        for proc in _alive(known):
            with contextlib.suppress(psutil.Error):
                proc.terminate()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_s
        while loop.time() < deadline:
            for proc in collect_tree(pid):
                if all(proc.pid != k.pid for k in known):
                    known.append(proc)
            if not _alive(known):
                break
            await asyncio.sleep(_POLL_S)
    kill_tree(pid, known)
    # SIGKILL cannot be ignored, but delivery is asynchronous: wait briefly until all are gone.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5.0
    while _alive(known) and loop.time() < deadline:
        kill_tree(pid, known)
        await asyncio.sleep(_POLL_S / 5)
