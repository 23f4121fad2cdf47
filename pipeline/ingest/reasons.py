"""Dead-letter reason codes: a closed set, so metrics labels stay bounded."""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    EMPTY = "empty"
    OVERSIZE = "oversize"
    BAD_MAGIC_BYTE = "bad_magic_byte"
    TRUNCATED = "truncated"
    UNKNOWN_SCHEMA_ID = "unknown_schema_id"
    SCHEMA_MISMATCH = "schema_mismatch"
    NOT_AVRO = "not_avro"
    MISSING_IDENTIFIERS = "missing_identifiers"
    INVALID_IDENTIFIER = "invalid_identifier"
    FUTURE_EVENT_TIME = "future_event_time"
    STALE_EVENT_TIME = "stale_event_time"
    INVALID_AMOUNT = "invalid_amount"
    INVALID_CONTROL = "invalid_control"
    UNKNOWN_TOPIC = "unknown_topic"
    INTERNAL_ERROR = "internal_error"


ALL_REASONS = tuple(r.value for r in Reason)
