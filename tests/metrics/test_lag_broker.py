"""Consumer lag read from a real broker: N records produced, M committed, lag N - M in the registry."""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from prometheus_client import CollectorRegistry

from pipeline.app import build_ingest
from pipeline.broker.admin import ensure_topics
from pipeline.broker.kafka_process import KafkaCluster
from pipeline.contracts.catalogue import SchemaCatalogue
from pipeline.contracts.codec import AvroCodec
from pipeline.metrics.lag import NAME, lag_monitor
from pipeline.runtime.status import StageStatus
from pipeline.settings import load_settings
from pipeline.topology.catalogue import TopicCatalogue, load_catalogue

pytestmark = pytest.mark.broker


def test_lag_of_an_owned_partition_is_produced_minus_committed(
        broker: KafkaCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    """On Apache Kafka the broker's own ListOffsets is the end: no fetch correction, the right lag."""
    def no_fetch(*_a: object, **_k: object) -> None:
        raise AssertionError("the Tansu watermark workaround ran on Apache Kafka")

    monkeypatch.setattr("pipeline.metrics.lag.fetched_highwaters", no_fetch)
    client: dict[str, Any] = {"bootstrap.servers": broker.bootstrap_servers}
    topic, group = f"lag-{uuid.uuid4().hex[:8]}", f"lag-group-{uuid.uuid4().hex[:8]}"
    admin = AdminClient(client)
    admin.create_topics([NewTopic(topic, 2, 1)])[topic].result(10)
    # 3 single records, then one batch of 5, on partition 0 (Tansu's ListOffsets says 4 for that, not 8);
    # 2 records on partition 1, which another worker owns
    single = Producer({**client, "linger.ms": 0})
    for i in range(3):
        single.produce(topic, b"s%d" % i, partition=0)
        single.flush(10)
    batched = Producer({**client, "linger.ms": 200})
    for i in range(5):
        batched.produce(topic, b"b%d" % i, partition=0)
    for i in range(2):
        batched.produce(topic, b"o%d" % i, partition=1)
    assert batched.flush(10) == 0
    produced, committed = 8, 3
    committer = Consumer({**client, "group.id": group, "enable.auto.commit": False})
    try:
        committer.commit(offsets=[TopicPartition(topic, 0, committed)], asynchronous=False)
    finally:
        committer.close()

    status = StageStatus("identity")
    status.started(group)
    status.assigned_to(frozenset({(topic, 0)}))
    registry = CollectorRegistry()
    monitor = lag_monitor(registry, {"identity": status}, client, tansu=False)
    try:
        monitor.refresh()
    finally:
        monitor.stop()
        monitor.run()  # returns at once when stopped, closing the reader's consumers
    assert registry.get_sample_value(
        NAME, {"stage": "identity", "topic": topic, "partition": "0"}) == produced - committed
    assert registry.get_sample_value(NAME, {"stage": "identity", "topic": topic, "partition": "1"}) is None


def test_the_worker_monitor_follows_a_real_stage_loop(
        broker: KafkaCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Wired as the worker wires it: one series per partition the ingest loop owns, 0 once committed."""
    tag = uuid.uuid4().hex[:6]
    base = load_catalogue().with_partitions(2)
    cat = TopicCatalogue({k: dataclasses.replace(v, name=f"lag-{tag}.{v.name}")
                          for k, v in base.topics.items()})
    client: dict[str, Any] = {"bootstrap.servers": broker.bootstrap_servers}
    ensure_topics(client, cat)
    env = {"KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers, "OMNIPIPE_PII_HASH_KEY": "k" * 32,
           "OMNIPIPE_LOCAL_BROKER": "1", "OMNIPIPE_DATA_DIR": str(tmp_path / "state"),
           "OMNIPIPE_GROUP_ID": f"lag-{tag}"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("SCHEMA_REGISTRY_URL", raising=False)
    settings = load_settings()
    codec = AvroCodec(SchemaCatalogue.load())
    registry = CollectorRegistry()
    loop = build_ingest(settings, cat, codec, registry)
    monitor = lag_monitor(registry, {"ingest": loop.status}, client, tansu=settings.tansu, interval_s=0.2)

    def lags() -> dict[tuple[str, int], float]:
        return {(s.labels["topic"], int(s.labels["partition"])): s.value
                for m in registry.collect() if m.name == NAME for s in m.samples}

    producer = Producer(client)
    now_ms = int(time.time() * 1000)
    for i in range(30):
        event = {"event_id": f"lag-{i}", "event_time": now_ms + i,
                 "identifiers": {"anonymous_id": f"cookie-{i}"}, "type": "PAGE_VIEW"}
        producer.produce(cat["web"].name, codec.encode(cat["web"].avro_subject, event),
                         f"cookie-{i}".encode())
    assert producer.flush(10) == 0
    threads = [threading.Thread(target=loop.run, daemon=True),
               threading.Thread(target=monitor.run, daemon=True)]
    for thread in threads:
        thread.start()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            owned = loop.status.assigned
            if owned and set(lags()) == set(owned) and not any(lags().values()):
                break
            time.sleep(0.1)
        assert registry.get_sample_value("omnipipe_ingest_events_accepted_total", {"channel": "web"}) == 30
        assert set(lags()) == set(loop.status.assigned) and len(lags()) == 2 * len(cat.ingest_sources)
        assert not any(lags().values()), lags()
    finally:
        loop.stop()
        monitor.stop()
        for thread in threads:
            thread.join(30)
    assert lags() == {}  # a stopped stage owns nothing
