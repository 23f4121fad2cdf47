"""Timestamp-ordered processing of a consumer's partitions, as Kafka Streams does for a task.

A stage loop that reads several partitions (eight input topics, four
partitions each, for ingest) gets them from librdkafka in chunks, one
partition after another: replaying history read as fast as it can be, the
whole of ``events.web#0`` can be handled before the consent on
``control.privacy#0`` that precedes most of it. Kafka Streams answers this
with its ``PartitionGroup`` (``streams/.../processor/internals/
PartitionGroup.java``, ``RecordQueue.java``) and KIP-695's enforced
processing; this module is the same model, built once for every stage:

- records are buffered per partition, in offset order (a partition's own
  order is never changed), each with a time (the stage's: ingest knows an
  event's time only after decoding it);
- the next record is always the head with the lowest time (ties: the lowest
  topic and partition, so the choice is the same in every run);
- a partition whose buffer is empty holds the others back while the broker
  has more for it: its position is below the high watermark of its last
  fetch, or no fetch has told its high watermark yet. The hold is bounded
  (``max_wait_ms``, where Kafka Streams would wait without bound): past it the
  others go on (``enforced``) until the partition gets records again;
- a partition that is caught up (position = high watermark) holds nothing:
  live traffic is never slowed down waiting for data that is not there.
  Only while replaying history (the newest time released is older than the
  caller's ``history_before``) is a caught-up partition waited for, at most
  ``idle_ms`` (Kafka Streams' ``max.task.idle.ms``): a stage reading what
  another stage of ours writes can otherwise run ahead of a partition that
  stage has not written yet;
- memory is bounded: a partition with ``max_buffered`` records or more is
  reported ``full`` (the adapter pauses it until half of them are released).

``PartitionOrder`` is the pure, synchronous chooser (no I/O; every decision
depends only on what it was given and ``now_ms``); ``ConsumerOrder`` is the
thin adapter over a librdkafka ``Consumer``: committed offsets at
assignment, cached high watermarks (``get_watermark_offsets(cached=True)``,
from fetch responses, right on the embedded Tansu broker too, where
ListOffsets is not), pause and resume.

What a stage must do with it: commit input offsets only past released
records (the chooser releases each partition's records in offset order, so
"the last released offset + 1" is the commit position), and drop a revoked
partition's buffer (``revoke``): the new owner reads it again from the commit.

Assumption: the inputs' offsets are contiguous (non-transactional,
uncompacted topics, as the stage inputs are; ``pipeline/broker/
offset_gaps.py``). A topic whose last offset is a transaction marker would
keep its position one below the high watermark, and every time its buffer
ran dry it would hold the others for ``max_wait_ms``.
"""

from __future__ import annotations

import heapq
import logging
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Generic, Protocol, TypeVar

from confluent_kafka import KafkaException, TopicPartition

log = logging.getLogger(__name__)

T = TypeVar("T")

#: what librdkafka answers for an offset it does not know (RD_KAFKA_OFFSET_INVALID)
OFFSET_INVALID = -1001
#: a record's time before any time is known in its partition (sorts first)
NO_TIME = -(2**63)


@dataclass(frozen=True, slots=True, order=True)
class Partition:
    topic: str
    partition: int

    def __str__(self) -> str:
        return f"{self.topic}#{self.partition}"


class Wait(StrEnum):
    """Why an empty partition holds the others back."""

    UNKNOWN = "unknown"  # no fetch has told its high watermark (or no position is known yet)
    LAG = "lag"  # the broker has records for it that are not buffered yet
    IDLE = "idle"  # caught up, in a replay of history: the stage upstream may not have written it yet


@dataclass(frozen=True, slots=True)
class Released(Generic[T]):
    """A record the stage may process now (in release order)."""

    partition: Partition
    offset: int
    time: int
    item: T


@dataclass(frozen=True, slots=True)
class Holding:
    """An empty partition that holds the others back, and until when at most."""

    partition: Partition
    wait: Wait
    until_ms: int


@dataclass(slots=True)
class _Entry(Generic[T]):
    offset: int
    time: int
    item: T


