"""Consumer lag per stage and partition, from committed offsets and true end offsets."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from pipeline.broker.watermarks import fetched_highwaters
from pipeline.faults.substrate import quirks
from pipeline.topology.catalogue import TopicCatalogue


def stage_inputs(catalogue: TopicCatalogue, group: str) -> dict[str, list[str]]:
    """Consumer group -> the topics it consumes (as ``pipeline/app.py`` wires the stages)."""
    return {
        f"{group}-ingest": [t.name for t in catalogue.ingest_sources],
        f"{group}-identity": [catalogue["canonical"].name, catalogue["identity_messages"].name],
        f"{group}-profile": [catalogue["resolved"].name, catalogue["identity_merges"].name,
                             catalogue["profile_messages"].name],
    }


def lags(client: Mapping[str, Any], groups: Mapping[str, list[str]]) -> dict[tuple[str, str, int], int]:
    """(group, topic, partition) -> records not yet committed by the group (end - committed)."""
    probe = Consumer({**client, "group.id": f"omnipipe-lag-{uuid.uuid4().hex[:8]}",
                      "enable.auto.commit": False})
    try:
        listed: dict[tuple[str, int], int] = {}
        for topics in groups.values():
            for topic in topics:
                md = probe.list_topics(topic, timeout=10)
                for p in md.topics[topic].partitions:
                    _low, high = probe.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                    listed[(topic, p)] = high
    finally:
        probe.close()
    # Tansu's ListOffsets is short (RELIABILITY.md): there, the high watermark of a fetch; Apache Kafka's own
    ends = fetched_highwaters(client, listed) if quirks() == "tansu" else listed
    out: dict[tuple[str, str, int], int] = {}
    for group, topics in groups.items():
        c = Consumer({**client, "group.id": group, "enable.auto.commit": False})
        try:
            tps = [TopicPartition(t, p) for (t, p) in ends if t in topics]
            for tp in c.committed(tps, timeout=10):
                committed = tp.offset if tp.offset >= 0 else 0
                out[(group, tp.topic, tp.partition)] = max(0, ends[(tp.topic, tp.partition)] - committed)
        finally:
            c.close()
    return out


def committed_sum(client: Mapping[str, Any], groups: Mapping[str, list[str]]) -> int:
    """Records the groups have committed on their topics, summed (how far a stage has got)."""
    total = 0
    for group, topics in groups.items():
        c = Consumer({**client, "group.id": group, "enable.auto.commit": False})
        try:
            tps = [TopicPartition(t, p) for t in topics
                   for p in c.list_topics(t, timeout=10).topics[t].partitions]
            total += sum(max(0, tp.offset) for tp in c.committed(tps, timeout=10))
        finally:
            c.close()
    return total
