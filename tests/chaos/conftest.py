"""The chaos tier: long scenarios carry the ``chaos`` marker and are deselected unless asked for.

``pytest`` (and so ``make test``) runs only the fast subset, with short timings; ``pytest -m chaos``
runs the long ones too, and ``make chaos`` runs them all in parallel and prints the table.
"""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.option.markexpr:
        return  # an explicit -m decides
    keep: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        (dropped if item.get_closest_marker("chaos") else keep).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep
