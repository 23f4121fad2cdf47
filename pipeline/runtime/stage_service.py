"""Runs a stage's blocking consume loop in its own thread under the Faust app's lifecycle."""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Protocol

from mode import Service

log = logging.getLogger(__name__)


class StageLoop(Protocol):
    def run(self) -> None: ...

    def stop(self) -> None: ...


class StageService(Service):
    """Starts with the worker, stops with it; a crashed loop crashes the worker.

    Crashing is deliberate: a loop only fails on errors it must not paper
    over (unacknowledged output), and a restart replays from the last commit.
    """

    def __init__(self, loop: StageLoop, name: str, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.stage_loop = loop
        self.stage = name
        self._thread: threading.Thread | None = None
        self._event_loop: asyncio.AbstractEventLoop | None = None

    async def on_start(self) -> None:
        self._event_loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name=f"omnipipe-{self.stage}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.stage_loop.run()
        except BaseException as exc:
            log.exception("%s stage failed", self.stage)
            if self._event_loop is not None and not self._event_loop.is_closed():
                asyncio.run_coroutine_threadsafe(self.crash(exc), self._event_loop)

    async def on_stop(self) -> None:
        self.stage_loop.stop()
        if self._thread is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join, 30)
