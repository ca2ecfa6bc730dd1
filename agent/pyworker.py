"""A warm python worker: the child process that runs ``module:function`` tasks one after another.

Started by the agent as ``python -m corral.agent.pyworker REQ_FD RESP_FD [PATH...]`` in its own
process group, with stdout/stderr redirected to per-worker capture files opened with O_APPEND.
Requests and responses are length-prefixed pickles on two dedicated pipes (never stdout, which
belongs to the task). Before a task the capture files are truncated when the previous task wrote
anything, so output is captured at the file-descriptor level, child processes included, at the
cost of two fstat calls per task.

Request: ``(payload_json, inputs, identity)`` where ``inputs`` maps dependency names to result JSON
bytes and ``identity`` is ``(task_id, task_name, workflow_id, attempt_id, cuda_visible_devices)``.
Response: ``(ok, result_json, error, retryable, stdout_size, stderr_size)``.

This module must stay cheap to import: no grpc, no protobuf, nothing from the rest of the agent.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import os
import pickle
import struct
import sys
import traceback
from collections.abc import Callable
from typing import Any, BinaryIO

__all__ = ["HEADER", "Identity", "Request", "Response", "main"]

HEADER = struct.Struct("<I")

Identity = tuple[str, str, str, str, "str | None"]
Request = tuple[bytes, "dict[str, bytes] | None", Identity]
Response = tuple[bool, bytes, str, bool, int, int]

_ENV_NAMES = ("CORRAL_TASK_ID", "CORRAL_TASK_NAME", "CORRAL_WORKFLOW_ID", "CORRAL_ATTEMPT_ID")


class _Permanent(Exception):
    """A failure that no retry can fix (bad payload, unknown function)."""


class _Worker:
    def __init__(self) -> None:
        self.functions: dict[str, tuple[Callable[..., Any], bool]] = {}
        self.loop: asyncio.AbstractEventLoop | None = None

    def resolve(self, spec: Any) -> tuple[Callable[..., Any], bool]:
        cached = self.functions.get(spec) if isinstance(spec, str) else None
        if cached is not None:
            return cached
        if not isinstance(spec, str) or spec.count(":") != 1:
            raise _Permanent("payload.function must look like 'module:attr'")
        module_name, attr = spec.split(":")
        try:
            target: Any = importlib.import_module(module_name)
            for part in attr.split("."):
                target = getattr(target, part)
        except (ImportError, AttributeError) as exc:
            traceback.print_exc()
            raise _Permanent(f"cannot resolve {spec}: {_last_line(exc)}") from None
        if not callable(target):
            raise _Permanent(f"{spec} is not callable")
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
            return json.dumps(value).encode()
        except (TypeError, ValueError) as exc:
            raise _Permanent(f"the result is not JSON-serialisable: {exc}") from None


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


def main(argv: list[str] | None = None) -> int:
    """Serve requests until the request pipe closes."""
    args = sys.argv[1:] if argv is None else argv
    requests = os.fdopen(int(args[0]), "rb")
    responses = os.fdopen(int(args[1]), "wb", buffering=0)
    for index, path in enumerate(args[2:]):
        if path not in sys.path:
            sys.path.insert(index, path)
    worker = _Worker()
    environ = os.environ
    dirty = False
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
        payload_json, inputs_raw, identity = pickle.loads(body)
        if dirty:
            # O_APPEND: after truncation the next write lands at offset 0 again.
            os.ftruncate(1, 0)
            os.ftruncate(2, 0)
        for name, value in zip(_ENV_NAMES, identity, strict=False):
            environ[name] = value
        if identity[4] is not None:
            environ["CUDA_VISIBLE_DEVICES"] = identity[4]
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
        sys.stdout.flush()
        sys.stderr.flush()
        out_size = os.fstat(1).st_size
        err_size = os.fstat(2).st_size
        dirty = bool(out_size or err_size)
        reply: Response = (ok, result, error, retryable, out_size, err_size)
        frame = pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL)
        _write_all(responses, HEADER.pack(len(frame)) + frame)


if __name__ == "__main__":
    sys.exit(main())
