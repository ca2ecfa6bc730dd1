"""The common heartbeat's fast check (issue 13): usage in range, no inventory, nothing else to say.

:func:`agent_input.check_heartbeat` builds a field path per number it checks (five f-strings and
five calls per heartbeat, thousands of heartbeats a second at 5,000 agents). A plain heartbeat, the
one an idle agent sends every interval, needs none of that: :func:`plain_ok` accepts it with one
chained comparison, and anything else (an inventory, a value out of range, NaN) goes to the full
check, which names the bad field. ``plain_ok`` never accepts what the full check refuses (held to
it by a property test).
"""

from __future__ import annotations

from corral.controller.spec import Limits
from corral.v1 import agent_pb2 as pb

__all__ = ["plain_ok"]

# The full check's bounds (agent_input._usage), as plain numbers: NaN fails every comparison.
_CPU_PERCENT = 100.0 * Limits.max_cpu_cores
_MEMORY_MB = Limits.max_memory_mb
_LOAD_1M = 1e9
_RUNNING = Limits.max_agent_attempts
_DISK_MB = Limits.max_disk_mb


def plain_ok(beat: pb.Heartbeat) -> bool:
    """True when ``beat`` is surely valid without the full check: no inventory, usage in range.

    False means "check it fully", not "invalid".
    """
    if beat.HasField("inventory"):
        return False
    usage = beat.usage  # an unset usage reads as zeros, which are in range
    return (
        0.0 <= usage.cpu_percent <= _CPU_PERCENT
        and 0 <= usage.memory_used_mb <= _MEMORY_MB
        and 0.0 <= usage.load_1m <= _LOAD_1M
        and 0 <= usage.running_attempts <= _RUNNING
        and 0 <= usage.disk_free_mb <= _DISK_MB
    )
