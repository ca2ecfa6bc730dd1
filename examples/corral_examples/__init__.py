"""Task functions used by the example workflows in ``examples/``.

Agents import them as ``corral_examples.<module>:<function>``, so run the agents with ``examples/``
on their ``PYTHONPATH`` (``examples/demo.py`` does this for you).
"""

from __future__ import annotations

__all__: list[str] = []
