"""A warm python worker: the child process that runs ``module:function`` tasks one after another.

Started by the agent as ``python -I -m corral.agent.pyworker REQ_FD RESP_FD SUP MODE ALLOW [PATH...]``
in its own session, in its own folder, from a clean environment, with stdout/stderr on pipes the
agent reads (output is captured at the file-descriptor level, child processes included). Requests
and responses are length-prefixed pickles on two dedicated pipes (never stdout, which belongs to the
task). ``MODE ALLOW`` is the agent's python module rule (:class:`corral.agent.policy.ModuleRule`);
the PATHs (--python-path) go first on ``sys.path``. ``SUP`` is a JSON object for the worker's
supervision (:mod:`corral.agent.pywatch`): ``work_dir``, ``lease``, ``cgroup`` (the folders to join),
``response_reader`` and ``output_readers`` (read ends this worker holds), ``lock`` (a held fd).

Request: ``(payload_json, inputs, env, workflow_id, attempt_id, keep, timeout_s, grace_s[, boundary])`` where
``inputs`` maps dependency names to result JSON bytes and ``env`` holds the task's own variables
(CORRAL_*, CUDA_VISIBLE_DEVICES, payload env); a ``boundary`` marks a *staged* request
(:mod:`corral.agent.pyconn`), started only if ``SUP``'s ``stage_token`` can be taken, else answered
``"withdrawn"``. Response: ``(ok, result_json, error, retryable,
stop, peak_rss_bytes, cpu_s, touched)``; ``touched``: the task wrote a checkpoint or spawned
(:mod:`corral.task`); ``stop`` is "" unless the worker stopped the task itself
("fenced"); the usage is the task's (:class:`corral.agent.usage.TaskMeter`), absent (a 5-tuple)
when the worker answers for a task it stopped.

The worker supervises its tasks (:mod:`corral.agent.pywatch`): it is a child subreaper, kills what a
task leaves behind, fences a task when the agent's lease runs out and finishes a task on its own
(``status.json``) when the agent dies.

The worker process itself only imports and forks: each workflow's tasks run in a child of their
own (see :func:`main`), so nothing of one workflow is seen by the next. Between tasks of one
workflow the environment, working directory, ``sys.path`` and ``sys.stdout``/``sys.stderr`` are
put back.

This module must stay cheap to import: no grpc, no protobuf, only the standard-library-only policy.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib
import inspect
import io
import json
import os
import pickle
import select
import shutil
import sys
import traceback
import types
from collections.abc import Callable
from typing import Any, BinaryIO

from corral import task as corral_task
from corral.agent.policy import MAX_RESULT_BYTES, ModuleRule, over_limit
from corral.agent.pyenv import TaskEnv
from corral.agent.pyframes import HEADER, read_frame, take_stage_token, write_all, write_all_fd
from corral.agent.pywatch import Shared, Watcher, become_subreaper, die_with_parent, kill_descendants, kill_leftovers
from corral.agent.usage import TaskMeter

__all__ = ["RETIRE", "Request", "Response", "main"]

#: (payload JSON, inputs, env, workflow id, attempt id, on_disconnect keep, timeout_s, kill grace_s),
#: then a staged request's output boundary
Request = (
    tuple[bytes, "dict[str, bytes] | None", "dict[str, str]", str, bytes, bool, float, float]
    | tuple[bytes, "dict[str, bytes] | None", "dict[str, str]", str, bytes, bool, float, float, bytes]
)
#: (ok, result JSON, error, retryable, stop: "" or the reason the worker stopped the task, e.g. "fenced",
#: then the task's peak RSS bytes and CPU seconds, then whether it wrote a checkpoint or spawned
#: (issue 10); a stopped task's answer ends after ``stop``)
Response = (
    tuple[bool, bytes, str, bool, str]
    | tuple[bool, bytes, str, bool, str, int, float]
    | tuple[bool, bytes, str, bool, str, int, float, bool]
)


class _Permanent(Exception):
    """A failure that no retry can fix (bad payload, unknown function, policy)."""


class _Worker:
    def __init__(self, rule: ModuleRule) -> None:
        self.rule = rule
        self.functions: dict[str, tuple[Callable[..., Any], bool, bool]] = {}
        self.loop: asyncio.AbstractEventLoop | None = None

    def _refuse(self, spec: str, target: Any) -> None:
        # The agent checked the module name; this checks what it leads to, so an allowed module
        # cannot hand out a refused one through an attribute (``pkg:os.system``, ``from os import system``).
        if isinstance(target, types.ModuleType):
            owner: Any = target.__name__
        else:
            owner = getattr(target, "__module__", None)
            if not isinstance(owner, str):
                owner = type(target).__module__
        refusal = self.rule.refusal(owner)
        if refusal is not None:
            raise _Permanent(f"policy: {spec!r} leads to {owner!r}: {refusal}")

    def resolve(self, spec: Any) -> tuple[Callable[..., Any], bool, bool]:
        cached = self.functions.get(spec) if isinstance(spec, str) else None
        if cached is not None:
            return cached
        if not isinstance(spec, str) or spec.count(":") != 1:
            raise _Permanent("payload.function must look like 'module:attr'")
        module_name, attr = spec.split(":")
        refusal = self.rule.refusal(module_name)
        if refusal is not None:
            raise _Permanent(f"policy: {refusal}")
        try:
            target: Any = importlib.import_module(module_name)
            for part in attr.split("."):
                if part.startswith("__"):
                    raise _Permanent(f"policy: {spec!r} names a dunder attribute, which tasks may not call")
                target = getattr(target, part)
                if isinstance(target, types.ModuleType):
                    self._refuse(spec, target)
        except (ImportError, AttributeError) as exc:
            traceback.print_exc()
            raise _Permanent(f"cannot resolve {spec}: {_last_line(exc)}") from None
        if not callable(target):
            raise _Permanent(f"{spec} is not callable")
        self._refuse(spec, target)
        try:
            params = inspect.signature(target).parameters.values()
            wants_inputs = any(p.name == "inputs" or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
            # Only a parameter named ctx gets the task context (never **kwargs: it may forward them).
            wants_ctx = any(p.name == "ctx" for p in params)
        except (TypeError, ValueError):
            wants_inputs = wants_ctx = False
        self.functions[spec] = (target, wants_inputs, wants_ctx)
        return target, wants_inputs, wants_ctx

    def call(self, payload_json: bytes, inputs_raw: dict[str, bytes] | None) -> bytes:
        try:
            payload = json.loads(payload_json or b"{}")
        except ValueError as exc:
            raise _Permanent(f"payload is not valid JSON: {exc}") from None
        if not isinstance(payload, dict):
            raise _Permanent("payload must be a JSON object")
        fn, wants_inputs, wants_ctx = self.resolve(payload.get("function"))
        args = payload.get("args") or []
        kwargs = payload.get("kwargs") or {}
        if not isinstance(args, list) or not isinstance(kwargs, dict):
            raise _Permanent("payload.args must be a list and payload.kwargs an object")
        if wants_inputs and "inputs" not in kwargs:
            inputs: dict[str, Any] = {}
            for name, raw in (inputs_raw or {}).items():
                try:
                    inputs[name] = json.loads(raw) if raw else None
                except ValueError:
                    inputs[name] = None
            kwargs["inputs"] = inputs
        if wants_ctx and "ctx" not in kwargs:
            kwargs["ctx"] = corral_task.current()
        value = fn(*args, **kwargs)
        if inspect.isawaitable(value):
            if self.loop is None:
                self.loop = asyncio.new_event_loop()
            value = self.loop.run_until_complete(_await(value))
        try:
            result = json.dumps(value).encode()
        except (TypeError, ValueError) as exc:
            raise _Permanent(f"the result is not JSON-serialisable: {exc}") from None
        if len(result) > MAX_RESULT_BYTES:
            raise _Permanent(over_limit(len(result)))
        return result


async def _await(awaitable: Any) -> Any:
    return await awaitable


def _last_line(exc: BaseException) -> str:
    return traceback.format_exception_only(type(exc), exc)[-1].strip()


def _empty(folder: str) -> bool:
    with os.scandir(folder) as entries:
        return next(entries, None) is None


def _wipe(folder: str) -> None:
    """Empty the worker's folder (files a workflow left behind), keeping the folder itself."""
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.name == "tmp" and entry.is_dir(follow_symlinks=False) and _empty(entry.path):
                os.chmod(entry.path, 0o700)  # kept: an empty folder needs no remove and create
            elif entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
                if entry.name == "tmp":
                    os.mkdir(entry.path, 0o700)
            else:
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)


