"""The pool of warm python workers, seen from the agent: spawn, dispatch, replace, retire.

Dispatch is a pickle written to the worker's request pipe and a future resolved when the
response frame arrives on its response pipe: no thread, no file created per task. The worker's
stdout and stderr are pipes the agent reads (so output is bounded in memory and never on disk),
drained up to the response before the task is reported.

Tasks of one workflow never share a process with another workflow's: the worker forks a fresh
child per workflow from its clean template process and empties its folder between them (see
:mod:`corral.agent.pyworker`), so no module, environment variable or file planted by one workflow
is visible to the next. The pool prefers a worker whose child already serves the task's workflow
(no fork at all). A worker whose task timed out or was cancelled is killed with its whole process
tree and replaced.

Each worker supervises its tasks itself (:mod:`corral.agent.pywatch`: subreaper, self-fencing on the
lease file ``<work_dir>/lease``, finishing a task on its own when the agent dies) and lives in a
cgroup of its own when the host has one (:mod:`corral.agent.pycgroup`). The pool kills a worker by
stopping its template first (SIGSTOP: it stays the process everything its tasks orphaned comes back
to), SIGTERM to the rest, the grace, then freeze + SIGKILL of the cgroup (or of the template's whole
tree); it never waits on a pipe for that.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import sys
from collections import deque
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import structlog

from corral.agent.attempt import AttemptResult
from corral.agent.checkpoints import write_checkpoint_in
from corral.agent.childproc import spawn
from corral.agent.output import Redactor
from corral.agent.policy import ExecPolicy, PayloadError
from corral.agent.pycgroup import WorkerCgroup, cgroup_root, new_pool_name, remove_pool, remove_stale
from corral.agent.pyconn import PyWorker, ResponseReader
from corral.agent.pyreap import lock_name, remove_stale_workers, settle_orphans, stop_worker
from corral.agent.pyrun import PythonRun
from corral.agent.runas import RunAs, RunAsError, make_task_dir
from corral.agent.taskenv import base_env, identity_env, payload_env
from corral.v1 import types_pb2

__all__ = ["PythonRun", "WorkerPool"]

log = structlog.get_logger("corral.agent.pypool")

_CHECKED_CACHE = 4096
_CACHED_PAYLOAD_BYTES = 1024


WORKER_START_TIMEOUT_S = 60.0


class WorkerPool:
    """``size`` warm workers; :meth:`start_task` hands a python attempt to a free one of its workflow."""

    def __init__(
        self,
        size: int,
        work_dir: Path,
        output_cap: int,
        python_paths: Sequence[Path] = (),
        *,
        policy: ExecPolicy | None = None,
        passed_env: Mapping[str, str] | None = None,
        run_as: RunAs | None = None,
        kill_grace_s: float = 10.0,
    ) -> None:
        self.size = size
        #: SIGTERM to SIGKILL when the worker stops a task itself (fenced, or its agent gone).
        self.kill_grace_s = kill_grace_s
        self._work_dir = work_dir.resolve()
        self._folder = work_dir / "pyworkers"
        self._cap = output_cap
        self._paths = [str(Path(p).resolve()) for p in python_paths]
        self._policy = policy if policy is not None else ExecPolicy()
        self._passed_env = dict(passed_env or {})
        self._run_as = run_as
        self._idle: deque[PyWorker] = deque()
        self._waiters: deque[tuple[str, asyncio.Future[PyWorker]]] = deque()
        self._all: set[PyWorker] = set()
        self._background: set[asyncio.Task[None]] = set()
        # Small env-free payloads already checked: payload bytes -> refusal ("" when allowed).
        self._checked: dict[bytes, str] = {}
        self._functions: dict[str, str] = {}  # payload.function -> refusal ("" when allowed)
        self._closed = False
        self._next_index = 0
        self._cgroup_root = cgroup_root()
        self._pool_name = new_pool_name()

    @property
    def pids(self) -> list[int]:
        """Process ids of the current workers."""
        return sorted(w.pid for w in self._all)

    async def start(self) -> None:
        """Spawn all workers (the folders of workers still finishing a task of a previous agent stay)."""
        await settle_orphans(self._work_dir)
        self._next_index = await asyncio.to_thread(self._remove_stale)
        self._folder.mkdir(parents=True, exist_ok=True)
        if self._run_as is not None:
            self._folder.chmod(0o711)
        workers = await asyncio.gather(*(self._spawn() for _ in range(self.size)))
        for worker in workers:
            self._release(worker)

    def _remove_stale(self) -> int:
        """Remove what gone workers left (folders, cgroups); the first index free to use."""
        if self._cgroup_root is not None:
            remove_stale(self._cgroup_root)
        return remove_stale_workers(self._folder)

    def _lock(self, index: int) -> int:
        """The locked lock file handed to worker ``index`` (held while any of it lives)."""
        path = self._folder / lock_name(index, os.getpid())
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        return fd

    async def _spawn(self) -> PyWorker:
        index = self._next_index
        self._next_index += 1
        loop = asyncio.get_running_loop()
        home = self._folder / f"worker-{index}"
        shutil.rmtree(home, ignore_errors=True)
        make_task_dir(home, self._run_as)
        make_task_dir(home / "tmp", self._run_as)
        run_as = self._run_as
        cgroup = None
        if self._cgroup_root is not None:
            uid = run_as.uid if run_as is not None else None
            cgroup = WorkerCgroup.create(self._cgroup_root, self._pool_name, index, uid)
        lock = self._lock(index)
        req_r, req_w = os.pipe()
        resp_r, resp_w = os.pipe()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        # The stage token (pyconn): both ends stay here, the worker reads too. Non-blocking for both
        # (one open file description): whoever reads the byte first has it.
        token_r, token_w = os.pipe()
        os.set_blocking(token_r, False)
        supervision = {
            "work_dir": str(self._work_dir),
            "lease": str(self._work_dir / "lease"),
            "cgroup": cgroup.describe() if cgroup is not None else None,
            # The worker holds these read ends too: the agent's death breaks no pipe of a running task.
            "response_reader": resp_r,
            "output_readers": [out_r, err_r],
            "lock": lock,
            "stage_token": token_r,
        }
        identity: dict[str, Any] = {}
        if run_as is not None:
            identity = {"user": run_as.uid, "group": run_as.gid, "extra_groups": list(run_as.groups)}
        try:
            proc = spawn(
                [
                    sys.executable,
                    # Isolated: no PYTHON* variables, no user site, no cwd or script dir on sys.path.
                    "-I",
                    "-m",
                    "corral.agent.pyworker",
                    str(req_r),
                    str(resp_w),
                    json.dumps(supervision),
                    *self._policy.modules.to_args(),
                    *self._paths,
                ],
                stdin=subprocess.DEVNULL,
                stdout=out_w,
                stderr=err_w,
                pass_fds=(req_r, resp_w, resp_r, out_r, err_r, lock, token_r),
                start_new_session=True,
                cwd=home,
                env=base_env(home, self._passed_env),
                **identity,
            )
        except BaseException as exc:
            for fd in (req_w, resp_r, out_r, err_r, lock, token_r, token_w):
                os.close(fd)
            if cgroup is not None:
                cgroup.remove()
            if run_as is not None and isinstance(exc, PermissionError):
                raise RunAsError(f"--run-as {run_as.name}: cannot start a python worker as that user: {exc}") from exc
            raise
        finally:
            for fd in (req_r, resp_w, out_w, err_w):
                os.close(fd)
        os.close(lock)
        worker = PyWorker(index, proc, home, out_r, err_r, cgroup, token=(token_r, token_w))
        worker.on_free = self._release
        writer, _ = await loop.connect_write_pipe(asyncio.Protocol, os.fdopen(req_w, "wb", buffering=0))
        reader, _ = await loop.connect_read_pipe(lambda: ResponseReader(worker), os.fdopen(resp_r, "rb", buffering=0))
        worker._writer = writer
        worker._reader = reader
        self._all.add(worker)
        # Hand out only warm workers: a task must not pay for an interpreter starting up.
        await asyncio.wait_for(asyncio.shield(worker.ready), WORKER_START_TIMEOUT_S)
        return worker

    def _release(self, worker: PyWorker) -> None:
        if self._closed or not worker.alive or worker.busy or worker.owners:
            return  # a staged task runs there, or a withdrawn one is still to be skipped
        waiters = self._waiters
        while waiters:
            _, waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(worker)
                return
        self._idle.append(worker)

    async def _acquire(self, workflow: str) -> PyWorker:
        worker = self._idle_now(workflow)
        if worker is not None:
            return worker
        waiter: asyncio.Future[PyWorker] = asyncio.get_running_loop().create_future()
        self._waiters.append((workflow, waiter))
        return await waiter

    def _idle_now(self, workflow: str) -> PyWorker | None:
        """The idle worker the next task of ``workflow`` should go to (taken out), or None."""
        idle = self._idle
        for worker in [w for w in idle if not w.alive]:
            idle.remove(worker)
            self._discard(worker)
        # A worker already serving this workflow runs the task without a fork; else a fresh one
        # (its workflow ended, see workflows_ended), which needs no switch either; else any idle
        # one (the longest idle: its workflow is the least likely to come back).
        fresh = None
        for worker in idle:
            if worker.workflow == workflow:
                idle.remove(worker)
                return worker
            if worker.workflow is None and fresh is None:
                fresh = worker
        if fresh is not None:
            idle.remove(fresh)
            return fresh
        if idle:
            return idle.popleft()
        return None

    def workflows_ended(self, workflow_ids: Collection[str]) -> None:
        """These workflows ended (the controller said so): the idle workers serving one of them end
        its child now, off any task's path (:meth:`PyWorker.retire`)."""
        for worker in self._idle:
            if worker.workflow is not None and worker.workflow in workflow_ids:
                worker.retire()

    def _discard(self, worker: PyWorker) -> None:
        """Retire a worker (dead or killed): kill its tree, remove its folder, replace it."""
        if worker not in self._all:
            return
        self._all.discard(worker)
        worker.alive = False
        worker.close_pipes()
        self._in_background(self._reap(worker))
        if self._closed:
            return

        async def replace() -> None:
            try:
                self._release(await self._spawn())
            except Exception:
                log.exception("python worker could not be replaced")

        self._in_background(replace())

    def _in_background(self, coroutine: Any) -> None:
        task = asyncio.create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _reap(self, worker: PyWorker) -> None:
        # Whatever a task left running in the worker's cgroup or tree goes with it.
        await stop_worker(worker, 0, force=True)
        await asyncio.to_thread(shutil.rmtree, worker.home, True)
        with contextlib.suppress(OSError):
            (self._folder / lock_name(worker.index, os.getpid())).unlink()
        if worker.cgroup is not None:
            worker.cgroup.remove()

    def _check(self, assignment: types_pb2.TaskAssignment) -> dict[str, str]:
        """Check the payload against the policy; the payload's own env (secrets resolved)."""
        raw = assignment.payload_json
        # The common case (thousands of tasks with the same small payload) skips the JSON parse.
        known = self._checked.get(raw)
        if known is not None:
            if known:
                raise PayloadError(known)
            return {}
        try:
            payload = json.loads(raw or b"{}")
        except ValueError as exc:
            raise PayloadError(f"payload is not valid JSON: {exc}") from None
        if not isinstance(payload, dict):
            raise PayloadError("payload must be a JSON object")
        refusal = self._function_refusal(payload.get("function"))
        if payload.get("env") is None and len(raw) <= _CACHED_PAYLOAD_BYTES:
            if len(self._checked) >= _CHECKED_CACHE:
                self._checked.clear()
            self._checked[raw] = refusal
        if refusal:
            raise PayloadError(refusal)
        extra, _ = payload_env(payload.get("env"), self._policy, assignment.secrets)
        return extra

    def _function_refusal(self, function: Any) -> str:
        """Why the policy refuses ``payload.function`` ("" when it allows it), by name once: payloads
        differ (their arguments), the functions they name seldom do."""
        known = self._functions.get(function) if type(function) is str else None
        if known is not None:
            return known
        try:
            self._policy.check_function(function)
            refusal = ""
        except PayloadError as exc:
            refusal = str(exc)
        if type(function) is str and len(function) <= _CACHED_PAYLOAD_BYTES:
            if len(self._functions) >= _CHECKED_CACHE:
                self._functions.clear()
            self._functions[function] = refusal
        return refusal

    async def start_task(self, assignment: types_pb2.TaskAssignment, has_gpus: bool) -> PythonRun | AttemptResult:
        """Hand an attempt to a free worker of its workflow; a result instead when the policy refuses it."""
        env = self._task_env(assignment, has_gpus)
        if isinstance(env, AttemptResult):
            return env
        return self._dispatch(await self._acquire(assignment.workflow_id), assignment, env)

    def start_now(self, assignment: types_pb2.TaskAssignment, has_gpus: bool) -> PythonRun | AttemptResult | None:
        """:meth:`start_task` without waiting: None (nothing done) when no worker is idle.

        The executor calls it when it starts an attempt (most often where the one before it on that
        worker ended), so the request leaves in that callback, not a pass of the event loop later.
        """
        if not self._idle:
            return None
        env = self._task_env(assignment, has_gpus)
        if isinstance(env, AttemptResult):
            return env
        worker = self._idle_now(assignment.workflow_id)
        if worker is None:  # the idle ones were dead
            return None
        return self._dispatch(worker, assignment, env)

    def _task_env(self, assignment: types_pb2.TaskAssignment, has_gpus: bool) -> dict[str, str] | AttemptResult:
        """The attempt's own environment, or the policy's refusal as its result."""
        try:
            env = self._check(assignment)
        except PayloadError as exc:
            return AttemptResult.failed(str(exc), retryable=False)
        env.update(
            identity_env(
                assignment.task_id,
                assignment.task_name,
                assignment.workflow_id,
                assignment.attempt_id,
                list(assignment.gpu_ids),
                has_gpus,
            )
        )
        return env

    def stage(self, assignment: types_pb2.TaskAssignment, leader: PythonRun, has_gpus: bool) -> PythonRun | None:
        """Stage an attempt in ``leader``'s worker, to start there once the leader has answered
        (:meth:`PyWorker.stage`); None when it cannot be (another workflow, the worker busy
        otherwise or gone, a refused payload: it then starts as usual when a slot frees)."""
        worker = leader._worker
        if (
            worker.workflow != assignment.workflow_id
            or leader._stop is not None
            or assignment.checkpoint_json  # written into the folder the leader is using
            # A task that runs on through a partition must have started under the agent's eyes:
            # staged, it could start in a frozen agent's worker after the controller took it back.
            or assignment.on_disconnect == types_pb2.ON_DISCONNECT_KEEP
            or not worker.can_stage(leader._response)
        ):
            return None
        env = self._task_env(assignment, has_gpus)
        if isinstance(env, AttemptResult):
            return None
        boundary = b"\0corral-next:" + os.urandom(12).hex().encode() + b"\0"  # no task prints it by chance
        run = self._dispatch(worker, assignment, env, boundary)
        run.leader = leader
        return run

    def _dispatch(
        self, worker: PyWorker, assignment: types_pb2.TaskAssignment, env: dict[str, str], boundary: bytes = b""
    ) -> PythonRun:
        """Send the attempt to ``worker`` (taken from the idle ones), or stage it there (``boundary``)."""
        worker.workflow = assignment.workflow_id
        if assignment.checkpoint_json:  # resuming: the last checkpoint of an earlier attempt (issue 10)
            checkpoint_in = self._checkpoint_in(worker, assignment, env)
        secrets = dict(assignment.secrets) if len(assignment.secrets) else {}
        if not boundary:
            worker.begin(self._cap, secrets)
        inputs = dict(assignment.inputs_json) if assignment.inputs_json else None
        redactor = Redactor(secrets) if secrets else None
        fields = (
            assignment.payload_json,
            inputs,
            env,
            assignment.workflow_id,
            assignment.attempt_id.encode(),
            assignment.on_disconnect == types_pb2.ON_DISCONNECT_KEEP,
            assignment.timeout_s,
            self.kill_grace_s,
        )
        staged = (*fields, boundary)
        response = worker.stage(staged, boundary, self._cap, secrets) if boundary else worker.send(fields)
        worker.owners += 1
        run = PythonRun(self, worker, response, redactor)
        if assignment.checkpoint_json:
            run.checkpoint_in = checkpoint_in
        return run

    def _checkpoint_in(self, worker: PyWorker, assignment: types_pb2.TaskAssignment, env: dict[str, str]) -> str:
        """Write the checkpoint handed to this attempt into the worker's folder: ``CORRAL_CHECKPOINT_IN``.

        The attempt's own files (``corral.task.checkpoint_path``/``spawn_path``, in the worker's
        folder) need no variable: a task that never checkpoints costs nothing.
        """
        path = f"{worker.home}/.corral-checkpoint-in-{assignment.attempt_id}.json"
        run_as = self._run_as
        owner = (run_as.uid, run_as.gid) if run_as is not None else None
        env["CORRAL_CHECKPOINT_IN"] = write_checkpoint_in(path, assignment.checkpoint_json, owner)
        return path

    def detach(self) -> None:
        """Let go of every worker without stopping it (the agent exits, its tasks live on).

        A worker running a task takes it over (``supervise/<attempt_id>/``, then ``status.json``);
        an idle one exits. The next agent's pool leaves their folders and cgroups alone.
        """
        self._closed = True
        for _, waiter in self._waiters:
            waiter.cancel()
        for worker in self._all:
            worker.alive = False
            worker.close_pipes()
        self._all.clear()
        self._idle.clear()

    async def close(self) -> None:
        """Stop every worker (EOF first, then kill whatever did not exit)."""
        self._closed = True
        for task in list(self._background):
            with contextlib.suppress(BaseException):
                await task
        for _, waiter in self._waiters:
            waiter.cancel()
        workers = list(self._all)
        self._all.clear()
        self._idle.clear()
        for worker in workers:
            worker.close_pipes()
        for worker in workers:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(worker.proc.wait(), 2.0)
            await self._reap(worker)
        await asyncio.to_thread(self._remove_stale)
        if self._cgroup_root is not None:
            remove_pool(self._cgroup_root, self._pool_name)
