"""The states, events and instructions of :mod:`corral.agent.lifecycle`'s machine: plain values.

Events come in (an assignment, a runner's answer, a controller message); instructions go out to
the thin shell (:mod:`corral.agent.executor`). Apart so the machine's module holds only the
machine and its table.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from corral.agent.attempt import AttemptResult, StopReason
from corral.v1 import types_pb2

__all__ = [
    "Acked",
    "Adopted",
    "Assigned",
    "Cancel",
    "Drain",
    "Ended",
    "Event",
    "Forget",
    "GotOutput",
    "Instruction",
    "InvalidTransition",
    "KillAll",
    "KillSilently",
    "ReportAccepted",
    "ReportFinished",
    "ReportOutput",
    "ReportReleased",
    "ReportStarted",
    "Stage",
    "StageRefused",
    "Start",
    "StartFailed",
    "Started",
    "State",
    "Stop",
    "TimedOut",
    "Unstaged",
    "Withdraw",
]


class State(enum.Enum):
    """Where one attempt is. Forgotten attempts (acknowledged, released, killed) leave the machine."""

    QUEUED = "queued"  # held here, waiting for a free slot
    STAGED = "staged"  # handed to the worker of a running attempt, to start when that one ends
    STARTING = "starting"  # Start issued, the runner has not answered yet
    RUNNING = "running"
    STOPPING = "stopping"  # Stop issued, waiting for the run to end
    DONE = "done"  # Finished reported, kept until the controller acknowledges it

    # Identity hashing in C: the table is looked up with a State on every event (Enum's own
    # __hash__ is Python code). Members are singletons, so this is the same equality.
    __hash__ = object.__hash__


class InvalidTransition(RuntimeError):
    """An event that cannot happen to an attempt in its state (a bug in the shell, never bad input)."""


# -- events ---------------------------------------------------------------------------------------
# Events and instructions are plain values, never changed once made. They are not frozen
# dataclasses only because those cost about 2.5x as much to build, and a task makes about ten.


@dataclass(slots=True)
class Assigned:
    """The controller assigned an attempt (a known attempt id is ignored)."""

    assignment: types_pb2.TaskAssignment


@dataclass(slots=True)
class Started:
    """The runner started the attempt: ``pid`` is the process reported in Started."""

    attempt_id: str
    pid: int


@dataclass(slots=True)
class StartFailed:
    """The runner could not start the attempt (policy, bad payload, missing command...)."""

    attempt_id: str
    result: AttemptResult


@dataclass(slots=True)
class GotOutput:
    """New output of a running attempt, read by the shell."""

    attempt_id: str
    stdout: bytes
    stderr: bytes
    truncated: bool


@dataclass(slots=True)
class Ended:
    """The run is over (the attempt and every process it started are gone)."""

    attempt_id: str
    result: AttemptResult


@dataclass(slots=True)
class Cancel:
    """The controller's Cancel: queued attempts are released; running ones stopped unless ``release_only``."""

    attempt_id: str
    force: bool
    grace_s: float
    release_only: bool = False


@dataclass(slots=True)
class KillSilently:
    """The attempt was reassigned elsewhere (Welcome.kill_attempt_ids): stop it, report nothing."""

    attempt_id: str


@dataclass(slots=True)
class Acked:
    """The controller applied the attempt's Finished report: forget it (and its folders)."""

    attempt_id: str


@dataclass(slots=True)
class TimedOut:
    """The shell's timeout timer fired: the primary one for a runner that does not time its attempts
    (``force`` False, the kill grace), a backstop past timeout + grace for one that does (``force``)."""

    attempt_id: str
    force: bool = True
    grace_s: float = 0.0


@dataclass(slots=True)
class Drain:
    """Take nothing new; queued attempts go back to the controller (Finished DRAINED, not started)."""


@dataclass(slots=True)
class KillAll:
    """Stop everything: the drain grace is over (``force`` False) or a second signal came (True)."""

    force: bool
    grace_s: float


@dataclass(slots=True)
class Adopted:
    """An attempt found after an agent restart: still running (``pid``) or finished (``result``)."""

    attempt_id: str
    pid: int | None = None
    result: AttemptResult | None = None


@dataclass(slots=True)
class Unstaged:
    """The shell took a staged attempt back from its worker before it started (a Withdraw that
    succeeded): it waits for a slot again, or goes as a queued attempt would (cancelled, drained)."""

    attempt_id: str


@dataclass(slots=True)
class StageRefused:
    """The shell could not stage the attempt behind its leader (the worker is gone or busy otherwise,
    or the policy refuses the payload): it waits for a slot again; that leader takes no follower."""

    attempt_id: str


Event = (
    Assigned
    | Started
    | StartFailed
    | GotOutput
    | Ended
    | Cancel
    | KillSilently
    | Acked
    | TimedOut
    | Drain
    | KillAll
    | Adopted
    | Unstaged
    | StageRefused
)

# -- instructions -----------------------------------------------------------------------------------


@dataclass(slots=True)
class Start:
    """Start the attempt with the runner of its agent type."""

    attempt_id: str
    assignment: types_pb2.TaskAssignment


@dataclass(slots=True)
class Stage:
    """Hand the attempt to the worker running ``leader_id``, to start there as soon as the leader
    answers (it then inherits the leader's slot), unless it is withdrawn first."""

    attempt_id: str
    leader_id: str
    assignment: types_pb2.TaskAssignment


@dataclass(slots=True)
class Withdraw:
    """Take a staged attempt back from its worker: the shell applies Unstaged when it had not started;
    otherwise nothing (it has started, or is about to: its leader has answered)."""

    attempt_id: str


@dataclass(slots=True)
class Stop:
    """Ask the run to stop (idempotent; ``force`` escalates to SIGKILL at once)."""

    attempt_id: str
    reason: StopReason
    force: bool
    grace_s: float


@dataclass(slots=True)
class ReportAccepted:
    """Tell the controller the assignment is held here."""

    attempt_id: str


@dataclass(slots=True)
class ReportReleased:
    """Tell the controller a cancelled assignment was given back, never started."""

    attempt_id: str


@dataclass(slots=True)
class ReportStarted:
    """Tell the controller the attempt started."""

    attempt_id: str
    pid: int


@dataclass(slots=True)
class ReportOutput:
    """Stream new output to the controller."""

    attempt_id: str
    stdout: bytes
    stderr: bytes
    truncated: bool


@dataclass(slots=True)
class ReportFinished:
    """Report how the attempt ended (kept by the outbox until acknowledged)."""

    attempt_id: str
    result: AttemptResult


@dataclass(slots=True)
class Forget:
    """The attempt is gone from the machine: remove its folders (task and supervisor control folder)."""

    attempt_id: str
    agent_type: str  # "" for an adopted attempt (its type was not kept on disk)
    adopted: bool


Instruction = (
    Start
    | Stage
    | Withdraw
    | Stop
    | ReportAccepted
    | ReportReleased
    | ReportStarted
    | ReportOutput
    | ReportFinished
    | Forget
)