def _serve(
    first: bytes,
    requests: BinaryIO,
    responses: BinaryIO,
    handoff: int,
    done: int,
    worker: _Worker,
    env: TaskEnv,
    home: str,
    stdout: Any,
    stderr: Any,
    shared: Shared,
) -> None:
    """The child of one workflow: run its tasks until a task of another workflow arrives.

    Then this child empties the worker's folder, hands that request straight to the next child
    (``handoff``: that child's start pipe), tells the template (``done``: one byte, then the end of
    the pipe) and exits: everything a task changed in this process (modules, their globals,
    monkeypatches, threads) ends with it. The next child starts without waiting for the template.
    A :data:`RETIRE` request (the workflow ended) does the same ahead of time, so the next
    workflow's first task finds a fresh child reading the pipe; a fresh child ignores it.
    """
    initial_path = list(sys.path)
    frame: bytes | None = first
    workflow: str | None = None
    meter = TaskMeter()
    while frame is not None:
        fields = pickle.loads(frame[HEADER.size :])
        payload_json, inputs_raw, task_env, frame_workflow, attempt_id, keep, timeout_s, grace_s = fields[:8]
        if len(fields) > 8 and not take_stage_token(_stage_token, fields[8]):
            # Staged, then withdrawn by the agent (or the agent is gone): it never starts here.
            _reply(responses, (False, b"", "withdrawn before it started", True, _WITHDRAWN))
            frame = read_frame(requests)
            continue
        if not attempt_id and workflow is None:  # RETIRE to a child that has run nothing yet
            frame = read_frame(requests)
            continue
        if workflow is None:
            workflow = frame_workflow
        elif frame_workflow != workflow or not attempt_id:  # another workflow's task, or RETIRE
            # Its tasks' leftovers were killed before each answer: nothing of this workflow writes
            # here any more, and the next one must find the folder empty.
            _wipe(home)
            write_all_fd(handoff, frame)
            os.write(done, _SWITCHED)
            # Closed now, not by the exit: the template reads to the end of this pipe, and the
            # kernel closes a dying process's files only after tearing down its memory (milliseconds).
            os.close(handoff)
            os.close(done)
            return
        if not keep and shared.expired():
            # Cut off from the controller: a ``stop`` task may be running elsewhere by now.
            _reply(responses, (False, b"", "fenced: not started, the agent's lease had expired", True, "refused"))
            frame = read_frame(requests)
            continue
        env.apply(task_env)
        os.chdir(home)
        if sys.path != initial_path:
            sys.path[:] = initial_path
        sys.stdout, sys.stderr = stdout, stderr
        shared.begin(attempt_id, keep, timeout_s, grace_s)
        meter.begin()
        ok, error, retryable, result = True, "", False, b""
        corral_task._begin()  # corral.task.current(), from the task's CORRAL_* environment
        try:
            result = worker.call(payload_json, inputs_raw)
        except _Permanent as exc:
            ok, error = False, str(exc)
            print(error, file=sys.stderr)
        except BaseException as exc:
            # SystemExit and KeyboardInterrupt raised by a task fail that task, not the worker.
            traceback.print_exc()
            ok, error, retryable = False, _last_line(exc), True
        touched = corral_task._end()  # the agent reads the task's checkpoint/spawn files only if so
        for stream in (sys.stdout, sys.stderr, stdout, stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        # The attempt is over only once nothing it started lives on.
        kill_leftovers()
        rss, cpu = meter.take()
        if not shared.may_answer():
            return  # the worker is stopping this task (fenced): it answers, this process exits
        _reply(responses, (ok, result, error, retryable, "", rss, cpu, touched))
        shared.idle()
        frame = read_frame(requests)


#: The read end of the stage token pipe (:func:`~corral.agent.pyframes.take_stage_token`), or -1.
_stage_token = -1
_WITHDRAWN = "withdrawn"  # pyconn.SKIPPED


#: The request that ends a worker's current child without a task (its workflow ended, see
#: :func:`_serve`): no attempt id, which every task has. It gets no response.
RETIRE: Request = (b"", None, {}, "", b"", False, 0.0, 0.0)


def _reply(responses: BinaryIO, reply: Response) -> None:
    frame = pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL)
    write_all(responses, HEADER.pack(len(frame)) + frame)


