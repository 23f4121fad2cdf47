"""Tansu's ListOffsets stops at the last batch's base offset; fetched watermarks do not."""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from pipeline.broker.embedded import EmbeddedBroker
from pipeline.broker.watermarks import fetched_highwaters

pytestmark = pytest.mark.broker


def _topic(broker: EmbeddedBroker) -> str:
    name = f"wm-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": broker.bootstrap_servers})
    admin.create_topics([NewTopic(name, 1, 1)])[name].result(10)
    return name


def _three_singles_then_a_batch_of_five(broker: EmbeddedBroker, topic: str) -> None:
    single = Producer({"bootstrap.servers": broker.bootstrap_servers, "linger.ms": 0})
    for i in range(3):
        single.produce(topic, b"s%d" % i, partition=0)
        single.flush(10)
    batched = Producer({"bootstrap.servers": broker.bootstrap_servers, "linger.ms": 200})
    for i in range(5):
        batched.produce(topic, b"b%d" % i, partition=0)
    batched.flush(10)


def _listoffsets_latest(broker: EmbeddedBroker, topic: str) -> int:
    c = Consumer({"bootstrap.servers": broker.bootstrap_servers, "group.id": "wm-probe"})
    try:
        _low, high = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        return int(high)
    finally:
        c.close()


def test_tansu_listoffsets_reports_the_last_batch_base(broker: EmbeddedBroker) -> None:
    """Minimal reproduction of the broker behaviour the workaround exists for."""
    topic = _topic(broker)
    _three_singles_then_a_batch_of_five(broker, topic)
    listed = _listoffsets_latest(broker, topic)
    assert listed < 8, "if this fails, Tansu fixed ListOffsets and the workaround can go"
    assert listed == 4


def test_fetched_highwater_is_the_real_end(broker: EmbeddedBroker) -> None:
    topic = _topic(broker)
    _three_singles_then_a_batch_of_five(broker, topic)
    listed = _listoffsets_latest(broker, topic)
    fixed = fetched_highwaters({"bootstrap.servers": broker.bootstrap_servers}, {(topic, 0): listed})
    assert fixed == {(topic, 0): 8}


def test_empty_partition_stays_empty(broker: EmbeddedBroker) -> None:
    topic = _topic(broker)
    fixed = fetched_highwaters({"bootstrap.servers": broker.bootstrap_servers}, {(topic, 0): 0},
                               timeout_s=1.0)
    assert fixed == {(topic, 0): 0}


def test_embedded_worker_uses_the_fetching_transport() -> None:
    from faust.transport import drivers

    from pipeline.broker.client_config import faust_broker_kwargs
    from pipeline.broker.tansu_transport import Transport
    from pipeline.settings import load_settings

    settings = load_settings().with_bootstrap("127.0.0.1:9", load_settings().data_dir)
    url = faust_broker_kwargs(settings)["broker"]
    assert url.startswith("tansu://")
    assert drivers.by_url(url) is Transport
