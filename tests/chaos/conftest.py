"""The chaos tier: long scenarios carry the ``chaos`` marker and are deselected unless asked for.

``pytest`` (and so ``make test``) runs only the fast subset, with short timings; ``pytest -m chaos``
runs the long ones too, and ``make chaos`` runs them all in parallel and prints the table. The
deselection itself lives in ``tests/conftest.py``, so it covers every directory.
"""
