"""The ingest loop's failure handling, without a broker (stand-in client objects)."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException
from prometheus_client import CollectorRegistry

from pipeline.contracts.catalogue import SchemaCatalogue
from pipeline.contracts.codec import AvroCodec
from pipeline.ingest.identifiers import PiiHasher
from pipeline.ingest.processor import IngestProcessor, SourceTopic
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
    def __init__(self, fail: bool) -> None:
        self.fail = fail
        self.committed: list[Any] = []

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
        if record.get("value") is not None:
            raise ValueError("simulated encoder bug")
        return CODEC.encode(subject, record)

    ingest, _ = loop(encode)
    producer = Producer()
    ingest._handle([Msg(CAT["web"].name, 9, b"\x01not-avro")], producer)  # type: ignore[list-item]
    [(topic, value, _key)] = producer.sent
    assert topic == CAT["dlq"].name
    dead = CODEC.decode(value, CAT["dlq"].avro_subject)
    assert dead["reason"] == "bad_magic_byte" and dead["value"] is None and dead["source_offset"] == 9
