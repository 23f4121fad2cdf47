"""The timestamp-ordered chooser (Kafka Streams' PartitionGroup with KIP-695 idling) and its adapter."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition
from hypothesis import given
from hypothesis import strategies as st

from pipeline.runtime.ordering import (
    ConsumerOrder,
    Holding,
    Partition,
    PartitionOrder,
    Wait,
)

A, B, C = Partition("events.web", 0), Partition("events.pos", 1), Partition("control.privacy", 0)


def order(*partitions: Partition, max_buffered: int = 100, max_wait_ms: int = 1000) -> PartitionOrder[str]:
    o: PartitionOrder[str] = PartitionOrder(max_buffered=max_buffered, max_wait_ms=max_wait_ms)
    for p in partitions:
        o.assign(p)
        o.watermarks(p, 0, 0)  # caught up until told otherwise
    return o


def fill(o: PartitionOrder[str], p: Partition, times: list[int | None], first: int = 0) -> None:
    """Records at offsets first.. with these times; the partition's high watermark just past them."""
    for i, t in enumerate(times):
        o.add(p, first + i, t, f"{p}@{first + i}")
    o.watermarks(p, 0, first + len(times))


def items(o: PartitionOrder[str], now: int = 0) -> list[str]:
    return [r.item for r in o.release(now)]


def test_the_lowest_head_time_goes_first_and_a_partition_keeps_its_own_order() -> None:
    o = order(A, B)
    fill(o, A, [10, 30, 20])  # a late record in A stays behind A's earlier ones
    fill(o, B, [15, 25])
    assert items(o) == ["events.web#0@0", "events.pos#1@0", "events.pos#1@1", "events.web#0@1",
                        "events.web#0@2"]


def test_equal_times_go_by_topic_then_partition_the_same_in_every_run() -> None:
    o = order(A, B, C)
    fill(o, A, [5])
    fill(o, B, [5])
    fill(o, C, [5])
    assert items(o) == ["control.privacy#0@0", "events.pos#1@0", "events.web#0@0"]


def test_a_caught_up_partition_holds_nothing_back() -> None:
    o = order(A, B)
    fill(o, A, [100, 200])  # B: position 0, high watermark 0 (live traffic, nothing on the broker)
    assert o.holding(0) == []
    assert items(o) == ["events.web#0@0", "events.web#0@1"]


def test_an_empty_partition_the_broker_has_more_for_holds_the_others_until_it_comes() -> None:
    o = order(A, B)
    fill(o, A, [100, 300])
    o.watermarks(B, 0, 2)  # the last fetch says B has two records we have not received yet
    assert o.holding(0) == [Holding(B, Wait.LAG, 1000)]
    assert o.release(10) == []
    fill(o, B, [200, 400])
    assert items(o, 20) == ["events.web#0@0", "events.pos#1@0", "events.web#0@1", "events.pos#1@1"]
    assert o.enforced == 0


def test_a_partition_with_no_fetch_yet_holds_the_others_too() -> None:
    o: PartitionOrder[str] = PartitionOrder(max_wait_ms=500)
    o.assign(A)
    o.assign(B)  # neither watermark known: no fetch has answered for B yet
    fill(o, A, [1])
    assert o.holding(0) == [Holding(B, Wait.UNKNOWN, 500)]
    assert o.release(499) == []


def test_the_wait_is_bounded_then_the_others_go_on_until_it_gets_records_again() -> None:
    o = order(A, B, max_wait_ms=1000)
    fill(o, A, [1, 2])
    o.watermarks(B, 0, 5)
    assert o.release(0) == []  # the wait starts now
    assert o.release(999) == []
    assert items(o, 1000) == ["events.web#0@0", "events.web#0@1"]  # given up: enforced processing
    assert o.enforced == 1
    fill(o, A, [3], first=2)
    assert items(o, 5000) == ["events.web#0@2"]  # still given up on B: no new wait, counted once
    assert o.enforced == 1
    fill(o, B, [4])  # B came back
    assert items(o, 5001) == ["events.pos#1@0"]
    o.watermarks(B, 0, 9)  # and has more again
    fill(o, A, [5], first=3)
    assert o.release(5002) == []  # a new wait, bounded again
    assert items(o, 6002) == ["events.web#0@3"] and o.enforced == 2


