"""A warm python worker: the child process that runs ``module:function`` tasks one after another.

Started by the agent as ``python -I -m corral.agent.pyworker REQ_FD RESP_FD MODE ALLOW [PATH...]``
in its own session, in its own folder, from a clean environment, with stdout/stderr on pipes the
agent reads (output is captured at the file-descriptor level, child processes included). Requests
and responses are length-prefixed pickles on two dedicated pipes (never stdout, which belongs to the
task). ``MODE ALLOW`` is the agent's python module rule (:class:`corral.agent.policy.ModuleRule`);
the PATHs (--python-path) go first on ``sys.path``.

Request: ``(payload_json, inputs, env)`` where ``inputs`` maps dependency names to result JSON
bytes and ``env`` holds the task's own variables (CORRAL_*, CUDA_VISIBLE_DEVICES, payload env).
Response: ``(ok, result_json, error, retryable)``.

Between tasks (all of one workflow: the agent never gives a worker another workflow's task) the
environment, working directory, ``sys.path`` and ``sys.stdout``/``sys.stderr`` are put back.

This module must stay cheap to import: no grpc, no protobuf, only the standard-library-only policy.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
import json
import os
import pickle
import struct
import sys
import traceback
import types
from collections.abc import Callable
from typing import Any, BinaryIO

from corral.agent.policy import MAX_RESULT_BYTES, ModuleRule, over_limit

__all__ = ["HEADER", "Request", "Response", "main"]

HEADER = struct.Struct("<I")

Request = tuple[bytes, "dict[str, bytes] | None", "dict[str, str]"]
Response = tuple[bool, bytes, str, bool]


class _Permanent(Exception):
    """A failure that no retry can fix (bad payload, unknown function, policy)."""


class _Worker:
    def __init__(self, rule: ModuleRule) -> None:
        self.rule = rule
        self.functions: dict[str, tuple[Callable[..., Any], bool]] = {}
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

    def resolve(self, spec: Any) -> tuple[Callable[..., Any], bool]:
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
        except (TypeError, ValueError):
            wants_inputs = False
        self.functions[spec] = (target, wants_inputs)
        return target, wants_inputs

    def call(self, payload_json: bytes, inputs_raw: dict[str, bytes] | None) -> bytes:
        try:
            payload = json.loads(payload_json or b"{}")
        except ValueError as exc:
            raise _Permanent(f"payload is not valid JSON: {exc}") from None
        if not isinstance(payload, dict):
            raise _Permanent("payload must be a JSON object")
        fn, wants_inputs = self.resolve(payload.get("function"))
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


def _read_exact(stream: BinaryIO, size: int) -> bytes | None:
    data = stream.read(size)
    return data if data is not None and len(data) == size else None


def _write_all(stream: BinaryIO, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = stream.write(view)
        view = view[written or 0 :]


def _restore_env(environ: Any, wanted: dict[str, str]) -> None:
    """Make ``os.environ`` exactly ``wanted`` (the slow path: a task changed the environment)."""
    current = dict(environ)
    for name in current.keys() - wanted.keys():
        del environ[name]
    for name, value in wanted.items():
        if current.get(name) != value:
            environ[name] = value


class _Env:
    """Puts each task's environment in place: the worker's clean base plus the task's variables.

    The fast path compares the encoded mapping behind ``os.environ`` with a snapshot taken when the
    previous task started (one C-level dict comparison) and only sets the new task's variables; a
    task that changed anything gets the whole environment rebuilt.
    """

    def __init__(self) -> None:
        self.environ = os.environ
        self.base = dict(os.environ)
        self.previous: dict[str, str] = {}
        self.snapshot: Any = None

    def _data(self) -> Any:
        return getattr(self.environ, "_data", None)

    def apply(self, task_env: dict[str, str]) -> None:
        environ = self.environ
        data = self._data()
        if data is None or self.snapshot is None or data != self.snapshot:
            _restore_env(environ, self.base | task_env)
        else:
            for name in self.previous.keys() - task_env.keys():
                if name in self.base:
                    environ[name] = self.base[name]
                else:
                    del environ[name]
            previous = self.previous
            for name, value in task_env.items():
                if previous.get(name) != value:
                    environ[name] = value
        self.previous = task_env
        data = self._data()
        self.snapshot = dict(data) if data is not None else None


def main(argv: list[str] | None = None) -> int:
    """Serve requests until the request pipe closes."""
    args = sys.argv[1:] if argv is None else argv
    requests = os.fdopen(int(args[0]), "rb")
    responses = os.fdopen(int(args[1]), "wb", buffering=0)
    rule = ModuleRule.from_args(args[2], args[3])
    for index, path in enumerate(args[4:]):
        if path not in sys.path:
            sys.path.insert(index, path)
    worker = _Worker(rule)
    # What every task starts from: the worker's clean environment, folder and import path.
    env = _Env()
    home = os.getcwd()
    initial_path = list(sys.path)
    stdout, stderr = sys.stdout, sys.stderr
    # Tell the pool this worker is up (interpreter started, imports done): it hands out only warm ones.
    ready = pickle.dumps(None, protocol=pickle.HIGHEST_PROTOCOL)
    _write_all(responses, HEADER.pack(len(ready)) + ready)
    while True:
        header = _read_exact(requests, HEADER.size)
        if header is None:
            return 0
        body = _read_exact(requests, HEADER.unpack(header)[0])
        if body is None:
            return 0
        payload_json, inputs_raw, task_env = pickle.loads(body)
        env.apply(task_env)
        os.chdir(home)
        if sys.path != initial_path:
            sys.path[:] = initial_path
        sys.stdout, sys.stderr = stdout, stderr
        ok, error, retryable, result = True, "", False, b""
        try:
            result = worker.call(payload_json, inputs_raw)
        except _Permanent as exc:
            ok, error = False, str(exc)
            print(error, file=sys.stderr)
        except BaseException as exc:
            # SystemExit and KeyboardInterrupt raised by a task fail that task, not the worker.
            traceback.print_exc()
            ok, error, retryable = False, _last_line(exc), True
        for stream in (sys.stdout, sys.stderr, stdout, stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        reply: Response = (ok, result, error, retryable)
        frame = pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL)
        _write_all(responses, HEADER.pack(len(frame)) + frame)


if __name__ == "__main__":
    sys.exit(main())
