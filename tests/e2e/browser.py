"""A real headless Chromium for the dashboard tests: Debian's ``chromium`` driven by Playwright.

Never a browser a test tool downloads (this network is closed): Playwright gets the system
binary through ``executable_path``. ``make test`` installs the ``chromium`` package when it runs
as root (the Makefile's ``system-deps``); where it is missing, or Playwright is not installed, the
tests skip and say which. As root Chromium needs ``--no-sandbox``; the networking flags stop its
background connections, which a closed network refuses (and which would slow every start).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

__all__ = ["CHROMIUM_FLAGS", "chromium_path", "open_browser"]

CHROMIUM_FLAGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",  # containers give /dev/shm 64 MB; Chromium's renderer needs more
)


def chromium_path() -> str | None:
    """The system Chromium: ``$CORRAL_CHROMIUM``, else ``chromium`` / ``chromium-browser`` on PATH."""
    configured = os.environ.get("CORRAL_CHROMIUM")
    if configured:
        return configured if Path(configured).exists() else None
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


@contextmanager
def open_browser(directory: Path) -> Iterator[Any]:
    """A Playwright browser context on an empty profile under ``directory``; skips without a browser."""
    executable = chromium_path()
    if executable is None:
        pytest.skip("no system Chromium: install Debian's chromium package (make test does, as root)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install -e '.[dev]')")
    profile = directory / "chromium-profile"
    profile.mkdir()
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile),  # an empty --user-data-dir (Playwright passes it as that flag)
            executable_path=executable,
            headless=True,
            args=list(CHROMIUM_FLAGS),
            viewport={"width": 1400, "height": 900},
        )
        context.set_default_timeout(30_000)
        try:
            yield context
        finally:
            context.close()