def test_new_records_on_the_broker_end_a_given_up_wait() -> None:
    o = order(A, B, max_wait_ms=100)
    fill(o, A, [1])
    o.watermarks(B, 0, 3)
    o.release(0)
    assert items(o, 100) == ["events.web#0@0"]
    fill(o, A, [2], first=1)
    o.watermarks(B, 0, 4)  # the high watermark moved: the broker got more for B since we gave up
    assert o.release(150) == [] and o.holding(150) == [Holding(B, Wait.LAG, 250)]


def test_release_stops_where_a_partition_runs_dry_while_the_broker_has_more_for_it() -> None:
    o = order(A, B)
    fill(o, A, [10, 20, 30])
    fill(o, B, [15])
    o.watermarks(B, 0, 5)  # B: only one of its five records is here
    assert items(o) == ["events.web#0@0", "events.pos#1@0"]  # B's next may be earlier than A's 20
    assert o.buffered() == 2 and o.buffered(A) == 2


def test_a_record_without_a_time_follows_the_records_before_it_in_its_partition() -> None:
    o = order(A, B)
    fill(o, A, [50, None, 60])  # a dead letter at offset 1: it takes its partition's time so far, 50
    fill(o, B, [55])
    assert items(o) == ["events.web#0@0", "events.web#0@1", "events.pos#1@0", "events.web#0@2"]


def test_a_record_without_a_time_first_in_its_partition_goes_first() -> None:
    o = order(A, B)
    fill(o, A, [None])
    fill(o, B, [1])
    assert items(o) == ["events.web#0@0", "events.pos#1@0"]


def test_the_position_is_the_committed_offset_then_the_low_watermark_before_any_record() -> None:
    o: PartitionOrder[str] = PartitionOrder()
    o.assign(A)
    o.assign(B, committed=7)
    o.assign(C)
    fill(o, A, [1])
    o.watermarks(B, 0, 7)  # committed at the high watermark: caught up
    o.watermarks(C, 4, 4)  # nothing committed: starts at the low watermark (earliest), caught up
    assert o.holding(0) == []
    o.watermarks(B, 0, 9)
    assert o.holding(0) == [Holding(B, Wait.LAG, 1000)]


def test_revoking_drops_the_partitions_buffer_and_the_rest_goes_on() -> None:
    o = order(A, B)
    fill(o, A, [5, 6])
    fill(o, B, [1, 2, 3])
    assert o.revoke(B) == 3
    assert o.revoke(B) == 0
    assert o.buffered() == 2 and o.partitions == frozenset({A})
    assert items(o) == ["events.web#0@0", "events.web#0@1"]
    with pytest.raises(KeyError, match="not assigned"):
        o.add(B, 3, 4, "late")


def test_full_partitions_are_reported_at_the_cap() -> None:
    o = order(A, B, max_buffered=3)
    fill(o, A, [1, 2, 3])
    fill(o, B, [1, 2])
    assert o.full() == [A]


def test_the_next_deadline_is_the_earliest_running_wait() -> None:
    o = order(A, B, C, max_wait_ms=100)
    fill(o, A, [1])
    assert o.next_deadline() is None
    o.watermarks(B, 0, 1)
    o.watermarks(C, 0, 1)
    o.release(10)
    assert o.next_deadline() == 110


def test_bad_limits_are_refused() -> None:
    with pytest.raises(ValueError, match="max_buffered"):
        PartitionOrder(max_buffered=0)
    with pytest.raises(ValueError, match="max_wait_ms"):
        PartitionOrder(max_wait_ms=-1)


streams = st.lists(st.lists(st.integers(0, 50), max_size=12), min_size=1, max_size=5)


@given(streams)
def test_all_buffered_and_caught_up_every_record_leaves_once_each_partition_in_order(
        per_partition: list[list[int]]) -> None:
    parts = [Partition("t", i) for i in range(len(per_partition))]
    o = order(*parts)
    for p, times in zip(parts, per_partition, strict=True):
        fill(o, p, times)  # type: ignore[arg-type]
    out = o.release(0)
    assert sorted((r.partition, r.offset) for r in out) == [
        (p, i) for p, times in zip(parts, per_partition, strict=True) for i in range(len(times))]
    for p in parts:
        offsets = [r.offset for r in out if r.partition == p]
        assert offsets == sorted(offsets)
    if all(times == sorted(times) for times in per_partition):  # ordered inputs: one ordered output
        assert [r.time for r in out] == sorted(r.time for r in out)


