"""``--run-as USER``: tasks run as an unprivileged user while the agent stays root.

The switch happens in the child between fork and exec (``subprocess``'s ``user``, ``group`` and
``extra_groups``: setgroups to the user's groups as ``initgroups`` would, setgid, then setuid), so
no task code ever runs as root. Attempt and worker folders are made and then handed to the user.
"""

from __future__ import annotations

import os
import pwd
import stat
from dataclasses import dataclass
from pathlib import Path

__all__ = ["RunAs", "RunAsError", "make_task_dir", "resolve_run_as"]


class RunAsError(ValueError):
    """--run-as cannot be honoured (not root, unknown user, unreachable work dir)."""


@dataclass(frozen=True)
class RunAs:
    """The user tasks run as."""

    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]


def resolve_run_as(user: str, work_dir: Path) -> RunAs:
    """Look ``user`` up (a name or a numeric uid) and check the agent can switch to it."""
    if os.geteuid() != 0:
        raise RunAsError(f"--run-as needs the agent to run as root (it runs as uid {os.geteuid()})")
    try:
        entry = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
    except (KeyError, OverflowError):
        raise RunAsError(f"--run-as: no such user {user!r}") from None
    if entry.pw_uid == 0:
        raise RunAsError("--run-as: the user must not be root")
    groups = tuple(os.getgrouplist(entry.pw_name, entry.pw_gid))
    run_as = RunAs(entry.pw_name, entry.pw_uid, entry.pw_gid, groups)
    _check_reachable(work_dir, run_as)
    return run_as


def _check_reachable(work_dir: Path, run_as: RunAs) -> None:
    # Every existing parent of the work dir must be searchable by the user, or no task can start in it.
    for directory in reversed(work_dir.resolve().parents):
        try:
            info = directory.stat()
        except OSError:
            return
        if info.st_uid == run_as.uid:
            ok = bool(info.st_mode & stat.S_IXUSR)
        elif info.st_gid in run_as.groups:
            ok = bool(info.st_mode & stat.S_IXGRP)
        else:
            ok = bool(info.st_mode & stat.S_IXOTH)
        if not ok:
            raise RunAsError(f"--run-as {run_as.name}: {directory} is not searchable by that user (chmod o+x it)")


def make_task_dir(path: Path, run_as: RunAs | None) -> None:
    """Create a task's own folder (0700), owned by the run-as user when there is one."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if run_as is not None:
        os.chown(path, run_as.uid, run_as.gid)
