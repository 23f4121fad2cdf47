"""The ingest loop's failure handling, without a broker (stand-in client objects)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition
from prometheus_client import CollectorRegistry

from pipeline.contracts.catalogue import SchemaCatalogue
from pipeline.contracts.codec import AvroCodec
from pipeline.contracts.errors import SchemaRegistryError
from pipeline.contracts.resolver import RegisteredSchema
from pipeline.ingest.identifiers import PiiHasher
from pipeline.ingest.outage import Backoff, HeldRecords, RegistryWait
from pipeline.ingest.processor import Deferred, IngestProcessor, SourceTopic
from pipeline.ingest.runner import DeliveryFailed, IngestConfig, IngestLoop
from pipeline.metrics.ingest import IngestMetrics
from pipeline.topology.catalogue import CHANNELS, load_catalogue

CAT = load_catalogue()
CODEC = AvroCodec(SchemaCatalogue.load())
SOURCES = {t.name: SourceTopic(t.name, t.avro_subject, t.channel) for t in CAT.ingest_sources}


class Msg:
    def __init__(self, topic: str, offset: int, value: bytes) -> None:
        self._t, self._o, self._v = topic, offset, value

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return self._t

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._o

    def key(self) -> bytes:
        return b"k"

    def value(self) -> bytes:
        return self._v

    def timestamp(self) -> tuple[int, int]:
        return (1, 1_795_000_000_000)


class Producer:
    def __init__(self, unacked: int = 0) -> None:
        self.sent: list[tuple[str, bytes, bytes | None]] = []
        self.unacked = unacked

    def produce(self, topic: str, value: bytes, key: bytes | None) -> None:
        self.sent.append((topic, value, key))

    def poll(self, _t: float) -> int:
        return 0

    def flush(self, _t: float) -> int:
        return self.unacked


class Consumer:
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.committed: list[Any] = []
        self.paused: set[tuple[str, int]] = set()
        self.assigned = [TopicPartition(CAT["web"].name, 0)]

    def assignment(self) -> list[TopicPartition]:
        return self.assigned

    def pause(self, partitions: list[TopicPartition]) -> None:
        self.paused |= {(tp.topic, tp.partition) for tp in partitions}

    def resume(self, partitions: list[TopicPartition]) -> None:
        self.paused -= {(tp.topic, tp.partition) for tp in partitions}

    def commit(self, offsets: list[Any], asynchronous: bool) -> None:
        if self.fail:
            raise KafkaException(KafkaError(KafkaError.REBALANCE_IN_PROGRESS))
        self.committed.append(offsets)


def loop(encode: Any = CODEC.encode) -> tuple[IngestLoop, IngestMetrics]:
    metrics = IngestMetrics(CollectorRegistry(), CHANNELS)
    config = IngestConfig(
        client={}, group_id="t", sources=SOURCES, canonical_topic=CAT["canonical"].name,
        canonical_subject=CAT["canonical"].avro_subject, dlq_topic=CAT["dlq"].name,
        dlq_subject=CAT["dlq"].avro_subject,
    )
    processor = IngestProcessor(SOURCES, CODEC, PiiHasher(b"k" * 32))
    return IngestLoop(config, processor, encode, metrics, clock_ms=lambda: 1_795_000_000_000), metrics


def test_refused_commit_is_counted_and_the_loop_goes_on() -> None:
    ingest, metrics = loop()
    producer = Producer()
    ingest._handle([Msg(CAT["web"].name, 5, b"garbage")], producer)  # type: ignore[list-item]
    ingest._commit(Consumer(fail=True), producer)  # type: ignore[arg-type]
    assert metrics.commit_failures._value.get() == 1
    consumer = Consumer(fail=False)
    ingest._commit(consumer, producer)  # type: ignore[arg-type]
    assert consumer.committed == []  # the refused offsets are not retried for a partition we may have lost


def test_unacknowledged_output_stops_the_stage_before_committing() -> None:
    ingest, _ = loop()
    producer = Producer(unacked=3)
    ingest._handle([Msg(CAT["web"].name, 5, b"garbage")], producer)  # type: ignore[list-item]
    consumer = Consumer(fail=False)
    with pytest.raises(DeliveryFailed):
        ingest._commit(consumer, producer)  # type: ignore[arg-type]
    assert consumer.committed == []


def test_a_dead_letter_that_cannot_be_encoded_is_still_published() -> None:
    def encode(subject: str, record: dict[str, Any]) -> bytes:
        if record.get("sealed") is not None:
            raise ValueError("simulated encoder bug")
        return CODEC.encode(subject, record)

    ingest, _ = loop(encode)
    producer = Producer()
    ingest._handle([Msg(CAT["web"].name, 9, b"\x01not-avro")], producer)  # type: ignore[list-item]
    [(topic, value, _key)] = producer.sent
    assert topic == CAT["dlq"].name
    dead = CODEC.decode(value, CAT["dlq"].avro_subject)
    assert dead["reason"] == "bad_magic_byte" and dead["value"] is None and dead["source_offset"] == 9
    assert dead["sealed"] is None and "failed to encode" in dead["detail"]


class FlakyRegistry:
    """The local catalogue behind a switch: while ``down``, every lookup fails as an unreachable registry."""

    def __init__(self) -> None:
        self.catalogue = SchemaCatalogue.load()
        self.down = True
        self.lookups = 0

    def by_id(self, schema_id: int) -> RegisteredSchema:
        self.lookups += 1
        if self.down:
            raise SchemaRegistryError("schema registry http://registry.test:8081 unreachable: ConnectError")
        return self.catalogue.by_id(schema_id)

    def latest(self, subject: str) -> RegisteredSchema:
        if self.down:
            raise SchemaRegistryError("schema registry http://registry.test:8081 unreachable: ConnectError")
        return self.catalogue.latest(subject)


def web_event(i: int) -> bytes:
    return CODEC.encode(CAT["web"].avro_subject, {
        "event_id": f"e{i}", "event_time": 1_795_000_000_000, "identifiers": {"anonymous_id": f"a{i}"},
        "type": "PAGE_VIEW"})


def test_a_registry_outage_defers_the_record_instead_of_dead_lettering_it() -> None:
    processor = IngestProcessor(SOURCES, AvroCodec(FlakyRegistry()), PiiHasher(b"k" * 32))
    result = processor.process(CAT["web"].name, 0, 5, None, b"k", web_event(1), 1_795_000_000_000)
    assert type(result) is Deferred
    assert "registry.test:8081" in result.detail and "a1" not in result.detail


def test_ingest_holds_the_batch_while_the_registry_is_down_and_resumes_from_the_first_held() -> None:
    registry = FlakyRegistry()
    metrics = IngestMetrics(CollectorRegistry(), CHANNELS)
    config = IngestConfig(
        client={}, group_id="t", sources=SOURCES, canonical_topic=CAT["canonical"].name,
        canonical_subject=CAT["canonical"].avro_subject, dlq_topic=CAT["dlq"].name,
        dlq_subject=CAT["dlq"].avro_subject, registry_retry_initial_s=0.01, registry_retry_max_s=0.04,
    )
    processor = IngestProcessor(SOURCES, AvroCodec(registry), PiiHasher(b"k" * 32))
    ingest = IngestLoop(config, processor, CODEC.encode, metrics, clock_ms=lambda: 1_795_000_000_000)
    producer, consumer = Producer(), Consumer()
    web = CAT["web"].name
    batch = [Msg(web, 5 + i, web_event(i)) for i in range(3)]

    ingest._take(consumer, batch, producer)  # type: ignore[arg-type]
    assert producer.sent == [] and ingest._pending == {}  # nothing dead-lettered, nothing to commit
    assert consumer.paused == {(web, 0)}
    assert metrics.registry_unavailable._value.get() == 1
    ingest._commit(consumer, producer)  # type: ignore[arg-type]
    assert consumer.committed == []

    wait = ingest._wait
    assert wait is not None
    delays = [wait.delay_s]
    for _ in range(4):  # still down: each retry waits twice as long, up to registry_retry_max_s
        while not wait.due(time.monotonic()):
            time.sleep(0.002)
        ingest._registry_wait(consumer, producer)  # type: ignore[arg-type]
        delays.append(wait.delay_s)
    assert metrics.registry_retries._value.get() == 4
    assert delays == [0.01, 0.02, 0.04, 0.04, 0.04] and producer.sent == []
    assert ingest._wait is wait and len(wait.held) == 3

    registry.down = False
    while not wait.due(time.monotonic()):
        time.sleep(0.002)
    ingest._registry_wait(consumer, producer)  # type: ignore[arg-type]
    assert ingest._wait is None and consumer.paused == set()
    assert metrics.registry_unavailable._value.get() == 0
    assert [topic for topic, _v, _k in producer.sent] == [CAT["canonical"].name] * 3
    events = [CODEC.decode(v, CAT["canonical"].avro_subject)["event_id"] for _t, v, _k in producer.sent]
    assert events == ["e0", "e1", "e2"]  # in order, from the first held record, none twice
    assert ingest._pending == {(web, 0): 8}
    assert all(child._value.get() == 0 for child in metrics.dlq._metrics.values())


def test_a_rebalance_during_the_wait_drops_the_held_records_of_revoked_partitions() -> None:
    wait = RegistryWait.begin(0.0, HeldRecords([Msg("t", 1, b"x"), Msg("u", 2, b"y")], "down"), Backoff())
    assert wait.drop([TopicPartition("t", 0)]) == 1
    assert [(m.topic(), m.offset()) for m in wait.held] == [("u", 2)]


def test_backoff_doubles_from_its_start_up_to_its_cap() -> None:
    backoff = Backoff(0.2, 1.0)
    assert [backoff.delay(n) for n in range(5)] == [0.2, 0.4, 0.8, 1.0, 1.0]
    assert Backoff(0.2, 30.0).delay(10_000) == 30.0
    with pytest.raises(ValueError):
        Backoff(0.0, 1.0)
