"""Task events waiting to be sent, and Finished reports kept until the controller acknowledges them.

One sender drains :meth:`Outbox.take` whenever :meth:`Outbox.wait` wakes it, so an idle agent
reports at once and a busy one sends big batches, without any timer. Finished reports stay in
``unacked`` until an Ack names them; after a reconnect they are all queued again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

from google.protobuf import timestamp_pb2

from corral.agent.attempt import AttemptResult
from corral.v1 import agent_pb2

__all__ = ["ACCEPTED_DELAY_S", "DEFAULT_OUTPUT_BACKLOG", "Outbox"]

DEFAULT_OUTPUT_BACKLOG = 16 << 20
STARTED_DELAY_S = 0.005
# Accepted reports are held this long: most prefetched attempts start sooner, and their Started
# acknowledges the assignment too (one report less for both ends to handle); the controller's
# assignment lease (3 s by default) leaves ample time for the rest.
ACCEPTED_DELAY_S = 0.25

_TaskEvent = agent_pb2.TaskEvent
_Timestamp = timestamp_pb2.Timestamp
_ACCEPTED = agent_pb2.Accepted()
_RELEASED = agent_pb2.Released()


def _now() -> timestamp_pb2.Timestamp:
    ns = time.time_ns()
    return _Timestamp(seconds=ns // 1_000_000_000, nanos=ns % 1_000_000_000)


class Outbox:
    """The agent's outgoing task events (an implementation of the runners' event sink)."""

    def __init__(self, output_backlog: int = DEFAULT_OUTPUT_BACKLOG) -> None:
        self._pending: list[agent_pb2.TaskEvent] = []
        self._unacked: dict[str, agent_pb2.TaskEvent] = {}
        self._wake = asyncio.Event()
        self._output_bytes = 0
        self._output_backlog = output_backlog
        self._due: float | None = None  # when held-back Started or Accepted reports must go out
        self._accepted: dict[str, float] = {}  # attempt id -> when its held Accepted must go out
        self.accepted_delay_s = ACCEPTED_DELAY_S
        self.dropped_output = 0

    # -- producers ---------------------------------------------------------------------------

    def started(self, attempt_id: str, pid: int) -> None:
        """An attempt's process started.

        The report waits up to STARTED_DELAY_S without waking the sender: most tasks finish
        sooner, and then it travels in the same message as the Finished report.
        """
        self._pending.append(_TaskEvent(attempt_id=attempt_id, at=_now(), started=agent_pb2.Started(pid=pid)))
        self._hold(STARTED_DELAY_S)

    def accepted(self, attempt_id: str) -> None:
        """The agent holds a new assignment (the controller takes back what is not acknowledged).

        Held back for ``accepted_delay_s``, even when other messages go meanwhile: an attempt that
        starts (or is released) before then says so with its Started (or Released), which
        acknowledges the assignment as well, so a prefetched attempt that starts soon costs the
        controller one report less. Only attempts still queued then are reported Accepted.
        """
        due = time.monotonic() + self.accepted_delay_s
        self._accepted[attempt_id] = due
        if self._due is None or due < self._due:
            self._due = due
            # The sender may be asleep until its next heartbeat: have it wait for this instead.
            self._wake.set()

    def _hold(self, delay: float) -> None:
        due = time.monotonic() + delay
        if self._due is None or due < self._due:
            self._due = due

    def released(self, attempt_id: str) -> None:
        """A cancelled assignment was given back before it started: the controller may place it elsewhere."""
        self._push(_TaskEvent(attempt_id=attempt_id, at=_now(), released=_RELEASED))

    def output(self, attempt_id: str, stdout: bytes, stderr: bytes, truncated: bool) -> None:
        """New output of a running attempt; dropped when too much is already waiting (disconnected)."""
        size = len(stdout) + len(stderr)
        if self._output_bytes + size > self._output_backlog:
            self.dropped_output += 1
            return
        self._output_bytes += size
        output = agent_pb2.Output(stdout=stdout, stderr=stderr, truncated=truncated)
        self._push(_TaskEvent(attempt_id=attempt_id, at=_now(), output=output))

    def checkpoint(self, attempt_id: str, data: bytes) -> None:
        """A running attempt saved its state (JSON); sent at once, never re-sent (the next one replaces it)."""
        self._push(_TaskEvent(attempt_id=attempt_id, at=_now(), checkpoint=agent_pb2.Checkpoint(data_json=data)))

    def spawn(self, attempt_id: str, tasks_json: bytes) -> None:
        """A running attempt adds tasks to its workflow (a JSON list); best-effort like Output."""
        self._push(_TaskEvent(attempt_id=attempt_id, at=_now(), spawn=agent_pb2.Spawn(tasks_json=tasks_json)))

    def finished(self, attempt_id: str, result: AttemptResult) -> None:
        """An attempt ended: report it, and keep the report until it is acknowledged."""
        finished = agent_pb2.Finished(
            outcome=result.outcome,  # type: ignore[arg-type]
            exit_code=result.exit_code,
            result_json=result.result_json,
            error=result.error,
            retryable=result.retryable,
            # (AttemptResult.oom_killed comes with the supervisor; absent before it.)
            oom_killed=getattr(result, "oom_killed", False),
            peak_rss_bytes=result.peak_rss_bytes,
            cpu_s=result.cpu_s,
        )
        event = _TaskEvent(attempt_id=attempt_id, at=_now(), finished=finished)
        self._unacked[attempt_id] = event
        self._push(event)

    def _push(self, event: agent_pb2.TaskEvent) -> None:
        self._pending.append(event)
        self._wake.set()

    # -- the sender ----------------------------------------------------------------------------

    def take(self, hold: bool = True) -> list[agent_pb2.TaskEvent]:
        """Everything pending, in order (and clear it), then the Accepted reports now due (all of
        them when ``hold`` is False: the stream is closing).

        An attempt with any report in this message needs no Accepted: Started, Finished or
        Released says more, and acknowledges the assignment as well.
        """
        events, self._pending = self._pending, []
        self._output_bytes = 0
        self._due = None
        self._wake.clear()
        held = self._accepted
        if held:
            for event in events:
                held.pop(event.attempt_id, None)
            now = time.monotonic()
            due = [attempt_id for attempt_id, when in held.items() if not hold or when <= now]
            for attempt_id in due:
                del held[attempt_id]
                events.append(_TaskEvent(attempt_id=attempt_id, accepted=_ACCEPTED))
            if held:
                self._due = min(held.values())
        return events

    async def wait(self, timeout: float | None) -> None:
        """Return when there is something to send, :meth:`poke` was called, or after ``timeout``."""
        wake = self._wake
        if self._due is not None:
            until_due = max(0.0, self._due - time.monotonic())
            timeout = until_due if timeout is None else min(timeout, until_due)
        if not wake.is_set() and (not self._pending or self._due is not None):
            try:
                async with asyncio.timeout(timeout):
                    await wake.wait()
            except TimeoutError:
                pass
        wake.clear()

    def poke(self) -> None:
        """Wake the sender now (e.g. to send a heartbeat at once)."""
        self._wake.set()

    # -- the session -----------------------------------------------------------------------------

    def on_welcome(self, kill_attempt_ids: Iterable[str]) -> None:
        """A new stream: forget killed attempts and queue every unacknowledged Finished again.

        Events in flight when the previous stream broke may be lost; Started and Output are
        best-effort, but Finished reports are re-sent until acknowledged. They go after the other
        pending events so an attempt's output never arrives after its Finished.
        """
        self.discard(kill_attempt_ids)
        events = [e for e in self._pending if not e.HasField("finished")]
        events.extend(self._unacked.values())
        self._pending = events
        if events:
            self._wake.set()

    def ack(self, attempt_ids: Iterable[str]) -> list[str]:
        """The controller applied these Finished reports; returns the ids that were forgotten."""
        forgotten = []
        for attempt_id in attempt_ids:
            if self._unacked.pop(attempt_id, None) is not None:
                forgotten.append(attempt_id)
        return forgotten

    def discard(self, attempt_ids: Iterable[str]) -> None:
        """Drop every event of these attempts without reporting them."""
        ids = set(attempt_ids)
        if not ids:
            return
        for attempt_id in ids:
            self._unacked.pop(attempt_id, None)
            self._accepted.pop(attempt_id, None)
        self._pending = [e for e in self._pending if e.attempt_id not in ids]

    @property
    def unacked_ids(self) -> list[str]:
        """Attempts whose Finished report awaits an Ack."""
        return list(self._unacked)

    @property
    def pending_count(self) -> int:
        """Events waiting to be sent (held Accepted reports included)."""
        return len(self._pending) + len(self._accepted)
