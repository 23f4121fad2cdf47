"""Read a topic to its end, for summaries, evaluations and tests.

The end is taken from fetch responses (librdkafka's cached high watermark),
not ListOffsets: the embedded Tansu broker answers ListOffsets with the base
offset of the last batch + 1, which stops short of the real end.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition


@dataclass(frozen=True, slots=True)
class Record:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int = -1  # the producer's CreateTime unless the topic says otherwise


def iter_topic(
    client: Mapping[str, Any], topic: str, idle_s: float = 2.0, timeout_s: float = 120.0
) -> Iterator[Record]:
    """Every record of ``topic`` from the beginning until it stays idle at its end."""
    consumer = Consumer({
        **client,
        "group.id": f"omnipipe-reader-{uuid.uuid4().hex[:8]}",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "enable.partition.eof": True,
    })
    try:
        md = consumer.list_topics(topic, timeout=10)
        partitions = sorted(md.topics[topic].partitions)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        at_eof: set[int] = set()
        deadline = time.monotonic() + timeout_s
        last_data = time.monotonic()
        while time.monotonic() < deadline:
            batch = consumer.consume(num_messages=5000, timeout=0.2)
            for msg in batch:
                err = msg.error()
                part: int = msg.partition()  # type: ignore[assignment]
                if err is not None:
                    if err.code() == err._PARTITION_EOF:
                        at_eof.add(part)
                    continue
                at_eof.discard(part)
                last_data = time.monotonic()
                yield Record(part, msg.offset(), msg.key(), msg.value(),  # type: ignore[arg-type]
                             msg.timestamp()[1])
            if len(at_eof) == len(partitions) and time.monotonic() - last_data >= idle_s:
                return
        raise TimeoutError(f"reading {topic} did not reach its end within {timeout_s}s")
    finally:
        consumer.close()


def count_records(client: Mapping[str, Any], topic: str, idle_s: float = 2.0) -> int:
    return sum(1 for _ in iter_topic(client, topic, idle_s=idle_s))