@dataclass(slots=True)
class _Queue(Generic[T]):
    partition: Partition
    entries: deque[_Entry[T]] = field(default_factory=deque)
    committed: int | None = None  # where the partition starts when nothing was received yet
    next_offset: int | None = None  # the offset after the last record received
    low: int | None = None  # watermarks of the last fetch (None: not known yet)
    high: int | None = None
    partition_time: int = NO_TIME  # the newest time received (a record without a time takes it)
    deadline: int | None = None  # while empty and waiting: when the wait ends (ms)
    gave_up: bool = False  # the wait ended: hold nothing until records come again

    def position(self) -> int | None:
        if self.next_offset is not None:
            return self.next_offset
        if self.committed is not None:
            return self.committed
        return self.low  # nothing committed: auto.offset.reset=earliest starts at the low watermark

    def wait(self) -> Wait | None:
        """What an empty queue waits for (None: caught up)."""
        position = self.position()
        if self.high is None or position is None:
            return Wait.UNKNOWN
        return Wait.LAG if self.high > position else None


class PartitionOrder(Generic[T]):
    """The chooser: buffers per partition, releases the lowest head time first (one thread only)."""

    def __init__(self, *, max_buffered: int = 5000, max_wait_ms: int = 1000, idle_ms: int = 0) -> None:
        if max_buffered < 1:
            raise ValueError(f"max_buffered must be at least 1, not {max_buffered}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must not be negative, not {max_wait_ms}")
        if idle_ms < 0:
            raise ValueError(f"idle_ms must not be negative, not {idle_ms}")
        self.max_buffered = max_buffered
        self.max_wait_ms = max_wait_ms
        self.idle_ms = idle_ms
        self.stream_time = NO_TIME  # the newest time released (never goes back)
        self._replaying = False  # set per release: the stream time is older than ``history_before``
        self._queues: dict[Partition, _Queue[T]] = {}
        self._heap: list[tuple[int, Partition]] = []  # (head time, partition): one per non-empty queue
        self._empty: set[Partition] = set()
        self._buffered = 0
        self.enforced = 0  # waits given up (a partition the broker had more for was not waited for)

    # ------------------------------------------------------------------ partitions
    @property
    def partitions(self) -> frozenset[Partition]:
        return frozenset(self._queues)

    def assign(self, partition: Partition, committed: int | None = None) -> None:
        """Start ordering ``partition`` (``committed``: its committed offset, None if none or unknown)."""
        if partition in self._queues:
            return
        self._queues[partition] = _Queue(partition, committed=committed)
        self._empty.add(partition)

    def revoke(self, partition: Partition) -> int:
        """Stop ordering ``partition`` and drop its buffer; returns how many records were dropped."""
        queue = self._queues.pop(partition, None)
        if queue is None:
            return 0
        self._empty.discard(partition)
        dropped = len(queue.entries)
        if dropped:
            self._buffered -= dropped
            self._heap = [e for e in self._heap if e[1] != partition]
            heapq.heapify(self._heap)
        return dropped

    def watermarks(self, partition: Partition, low: int | None, high: int | None) -> None:
        """The low and high watermarks the last fetch of ``partition`` returned (None: unknown)."""
        queue = self._queues.get(partition)
        if queue is None:
            return
        if low is not None:
            queue.low = low
        if high is not None and (queue.high is None or high != queue.high):
            queue.high = high
            if queue.gave_up and queue.wait() is not None:
                queue.gave_up = False  # the broker got more since: wait for it again (bounded)
                queue.deadline = None

    # ------------------------------------------------------------------ records
    def add(self, partition: Partition, offset: int, time: int | None, item: T) -> None:
        """Buffer a record of ``partition`` (in offset order); ``time`` None: its partition's newest time."""
        queue = self._queues.get(partition)
        if queue is None:
            raise KeyError(f"{partition} is not assigned to this order")
        if time is None or time == NO_TIME:
            time = queue.partition_time
        elif time > queue.partition_time:
            queue.partition_time = time
        if not queue.entries:
            heapq.heappush(self._heap, (time, partition))
            self._empty.discard(partition)
            queue.deadline = None
            queue.gave_up = False
        queue.entries.append(_Entry(offset, time, item))
        queue.next_offset = offset + 1
        self._buffered += 1

    def buffered(self, partition: Partition | None = None) -> int:
        """Records buffered (in ``partition``, or in all)."""
        if partition is None:
            return self._buffered
        queue = self._queues.get(partition)
        return len(queue.entries) if queue is not None else 0

    def full(self) -> list[Partition]:
        """Partitions with ``max_buffered`` records or more (to be paused)."""
        return [p for p, q in self._queues.items() if len(q.entries) >= self.max_buffered]

    def empty(self) -> list[Partition]:
        return sorted(self._empty)

    # ------------------------------------------------------------------ choosing
    def _holds(self, queue: _Queue[T], now_ms: int) -> Wait | None:
        """Whether the empty ``queue`` holds the others back now (and starts or ends its wait)."""
        if queue.gave_up:
            return None
        wait = queue.wait()
        if wait is None:
            if not (self._replaying and self.idle_ms):
                queue.deadline = None
                return None
            wait = Wait.IDLE
        if queue.deadline is None:
            queue.deadline = now_ms + (self.idle_ms if wait is Wait.IDLE else self.max_wait_ms)
        if now_ms < queue.deadline:
            return wait
        queue.gave_up = True
        if wait is not Wait.IDLE:
            self.enforced += 1
            log.debug("%s: stopped waiting for it after %d ms (%s); going on without it",
                      queue.partition, self.max_wait_ms, wait.value)
        return None

    def holding(self, now_ms: int, history_before: int | None = None) -> list[Holding]:
        """The empty partitions that hold the others back now (none while nothing is buffered).

        ``history_before``: a stream time older than this is a replay of history; then a caught-up
        partition is waited for too, at most ``idle_ms`` (Kafka Streams' ``max.task.idle.ms``), as
        the stage upstream may not have written its part yet. Live records never wait for one.
        """
        if not self._buffered:
            return []
        self._replaying = history_before is not None and self.stream_time < history_before
        out = []
        for partition in sorted(self._empty):
            queue = self._queues[partition]
            wait = self._holds(queue, now_ms)
            if wait is not None:
                out.append(Holding(partition, wait, queue.deadline))  # type: ignore[arg-type]
        return out

    def release(self, now_ms: int, limit: int | None = None,
                history_before: int | None = None) -> list[Released[T]]:
        """Records to process now, lowest head time first, until an empty partition must be waited for
        (``history_before``: see ``holding``)."""
        out: list[Released[T]] = []
        if not self._buffered or self.holding(now_ms, history_before):
            return out
        heap, queues = self._heap, self._queues
        heappop, heapreplace = heapq.heappop, heapq.heapreplace
        append = out.append
        while heap and (limit is None or len(out) < limit):
            _time, partition = heap[0]
            queue = queues[partition]
            entries = queue.entries
            entry = entries.popleft()
            append(Released(partition, entry.offset, entry.time, entry.item))
            if entries:
                heapreplace(heap, (entries[0].time, partition))
                continue
            heappop(heap)
            self._empty.add(partition)
            if heap and self._holds(queue, now_ms) is not None:
                break  # its buffer ran dry while the broker has more for it: wait for that
        self._buffered -= len(out)
        if out:
            newest = max(r.time for r in out)
            if newest > self.stream_time:
                self.stream_time = newest
        return out

    def unrelease(self, records: list[Released[T]]) -> None:
        """Put released records back at the heads of their partitions, as they were (the stage could not
        take them yet): ``records`` is the tail of what ``release`` returned, in its order."""
        if not records:
            return
        for r in reversed(records):
            queue = self._queues.get(r.partition)
            if queue is None:
                continue  # revoked meanwhile: the new owner reads it again
            queue.entries.appendleft(_Entry(r.offset, r.time, r.item))
            self._empty.discard(r.partition)
            queue.deadline = None
            queue.gave_up = False
            self._buffered += 1
        self._heap = [(q.entries[0].time, p) for p, q in self._queues.items() if q.entries]
        heapq.heapify(self._heap)

    def next_deadline(self) -> int | None:
        """The earliest end of a running wait (a loop with nothing new to read may sleep until then)."""
        deadlines = [q.deadline for p in self._empty if (q := self._queues[p]).deadline is not None]
        return min(deadlines, default=None)


