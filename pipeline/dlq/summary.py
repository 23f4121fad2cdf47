"""Pure pieces of the dead-letter summary: table keys and the JSON view."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def summary_key(partition: int, dead_letter: Mapping[str, Any]) -> str:
    """One counter per (DLQ partition, source topic, reason).

    The DLQ partition is part of the key because a Faust table row lives on
    the partition of the event that wrote it; keeping keys partition-unique
    means every row has exactly one writer, also after rebalances.
    """
    return f"{partition}|{dead_letter['source_topic']}|{dead_letter['reason']}"


def summarise(rows: Iterable[tuple[str, int]]) -> dict[str, Any]:
    """Fold table rows into ``{source_topic: {reason: count}}`` plus totals."""
    by_topic: dict[str, dict[str, int]] = {}
    by_reason: dict[str, int] = {}
    partitions: set[int] = set()
    for key, count in rows:
        part, topic, reason = key.split("|", 2)
        partitions.add(int(part))
        by_topic.setdefault(topic, {})
        by_topic[topic][reason] = by_topic[topic].get(reason, 0) + count
        by_reason[reason] = by_reason.get(reason, 0) + count
    return {
        "total": sum(by_reason.values()),
        "by_reason": dict(sorted(by_reason.items())),
        "by_source_topic": {t: dict(sorted(r.items())) for t, r in sorted(by_topic.items())},
        "partitions": sorted(partitions),
    }
