"""A partition paused for a full buffer must be read again after a rebalance (pipeline/runtime/ordering.py).

librdkafka keeps a partition's pause across its revocation and a new assignment (classic protocol;
checked on Apache Kafka 4.1.1 with confluent-kafka 2.16: paused, revoked, assigned again, it
delivered nothing until resumed). The fake consumer below keeps pauses the same way.
"""

from __future__ import annotations

from confluent_kafka import TopicPartition

from pipeline.runtime.ordering import ConsumerOrder
from tests.runtime.test_ordering import FakeConsumer


def test_a_partition_paused_before_a_rebalance_is_resumed_when_assigned_again() -> None:
    consumer = FakeConsumer({("a", 0): (0, 100), ("b", 0): (0, 100)}, {})
    order: ConsumerOrder[str] = ConsumerOrder(["a", "b"], max_buffered=4)
    parts = [TopicPartition("a", 0), TopicPartition("b", 0)]
    order.assigned(consumer, parts)
    for i in range(4):
        order.add("a", 0, i, 10 + i, f"a{i}")
    assert order.release(consumer, 0) == []  # b has more on the broker: wait; a is full
    assert consumer.paused == {("a", 0)}
    order.revoked(parts)  # the rebalance: the buffer is dropped, librdkafka keeps the pause
    order.assigned(consumer, parts)
    assert consumer.paused == set()  # else a#0 is never fetched again: nothing is buffered to release


def test_a_stage_pause_stands_across_a_rebalance() -> None:
    consumer = FakeConsumer({("a", 0): (0, 100)}, {})
    order: ConsumerOrder[str] = ConsumerOrder(["a"], max_buffered=4)
    parts = [TopicPartition("a", 0)]
    order.assigned(consumer, parts)
    consumer.paused = {("a", 0)}  # the stage paused everything (a dependency is down)
    order.stage_paused = True
    order.revoked(parts)
    order.assigned(consumer, parts)
    assert consumer.paused == {("a", 0)}
