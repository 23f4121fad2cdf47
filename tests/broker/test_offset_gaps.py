from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from pipeline.broker.embedded import EmbeddedBroker
from pipeline.broker.offset_gaps import ACCEPTED, REFETCH, OffsetGapGuard


@dataclass
class Msg:
    """The part of ``confluent_kafka.Message`` the guard reads."""

    _topic: str
    _partition: int
    _offset: int
    _error: KafkaError | None = None

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def error(self) -> KafkaError | None:
        return self._error


@dataclass
class Seeks:
    calls: list[tuple[str, int, int]] = field(default_factory=list)
    fail: bool = False

    def seek(self, tp: TopicPartition) -> None:
        if self.fail:
            raise KafkaException(KafkaError(KafkaError._STATE))
        self.calls.append((tp.topic, tp.partition, tp.offset))


def _guard(retries: int = 3) -> tuple[OffsetGapGuard, list[str]]:
    counted: list[str] = []
    return OffsetGapGuard(counted.append, retries=retries), counted


def msgs(partition: int, *offsets: int, topic: str = "t") -> list[Msg]:
    return [Msg(topic, partition, o) for o in offsets]


def _offsets(batch: list[Msg]) -> list[tuple[int, int]]:
    return [(m.partition(), m.offset()) for m in batch]


def test_contiguous_batches_pass_untouched() -> None:
    guard, counted = _guard()
    seeks = Seeks()
    first = msgs(0, 0, 1, 2) + msgs(1, 7, 8)
    assert guard.filter(seeks, first) == first  # type: ignore[arg-type]
    second = msgs(1, 9) + msgs(0, 3)
    assert guard.filter(seeks, second) == second  # type: ignore[arg-type]
    assert seeks.calls == [] and counted == []


def test_a_jump_seeks_back_and_holds_the_rest_of_that_partition() -> None:
    guard, counted = _guard()
    seeks = Seeks()
    guard.filter(seeks, msgs(0, 10, 11) + msgs(1, 0))  # type: ignore[arg-type]
    out = guard.filter(seeks, msgs(0, 15, 16) + msgs(1, 1) + msgs(0, 17))  # type: ignore[arg-type]
    assert _offsets(out) == [(1, 1)]
    assert seeks.calls == [("t", 0, 12)]
    assert counted == [REFETCH]
    # the re-read brings the missing records: everything goes on in order, nothing more is counted
    out = guard.filter(seeks, msgs(0, 12, 13, 14, 15, 16, 17))  # type: ignore[arg-type]
    assert _offsets(out) == [(0, o) for o in range(12, 18)]
    assert counted == [REFETCH] and len(seeks.calls) == 1


def test_a_jump_inside_one_batch_is_caught() -> None:
    guard, counted = _guard()
    seeks = Seeks()
    out = guard.filter(seeks, msgs(0, 0, 1, 2, 40, 41))  # type: ignore[arg-type]
    assert _offsets(out) == [(0, 0), (0, 1), (0, 2)]
    assert seeks.calls == [("t", 0, 3)] and counted == [REFETCH]


def test_a_jump_still_there_after_every_reread_is_accepted() -> None:
    guard, counted = _guard(retries=2)
    seeks = Seeks()
    guard.filter(seeks, msgs(0, 4))  # type: ignore[arg-type]
    for _ in range(2):  # e.g. a transaction marker at 5: the broker never has a record there
        assert guard.filter(seeks, msgs(0, 6, 7)) == []  # type: ignore[arg-type]
    out = guard.filter(seeks, msgs(0, 6, 7))  # type: ignore[arg-type]
    assert _offsets(out) == [(0, 6), (0, 7)]
    assert seeks.calls == [("t", 0, 5), ("t", 0, 5)]
    assert counted == [REFETCH, REFETCH, ACCEPTED]
    # a later hole gets its own re-reads
    assert guard.filter(seeks, msgs(0, 9)) == []  # type: ignore[arg-type]
    assert counted[-1] == REFETCH and seeks.calls[-1] == ("t", 0, 8)


def test_after_forget_the_position_is_not_known() -> None:
    guard, counted = _guard()
    seeks = Seeks()
    guard.filter(seeks, msgs(0, 4))  # type: ignore[arg-type]
    guard.forget([TopicPartition("t", 0)])  # a rebalance: the next fetch starts at the committed offset
    assert _offsets(guard.filter(seeks, msgs(0, 100))) == [(0, 100)]  # type: ignore[arg-type]
    assert counted == [] and seeks.calls == []


def test_a_rewind_is_followed_not_refused() -> None:
    guard, counted = _guard()
    seeks = Seeks()
    guard.filter(seeks, msgs(0, 4, 5, 6))  # type: ignore[arg-type]
    assert _offsets(guard.filter(seeks, msgs(0, 2, 3))) == [(0, 2), (0, 3)]  # type: ignore[arg-type]
    assert counted == []


def test_errors_pass_and_topics_are_told_apart() -> None:
    guard, counted = _guard()
    seeks = Seeks()
    eof = Msg("t", 0, -1, KafkaError(KafkaError._PARTITION_EOF))
    batch = [*msgs(0, 0), eof, *msgs(0, 0, topic="u"), *msgs(0, 1)]
    assert guard.filter(seeks, batch) == batch  # type: ignore[arg-type]
    assert counted == []


def test_a_failed_seek_keeps_what_was_fetched() -> None:
    guard, counted = _guard()
    seeks = Seeks(fail=True)
    guard.filter(seeks, msgs(0, 0))  # type: ignore[arg-type]
    out = guard.filter(seeks, msgs(0, 5, 6))  # type: ignore[arg-type]
    assert _offsets(out) == [(0, 5), (0, 6)]
    assert counted == [REFETCH, ACCEPTED]


@pytest.mark.broker
def test_the_reread_delivers_what_a_jump_skipped(tansu_broker: EmbeddedBroker) -> None:
    """A real consumer moved past 40 records (as Tansu's fetch race does) gets them all back."""
    conf = {"bootstrap.servers": tansu_broker.bootstrap_servers}
    topic = f"gaps-{uuid.uuid4().hex[:8]}"
    admin = AdminClient(conf)
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result()
    producer = Producer(conf)
    for n in range(100):
        producer.produce(topic, str(n).encode())
    assert producer.flush(10) == 0
    consumer = Consumer({**conf, "group.id": topic, "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, 0, 0)])
    guard, counted = _guard()
    got: list[int] = []
    jumped = False
    deadline = time.monotonic() + 30
    try:
        while len(got) < 100 and time.monotonic() < deadline:
            batch = consumer.consume(num_messages=10, timeout=0.5)
            for msg in guard.filter(consumer, batch):
                if msg.error() is None:
                    got.append(int(msg.value() or b"-1"))
            if not jumped and len(got) >= 10:
                consumer.seek(TopicPartition(topic, 0, got[-1] + 41))  # the fetch skips 40 records
                jumped = True
    finally:
        consumer.close()
    assert got == list(range(100))
    assert counted == [REFETCH]


def test_disabled_it_passes_every_batch_through_and_never_seeks() -> None:
    """On Apache Kafka (no Tansu quirks) the stages build it disabled: a jump is the broker's to explain."""
    counted: list[str] = []
    guard = OffsetGapGuard(counted.append, enabled=False)
    seeks = Seeks()
    first = msgs(0, 10, 11)
    assert guard.filter(seeks, first) is first  # type: ignore[arg-type]
    jumped = msgs(0, 15, 16) + msgs(1, 3)
    assert guard.filter(seeks, jumped) is jumped  # type: ignore[arg-type]
    guard.forget([TopicPartition("t", 0)])
    assert seeks.calls == [] and counted == []
