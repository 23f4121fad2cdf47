"""True high watermarks on the embedded Tansu broker.

Tansu answers ListOffsets("latest") with the base offset of a partition's
last record batch + 1, not the end: produce 3 single records and then one
batch of 5, and ListOffsets says 4 while a fetch response says 8. Anything
that trusts ListOffsets (Faust's changelog recovery, consumer lag) stops
short. The high watermark inside a fetch response is right, so we fetch the
last batch and read it from there. Apache Kafka needs none of this: every
caller (lag, table restore, the ``tansu://`` Faust transport) takes this path
only when the broker is Tansu (``OMNIPIPE_BROKER_QUIRKS=tansu``) and trusts
ListOffsets otherwise.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from typing import Any

from confluent_kafka import Consumer, TopicPartition


def fetched_highwaters(
    client: Mapping[str, Any], listed: Mapping[tuple[str, int], int], timeout_s: float = 5.0
) -> dict[tuple[str, int], int]:
    """Correct ListOffsets figures with the high watermark of a real fetch.

    ``listed`` maps (topic, partition) to what ListOffsets said; partitions
    it calls empty are fetched from 0. The result is never below ``listed``.
    """
    result = dict(listed)
    if not listed:
        return result
    consumer = Consumer({
        **client,
        "group.id": f"omnipipe-watermarks-{uuid.uuid4().hex[:8]}",
        "enable.auto.commit": False,
        "enable.partition.eof": True,
    })
    try:
        pending = {tp: max(0, off - 1) for tp, off in listed.items()}
        consumer.assign([TopicPartition(t, p, off) for (t, p), off in pending.items()])
        waiting = set(pending)
        deadline = time.monotonic() + timeout_s
        while waiting and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is None:
                continue
            key = (msg.topic(), msg.partition())
            if key in waiting:
                waiting.discard(key)
                _low, high = consumer.get_watermark_offsets(
                    TopicPartition(key[0], key[1]), cached=True
                )
                if high is not None and high >= 0:
                    result[key] = max(result[key], high)  # type: ignore[index]
        return result
    finally:
        consumer.close()

