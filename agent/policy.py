"""The execution policy of an agent: what the operator lets payloads do on this host.

Every check here runs before anything of the task runs, and a refusal is a :class:`PolicyError`
whose message starts with ``policy: `` and names the flag that would allow it. The module must stay
cheap to import (standard library only): the warm python workers import it for the module rules.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "DENIED_MODULES",
    "MAX_RESULT_BYTES",
    "REFUSED_ENV_NAMES",
    "REFUSED_ENV_PREFIXES",
    "ExecPolicy",
    "ModuleRule",
    "PayloadError",
    "PolicyError",
    "confine_cwd",
    "over_limit",
    "safe_component",
    "split_list",
]

# The controller's Limits.max_result_bytes (the agent never imports the controller: keep in step).
MAX_RESULT_BYTES = 262144

# Refused on a plaintext agent that has no --python-allow (the dev default allows every other
# module). Each one runs commands, loads code, or reads/writes files or processes by name, so a
# payload calling it directly is a shell by another name. A top-level name starting with "_" (the C
# halves: _io, _posixsubprocess, _ctypes...) is refused too. Listing one in --python-allow allows it.
DENIED_MODULES = frozenset(
    {
        "asyncio",
        "builtins",
        "code",
        "codeop",
        "corral",
        "ctypes",
        "fcntl",
        "gc",
        "glob",
        "importlib",
        "inspect",
        "io",
        "marshal",
        "mmap",
        "multiprocessing",
        "nt",
        "os",
        "pathlib",
        "pdb",
        "pickle",
        "pkgutil",
        "platform",
        "posix",
        "pty",
        "resource",
        "runpy",
        "shelve",
        "shutil",
        "signal",
        "site",
        "socket",
        "subprocess",
        "sys",
        "tempfile",
        "threading",
        "webbrowser",
        "zipimport",
    }
)

# Payload env names refused unless --env-allow lists them: they change how the dynamic loader, an
# interpreter or the shell behave before the task's own code runs, or they override what the agent
# sets (identity, home, GPUs).
REFUSED_ENV_PREFIXES = ("LD_", "PYTHON", "DYLD_", "BASH_FUNC_")
REFUSED_ENV_NAMES = frozenset(
    {
        "BASHOPTS",
        "BASH_ENV",
        "CDPATH",
        "CUDA_VISIBLE_DEVICES",
        "ENV",
        "GCONV_PATH",
        "GLIBC_TUNABLES",
        "GLOBIGNORE",
        "HOME",
        "HOSTALIASES",
        "IFS",
        "JAVA_TOOL_OPTIONS",
        "LOCPATH",
        "NLSPATH",
        "NODE_OPTIONS",
        "PATH",
        "PERL5LIB",
        "PERL5OPT",
        "PERLLIB",
        "PS4",
        "RESOLV_HOST_CONF",
        "RUBYLIB",
        "RUBYOPT",
        "SHELLOPTS",
        "TMPDIR",
        "_JAVA_OPTIONS",
    }
)
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_COMPONENT = re.compile(r"[A-Za-z0-9._-]{1,200}")


class PayloadError(ValueError):
    """The payload can never run (wrong shape); the attempt fails without retry."""


class PolicyError(PayloadError):
    """The payload is well formed but this agent's policy forbids it."""

    def __init__(self, message: str) -> None:
        super().__init__(f"policy: {message}")


def over_limit(size: int) -> str:
    """The error of a result of ``size`` bytes over :data:`MAX_RESULT_BYTES`."""
    return f"result is {size} bytes, over the {MAX_RESULT_BYTES}-byte limit"


def safe_component(name: str) -> bool:
    """Whether ``name`` (an attempt id) is usable as one path component under the work dir."""
    return bool(_COMPONENT.fullmatch(name)) and name not in (".", "..")


