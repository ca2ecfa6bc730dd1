"""HeapTrim (issue 12): the C heap's free memory goes back after big frees, at most once per gap."""

from __future__ import annotations

import asyncio
import ctypes.util
import os
import subprocess
import sys

import pytest

from corral.controller.heaptrim import HeapTrim, fix_thresholds, malloc_trim


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_trims_at_most_once_per_gap_and_counts_them() -> None:
    calls: list[int] = []
    clock = Clock()
    heap = HeapTrim(lambda: calls.append(1), clock, min_gap_s=5.0)
    assert await heap.trim() and heap.trims == 1
    clock.now += 4.9
    assert not await heap.trim()  # too soon after the last one
    clock.now += 0.2
    assert await heap.trim()
    assert calls == [1, 1] and heap.trims == 2


async def test_a_trim_running_makes_a_second_caller_skip() -> None:
    started, release = asyncio.Event(), asyncio.Event()
    loop = asyncio.get_running_loop()

    def slow() -> None:  # runs in a thread: waits until the test lets it end
        loop.call_soon_threadsafe(started.set)
        asyncio.run_coroutine_threadsafe(release.wait(), loop).result(5)

    heap = HeapTrim(slow, Clock(), min_gap_s=0.0)
    first = asyncio.ensure_future(heap.trim())
    await asyncio.wait_for(started.wait(), 5)
    assert not await heap.trim()
    release.set()
    assert await asyncio.wait_for(first, 5) and heap.trims == 1


async def test_without_the_call_nothing_happens() -> None:
    heap = HeapTrim(None, Clock())
    assert not await heap.trim() and heap.trims == 0


@pytest.mark.skipif(ctypes.util.find_library("c") is None, reason="no C library to load")
async def test_the_real_call_runs_and_the_process_goes_on() -> None:
    trim = malloc_trim()
    if trim is None:
        pytest.skip("this C library has no malloc_trim (not glibc)")
    blocks = [bytearray(1 << 16) for _ in range(256)]  # 16 MiB on the C heap, then freed
    del blocks
    heap = HeapTrim(trim, Clock())
    assert await heap.trim() and heap.trims == 1
    assert sum(len(bytearray(1 << 16)) for _ in range(16)) == 16 << 16  # allocating still works


_PROBE = """
import ctypes, sys
from corral.controller.heaptrim import fix_thresholds

class MallInfo2(ctypes.Structure):
    names = "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost"
    _fields_ = [(n, ctypes.c_size_t) for n in names.split()]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
fixed = fix_thresholds() if sys.argv[1] == "fix" else False
first = bytearray(4 << 20)  # mmapped (over any threshold at start), then freed
del first
before = libc.mallinfo2().hblkhd
second = bytearray(4 << 20)
print(fixed, libc.mallinfo2().hblkhd - before >= 4 << 20)
"""


def _probe(mode: str) -> str:
    """Run the probe in a fresh interpreter (glibc's state is per process), without the caller's tuning."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    out = subprocess.run([sys.executable, "-c", _PROBE, mode], env=environ, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.mark.skipif(malloc_trim() is None, reason="not glibc")
def test_fixed_thresholds_keep_big_blocks_mmapped_after_a_big_free() -> None:
    # glibc's own: freeing a 4 MiB mmapped block raises the threshold, so the next one comes from
    # the heap (and stays resident after it is freed). Fixed: it is mmapped again (and unmapped when freed).
    assert _probe("default") == "False False"
    assert _probe("fix") == "True True"


def test_an_operators_threshold_in_the_environment_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "1048576")
    assert not fix_thresholds()  # returns before any mallopt: this process is left as it is
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_")
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.mmap_threshold=65536")
    assert not fix_thresholds()