@given(streams, st.lists(st.integers(1, 4), min_size=1, max_size=30))
def test_records_arriving_in_chunks_leave_in_time_order_when_each_partition_is_in_order(
        per_partition: list[list[int]], chunks: list[int]) -> None:
    """Chunks of one partition at a time (what librdkafka returns), the broker's high watermarks known
    up front: the output is what one time-ordered merge of the partitions gives."""
    parts = [Partition("t", i) for i in range(len(per_partition))]
    o: PartitionOrder[str] = PartitionOrder(max_wait_ms=10**9)
    sent = {p: sorted(times) for p, times in zip(parts, per_partition, strict=True)}
    for p in parts:
        o.assign(p)
        o.watermarks(p, 0, len(sent[p]))
    taken = dict.fromkeys(parts, 0)
    out = []
    step = 0
    while any(taken[p] < len(sent[p]) for p in parts):
        p = parts[step % len(parts)]
        n = chunks[step % len(chunks)]
        for t in sent[p][taken[p]:taken[p] + n]:
            o.add(p, taken[p], t, "x")
            taken[p] += 1
        out += o.release(0)
        step += 1
    out += o.release(0)
    assert len(out) == sum(map(len, sent.values()))
    assert [r.time for r in out] == sorted(r.time for r in out)


# ---------------------------------------------------------------------- the adapter


class FakeConsumer:
    def __init__(self, marks: dict[tuple[str, int], tuple[int, int]], committed: dict[tuple[str, int], int],
                 fail_committed: bool = False) -> None:
        self.marks = marks
        self._committed = committed
        self.fail_committed = fail_committed
        self.paused: set[tuple[str, int]] = set()
        self.watermark_reads: list[tuple[str, int]] = []

    def committed(self, partitions: list[TopicPartition], timeout: float = 10) -> list[TopicPartition]:
        if self.fail_committed:
            raise KafkaException(KafkaError(KafkaError._TIMED_OUT))
        return [TopicPartition(tp.topic, tp.partition, self._committed.get((tp.topic, tp.partition), -1001))
                for tp in partitions]

    def get_watermark_offsets(self, tp: TopicPartition, timeout: float = 1, cached: bool = False) -> Any:
        assert cached, "the adapter reads the watermarks of the last fetch, never ListOffsets"
        self.watermark_reads.append((tp.topic, tp.partition))
        return self.marks.get((tp.topic, tp.partition), (-1001, -1001))

    def pause(self, partitions: list[TopicPartition]) -> None:
        self.paused |= {(tp.topic, tp.partition) for tp in partitions}

    def resume(self, partitions: list[TopicPartition]) -> None:
        self.paused -= {(tp.topic, tp.partition) for tp in partitions}


def test_the_adapter_orders_only_its_topics_and_starts_from_the_committed_offsets() -> None:
    consumer = FakeConsumer({("a", 0): (0, 10), ("b", 0): (0, 3)}, {("a", 0): 10})
    order: ConsumerOrder[str] = ConsumerOrder(["a", "b"])
    order.assigned(consumer, [TopicPartition("a", 0), TopicPartition("b", 0), TopicPartition("other", 0)])
    assert order.order.partitions == frozenset({Partition("a", 0), Partition("b", 0)})
    order.add("b", 0, 0, 5, "b0")
    # a#0 is committed at its high watermark: caught up, so b's record goes at once
    assert [r.item for r in order.release(consumer, 0)] == ["b0"]
    order.add("b", 0, 1, 6, "b1")
    consumer.marks[("a", 0)] = (0, 11)  # a fetch brought a's high watermark forward
    assert order.release(consumer, 1) == []
    order.add("a", 0, 10, 4, "a10")
    assert [r.item for r in order.release(consumer, 2)] == ["a10", "b1"]


def test_unknown_committed_offsets_fall_back_to_the_first_fetch() -> None:
    consumer = FakeConsumer({("a", 0): (0, 0)}, {}, fail_committed=True)
    order: ConsumerOrder[str] = ConsumerOrder(["a", "b"])
    order.assigned(consumer, [TopicPartition("a", 0), TopicPartition("b", 0)])
    order.add("b", 0, 0, 1, "b0")
    assert [r.item for r in order.release(consumer, 0)] == ["b0"]  # a: low = high = 0, caught up


