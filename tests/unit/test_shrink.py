"""Emptied containers give their tables back, in place (every holder of a reference still works)."""

from __future__ import annotations

import sys
from collections import OrderedDict

from corral.controller.core.machine import Machine, MachineConfig
from corral.controller.core.shrink import shrink_tables


class _Holder:
    def __init__(self) -> None:
        self.index = {f"t-{i}": i for i in range(100_000)}
        self.members = set(range(100_000))
        self.lru: OrderedDict[int, int] = OrderedDict((i, i) for i in range(100_000))
        self.small = {1: 1}


def test_emptied_tables_shrink_in_place_and_keep_what_is_left() -> None:
    holder = _Holder()
    index, members, lru = holder.index, holder.members, holder.lru
    for i in range(99_990):
        del index[f"t-{i}"]
        members.discard(i)
        del lru[i]
    before = sys.getsizeof(index) + sys.getsizeof(members) + sys.getsizeof(lru)
    freed = shrink_tables(holder, min_bytes=1 << 16)
    after = sys.getsizeof(index) + sys.getsizeof(members) + sys.getsizeof(lru)
    assert freed == before - after and after < before // 20
    assert holder.index is index and holder.members is members and holder.lru is lru
    assert index == {f"t-{i}": i for i in range(99_990, 100_000)}
    assert members == set(range(99_990, 100_000)) and list(lru) == list(range(99_990, 100_000))
    assert holder.small == {1: 1}


def test_full_tables_are_left_alone() -> None:
    holder = _Holder()
    assert shrink_tables(holder, min_bytes=1 << 16) == 0


def test_the_machine_s_indexes_are_reached() -> None:
    machine = Machine(MachineConfig(), new_id=lambda: "x")
    machine.tasks.update((f"t-{i}", None) for i in range(100_000))  # type: ignore[misc]
    for i in range(100_000):
        del machine.tasks[f"t-{i}"]
    tasks = machine.tasks
    assert shrink_tables(machine) > 1 << 20 and machine.tasks is tasks and sys.getsizeof(tasks) < 1 << 10


def test_a_dict_subclass_of_the_machine_is_reached_and_keeps_its_class() -> None:
    machine = Machine(MachineConfig(), new_id=lambda: "x")
    dependents = machine.dependents
    dependents.update((f"t-{i}", [f"u-{i}"]) for i in range(100_000))
    for i in range(99_999):
        del dependents[f"t-{i}"]
    assert shrink_tables(machine) > 1 << 20
    assert machine.dependents is dependents and sys.getsizeof(dependents) < 1 << 10
    assert dependents == {"t-99999": ["u-99999"]} and dependents["absent"] == ()  # still a Dependents
