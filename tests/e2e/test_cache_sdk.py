"""End to end (issue 10): the SDK's executor conveniences and submission options against real processes.

``execute_parallel``, ``execute_sequential`` and ``execute_with_timeout`` build a workflow and run it;
the tasks write a ledger (start and end times) that shows how they really ran.
"""

from __future__ import annotations

import asyncio
import shlex
import time
from pathlib import Path
from typing import Any

import pytest

from corral.controller.sdk.client import Client
from corral.controller.sdk.errors import InvalidArgumentError
from corral.controller.sdk.sync import SyncClient
from tests.e2e.conftest import Cluster


def _timed(name: str, ledger: Path, work: str, result: str) -> dict[str, Any]:
    path = shlex.quote(str(ledger))
    stamp = "read _up _rest < /proc/uptime"
    script = (
        f'{stamp}; echo "$_up start {name}" >> {path}; {work}; '
        f'{stamp}; echo "$_up end {name}" >> {path}; echo {shlex.quote(result)}'
    )
    return {"name": name, "payload": {"shell": script}}


def _intervals(ledger: Path) -> dict[str, list[float]]:
    spans: dict[str, list[float]] = {}
    for line in ledger.read_text().splitlines():
        at, _kind, name = line.split()
        spans.setdefault(name, []).append(float(at))
    return spans


def _max_overlap(spans: dict[str, list[float]]) -> int:
    points = sorted([(s[0], 1) for s in spans.values()] + [(s[1], -1) for s in spans.values()])
    running = peak = 0
    for _, delta in points:
        running += delta
        peak = max(peak, running)
    return peak


def test_execute_parallel_sequential_and_with_timeout(cluster: Cluster, tmp_path: Path) -> None:
    api = cluster.start({"wide": 4})
    address = cluster.controller.address

    async def scenario() -> None:
        async with Client(address) as client:
            ledger = tmp_path / "parallel"
            tasks = [_timed(f"p{i}", ledger, "sleep 0.6", f'{{"i": {i}}}') for i in range(4)]
            result = await client.execute_parallel(tasks, max_workers=2, timeout=60)
            assert result.state == "completed", result.error
            assert result.results == {f"p{i}": {"i": i} for i in range(4)}
            spans = _intervals(ledger)
            assert set(spans) == {f"p{i}" for i in range(4)} and all(len(s) == 2 for s in spans.values())
            assert _max_overlap(spans) <= 2, spans  # max_workers on 4 free slots

            chain = tmp_path / "chain"
            steps = [
                _timed("s0", chain, "true", "1"),
                _timed("s1", chain, "true", "x") | {"payload": {"shell": 'echo "$CORRAL_INPUTS"'}},
                _timed("s2", chain, "true", "2"),
            ]
            result = await client.execute_sequential(steps, timeout=60)
            assert result.state == "completed", result.error
            assert result.results["s1"] == {"s0": 1}  # each step receives the one before
            spans = _intervals(chain)
            assert spans["s0"][1] <= spans["s2"][0]

            started = time.monotonic()
            result = await client.execute_with_timeout({"name": "slow", "payload": {"shell": "sleep 30"}}, 1.0)
            elapsed = time.monotonic() - started
            assert result.state == "failed"
            (task,) = result.tasks
            assert task.state == "failed" and "time" in task.error.lower(), task.error
            # 1 s timeout + the agents' 1 s kill grace, with 3x slack plus start-up.
            assert elapsed < 12, elapsed

            with pytest.raises(InvalidArgumentError) as exc:
                await client.execute_parallel(tasks, max_workers=0)
            assert exc.value.violations[0].field == "max_workers"

    asyncio.run(scenario())

    # The blocking client has the same helpers, and submit/execute take params.
    with SyncClient(address) as client:
        spec = {
            "name": "p",
            "params": {"n": 1},
            "tasks": [{"name": "t", "payload": {"shell": "echo ${params.n}"}, "cache": True}],
        }
        result = client.execute(spec, params={"n": 41}, timeout=60)
        assert result.results == {"t": 41}
        again = client.execute(spec, params={"n": 41}, timeout=60)
        assert again.tasks[0].cached and again.tasks[0].cache_source.startswith(result.workflow_id)
        assert client.clear_cache() == (1, 0)
        result = client.execute_sequential([{"name": "only", "payload": {"shell": "echo 5"}}], timeout=60)
        assert result.results == {"only": 5}
    assert api.connected_agents() == {"wide"}
