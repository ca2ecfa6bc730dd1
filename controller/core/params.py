"""Workflow parameters: declared defaults, supplied values, and ``${params.name}`` in payload strings.

Pure functions, used at submit time (the rpc edge, before the task records are built) and by the
file loader (to refuse a template naming an undeclared parameter before anything is sent).

- A workflow declares ``params: {name: default}``; a default of ``null`` makes the parameter
  required. Defaults are scalars: strings, numbers, booleans.
- A submission supplies values as text (``corral run -p name=value``); each is read as the type of
  its default (an integer, a number, ``true``/``false``), or kept as text for string and required
  parameters.
- ``${params.name}`` anywhere inside a payload string is replaced by the value's text; a string that
  is exactly one reference becomes the value itself, typed (so ``kwargs: {n: "${params.n}"}`` gives
  the function an int). ``$${params.name}`` is the literal text ``${params.name}``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Mapping
from typing import Any

from corral.controller.errors import FieldViolation, InvalidArgument, clip

__all__ = [
    "MARKER",
    "MAX_PARAMS",
    "MAX_PARAM_TEXT",
    "ParamValue",
    "coerce",
    "references",
    "resolve_params",
    "substitute",
]

ParamValue = str | int | float | bool | None

MAX_PARAMS = 64
MAX_PARAM_TEXT = 4096  # characters of one parameter's value (a default or a supplied one)
#: Bytes every payload with a reference contains: payloads without it are never walked.
MARKER = b"{params."

# "$${params.x}" (escaped, group 1 set) or "${params.x}"; group 2 is the name as written.
_REFERENCE = re.compile(r"\$(\$)?\{params\.([^}]*)\}")
_WHOLE = re.compile(r"\$\{params\.([^}]*)\}")


def _text(value: ParamValue) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value)  # true/false, 3, 2.5 as JSON writes them


def _walk(value: Any, path: str) -> Iterator[tuple[str, str]]:
    """Every string of a JSON value with its path (``payload.kwargs.n``, ``payload.command[1]``)."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _walk(item, f"{path}.{clip(str(key))}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _walk(item, f"{path}[{i}]")


def references(value: Any, path: str) -> Iterator[tuple[str, str]]:
    """``(path, name)`` of every (unescaped) ``${params.name}`` in the strings of a JSON value."""
    for where, text in _walk(value, path):
        if "{params." in text:
            for match in _REFERENCE.finditer(text):
                if match.group(1) is None:
                    yield where, match.group(2)


def unknown_references(value: Any, path: str, declared: Mapping[str, Any]) -> list[FieldViolation]:
    """A violation per reference to a parameter the workflow does not declare."""
    known = ", ".join(sorted(declared)) or "none"
    return [
        FieldViolation(where, f"unknown parameter {clip(name)!r} in ${{params.{clip(name)}}} (declared: {known})")
        for where, name in references(value, path)
        if name not in declared
    ]


def substitute(value: Any, params: Mapping[str, ParamValue], path: str) -> Any:
    """A copy of a JSON value with every reference replaced; InvalidArgument at the string's path
    for a reference to an unknown parameter."""
    if isinstance(value, str):
        if "{params." not in value:
            return value
        whole = _WHOLE.fullmatch(value)
        if whole is not None:
            return params[_known(whole.group(1), params, path)]

        def replace(match: re.Match[str]) -> str:
            if match.group(1) is not None:
                return match.group(0)[1:]  # "$${params.x}" -> "${params.x}"
            return _text(params[_known(match.group(2), params, path)])

        return _REFERENCE.sub(replace, value)
    if isinstance(value, dict):
        return {key: substitute(item, params, f"{path}.{clip(str(key))}") for key, item in value.items()}
    if isinstance(value, list):
        return [substitute(item, params, f"{path}[{i}]") for i, item in enumerate(value)]
    return value


def _known(name: str, params: Mapping[str, ParamValue], path: str) -> str:
    if name not in params:
        known = ", ".join(sorted(params)) or "none"
        raise InvalidArgument.field(
            path, f"unknown parameter {clip(name)!r} in ${{params.{clip(name)}}} (declared: {known})"
        )
    return name


def coerce(name: str, default: ParamValue, text: str) -> ParamValue:
    """A supplied value read as its default's type; ValueError saying what was expected."""
    if isinstance(default, bool):
        if text.lower() in ("true", "1", "yes"):
            return True
        if text.lower() in ("false", "0", "no"):
            return False
        raise ValueError(f"parameter {name!r} is a boolean: give true or false, not {clip(text)!r}")
    if isinstance(default, int):
        try:
            return int(text.strip())
        except ValueError:
            raise ValueError(f"parameter {name!r} is an integer: {clip(text)!r} is not one") from None
    if isinstance(default, float):
        try:
            number = float(text.strip())
        except ValueError:
            raise ValueError(f"parameter {name!r} is a number: {clip(text)!r} is not one") from None
        if not math.isfinite(number):
            raise ValueError(f"parameter {name!r} must be a finite number")
        return number
    return text


def resolve_params(declared: Mapping[str, ParamValue], supplied: Mapping[str, str]) -> dict[str, ParamValue]:
    """The value of every declared parameter: supplied (coerced), else its default.

    InvalidArgument at ``params.NAME`` for a supplied parameter the workflow does not declare, a
    value that does not read as its default's type or is too long, or a required one not given.
    """
    violations: list[FieldViolation] = []
    if len(supplied) > MAX_PARAMS:
        raise InvalidArgument.field("params", f"{len(supplied)} parameters, over the limit of {MAX_PARAMS}")
    values: dict[str, ParamValue] = {}
    for name, text in supplied.items():
        path = f"params.{clip(name)}"
        if name not in declared:
            known = ", ".join(sorted(declared)) or "none"
            violations.append(FieldViolation(path, f"unknown parameter (declared: {known})"))
        elif len(text) > MAX_PARAM_TEXT:
            violations.append(FieldViolation(path, f"{len(text)} characters, over the limit of {MAX_PARAM_TEXT}"))
        else:
            try:
                values[name] = coerce(name, declared[name], text)
            except ValueError as exc:
                violations.append(FieldViolation(path, str(exc)))
    for name, default in declared.items():
        if name in supplied:
            continue
        if default is None:
            violations.append(
                FieldViolation(f"params.{name}", "required parameter not given (corral run -p NAME=VALUE)")
            )
        else:
            values[name] = default
    if violations:
        raise InvalidArgument(violations)
    return values
