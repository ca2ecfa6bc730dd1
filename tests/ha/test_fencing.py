"""A frozen leader is deposed, and none of its writes lands after a standby took over.

Real processes on the real PostgreSQL: two controllers; the leader is frozen (SIGSTOP) past its
lease; the standby takes over (a new epoch) and commits; the old leader is resumed with a write
waiting in its socket. That write is refused (UNAVAILABLE), the old leader steps down to standby
(NOT_SERVING, naming the new leader), and the database holds no row of it.
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2

from tests.ha.group import ha_group, require_postgres_store, wait_until

TTL = 2.0


def spec(name: str) -> dict[str, Any]:
    return {"name": name, "tasks": [{"name": "t", "agent_type": "shell", "payload": {"shell": "true"}}]}


# Two controller processes (~30 s on a loaded machine): make chaos. make test covers the same
# fence in-process (test_store_fence.py) and the step-down (test_node.py).
@pytest.mark.chaos
def test_a_frozen_leader_is_fenced_and_steps_down(tmp_path: Path, pg_dsn: str) -> None:
    require_postgres_store()
    with ha_group(tmp_path, pg_dsn, ttl=TTL) as group:
        first, second = group.start(2)
        old = group.leader()
        new_one = second if old is first else first
        lease = group.lease()
        assert lease is not None
        epoch = lease[0]
        old.submit(spec("before-freeze-w0"))

        os.kill(old.proc.pid, signal.SIGSTOP)
        # The standby takes over once the frozen leader's lease has expired on the database clock.
        wait_until(lambda: group.lease() is not None and group.lease()[0] > epoch, 3 * (TTL + 1), "a new epoch")
        leader = group.leader(other_than=old)
        assert leader is new_one
        new_one.submit(spec("after-takeover-w1"))

        # A write to the old leader, sent while it is frozen: it reaches the process on SIGCONT.
        outcome: dict[str, Any] = {}

        def late_write() -> None:
            try:
                outcome["id"] = old.submit(spec("frozen-leader-w2"), timeout=30)
            except grpc.RpcError as exc:
                outcome["code"] = exc.code()

        writer = threading.Thread(target=late_write)
        writer.start()
        os.kill(old.proc.pid, signal.SIGCONT)
        writer.join(40)
        assert not writer.is_alive()
        assert outcome.get("code") is grpc.StatusCode.UNAVAILABLE, f"{outcome}\n{old.log()}"

        # It stepped down: a standby naming the new leader; the new leader goes on serving.
        stood_by = wait_until(lambda: old.health() == health_pb2.HealthCheckResponse.NOT_SERVING, 3 * TTL, "standby")
        assert stood_by, old.log()
        # Logged once the old term's server and state loop have stopped and the standby is bound.
        wait_until(lambda: "stepped down from epoch" in old.log(), 3 * TTL, "the step-down in the log")
        with pytest.raises(grpc.RpcError) as refused:
            old.submit(spec("to-the-standby-w3"))
        assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
        assert dict(refused.value.trailing_metadata() or ()).get("corral-leader") == new_one.address
        assert new_one.serving() and old.alive

        # Checked in the database: the writes of the live terms are there, the deposed one's are not.
        assert group.rows_mentioning("before-freeze-w0")
        assert group.rows_mentioning("after-takeover-w1")
        assert group.rows_mentioning("frozen-leader-w2") == {}
        assert group.rows_mentioning("to-the-standby-w3") == {}
