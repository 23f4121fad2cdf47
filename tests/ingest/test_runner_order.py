"""Ingest releases its outputs in event-time order across its input partitions (stand-in clients).

Before ``pipeline/runtime/ordering.py`` the loop produced each consumed batch as it came: a chunk of
one partition, then one of the next, whatever their event times.
"""

from __future__ import annotations

from typing import Any

from confluent_kafka import TopicPartition
from prometheus_client import CollectorRegistry

from pipeline.contracts.catalogue import SchemaCatalogue
from pipeline.contracts.codec import AvroCodec
from pipeline.ingest.identifiers import PiiHasher
from pipeline.ingest.processor import IngestProcessor, SourceTopic
from pipeline.ingest.runner import IngestConfig, IngestLoop
from pipeline.metrics.ingest import IngestMetrics
from pipeline.topology.catalogue import CHANNELS, load_catalogue

CAT = load_catalogue()
CODEC = AvroCodec(SchemaCatalogue.load())
SOURCES = {t.name: SourceTopic(t.name, t.avro_subject, t.channel) for t in CAT.ingest_sources}
WEB = CAT["web"].name
NOW = 1_795_000_000_000


class Msg:
    def __init__(self, partition: int, offset: int, event_id: str, event_time: int) -> None:
        self._p, self._o = partition, offset
        self._v = CODEC.encode(CAT["web"].avro_subject, {
            "event_id": event_id, "event_time": event_time, "identifiers": {"anonymous_id": event_id},
            "type": "PAGE_VIEW"})

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return WEB

    def partition(self) -> int:
        return self._p

    def offset(self) -> int:
        return self._o

    def key(self) -> bytes:
        return b"k"

    def value(self) -> bytes:
        return self._v

    def timestamp(self) -> tuple[int, int]:
        return (1, NOW)


class Producer:
    def __init__(self) -> None:
        self.sent: list[str] = []

    def produce(self, topic: str, value: bytes, key: bytes | None) -> None:
        self.sent.append(CODEC.decode(value, CAT["canonical"].avro_subject)["event_id"])

    def poll(self, _t: float) -> int:
        return 0

    def flush(self, _t: float) -> int:
        return 0


class Consumer:
    """Two partitions of events.web; ``high``: each one's high watermark as the last fetch told it."""

    def __init__(self, high: dict[int, int]) -> None:
        self.high = high
        self.paused: set[int] = set()
        self.commits: list[list[tuple[int, int]]] = []

    def committed(self, partitions: list[TopicPartition], timeout: float = 10) -> list[TopicPartition]:
        return [TopicPartition(tp.topic, tp.partition, -1001) for tp in partitions]  # a new group

    def get_watermark_offsets(self, tp: TopicPartition, timeout: float = 1, cached: bool = False) -> Any:
        return (0, self.high[tp.partition])

    def pause(self, partitions: list[TopicPartition]) -> None:
        self.paused |= {tp.partition for tp in partitions}

    def resume(self, partitions: list[TopicPartition]) -> None:
        self.paused -= {tp.partition for tp in partitions}

    def commit(self, offsets: list[TopicPartition], asynchronous: bool) -> None:
        self.commits.append(sorted((tp.partition, tp.offset) for tp in offsets))


def loop(consumer: Consumer) -> Any:
    config = IngestConfig(
        client={}, group_id="t", sources=SOURCES, canonical_topic=CAT["canonical"].name,
        canonical_subject=CAT["canonical"].avro_subject, dlq_topic=CAT["dlq"].name,
        dlq_subject=CAT["dlq"].avro_subject, order_max_wait_ms=60_000)
    ingest: Any = IngestLoop(config, IngestProcessor(SOURCES, CODEC, PiiHasher(b"k" * 32)), CODEC.encode,
                        IngestMetrics(CollectorRegistry(), CHANNELS), clock_ms=lambda: NOW)
    ingest._consumer = consumer  # type: ignore[assignment]  # what run() sets
    ingest._order.assigned(consumer, [TopicPartition(WEB, 0), TopicPartition(WEB, 1)])
    return ingest


def test_outputs_leave_in_event_time_order_across_partitions_and_each_partition_in_its_own() -> None:
    consumer, producer = Consumer({0: 3, 1: 2}), Producer()
    ingest = loop(consumer)
    # what librdkafka hands over: partition 0's chunk, then partition 1's
    ingest._take(consumer, [Msg(0, 0, "a", NOW - 50), Msg(0, 1, "c", NOW - 30),
                            Msg(0, 2, "late", NOW - 45)], producer)
    assert producer.sent == [] and ingest._pending == {}  # partition 1 has records on the broker: wait
    ingest._take(consumer, [Msg(1, 0, "b", NOW - 40), Msg(1, 1, "d", NOW - 20)], producer)
    assert producer.sent == ["a", "b", "c", "late", "d"]  # "late" stays behind "c", its partition's order
    assert ingest._pending == {(WEB, 0): 3, (WEB, 1): 2}
    ingest._commit(consumer, producer)
    assert consumer.commits == [[(0, 3), (1, 2)]]


def test_only_released_records_are_committed() -> None:
    consumer, producer = Consumer({0: 2, 1: 1}), Producer()
    ingest = loop(consumer)
    ingest._take(consumer, [Msg(0, 0, "a", NOW - 50), Msg(0, 1, "c", NOW - 30)], producer)
    consumer.high[1] = 2  # the last fetch says partition 1 has two: "c" may not go before its second
    ingest._take(consumer, [Msg(1, 0, "b", NOW - 40)], producer)
    assert producer.sent == ["a", "b"]
    ingest._commit(consumer, producer)
    assert consumer.commits == [[(0, 1), (1, 1)]]  # "c" (partition 0, offset 1) is not committed


def test_a_caught_up_partition_does_not_hold_live_records() -> None:
    consumer, producer = Consumer({0: 1, 1: 0}), Producer()  # partition 1: nothing on the broker
    ingest = loop(consumer)
    ingest._take(consumer, [Msg(0, 0, "now", NOW)], producer)
    assert producer.sent == ["now"]


def test_a_full_partition_is_paused_until_half_of_it_is_released() -> None:
    consumer, producer = Consumer({0: 10, 1: 5}), Producer()
    ingest = loop(consumer)
    ingest._order.order.max_buffered = 4
    ingest._take(consumer, [Msg(0, i, f"a{i}", NOW - 100 + i) for i in range(4)], producer)
    assert producer.sent == [] and consumer.paused == {0}
    ingest._take(consumer, [Msg(1, i, f"b{i}", NOW - 10 + i) for i in range(5)], producer)
    assert producer.sent == ["a0", "a1", "a2", "a3"]  # then partition 0 ran dry: it has more on the broker
    assert consumer.paused == {1}  # partition 0 resumed (drained), partition 1 is full now