#: What a child writes on its ``done`` pipe when it handed a request of another workflow on.
_SWITCHED = b"s"


class _Child:
    """A forked child, waiting for the first request of its workflow on its start pipe."""

    def __init__(self, pid: int, done: int, successor_go: int) -> None:
        self.pid = pid
        # Read by the template: _SWITCHED then the pipe's end when the child handed a request of
        # another workflow on, the end alone when it ended otherwise.
        self.done = done
        # The read end of the next child's start pipe; this child holds the write end.
        self.successor_go = successor_go


def _fork_child(
    go: int,
    template_fds: tuple[int, ...],
    serve: Callable[[bytes, int, int], None],
    warm_up: Callable[[], object] | None = None,
) -> _Child:
    """Fork a child that starts on the first frame it reads from ``go`` (closed here, in the template).

    ``template_fds`` are the template's own pipe ends, which the child closes; ``serve(first,
    handoff, done)`` runs the child's workflow (:func:`_serve`). A child whose first request is not
    there within :data:`WARM_AFTER_S` runs ``warm_up()`` meanwhile (see :func:`_rehearse`).
    """
    done_r, done_w = os.pipe()
    successor_r, successor_w = os.pipe()
    template = os.getpid()
    pid = os.fork()
    if pid != 0:
        for fd in (go, done_w, successor_w):
            os.close(fd)
        return _Child(pid, done_r, successor_r)
    for fd in (done_r, successor_r, *template_fds):
        os.close(fd)
    # A subreaper too (not inherited through fork): what a task double-forks comes back here. And it
    # dies with the template, whatever kills that.
    become_subreaper()
    die_with_parent(template)
    code = 0
    try:
        if warm_up is not None:
            waiting = select.poll()
            waiting.register(go, select.POLLIN)
            if not waiting.poll(WARM_AFTER_S * 1000):  # not at once: the fork's parent side runs now
                with contextlib.suppress(Exception):
                    warm_up()
        with os.fdopen(go, "rb", buffering=0) as start:
            first = read_frame(start)
        if first is not None:
            serve(first, successor_w, done_w)
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)


