"""agent/taskdump.py: the asyncio tasks an operator's SIGUSR2 writes out."""

from __future__ import annotations

import asyncio
import io
import re

from corral.agent.taskdump import describe_tasks, write_tasks


async def _reads_the_stream(event: asyncio.Event) -> None:
    await event.wait()


async def _waits_for_the_controller(event: asyncio.Event) -> None:
    await _reads_the_stream(event)


def _task_names(text: str) -> list[str]:
    return re.findall(r"^task '([^']*)':$", text, re.MULTILINE)


async def test_every_task_is_named_with_the_frame_it_waits_in() -> None:
    event = asyncio.Event()
    task = asyncio.create_task(_waits_for_the_controller(event), name="stream-reader")
    await asyncio.sleep(0)  # let it reach its await
    try:
        text = describe_tasks(asyncio.get_running_loop())
        reader = text[text.index("task 'stream-reader'") :]
        # The whole chain of awaits, outermost first, down to the line it is suspended on.
        outer, inner, wait = (
            reader.index(s) for s in ("in _waits_for_the_controller", "in _reads_the_stream", "in wait")
        )
        assert outer < inner < wait
        assert "await event.wait()" in reader
        # This test's own task is listed too: every unfinished task, not only the sleeping ones.
        assert text.startswith(f"{len(asyncio.all_tasks())} asyncio task(s)")
        out = io.StringIO()
        write_tasks(asyncio.get_running_loop(), out)
        assert "stream-reader" in out.getvalue()
    finally:
        event.set()
        await task
    assert "stream-reader" not in _task_names(describe_tasks(asyncio.get_running_loop()))  # finished ones are not
