"""In-process background tasks of an app process (head signing, the audit sequencer, the session poll).

They need millisecond promptness or a database lock, so they are tasks on the app's event loop, not
jobs on a queue: started once at start-up, cancelled and awaited at shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from typing import Any


class ProcessTask:
    """One named task per process: `start` runs it once, `stop` cancels it and waits for it to end."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None

    def start(self, run: Callable[[], Coroutine[Any, Any, None]]) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(run(), name=self.name)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
