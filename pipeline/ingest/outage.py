"""Ingest's wait for the schema registry: the held records and the backoff.

When a record's schema cannot be fetched because the registry does not answer
(``registry_unavailable``: a refused connection, a timeout, a 5xx), the record
says nothing about itself, so it is never dead-lettered. The ingest loop holds
it and every record after it in its batch, commits nothing past them, pauses
its partitions (it keeps polling, so the group session and
``max.poll.interval.ms`` hold through a long outage) and retries the first held
record with exponential backoff until the registry answers; then it goes on
from that record. A rebalance drops the held records of the partitions it
takes away: their new owner reads them again from the last commit.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from confluent_kafka import Message, TopicPartition

__all__ = ["Backoff", "HeldRecords", "RegistryWait"]


@dataclass(frozen=True, slots=True)
class Backoff:
    """``initial_s``, doubling on every failed retry, capped at ``max_s``."""

    initial_s: float = 0.2
    max_s: float = 30.0

    def __post_init__(self) -> None:
        if self.initial_s <= 0 or self.max_s <= 0:
            raise ValueError(f"backoff needs positive times, got {self.initial_s}, {self.max_s}")

    def delay(self, failed_retries: int) -> float:
        """Seconds to wait after ``failed_retries`` retries failed (0: after the first failure)."""
        return min(self.max_s, self.initial_s * 2.0 ** min(failed_retries, 64))


@dataclass(frozen=True, slots=True)
class HeldRecords:
    """Where a batch stopped: ``records`` from the first one that could not be decided."""

    records: list[Message]
    detail: str  # the dependency and its failure; never record contents


@dataclass(slots=True)
class RegistryWait:
    """One outage, from the first record that met it until the registry answers."""

    started_at: float  # time.monotonic()
    held: list[Message]
    detail: str
    next_try_at: float = 0.0
    delay_s: float = 0.0  # the current wait between two tries
    retries: int = 0
    first: tuple[str, int, int] = field(default=("", -1, -1))  # topic, partition, offset it stopped at

    @classmethod
    def begin(cls, now: float, held: HeldRecords, backoff: Backoff) -> RegistryWait:
        msg = held.records[0]
        first = (str(msg.topic()), int(msg.partition() or 0), int(msg.offset() or 0))
        delay = backoff.delay(0)
        return cls(now, list(held.records), held.detail, now + delay, delay, 0, first)

    def due(self, now: float) -> bool:
        return now >= self.next_try_at

    def failed_again(self, now: float, held: HeldRecords, backoff: Backoff) -> None:
        """A retry met the outage again (maybe further on): hold from there, wait longer."""
        self.held = list(held.records)
        self.detail = held.detail
        self.delay_s = backoff.delay(self.retries)
        self.next_try_at = now + self.delay_s

    def drop(self, partitions: Iterable[TopicPartition]) -> int:
        """Forget the held records of revoked partitions; how many were dropped."""
        gone = {(tp.topic, tp.partition) for tp in partitions}
        kept = [m for m in self.held if (m.topic(), m.partition()) not in gone]
        dropped = len(self.held) - len(kept)
        self.held = kept
        return dropped
