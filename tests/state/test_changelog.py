"""The changelog's end before a restore: ListOffsets on Apache Kafka, a fetch's watermark on Tansu only."""

from __future__ import annotations

import pytest

from pipeline.broker.embedded import EmbeddedBroker
from pipeline.broker.kafka_process import KafkaCluster
from pipeline.state.changelog import _changelog_ends
from tests.broker.test_watermarks import _three_singles_then_a_batch_of_five, _topic

pytestmark = pytest.mark.broker


def test_on_kafka_the_end_is_listoffsets_without_a_fetch(
        broker: KafkaCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_fetch(*_a: object, **_k: object) -> None:
        raise AssertionError("the Tansu watermark workaround ran on Apache Kafka")

    monkeypatch.setattr("pipeline.state.changelog.fetched_highwaters", no_fetch)
    client = {"bootstrap.servers": broker.bootstrap_servers}
    topic = _topic(broker.bootstrap_servers)
    _three_singles_then_a_batch_of_five(broker.bootstrap_servers, topic)
    assert _changelog_ends(client, topic, [0], tansu=False) == {0: 8}


def test_on_tansu_the_end_comes_from_a_fetch(tansu_broker: EmbeddedBroker) -> None:
    client = {"bootstrap.servers": tansu_broker.bootstrap_servers}
    topic = _topic(tansu_broker.bootstrap_servers)
    _three_singles_then_a_batch_of_five(tansu_broker.bootstrap_servers, topic)
    assert _changelog_ends(client, topic, [0], tansu=False) == {0: 4}  # what the workaround is for
    assert _changelog_ends(client, topic, [0], tansu=True) == {0: 8}
