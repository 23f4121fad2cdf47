"""Dead-letter records: the raw bytes plus where they came from and why."""

from __future__ import annotations

from typing import Any

from pipeline.ingest.reasons import Reason


def dead_letter(
    *,
    reason: Reason,
    detail: str,
    topic: str,
    partition: int,
    offset: int,
    timestamp_ms: int | None,
    key: bytes | None,
    value: bytes | None,
    now_ms: int,
    schema_id: int | None = None,
    stage: str = "ingest",
) -> dict[str, Any]:
    """A ``omnipipe.dlq.DeadLetter`` record. ``detail`` must never hold raw PII."""
    return {
        "source_topic": topic,
        "source_partition": partition,
        "source_offset": offset,
        "source_timestamp": timestamp_ms,
        "reason": reason.value,
        "detail": detail[:500],
        "stage": stage,
        "schema_id": schema_id,
        "dead_lettered_at": now_ms,
        "key": key,
        "value": value,
    }
