"""Runs the ingest loop in its own thread under the Faust app's lifecycle."""

from __future__ import annotations

import asyncio
import logging
import threading

from mode import Service

from pipeline.ingest.runner import IngestLoop

log = logging.getLogger(__name__)


class IngestService(Service):
    """Starts with the worker, stops with it; a crashed loop crashes the worker.

    Crashing is deliberate: the loop only fails on errors it must not paper
    over (unacknowledged output), and a restart replays from the last commit.
    """

    def __init__(self, loop_factory: IngestLoop, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.ingest = loop_factory
        self._thread: threading.Thread | None = None
        self._event_loop: asyncio.AbstractEventLoop | None = None

    async def on_start(self) -> None:
        self._event_loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name="omnipipe-ingest", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.ingest.run()
        except BaseException as exc:
            log.exception("ingest stage failed")
            if self._event_loop is not None and not self._event_loop.is_closed():
                asyncio.run_coroutine_threadsafe(self.crash(exc), self._event_loop)

    async def on_stop(self) -> None:
        self.ingest.stop()
        if self._thread is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join, 30)