def _supervise_setup(config: dict[str, Any], pipes: tuple[int, ...]) -> None:
    """Become the subreaper of everything tasks start, join the worker's cgroups, and keep every
    inherited pipe away from programs tasks execute (a background program holding the response
    pipe must not keep it open)."""
    become_subreaper()
    for folder in ((config.get("cgroup") or {}).get("dirs") or {}).values():
        with contextlib.suppress(OSError), open(os.path.join(folder, "cgroup.procs"), "w") as file:
            file.write(str(os.getpid()))
    held = [
        config.get("response_reader", -1),
        config.get("lock", -1),
        config.get("stage_token", -1),
        *config.get("output_readers", ()),
    ]
    for fd in (*pipes, *held):
        if isinstance(fd, int) and fd >= 0:
            with contextlib.suppress(OSError):
                os.set_inheritable(fd, False)


#: How many tasks the template rehearses before its first fork (see :func:`_rehearse`).
REHEARSALS = 64
#: A standby child whose first request has not come this soon warms up (see :func:`_fork_child`).
WARM_AFTER_S = 0.002
#: How many no-op tasks that warm-up runs: enough to touch the task path's pages once or twice.
WARM_UPS = 3
_REHEARSAL_MODULE = __name__


def _rehearsal_task(value: int = 0, inputs: dict[str, Any] | None = None) -> int:
    """The no-op the template rehearses the task path with."""
    return value


