"""What a stage loop tells the rest of the worker about itself: assignment, restore, liveness.

A loop (running in its own thread) replaces the fields; readers in other
threads (``/readyz``, the lag monitor, the ready log line) only read them.
Every field is replaced whole, never mutated in place, so a reader sees a
consistent value without a lock.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class StageStatus:
    """The live state of one stage loop of this worker."""

    stage: str
    group_id: str = ""
    #: (topic, partition) pairs of the group's input topics this worker owns now
    assigned: frozenset[tuple[str, int]] = frozenset()
    #: True once the loop has joined its group, got an assignment and restored its state for it
    restored: bool = False
    #: True between the loop's start and its end
    running: bool = False
    #: time.monotonic() of the last change
    changed_at: float = field(default_factory=time.monotonic)

    def started(self, group_id: str) -> None:
        self.group_id = group_id
        self.running = True
        self.changed_at = time.monotonic()

    def assigned_to(self, partitions: frozenset[tuple[str, int]]) -> None:
        """The group gave us ``partitions`` (state for them is being restored)."""
        self.restored = False
        self.assigned = partitions
        self.changed_at = time.monotonic()

    def restore_done(self) -> None:
        self.restored = True
        self.changed_at = time.monotonic()

    def revoked(self, partitions: frozenset[tuple[str, int]]) -> None:
        self.assigned = self.assigned - partitions
        self.changed_at = time.monotonic()

    def stopped(self) -> None:
        self.running = False
        self.restored = False
        self.assigned = frozenset()
        self.changed_at = time.monotonic()

    @property
    def ready(self) -> bool:
        """Running, and the last assignment (possibly empty: more workers than partitions) restored."""
        return self.running and self.restored
