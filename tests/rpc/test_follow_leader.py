"""Issue 12: clients and agents given several controllers end up on the leader.

A real controller (Runtime, SQLite, gRPC server on port 0) plays the leader; a real gRPC server that
answers every call UNAVAILABLE with the ``corral-leader`` trailer plays a standby (that trailer is
the contract, see tests/standby.py); a free port with nothing behind it plays a dead controller.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from corral.controller.sdk import Client, UnavailableError, Workflow
from corral.controller.sdk.errors import InvalidArgumentError
from corral.protocol import PROTOCOL_VERSION
from tests.procs import corral, start_agent, stop
from tests.standby import Standby, start_standby

from .conftest import Controller


def dead_address() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


def small(name: str = "followed") -> Workflow:
    wf = Workflow(name)
    wf.shell("a", shell="true")
    return wf


@pytest.fixture
async def standby(controller: Controller) -> AsyncIterator[Standby]:
    """A standby naming the real controller as the leader."""
    server = await start_standby(controller.address)
    try:
        yield server
    finally:
        await server.stop()


async def test_a_client_follows_the_standbys_hint(controller: Controller, standby: Standby) -> None:
    async with Client(standby.address) as client:
        # An unkeyed submit is no retry-safe write, but a standby's refusal did nothing: it follows.
        submission = await client.submit(small(), start=False)
        assert client.address == controller.address
        status = await client.status(submission.workflow_id)
    assert status.state == "pending"
    assert standby.methods == ["SubmitWorkflow"]  # once, then straight to the leader
    assert standby.calls[0][1]["corral-protocol"] == str(PROTOCOL_VERSION)
    assert controller.stored()[0] == 1


async def test_a_client_goes_down_its_list(controller: Controller) -> None:
    lost = await start_standby("")  # a standby that knows no leader yet
    try:
        async with Client(f"{dead_address()}, {lost.address},{controller.address}") as client:
            page = await client.list_workflows()
            assert client.address == controller.address
            assert client.addresses[2] == controller.address
    finally:
        await lost.stop()
    assert page.workflows == ()
    assert lost.methods == ["ListWorkflows"]


async def test_a_write_of_unknown_outcome_is_sent_again_only_with_an_idempotency_key(controller: Controller) -> None:
    # UNAVAILABLE without the trailer: a leader that went away with the call in flight.
    lost = await start_standby(with_trailer=False)
    try:
        async with Client(f"{lost.address},{controller.address}") as client:
            with pytest.raises(UnavailableError):
                await client.submit(small(), start=False)
            assert client.address == lost.address  # it did not move on
            assert controller.stored()[0] == 0
            submission = await client.submit(small(), start=False, idempotency_key="k-1")
            assert client.address == controller.address
    finally:
        await lost.stop()
    assert lost.methods == ["SubmitWorkflow", "SubmitWorkflow"]
    assert not submission.deduplicated and controller.stored()[0] == 1


async def test_the_search_for_a_leader_is_bounded() -> None:
    lone = await start_standby("")  # a standby that never learns of a leader
    try:
        async with Client(lone.address, follow_timeout=1.0) as client:
            started = time.monotonic()
            with pytest.raises(UnavailableError, match=r"no leader: the controller at .* is a standby"):
                await client.list_workflows()
            assert time.monotonic() - started < 3 * (1.0 + 1.0)  # the follow timeout + a last backoff
    finally:
        await lone.stop()
    assert 2 <= len(lone.calls) <= 12  # backed off (0.05 s doubling), not a busy loop


async def test_every_address_silent_is_one_clear_error() -> None:
    first, second = dead_address(), dead_address()
    async with Client(f"{first},{second}") as client:
        with pytest.raises(UnavailableError, match=r"cannot reach any controller at .* are they running"):
            await client.list_workflows()


def test_a_malformed_list_is_refused_at_once() -> None:
    with pytest.raises(InvalidArgumentError) as info:
        Client("a:1,,b:2")
    assert info.value.violations[0].field == "address"


async def test_watch_follows_the_hint(controller: Controller, standby: Standby) -> None:
    async with Client(controller.address) as client:
        submission = await client.submit(small("watched"), start=False)
        await client.cancel(submission.workflow_id)
    async with Client(standby.address) as client:
        events = [e async for e in client.watch(submission.workflow_id)]
    assert events[-1].is_final and events[-1].workflow_state == "cancelled"
    assert standby.methods == ["WatchWorkflow"]


async def _agent_connected(controller: Controller, name: str, timeout: float = 30.0) -> None:
    async with Client(controller.address) as client:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(a.name == name and a.state == "connected" for a in await client.list_agents()):
                return
            await asyncio.sleep(0.1)
    raise AssertionError(f"agent {name} did not connect to the leader within {timeout} s")


async def test_real_agents_reach_the_leader_by_hint_and_by_list(
    controller: Controller, standby: Standby, tmp_path: Path
) -> None:
    lost = await start_standby("")
    by_hint = start_agent(tmp_path, standby.address, "by-hint")
    by_list = start_agent(tmp_path, f"{dead_address()},{lost.address},{controller.address}", "by-list")
    try:
        await _agent_connected(controller, "by-hint")
        await _agent_connected(controller, "by-list")
    finally:
        await asyncio.to_thread(stop, by_hint)
        await asyncio.to_thread(stop, by_list)
        await lost.stop()
    connects = [metadata for method, metadata in standby.calls if method.endswith("/Connect")]
    assert connects and connects[0]["corral-protocol"] == str(PROTOCOL_VERSION)
    assert "Connect" in lost.methods


async def test_the_cli_takes_an_address_list(controller: Controller, standby: Standby) -> None:
    address = f"{dead_address()},{standby.address}"
    result = await asyncio.to_thread(corral, "list", "-o", "json", "--address", address)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
    bad = await asyncio.to_thread(corral, "list", "--address", "a:1,,b:2")
    assert bad.returncode == 2
    assert "unusable --address" in bad.stderr and "empty address" in bad.stderr