class _Unremembered(dict):  # type: ignore[type-arg]
    """A function cache that keeps nothing: every rehearsal resolves its function the whole way."""

    def __setitem__(self, key: Any, value: Any) -> None:
        return None


def _rehearse(env: TaskEnv, home: str, stdout: Any, stderr: Any, count: int = REHEARSALS, switch: bool = True) -> int:
    """Run the children's task path on ``count`` no-ops with private pipes (and, with ``switch``,
    the path of handing a request of another workflow on, which empties ``home``).

    In the template, before any fork: Python specialises each code object in place as it runs (its
    first executions rewrite the bytecode), so a path the template never ran is rewritten in every
    child, page by page, each write a copy-on-write fault: a new child's first task took 1.5 ms more
    than the next one. Run here, the rewriting happens once and every child inherits it.

    In a standby child, without ``switch`` (the active child's task may use the folder): what is
    left of those faults (reference counts, caches) is taken while the child waits, not on its
    workflow's first task (a switch: 2.3 -> 1.0 ms).

    Nothing a task names runs: the rehearsal has its own worker (its own module rule, allowing only
    this module, and a cache that keeps nothing), its own shared state and pipes; the environment,
    the folder and the task module's state end as they started; it writes no output. Returns how
    many rehearsed tasks answered a success.
    """
    frames = io.BytesIO()
    payload = json.dumps({"function": f"{_REHEARSAL_MODULE}:_rehearsal_task", "args": [1]}).encode()
    for index in range(count + switch):
        # The last frame is another workflow's: the child's path of handing it on, too.
        workflow = "rehearsal" if index < count else "rehearsal-next"
        request: Request = (payload, {"input": b"1"}, {"CORRAL_TASK_ID": "rehearsal"}, workflow, b"r", False, 0.0, 0.0)
        body = pickle.dumps(request, protocol=pickle.HIGHEST_PROTOCOL)
        frames.write(HEADER.pack(len(body)) + body)
    frames.seek(0)
    worker = _Worker(ModuleRule(allow=(_REHEARSAL_MODULE,)))
    worker.functions = _Unremembered()
    answers = io.BytesIO()
    handed_r, handed_w = os.pipe()
    done_r, done_w = os.pipe()
    try:
        first = read_frame(frames)
        if first is not None:
            _serve(first, frames, answers, handed_w, done_w, worker, env, home, stdout, stderr, Shared())
            if switch:
                handed_w = done_w = -1  # closed by the child's path once it handed the last frame on
    finally:
        for fd in (handed_r, handed_w, done_r, done_w):
            if fd >= 0:
                os.close(fd)
        env.apply({})
        os.chdir(home)
    answers.seek(0)
    succeeded = 0
    while (frame := read_frame(answers)) is not None:
        succeeded += pickle.loads(frame[HEADER.size :])[0] is True
    return succeeded