@dataclass(frozen=True)
class ModuleRule:
    """Which python modules payloads may name.

    ``allow`` is the operator's --python-allow list; ``open_default`` says what an empty list means:
    every module but :data:`DENIED_MODULES` (a plaintext dev agent) or none at all (a TLS agent).
    """

    allow: tuple[str, ...] = ()
    open_default: bool = True

    def refusal(self, module: str) -> str | None:
        """Why ``module`` may not be used here (``None`` when it may)."""
        if self.allow:
            if any(_within(module, prefix) for prefix in self.allow):
                return None
            return (
                f"python module {module!r} is not allowed on this agent; "
                f"allow it with --python-allow {module.split('.')[0]}"
            )
        top = module.split(".")[0]
        if not self.open_default:
            return f"python module {module!r} is not allowed on this agent; allow it with --python-allow {top}"
        if top in DENIED_MODULES or top.startswith("_"):
            return f"python module {module!r} is refused by default; allow it with --python-allow {top}"
        return None

    def to_args(self) -> list[str]:
        """The rule as command-line words for a python worker (see :meth:`from_args`)."""
        return ["open" if self.open_default else "closed", ",".join(self.allow)]

    @classmethod
    def from_args(cls, mode: str, allow: str) -> ModuleRule:
        """The inverse of :meth:`to_args`."""
        return cls(tuple(p for p in allow.split(",") if p), open_default=mode == "open")


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


@dataclass(frozen=True)
class ExecPolicy:
    """The whole policy of one agent (built from its flags)."""

    allow_shell: bool = True
    modules: ModuleRule = field(default_factory=ModuleRule)
    env_allow: frozenset[str] = frozenset()

    def check_shell(self) -> None:
        """Refuse shell tasks on an agent started with --no-shell."""
        if not self.allow_shell:
            raise PolicyError("shell tasks are disabled on this agent (--no-shell)")

    def check_function(self, spec: Any) -> None:
        """Refuse a python ``module:attr`` whose module is not allowed (before anything imports it)."""
        if not isinstance(spec, str) or spec.count(":") != 1:
            raise PayloadError("payload.function must look like 'module:attr'")
        module, attr = spec.split(":")
        if not module or not attr:
            raise PayloadError("payload.function must look like 'module:attr'")
        refusal = self.modules.refusal(module)
        if refusal is not None:
            raise PolicyError(refusal)
        if any(part.startswith("__") for part in attr.split(".")):
            raise PolicyError(f"{spec!r} names a dunder attribute, which tasks may not call")

    def check_env(self, env: Mapping[str, Any]) -> None:
        """Refuse payload env names that change the loader, an interpreter or the agent's own variables."""
        for name in env:
            if not isinstance(name, str) or not _ENV_NAME.fullmatch(name):
                raise PayloadError(f"payload.env name {str(name)[:64]!r} is not a valid variable name")
            if name.startswith("CORRAL_"):
                raise PolicyError(f"payload.env may not set {name}: CORRAL_* variables are set by the agent")
            if name in self.env_allow:
                continue
            if name in REFUSED_ENV_NAMES or name.startswith(REFUSED_ENV_PREFIXES):
                raise PolicyError(f"payload.env may not set {name} on this agent; allow it with --env-allow {name}")


def confine_cwd(attempt_dir: Path, cwd: str | None) -> Path:
    """The directory a shell task starts in: ``attempt_dir`` or a relative path inside it.

    Absolute paths and ``..`` are refused outright; the result is resolved (symlinks followed) and
    must stay inside the resolved attempt dir. Missing directories are created afterwards by the
    caller, so nothing is made outside the attempt dir.
    """
    root = attempt_dir.resolve()
    if cwd is None or cwd in ("", "."):
        return root
    if "\x00" in cwd:
        raise PayloadError("payload.cwd contains a NUL character")
    if os.path.isabs(cwd):
        raise PolicyError(f"payload.cwd must be relative to the attempt's directory, not {cwd[:128]!r}")
    if ".." in Path(cwd).parts:
        raise PolicyError(f"payload.cwd may not contain '..': {cwd[:128]!r}")
    target = (root / cwd).resolve()
    if not target.is_relative_to(root):
        raise PolicyError(f"payload.cwd {cwd[:128]!r} resolves outside the attempt's directory")
    return target


def split_list(values: Iterable[str]) -> tuple[str, ...]:
    """Flatten repeated comma-separated flag values into one tuple (order kept, blanks dropped)."""
    out: list[str] = []
    for value in values:
        out.extend(v.strip() for v in value.split(",") if v.strip())
    return tuple(out)
