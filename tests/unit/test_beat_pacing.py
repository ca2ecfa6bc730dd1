"""Issue 13: the heartbeat interval grows with the fleet (MachineConfig.beat_interval_s), and the
common heartbeat's fast check (rpc/beats.py) never accepts what the full check refuses."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from corral.controller.core.config import MachineConfig
from corral.controller.errors import InvalidArgument
from corral.controller.rpc.agent_input import check_heartbeat
from corral.controller.rpc.beats import plain_ok
from corral.v1 import agent_pb2, types_pb2


def test_a_small_fleet_beats_as_configured() -> None:
    config = MachineConfig()  # 2 s, 100 heartbeats a second
    assert [config.beat_interval_s(n) for n in (0, 1, 10, 200)] == [2.0, 2.0, 2.0, 2.0]


def test_a_big_fleet_is_paced_up_to_a_third_of_the_lease() -> None:
    config = MachineConfig()
    assert config.beat_interval_s(201) == 2.1  # rounded up to 0.1 s: 201 agents / 100 a second
    assert config.beat_interval_s(350) == 3.5
    # Never fewer than three beats per lease (15 s): an agent is lost after three missed beats.
    assert config.beat_interval_s(1_000) == config.beat_interval_s(5_000) == 5.0
    paced = MachineConfig(max_heartbeats_per_s=50, lease_s=30, fence_after_s=60)
    assert paced.beat_interval_s(400) == 8.0 and paced.beat_interval_s(10_000) == 10.0


def test_the_configured_interval_is_a_floor_and_zero_turns_pacing_off() -> None:
    slow = MachineConfig(heartbeat_interval_s=7.0)
    assert slow.beat_interval_s(10_000) == 7.0  # over lease/3, as configured: the floor wins
    off = MachineConfig(max_heartbeats_per_s=0)
    assert off.beat_interval_s(10_000) == 2.0


@pytest.mark.parametrize("rate", [-1.0, math.inf, math.nan])
def test_a_bad_rate_is_refused(rate: float) -> None:
    with pytest.raises(ValueError, match="max_heartbeats_per_s"):
        MachineConfig(max_heartbeats_per_s=rate)


def _beat(usage: types_pb2.Usage | None = None, inventory: bool = False) -> agent_pb2.Heartbeat:
    beat = agent_pb2.Heartbeat(seq=3)
    if usage is not None:
        beat.usage.CopyFrom(usage)
    if inventory:
        beat.inventory.CopyFrom(types_pb2.Inventory(cpu_cores=4, memory_mb=1024, slots=2))
    return beat


def test_the_common_heartbeat_takes_the_fast_path() -> None:
    usage = types_pb2.Usage(cpu_percent=12.5, memory_used_mb=900, load_1m=0.3, running_attempts=2, disk_free_mb=5000)
    assert plain_ok(_beat(usage)) and plain_ok(_beat())
    # A changed inventory always gets the full check.
    assert not plain_ok(_beat(usage, inventory=True))
    assert not plain_ok(_beat(types_pb2.Usage(cpu_percent=math.nan)))
    assert not plain_ok(_beat(types_pb2.Usage(memory_used_mb=-1)))


_floats = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.sampled_from([0.0, -0.0, 409_600.0, 409_600.5, 1e9, 1e9 + 1e3, -1e-300]),
)
_ints64 = st.one_of(st.integers(-(2**63), 2**63 - 1), st.sampled_from([0, -1, 1 << 40, (1 << 40) + 1, 1 << 44]))
_ints32 = st.one_of(st.integers(-(2**31), 2**31 - 1), st.sampled_from([0, -1, 20_000, 20_001]))


@given(cpu=_floats, memory=_ints64, load=_floats, running=_ints32, disk=_ints64, inventory=st.booleans())
def test_the_fast_path_never_accepts_what_the_full_check_refuses(
    cpu: float, memory: int, load: float, running: int, disk: int, inventory: bool
) -> None:
    usage = types_pb2.Usage(
        cpu_percent=cpu, memory_used_mb=memory, load_1m=load, running_attempts=running, disk_free_mb=disk
    )
    beat = _beat(usage, inventory)
    try:
        check_heartbeat(beat)
        valid = True
    except InvalidArgument:
        valid = False
    if plain_ok(beat):
        assert valid
    elif not inventory and valid:
        pytest.fail(f"a valid plain heartbeat missed the fast path: {usage}")


def test_the_flag_reaches_the_machine() -> None:
    from corral.controller.daemon import _config
    from corral.controller.flags import parse_args

    assert _config(parse_args([])).max_heartbeats_per_s == 100.0
    assert _config(parse_args(["--max-heartbeats-per-s", "50"])).beat_interval_s(400) == 5.0
    assert _config(parse_args(["--max-heartbeats-per-s", "0"])).beat_interval_s(5_000) == 2.0
    with pytest.raises(SystemExit):
        parse_args(["--max-heartbeats-per-s", "-1"])
