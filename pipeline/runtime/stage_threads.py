"""Stage loops in threads of this process, for the bench and the evaluation (workers use StageService)."""

from __future__ import annotations

import threading

from pipeline.runtime.stage_service import StageLoop


class StageThreads:
    """Started on entering the ``with`` block; stopped and joined on leaving it, whatever happened."""

    def __init__(self, prefix: str, *, daemon: bool = False, join_timeout: float | None = None,
                 **loops: StageLoop) -> None:
        self.loops = loops
        self.join_timeout = join_timeout
        self.threads = [threading.Thread(target=loop.run, name=f"{prefix}-{name}", daemon=daemon)
                        for name, loop in loops.items()]

    def __enter__(self) -> StageThreads:
        for t in self.threads:
            t.start()
        return self

    def alive(self) -> bool:
        return all(t.is_alive() for t in self.threads)

    def __exit__(self, *exc: object) -> None:
        for loop in self.loops.values():
            loop.stop()
        for t in self.threads:
            t.join(self.join_timeout)
