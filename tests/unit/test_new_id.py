"""The controller's id factory: random 80-bit hex ids, drawn from the OS in batches."""

from __future__ import annotations

import re

from corral.controller.commands import new_id


def test_ids_are_prefixed_hex_and_distinct_across_batches() -> None:
    make = new_id("sch-")
    ids = [make() for _ in range(1_000)]  # several batches of draws
    assert all(re.fullmatch(r"sch-[0-9a-f]{20}", i) for i in ids)
    assert len(set(ids)) == len(ids)


def test_factories_do_not_share_their_draws() -> None:
    first, second = new_id(), new_id()
    assert {first() for _ in range(300)}.isdisjoint({second() for _ in range(300)})
