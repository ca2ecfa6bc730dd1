"""Schedules and delayed starts through the SDK, against a real controller (issue 10 §7)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from corral.controller.sdk import Client, InvalidArgumentError, NotFoundError, Workflow
from tests.procs import Cluster

pytestmark = pytest.mark.e2e


def _template(name: str = "nightly", **fields: object) -> Workflow:
    wf = Workflow(name, **fields)  # type: ignore[arg-type]
    wf.shell("a", shell="true")
    return wf


async def test_schedule_methods(cluster: Cluster) -> None:
    async with Client(cluster.address) as client:
        info = await client.create_schedule(_template(), cron="30 2 * * *", timezone="Europe/Berlin", catchup=3)
        assert (info.name, info.workflow_name, info.overlap, info.catchup, info.paused) == (
            "nightly",
            "nightly",
            "skip",
            3,
            False,
        )
        assert info.next_fire is not None and info.next_fire > datetime.now(UTC)
        local = info.next_fire.astimezone(ZoneInfo("Europe/Berlin"))
        assert (local.hour, local.minute) == (2, 30) or local.hour == 3  # 03:00 only on a spring-forward night
        assert [s.schedule_id for s in await client.list_schedules()] == [info.schedule_id]
        assert (await client.pause_schedule("nightly")).paused
        assert not (await client.resume_schedule(info.schedule_id)).paused
        await client.delete_schedule("nightly")
        assert await client.list_schedules() == []
        with pytest.raises(NotFoundError):
            await client.pause_schedule("nightly")
        with pytest.raises(InvalidArgumentError) as bad:
            await client.create_schedule(_template(), cron="*/5 * * *")
        assert [v.field for v in bad.value.violations] == ["cron"]


async def test_a_delayed_start_from_the_builder(cluster: Cluster) -> None:
    async with Client(cluster.address) as client:
        submission = await client.submit(_template("later", scheduled_at=timedelta(hours=1)), start=True)
        status = await client.status(submission.workflow_id)
        assert status.state == "running" and status.schedule_id == ""
        assert status.scheduled_at is not None
        assert 3500 < status.scheduled_at.timestamp() - time.time() <= 3600
        (task,) = status.tasks
        assert task.state == "pending" and task.waiting_reason.startswith("scheduled at ")


def test_the_sync_client_has_the_schedule_methods(cluster: Cluster) -> None:
    from corral.controller.sdk import SyncClient

    with SyncClient(cluster.address) as client:
        info = client.create_schedule(_template("sync"), cron="0 * * * *", overlap="allow", catchup=0)
        assert (info.overlap, info.catchup) == ("allow", 0)
        assert [s.name for s in client.list_schedules()] == ["sync"]
        assert client.pause_schedule("sync").paused and not client.resume_schedule("sync").paused
        client.delete_schedule("sync")
        assert client.list_schedules() == []
