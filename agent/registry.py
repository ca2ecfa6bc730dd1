"""The runners of this agent, keyed by agent type: ``shell``, ``python`` and operator-declared types.

A runner turns an assignment into a started :class:`~corral.agent.attempt.Run` (or the result of
an attempt that could not start). ``shell`` runs argv or a shell string under its supervisor,
``python`` hands the call to a warm worker, and every type the operator declares in the agent's
config (``[agent_types.rscript] command = ["Rscript", "-e"]`` or ``--agent-type rscript='Rscript
-e'``) runs that command with the payload's ``args`` appended, exactly like a shell task (same
supervisor, folder, environment and cwd rules). An assignment of a type this agent does not offer
fails without retry.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from corral.agent.attempt import AttemptResult, Run
from corral.agent.policy import PayloadError, PolicyError
from corral.agent.pypool import WorkerPool
from corral.agent.pyrun import PythonRun
from corral.agent.runner import ShellContext, Supervision, start_shell
from corral.v1 import types_pb2

__all__ = ["BUILTIN_TYPES", "DECLARED_PAYLOAD_KEYS", "Launch", "Runner", "RunnerRegistry", "declared_payload"]

BUILTIN_TYPES = ("shell", "python")
#: What the payload of an operator-declared type may hold.
DECLARED_PAYLOAD_KEYS = frozenset({"args", "env", "cwd"})


@dataclass(frozen=True, slots=True)
class Launch:
    """What a runner takes from the agent at start time (the controller's Welcome sets the grace)."""

    kill_grace_s: float
    lease_path: Path


Runner = Callable[[types_pb2.TaskAssignment, Launch], Awaitable[Run | AttemptResult]]


@dataclass(frozen=True, slots=True)
class _Entry:
    runner: Runner
    folders: bool  # its attempts have folders on disk (removed when they are forgotten)
    self_timed: bool  # it ends attempts at their timeout itself (the agent keeps only a backstop)


def declared_payload(agent_type: str, command: Sequence[str], raw: bytes) -> bytes:
    """The shell payload of an operator-declared type: ``command`` + the payload's ``args``.

    Raises :class:`PayloadError` (the attempt fails without retry) when the payload is not a JSON
    object of ``args`` (a list of strings), ``env`` and ``cwd``.
    """
    try:
        payload = json.loads(raw or b"{}")
    except ValueError as exc:
        raise PayloadError(f"payload is not valid JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise PayloadError("payload must be a JSON object")
    unknown = sorted(set(payload) - DECLARED_PAYLOAD_KEYS)
    if unknown:
        raise PayloadError(
            f"payload of agent type {agent_type!r} takes only args, env and cwd; got {', '.join(unknown)}"
        )
    args = payload.get("args", [])
    if not (isinstance(args, list) and all(isinstance(a, str) for a in args)):
        raise PayloadError("payload.args must be a list of strings")
    shell_payload: dict[str, Any] = {"command": [*command, *args]}
    for key in ("env", "cwd"):
        if key in payload:
            shell_payload[key] = payload[key]
    return json.dumps(shell_payload).encode()


class RunnerRegistry:
    """Which runner starts which agent type, and what the agent offers."""

    def __init__(
        self,
        *,
        offered: Iterable[str],
        shell: ShellContext,
        pool: WorkerPool | None = None,
        declared: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        self.offered = frozenset(offered)
        self.shell = shell
        self._pool = pool
        self._runners: dict[str, _Entry] = {}
        # The supervisor ends shell attempts at their timeout (and keeps doing so while the agent is
        # away): the agent's timer is only a late backstop for them.
        self.register("shell", self._start_shell, folders=True, self_timed=True)
        # Warm workers are told nothing of timeouts: the agent's timer is what stops them.
        self.register("python", self._start_python, folders=False, self_timed=False)
        # An operator-declared command is the operator's choice, so --no-shell does not refuse it
        # (the payload can only add arguments to it).
        self._declared_ctx = dataclasses.replace(shell, policy=dataclasses.replace(shell.policy, allow_shell=True))
        for name, command in (declared or {}).items():
            self.register(name, self._declared_runner(name, tuple(command)), folders=True, self_timed=True)

    def register(self, agent_type: str, runner: Runner, *, folders: bool, self_timed: bool) -> None:
        """Add (or replace) the runner of ``agent_type``."""
        self._runners[agent_type] = _Entry(runner, folders, self_timed)

    def workflows_ended(self, workflow_ids: Collection[str]) -> None:
        """Tell the python pool (if any) that these workflows ended."""
        if self._pool is not None and workflow_ids:
            self._pool.workflows_ended(workflow_ids)

    def has_folders(self, agent_type: str) -> bool:
        """Whether attempts of this type leave folders to remove (python ones run in their worker's)."""
        entry = self._runners.get(agent_type)
        return entry.folders if entry is not None else False

    def self_timed(self, agent_type: str) -> bool:
        """Whether the runner of this type ends attempts at their timeout by itself."""
        entry = self._runners.get(agent_type)
        return entry.self_timed if entry is not None else False

    async def start(self, assignment: types_pb2.TaskAssignment, launch: Launch) -> Run | AttemptResult:
        """Start an attempt with the runner of its type; a result when it cannot start."""
        agent_type = assignment.agent_type
        if agent_type == "shell" and not self.shell.policy.allow_shell:
            # Before the offered-types check: the operator's flag is the reason, say so.
            return AttemptResult.failed(
                str(PolicyError("shell tasks are disabled on this agent (--no-shell)")), retryable=False
            )
        if agent_type not in self.offered:
            return AttemptResult.failed(f"agent type {agent_type!r} is not offered here", retryable=False)
        entry = self._runners.get(agent_type)
        if entry is None:
            return AttemptResult.failed(f"agent type {agent_type!r} has no runner", retryable=False)
        return await entry.runner(assignment, launch)

    def start_now(self, assignment: types_pb2.TaskAssignment, launch: Launch) -> Run | AttemptResult | None:
        """A python attempt handed to an idle worker at once (:meth:`WorkerPool.start_now`); None when
        that cannot be done without waiting, or for any other type: then :meth:`start` it."""
        pool = self._warm_pool(assignment)
        if pool is None:
            return None
        pool.kill_grace_s = launch.kill_grace_s
        return pool.start_now(assignment, self.shell.has_gpus)

    @property
    def stage_type(self) -> str:
        """The agent type whose attempts may be staged behind a running one ("python"), or ""."""
        pool = self._pool
        entry = self._runners.get("python")
        usable = pool is not None and pool.size and "python" in self.offered
        return "python" if usable and entry is not None and entry.runner == self._start_python else ""

    def stage(self, assignment: types_pb2.TaskAssignment, leader: Run, launch: Launch) -> Run | None:
        """A python attempt staged in the worker running ``leader`` (:meth:`WorkerPool.stage`), to
        start there once the leader has answered; None when it cannot be staged there."""
        pool = self._warm_pool(assignment)
        if pool is None or not isinstance(leader, PythonRun):
            return None
        pool.kill_grace_s = launch.kill_grace_s
        return pool.stage(assignment, leader, self.shell.has_gpus)

    def _warm_pool(self, assignment: types_pb2.TaskAssignment) -> WorkerPool | None:
        """The warm python pool, when this attempt is a python one that it runs."""
        if assignment.agent_type != "python" or self.stage_type != "python":
            return None
        return self._pool

    # -- the runners ---------------------------------------------------------------------------------

    async def _start_shell(self, assignment: types_pb2.TaskAssignment, launch: Launch) -> Run | AttemptResult:
        return await start_shell(assignment, self.shell, _supervision(launch))

    async def _start_python(self, assignment: types_pb2.TaskAssignment, launch: Launch) -> Run | AttemptResult:
        pool = self._pool
        if pool is None or pool.size == 0:
            return AttemptResult.failed("this agent runs no python workers", retryable=False)
        pool.kill_grace_s = launch.kill_grace_s  # the controller's, from its Welcome
        return await pool.start_task(assignment, self.shell.has_gpus)

    def _declared_runner(self, agent_type: str, command: tuple[str, ...]) -> Runner:
        async def run(assignment: types_pb2.TaskAssignment, launch: Launch) -> Run | AttemptResult:
            try:
                payload = declared_payload(agent_type, command, assignment.payload_json)
            except PayloadError as exc:
                return AttemptResult.failed(str(exc), retryable=False)
            shell_assignment = types_pb2.TaskAssignment()
            shell_assignment.CopyFrom(assignment)
            shell_assignment.payload_json = payload
            return await start_shell(shell_assignment, self._declared_ctx, _supervision(launch))

        return run


def _supervision(launch: Launch) -> Supervision:
    """The supervisor's kill grace and lease file, as the controller's Welcome set them."""
    return Supervision(kill_grace_s=launch.kill_grace_s, lease_path=launch.lease_path)
