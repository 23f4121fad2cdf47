"""Re-read a partition when a fetch jumps over offsets that were never delivered.

The stage inputs are written by non-transactional producers and never
compacted, so their offsets are contiguous: a consumer that gets offset 5002
right after 4949 has been served records past ones the broker had not made
visible yet. The embedded Tansu broker does this under concurrent producers
(``RELIABILITY.md``, "The embedded broker"; reproduction:
``python -m pipeline.broker.fetch_gap_repro``). Committing past such a hole
loses the records in it for good, so the guard seeks back to the first missing
offset and lets the next fetch bring them. A jump that is still there after
``retries`` re-reads is real (compaction, transaction markers on a topic
written by someone else) and is accepted, counted and logged.

Both are logged as warnings: on these topics neither should ever happen, and
the log outlives the counters of a worker that is killed.

Only Tansu needs it: the stages build the guard with ``enabled`` from their
config's ``tansu`` flag (``OMNIPIPE_BROKER_QUIRKS=tansu``, set when the
embedded Tansu is started). On Apache Kafka it passes every batch through
untouched and never seeks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Protocol

from confluent_kafka import KafkaException, Message, TopicPartition

log = logging.getLogger(__name__)

REFETCH = "refetch"  # seeked back to the first missing offset
ACCEPTED = "accepted"  # the jump was still there after every re-read
OUTCOMES = (REFETCH, ACCEPTED)

_Key = tuple[str, int]


class Seeker(Protocol):
    def seek(self, partition: TopicPartition) -> None: ...


class OffsetGapGuard:
    """Filters consumed batches; one per consumer, used from its polling thread only."""

    def __init__(self, count: Callable[[str], None], retries: int = 3, *, enabled: bool = True) -> None:
        #: False: a pass-through (the broker delivers contiguous offsets; only Tansu does not)
        self.enabled = enabled
        self._count = count
        self._retries = retries
        self._next: dict[_Key, int] = {}  # the offset each partition must deliver next
        self._holes: dict[_Key, tuple[int, int]] = {}  # partition -> (first missing offset, re-reads)

    def forget(self, partitions: Iterable[TopicPartition]) -> None:
        """On assign and revoke: the position restarts from the committed offset, not from ours."""
        if not self.enabled:
            return
        for tp in partitions:
            key = (tp.topic, tp.partition)
            self._next.pop(key, None)
            self._holes.pop(key, None)

    def filter(self, consumer: Seeker, batch: list[Message]) -> list[Message]:
        """The batch without what follows a hole; for each hole, a seek back to its start."""
        if not self.enabled:
            return batch
        nxt, holes = self._next, self._holes
        out: list[Message] = []
        held: set[_Key] | None = None
        for msg in batch:
            if msg.error() is not None:
                out.append(msg)
                continue
            key: _Key = (msg.topic(), msg.partition())  # type: ignore[assignment]
            if held is not None and key in held:
                continue  # after a hole: re-read once the seek has landed
            offset: int = msg.offset()  # type: ignore[assignment]
            expected = nxt.get(key)
            if expected is not None and offset != expected:
                if offset > expected and not self._accept(key, expected, offset) and self._seek(
                        consumer, key, expected):
                    if held is None:
                        held = set()
                    held.add(key)
                    continue
            elif holes and key in holes:
                del holes[key]  # the re-read brought the missing records
            nxt[key] = offset + 1
            out.append(msg)
        return out

    def _seek(self, consumer: Seeker, key: _Key, offset: int) -> bool:
        try:
            consumer.seek(TopicPartition(key[0], key[1], offset))
        except KafkaException as exc:  # e.g. the partition is being revoked: keep what was fetched
            self._holes.pop(key, None)
            self._count(ACCEPTED)
            log.warning("%s[%d]: could not seek back to %d (%s); going on", key[0], key[1], offset, exc)
            return False
        return True

    def _accept(self, key: _Key, expected: int, offset: int) -> bool:
        start, tries = self._holes.get(key, (expected, 0))
        if start != expected:
            tries = 0
        if tries < self._retries:
            self._holes[key] = (expected, tries + 1)
            self._count(REFETCH)
            if tries == 0:
                log.warning("%s[%d]: fetch jumped from offset %d to %d; re-reading from %d",
                         key[0], key[1], expected, offset, expected)
            return False
        del self._holes[key]
        self._count(ACCEPTED)
        log.warning("%s[%d]: offsets %d..%d are still absent after %d re-reads; going on from %d",
                    key[0], key[1], expected, offset - 1, tries, offset)
        return True
