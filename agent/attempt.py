"""The values shared by the runners: how an attempt ended, and why it was stopped."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

from corral.v1 import types_pb2

__all__ = ["AttemptResult", "Run", "StopReason"]


class StopReason(enum.Enum):
    """Why the agent stopped an attempt before it ended by itself."""

    CANCELLED = "cancelled"  # the controller asked (Cancel)
    TIMED_OUT = "timed out"  # timeout_s elapsed
    KILLED = "killed"  # reassigned elsewhere (Welcome.kill_attempt_ids): not reported
    DRAINED = "drained"  # the agent is draining and the grace is over: given back to the controller
    FENCED = "fenced"  # the agent stopped renewing the lease (cut off from the controller too long)


@dataclass(frozen=True, slots=True)
class AttemptResult:
    """The Finished report of an attempt."""

    outcome: int
    exit_code: int = 0
    result_json: bytes = b""
    error: str = ""
    retryable: bool = False
    oom_killed: bool = False  # the kernel killed it at its memory limit (Finished.oom_killed)
    # Measured usage (Finished.peak_rss_bytes, Finished.cpu_s; 0 when not measured): see
    # corral.agent.usage for what each runner measures.
    peak_rss_bytes: int = 0
    cpu_s: float = 0.0

    @classmethod
    def failed(cls, error: str, *, retryable: bool, exit_code: int = 0) -> AttemptResult:
        """A FAILED result."""
        return cls(types_pb2.ATTEMPT_OUTCOME_FAILED, exit_code=exit_code, error=error, retryable=retryable)

    @classmethod
    def stopped(cls, reason: StopReason, detail: str = "", exit_code: int = 0) -> AttemptResult:
        """The result of an attempt the agent stopped for ``reason``."""
        outcome = {
            StopReason.CANCELLED: types_pb2.ATTEMPT_OUTCOME_CANCELLED,
            StopReason.TIMED_OUT: types_pb2.ATTEMPT_OUTCOME_TIMED_OUT,
            StopReason.KILLED: types_pb2.ATTEMPT_OUTCOME_LOST,
            # LOST: the controller requeues it without spending a retry.
            StopReason.DRAINED: types_pb2.ATTEMPT_OUTCOME_LOST,
            StopReason.FENCED: types_pb2.ATTEMPT_OUTCOME_FENCED,
        }[reason]
        error = reason.value + (f": {detail}" if detail else "")
        retryable = reason is not StopReason.CANCELLED
        return cls(outcome, exit_code=exit_code, error=error, retryable=retryable)


class Run(Protocol):
    """A started attempt, whatever runs it (a shell process or a warm python worker)."""

    @property
    def pid(self) -> int:
        """The process reported in Started."""
        ...

    def take_output(self) -> tuple[bytes, bytes, bool]:
        """New stdout, new stderr since the previous call, and whether output was truncated."""
        ...

    def request_stop(self, reason: StopReason, *, force: bool, grace_s: float) -> None:
        """Begin stopping the attempt (idempotent); :meth:`finish` then reports ``reason``."""
        ...

    async def finish(self) -> AttemptResult:
        """Wait until the attempt is over and every process it started is gone."""
        ...