def test_a_full_partition_is_paused_and_resumed_once_half_of_it_is_released() -> None:
    consumer = FakeConsumer({("a", 0): (0, 100), ("b", 0): (0, 100)}, {})
    order: ConsumerOrder[str] = ConsumerOrder(["a", "b"], max_buffered=4)
    order.assigned(consumer, [TopicPartition("a", 0), TopicPartition("b", 0)])
    for i in range(4):
        order.add("a", 0, i, 10 + 2 * i, f"a{i}")
    assert order.release(consumer, 0) == []  # b has records on the broker: wait for them
    assert consumer.paused == {("a", 0)} and order.is_paused("a", 0)
    order.add("b", 0, 0, 11, "b0")
    released = [r.item for r in order.release(consumer, 1)]
    assert released == ["a0", "b0"]  # then b ran dry with more on the broker
    assert consumer.paused == {("a", 0)}  # 3 left of 4: not yet half
    order.add("b", 0, 1, 20, "b1")
    # a runs dry with more on the broker (b1 could be later than a's next): hold b1, resume a
    assert [r.item for r in order.release(consumer, 2)] == ["a1", "a2", "a3"]
    assert consumer.paused == set()


def test_a_stage_pause_is_not_undone_by_the_order_and_full_partitions_stay_paused_after_it() -> None:
    consumer = FakeConsumer({("a", 0): (0, 0), ("b", 0): (0, 100)}, {})
    order: ConsumerOrder[str] = ConsumerOrder(["a", "b"], max_buffered=2)
    order.assigned(consumer, [TopicPartition("a", 0), TopicPartition("b", 0)])
    order.add("b", 0, 0, 1, "b0")
    order.add("b", 0, 1, 2, "b1")
    order.release(consumer, 0)
    assert consumer.paused == set()  # b was full, then released (a is caught up)
    order.add("b", 0, 2, 3, "b2")
    order.add("b", 0, 3, 4, "b3")
    consumer.paused = {("a", 0), ("b", 0)}  # the stage pauses everything (its registry is down)
    order.stage_paused = True
    order.order.max_wait_ms = 0
    order.release(consumer, 1)
    assert consumer.paused == {("a", 0), ("b", 0)}  # drained, but the stage's pause stands
    order.stage_paused = False
    consumer.paused = set()  # the stage resumes everything
    order.add("b", 0, 4, 5, "b4")
    order.add("b", 0, 5, 6, "b5")
    order.reapply_pauses(consumer)
    assert consumer.paused == {("b", 0)}


def test_revoked_partitions_lose_their_buffer_and_their_pause() -> None:
    consumer = FakeConsumer({("a", 0): (0, 50)}, {})
    order: ConsumerOrder[str] = ConsumerOrder(["a"], max_buffered=2)
    order.assigned(consumer, [TopicPartition("a", 0), TopicPartition("a", 1)])
    consumer.marks[("a", 1)] = (0, 9)
    order.add("a", 0, 0, 1, "x")
    order.add("a", 0, 1, 2, "y")
    order.release(consumer, 0)
    assert order.is_paused("a", 0)
    order.revoked([TopicPartition("a", 0)])
    assert order.dropped == 2 and order.buffered() == 0 and not order.is_paused("a", 0)


def test_no_watermark_is_read_while_nothing_is_buffered() -> None:
    consumer = FakeConsumer({("a", 0): (0, 5), ("a", 1): (0, 0)}, {})
    order: ConsumerOrder[str] = ConsumerOrder(["a"])
    order.assigned(consumer, [TopicPartition("a", 0), TopicPartition("a", 1)])
    assert order.release(consumer, 0) == [] and consumer.watermark_reads == []
    order.add("a", 0, 0, 1, "x")
    order.release(consumer, 0)
    assert sorted(consumer.watermark_reads) == [("a", 0), ("a", 1)]


def test_the_enforced_callback_counts_the_waits_given_up() -> None:
    consumer = FakeConsumer({("a", 0): (0, 5), ("a", 1): (0, 9)}, {})
    counted: list[int] = []
    order: ConsumerOrder[str] = ConsumerOrder(["a"], max_wait_ms=10, on_enforced=counted.append)
    order.assigned(consumer, [TopicPartition("a", 0), TopicPartition("a", 1)])
    order.add("a", 0, 0, 1, "x")
    assert order.release(consumer, 0) == []
    assert [r.item for r in order.release(consumer, 10)] == ["x"] and counted == [1]


def test_records_put_back_come_out_again_first_in_the_same_order() -> None:
    o = order(A, B)
    fill(o, A, [1, 3, 5])
    fill(o, B, [2, 4])
    out = o.release(0)
    assert [r.item for r in out] == ["events.web#0@0", "events.pos#1@0", "events.web#0@1", "events.pos#1@1",
                                     "events.web#0@2"]
    o.unrelease(out[2:])  # the stage took the first two only
    assert o.buffered() == 3 and o.buffered(B) == 1
    assert [r.item for r in o.release(1)] == [r.item for r in out[2:]]
