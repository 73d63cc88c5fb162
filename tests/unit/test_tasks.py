"""An app process's background task starts once and ends when stopped."""

from __future__ import annotations

import asyncio

from server.tasks import ProcessTask


async def test_a_process_task_runs_once_however_often_started_and_stop_waits_for_its_end() -> None:
    started: list[int] = []
    ended = asyncio.Event()

    async def run() -> None:
        started.append(1)
        try:
            await asyncio.sleep(3600)
        finally:
            ended.set()

    task = ProcessTask("test-task")
    task.start(run)
    task.start(run)
    await asyncio.sleep(0)
    assert started == [1] and task.running
    await task.stop()
    assert ended.is_set() and not task.running
    await task.stop()  # stopping a stopped task is harmless
    task.start(run)  # and it can start again
    await asyncio.sleep(0)
    assert started == [1, 1]
    await task.stop()