class OrderedConsumer(Protocol):
    """What ``ConsumerOrder`` needs of a confluent-kafka ``Consumer``."""

    def committed(self, partitions: list[TopicPartition], timeout: float = ...) -> list[TopicPartition]: ...

    def get_watermark_offsets(self, partition: TopicPartition, timeout: float = ...,
                              cached: bool = ...) -> tuple[int, int] | None: ...

    def pause(self, partitions: list[TopicPartition]) -> None: ...

    def resume(self, partitions: list[TopicPartition]) -> None: ...


def _known(offset: int) -> int | None:
    return offset if offset >= 0 else None


class ConsumerOrder(Generic[T]):
    """``PartitionOrder`` over a librdkafka consumer's partitions of ``topics`` (the poll thread only).

    Call ``assigned``/``revoked`` from the rebalance callbacks, ``add`` for
    each consumed record of an ordered topic, and ``release`` once per loop:
    it reads the cached watermarks of the empty partitions, releases what is
    ready and pauses (or resumes) the partitions whose buffer is full (or
    drained to half). Records of other topics are not this class's business.
    """

    def __init__(self, topics: Iterable[str], *, max_buffered: int = 5000, max_wait_ms: int = 1000,
                 idle_ms: int = 0,
                 committed_timeout_s: float = 10.0,
                 on_enforced: Callable[[int], None] | None = None) -> None:
        self.topics = frozenset(topics)
        self.order: PartitionOrder[T] = PartitionOrder(max_buffered=max_buffered, max_wait_ms=max_wait_ms,
                                                       idle_ms=idle_ms)
        self._timeout = committed_timeout_s
        self._paused: set[Partition] = set()
        self._on_enforced = on_enforced
        #: the stage paused every partition for a reason of its own (a dependency is down): resume none
        self.stage_paused = False
        self.dropped = 0  # buffered records dropped by revocations (read again by the next owner)

    def ordered(self, topic: str) -> bool:
        return topic in self.topics

    def assigned(self, consumer: OrderedConsumer, partitions: Iterable[TopicPartition]) -> None:
        mine = [TopicPartition(tp.topic, tp.partition) for tp in partitions if tp.topic in self.topics]
        if not mine:
            return
        try:
            committed = {Partition(tp.topic, tp.partition): _known(tp.offset)
                         for tp in consumer.committed(mine, timeout=self._timeout)}
        except KafkaException as exc:  # unknown: the first fetch's low watermark stands in (bounded wait)
            log.warning("committed offsets unknown (%s); ordering starts from the first fetch", exc)
            committed = {}
        for tp in mine:
            partition = Partition(tp.topic, tp.partition)
            self.order.assign(partition, committed.get(partition))
        if not self.stage_paused:
            # librdkafka keeps a partition paused across a revocation and a new assignment (classic
            # protocol): one paused for a full buffer before a rebalance would never be read again
            try:
                consumer.resume(mine)
            except KafkaException as exc:
                log.warning("could not resume newly assigned partitions: %s", exc)

    def revoked(self, partitions: Iterable[TopicPartition]) -> None:
        for tp in partitions:
            partition = Partition(tp.topic, tp.partition)
            self.dropped += self.order.revoke(partition)
            self._paused.discard(partition)

    def add(self, topic: str, partition: int, offset: int, time: int | None, item: T) -> None:
        """Buffer a consumed record (a partition not seen at assignment is ordered from now on)."""
        key = Partition(topic, partition)
        if key not in self.order.partitions:
            self.order.assign(key)
        self.order.add(key, offset, time, item)

    def buffered(self) -> int:
        return self.order.buffered()

    def unrelease(self, records: list[Released[T]]) -> None:
        self.order.unrelease(records)

    def release(self, consumer: OrderedConsumer | None, now_ms: int,
                history_before: int | None = None) -> list[Released[T]]:
        """What is ready now; ``consumer`` None: no watermarks are read and nothing is paused
        (``history_before``: see ``PartitionOrder.holding``)."""
        order = self.order
        if not order.buffered():
            return []
        for partition in sorted(order.partitions) if consumer is not None else ():  # a local call each
            assert consumer is not None
            try:
                marks = consumer.get_watermark_offsets(TopicPartition(partition.topic, partition.partition),
                                                       cached=True)
            except KafkaException:
                marks = None
            if marks is not None:
                order.watermarks(partition, _known(marks[0]), _known(marks[1]))
        enforced = order.enforced
        out = order.release(now_ms, history_before=history_before)
        if order.enforced != enforced and self._on_enforced is not None:
            self._on_enforced(order.enforced - enforced)
        if consumer is not None:
            self._sync_pauses(consumer)
        return out

    def _sync_pauses(self, consumer: OrderedConsumer) -> None:
        order = self.order
        full = [p for p in order.full() if p not in self._paused]
        drained = [p for p in self._paused if order.buffered(p) <= order.max_buffered // 2]
        try:
            if full:
                consumer.pause([TopicPartition(p.topic, p.partition) for p in full])
                self._paused.update(full)
            if drained and not self.stage_paused:
                consumer.resume([TopicPartition(p.topic, p.partition) for p in drained])
                self._paused.difference_update(drained)
        except KafkaException as exc:  # mid-rebalance: the next assignment starts unpaused
            log.warning("could not pause or resume ordered partitions: %s", exc)

    def reapply_pauses(self, consumer: OrderedConsumer) -> None:
        """After the stage resumed every partition (its own reasons to pause ended): pause the full again."""
        self._paused.clear()
        self._sync_pauses(consumer)

    def is_paused(self, topic: str, partition: int) -> bool:
        return Partition(topic, partition) in self._paused
