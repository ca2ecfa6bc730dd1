"""The environment a task starts with: a clean base, the agent's CORRAL_* variables, and the payload's
own ``env`` (secrets resolved) once the policy has passed it.

Nothing of the agent's own environment reaches a task except the names the operator passes on
with ``--pass-env``: a credential or a PYTHONPATH in the agent's environment stays with the agent.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from corral.agent.policy import ExecPolicy, PayloadError

__all__ = ["BASE_PATH", "base_env", "identity_env", "payload_env"]

BASE_PATH = "/usr/local/bin:/usr/bin:/bin"


def base_env(home: Path, passed: Mapping[str, str]) -> dict[str, str]:
    """The clean base: PATH, a UTF-8 locale, HOME and TMPDIR inside ``home``, plus ``passed``."""
    env = {
        "PATH": BASE_PATH,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "HOME": str(home),
        "TMPDIR": str(home / "tmp"),
    }
    env.update(passed)
    return env


def identity_env(
    task_id: str, task_name: str, workflow_id: str, attempt_id: str, gpu_ids: list[int] | None, has_gpus: bool
) -> dict[str, str]:
    """The CORRAL_* identity variables of an attempt, and CUDA_VISIBLE_DEVICES on a GPU machine."""
    env = {
        "CORRAL_TASK_ID": task_id,
        "CORRAL_TASK_NAME": task_name,
        "CORRAL_WORKFLOW_ID": workflow_id,
        "CORRAL_ATTEMPT_ID": attempt_id,
    }
    if gpu_ids or has_gpus:
        # Empty on a GPU machine for tasks that got none: they must not grab a device by default.
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in gpu_ids or ())
    return env


def payload_env(raw: Any, policy: ExecPolicy, secrets: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """Check a payload's ``env`` and resolve it: (variables, secrets used as name -> value).

    A value is a string, or ``{"secret": NAME}`` taking the value of the attempt's secret NAME; a
    secret the controller did not deliver fails the attempt before anything runs.
    """
    if raw is None:
        return {}, {}
    if not isinstance(raw, dict):
        raise PayloadError("payload.env must be an object")
    policy.check_env(raw)
    env: dict[str, str] = {}
    used: dict[str, str] = {}
    for name, value in raw.items():
        if isinstance(value, dict):
            secret = value.get("secret")
            if set(value) != {"secret"} or not isinstance(secret, str) or not secret:
                raise PayloadError(f'payload.env.{name} must be a string or {{"secret": NAME}}')
            if secret not in secrets:
                raise PayloadError(f"payload.env.{name}: secret {secret[:128]!r} was not delivered with this attempt")
            value = secrets[secret]
            used[secret] = value
        elif isinstance(value, bool | int | float):
            value = str(value)
        elif not isinstance(value, str):
            raise PayloadError(f"payload.env.{name} must be a string")
        if "\x00" in value:
            raise PayloadError(f"payload.env.{name} contains a NUL character")
        env[name] = value
    return env, used
