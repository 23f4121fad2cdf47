"""Tansu's ListOffsets stops at the last batch's base offset; fetched watermarks do not; Kafka's is right."""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from pipeline.broker.embedded import EmbeddedBroker
from pipeline.broker.kafka_process import KafkaCluster
from pipeline.broker.watermarks import fetched_highwaters

pytestmark = pytest.mark.broker


def _topic(servers: str) -> str:
    name = f"wm-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": servers})
    admin.create_topics([NewTopic(name, 1, 1)])[name].result(10)
    return name


def _three_singles_then_a_batch_of_five(servers: str, topic: str) -> None:
    single = Producer({"bootstrap.servers": servers, "linger.ms": 0})
    for i in range(3):
        single.produce(topic, b"s%d" % i, partition=0)
        single.flush(10)
    batched = Producer({"bootstrap.servers": servers, "linger.ms": 200})
    for i in range(5):
        batched.produce(topic, b"b%d" % i, partition=0)
    batched.flush(10)


def _listoffsets_latest(servers: str, topic: str) -> int:
    c = Consumer({"bootstrap.servers": servers, "group.id": "wm-probe"})
    try:
        _low, high = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        return int(high)
    finally:
        c.close()


def test_tansu_listoffsets_reports_the_last_batch_base(tansu_broker: EmbeddedBroker) -> None:
    """Minimal reproduction of the broker behaviour the workaround exists for."""
    servers = tansu_broker.bootstrap_servers
    topic = _topic(servers)
    _three_singles_then_a_batch_of_five(servers, topic)
    listed = _listoffsets_latest(servers, topic)
    assert listed < 8, "if this fails, Tansu fixed ListOffsets and the workaround can go"
    assert listed == 4


def test_fetched_highwater_is_the_real_end(tansu_broker: EmbeddedBroker) -> None:
    servers = tansu_broker.bootstrap_servers
    topic = _topic(servers)
    _three_singles_then_a_batch_of_five(servers, topic)
    listed = _listoffsets_latest(servers, topic)
    fixed = fetched_highwaters({"bootstrap.servers": servers}, {(topic, 0): listed})
    assert fixed == {(topic, 0): 8}


def test_empty_partition_stays_empty(tansu_broker: EmbeddedBroker) -> None:
    topic = _topic(tansu_broker.bootstrap_servers)
    fixed = fetched_highwaters({"bootstrap.servers": tansu_broker.bootstrap_servers}, {(topic, 0): 0},
                               timeout_s=1.0)
    assert fixed == {(topic, 0): 0}


def test_kafka_listoffsets_is_the_real_end(broker: KafkaCluster) -> None:
    """Why the pipeline trusts ListOffsets on Apache Kafka: the same records, the right answer."""
    topic = _topic(broker.bootstrap_servers)
    _three_singles_then_a_batch_of_five(broker.bootstrap_servers, topic)
    assert _listoffsets_latest(broker.bootstrap_servers, topic) == 8


def test_a_tansu_worker_uses_the_fetching_transport() -> None:
    from faust.transport import drivers

    from pipeline.broker.client_config import faust_broker_kwargs
    from pipeline.broker.tansu_transport import Transport
    from pipeline.settings import load_settings

    settings = load_settings().with_bootstrap("127.0.0.1:9", load_settings().data_dir, tansu=True)
    url = faust_broker_kwargs(settings)["broker"]
    assert url.startswith("tansu://")
    assert drivers.by_url(url) is Transport


def test_a_kafka_worker_uses_faust_s_own_transport() -> None:
    """On Apache Kafka (embedded or configured) Faust's table recovery trusts the broker's ListOffsets."""
    from faust.transport import drivers
    from faust.transport.drivers import aiokafka

    from pipeline.broker.client_config import faust_broker_kwargs
    from pipeline.settings import load_settings

    embedded = load_settings().with_bootstrap("127.0.0.1:9,127.0.0.1:10", load_settings().data_dir)
    configured = load_settings(KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:9", OMNIPIPE_PII_HASH_KEY="k" * 32,
                               OMNIPIPE_LOCAL_BROKER=True)
    for settings in (embedded, configured):
        url = faust_broker_kwargs(settings)["broker"]
        assert url == ";".join(f"kafka://{h}" for h in str(settings.kafka_bootstrap_servers).split(","))
        assert drivers.by_url(url.split(";")[0]) is aiokafka.Transport