def main(argv: list[str] | None = None) -> int:
    """Serve requests until the request pipe closes.

    This process never runs a task (before its first fork it rehearses the task path on a no-op of
    its own, :func:`_rehearse`). It is a clean template: each workflow's tasks run in a child
    forked from it, reading the same pipes; when a task of another workflow arrives, the child
    empties the folder, hands that request on to the next child and exits. So no state of one
    workflow reaches another. The next child is forked in advance, as soon as the current one has
    its first request, and the request goes to it directly: a switch costs two pipe writes, not a
    fork, an interpreter start, or a wake-up of this process on the way.
    """
    args = sys.argv[1:] if argv is None else argv
    requests = os.fdopen(int(args[0]), "rb", buffering=0)
    responses = os.fdopen(int(args[1]), "wb", buffering=0)
    config = json.loads(args[2])
    _supervise_setup(config, (requests.fileno(), responses.fileno()))
    global _stage_token
    _stage_token = int(config.get("stage_token", -1))
    if _stage_token >= 0:
        os.set_blocking(_stage_token, False)
    shared = Shared()
    watcher = Watcher(shared, config, requests.fileno(), responses.fileno())
    rule = ModuleRule.from_args(args[3], args[4])
    for index, path in enumerate(args[5:]):
        if path not in sys.path:
            sys.path.insert(index, path)
    worker = _Worker(rule)
    # What every task starts from: the worker's clean environment, folder and import path.
    env = TaskEnv()
    home = os.getcwd()
    stdout, stderr = sys.stdout, sys.stderr

    def serve(first: bytes, handoff: int, done: int) -> None:
        # A fresh look at the lease before a workflow's first task (the template's last look may
        # be a tick, half a second, old).
        watcher.refresh_lease()
        _serve(first, requests, responses, handoff, done, worker, env, home, stdout, stderr, shared)

    def warm_up() -> None:
        _rehearse(env, home, stdout, stderr, count=WARM_UPS, switch=False)

    # The modules the operator allowed by name are imported once here, before any task runs, so
    # every child starts with them imported (fresh, untouched by any task) instead of importing
    # them per workflow. Nothing a workflow names is ever imported in this process.
    for name in rule.allow:
        with contextlib.suppress(Exception):
            importlib.import_module(name)
    # Not a reason to fail the worker: without it, children only pay their first tasks' rewriting.
    with contextlib.suppress(Exception):
        _rehearse(env, home, stdout, stderr)
    # Objects that exist now are shared by every child: moving them out of the collector's
    # generations keeps the children from writing to (and so copying) their pages.
    gc.freeze()

    first_go, first_go_w = os.pipe()
    active = _fork_child(first_go, (first_go_w,), serve, warm_up)
    # Tell the pool this worker is up (interpreter started, imports done): it hands out only warm ones.
    ready = pickle.dumps(None, protocol=pickle.HIGHEST_PROTOCOL)
    write_all(responses, HEADER.pack(len(ready)) + ready)
    # The worker's first request is the only one the template reads: the first child has nobody to
    # hand it on. Every later child gets its first request from the child before it.
    pending = read_frame(requests)
    if pending is None:  # stopped before any task: the first child reads the end and exits
        os.close(first_go_w)
        watcher.exit_status(active.pid)
        return 0
    write_all_fd(first_go_w, pending)
    os.close(first_go_w)
    while True:
        watcher.reap_ending()
        # Forked now, beside the new child's first task, not later: on a small host the critical
        # path of a short workflow (controller, agent, this child) runs one process at a time, so
        # the fork takes a core that is idle now, and would slow the controller's handling of the
        # answer if it came after it (measured: one-task workflows back to back, 6.0 -> 5.0 ms).
        standby = _fork_child(active.successor_go, (active.done,), serve, warm_up)
        # Not a blocking read: the watch also fences a task whose lease ran out, and takes over
        # a running task when the agent dies.
        switched = watcher.watch(active.pid, active.done)
        os.close(active.done)
        if switched != _SWITCHED:
            status = watcher.exit_status(active.pid)
            # The child ended without handing a request on: the request pipe closed (the agent
            # stops this worker), or a task killed its process. Either way this worker is done,
            # and its exit code says how the child ended. os._exit, not a return: the pipes must
            # close with the process, so the agent, which sees them close, finds the status set.
            # (The standby reads the end of its start pipe, whose only writer was that child.)
            # Whatever the dead child's tasks left running came back to this subreaper: it goes too.
            kill_descendants()
            code = os.waitstatus_to_exitcode(status)
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(Exception):
                    stream.flush()
            os._exit(0 if code == 0 else (code if code > 0 else 128 - code))
        # That child runs nothing more (it emptied the folder and handed the request on to the
        # standby, which runs it by now): it is reaped once it has exited.
        watcher.ending.add(active.pid)
        active = standby


if __name__ == "__main__":
    sys.exit(main())
