"""The ingest decision for one record: accept as canonical, or dead-letter.

Pure and synchronous (the clock is passed in), so every rule is tested
without a broker, and no exception can escape for any input bytes: whatever
goes wrong becomes a dead letter with a reason code.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from pipeline.ingest.canonical import FieldError, check_control, to_canonical
from pipeline.ingest.dead_letter import dead_letter
from pipeline.ingest.identifiers import IdentifierError, IdentifierResolver, PiiHasher
from pipeline.ingest.reasons import Reason


class RecordDecoder(Protocol):
    def decode(self, data: bytes, subject: str) -> dict[str, Any]:
        """Decode framed Avro; raises an error with a ``reason`` attribute."""
        ...


@dataclass(frozen=True, slots=True)
class SourceTopic:
    """What ingest needs to know about a topic it consumes."""

    name: str
    subject: str
    channel: str | None  # None for control.privacy


class Accepted(NamedTuple):
    """A tuple: created for every event, and tuples are the cheapest immutable record."""

    key: str
    event: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Rejected:
    reason: Reason
    dead_letter: dict[str, Any]


@dataclass(frozen=True, slots=True)
class IngestRules:
    max_record_bytes: int = 256 * 1024
    max_future_skew_ms: int = 5 * 60 * 1000
    max_event_age_ms: int = 400 * 86_400_000


_REASONS = {r.value: r for r in Reason}


class IngestProcessor:
    """Holds what is parsed once (sources, hasher, rules); ``process`` is per record."""

    def __init__(
        self,
        sources: Mapping[str, SourceTopic],
        decoder: RecordDecoder,
        hasher: PiiHasher,
        rules: IngestRules | None = None,
    ) -> None:
        self._sources = dict(sources)
        self._decoder = decoder
        self._identifiers = IdentifierResolver(hasher)
        self._rules = rules or IngestRules()

    def process(
        self,
        topic: str,
        partition: int,
        offset: int,
        timestamp_ms: int | None,
        key: bytes | None,
        value: bytes | None,
        now_ms: int,
    ) -> Accepted | Rejected:
        try:
            source = self._sources.get(topic)
            if source is None:
                return self._reject(Reason.UNKNOWN_TOPIC, f"ingest does not consume {topic}",
                                    topic, partition, offset, timestamp_ms, key, value, now_ms)
            if not value:
                return self._reject(Reason.EMPTY, "record value is empty or null",
                                    topic, partition, offset, timestamp_ms, key, value, now_ms)
            rules = self._rules
            if len(value) > rules.max_record_bytes:
                # Keep a bounded prefix so the dead letter itself stays publishable;
                # the source coordinates point at the full record.
                return self._reject(
                    Reason.OVERSIZE,
                    f"record is {len(value)} bytes, limit is {rules.max_record_bytes}; "
                    f"the dead letter keeps the first {rules.max_record_bytes} bytes",
                    topic, partition, offset, timestamp_ms, key, value[: rules.max_record_bytes],
                    now_ms,
                )
            try:
                record = self._decoder.decode(value, source.subject)
            except Exception as exc:
                reason = _REASONS.get(getattr(exc, "reason", ""), Reason.NOT_AVRO)
                return self._reject(reason, str(exc), topic, partition, offset, timestamp_ms,
                                    key, value, now_ms, getattr(exc, "schema_id", None))
            try:
                ids = self._identifiers.resolve(record.get("identifiers"))
            except IdentifierError as exc:
                return self._reject(Reason.INVALID_IDENTIFIER, str(exc), topic, partition, offset,
                                    timestamp_ms, key, value, now_ms)
            profile_key = ids.strongest_key()
            if profile_key is None:
                return self._reject(Reason.MISSING_IDENTIFIERS, "the event carries no identifier",
                                    topic, partition, offset, timestamp_ms, key, value, now_ms)
            event_time = record["event_time"]
            if event_time > now_ms + rules.max_future_skew_ms:
                return self._reject(
                    Reason.FUTURE_EVENT_TIME,
                    f"event_time is {(event_time - now_ms) / 1000:.0f}s in the future",
                    topic, partition, offset, timestamp_ms, key, value, now_ms,
                )
            if event_time < now_ms - rules.max_event_age_ms:
                return self._reject(
                    Reason.STALE_EVENT_TIME,
                    f"event_time is {(now_ms - event_time) / 86_400_000:.0f} days old",
                    topic, partition, offset, timestamp_ms, key, value, now_ms,
                )
            channel = source.channel
            try:
                if channel is None:
                    check_control(record)
                event = to_canonical(
                    record, channel, ids, profile_key, ingest_time=now_ms,
                    source_topic=topic, source_partition=partition, source_offset=offset,
                )
            except FieldError as exc:
                reason = Reason.INVALID_CONTROL if channel is None else Reason.INVALID_AMOUNT
                return self._reject(reason, str(exc), topic, partition, offset, timestamp_ms,
                                    key, value, now_ms)
            return Accepted(profile_key, event)
        except Exception as exc:
            return self.internal_error(topic, partition, offset, timestamp_ms, key, value, now_ms, exc)

    @staticmethod
    def _reject(
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
    ) -> Rejected:
        return Rejected(
            reason,
            dead_letter(
                reason=reason, detail=detail, topic=topic, partition=partition, offset=offset,
                timestamp_ms=timestamp_ms, key=key, value=value, now_ms=now_ms, schema_id=schema_id,
            ),
        )

    def internal_error(
        self,
        topic: str,
        partition: int,
        offset: int,
        timestamp_ms: int | None,
        key: bytes | None,
        value: bytes | None,
        now_ms: int,
        exc: BaseException,
    ) -> Rejected:
        """Dead-letter a record our own code failed on; the type names the bug, not the data."""
        return self._reject(
            Reason.INTERNAL_ERROR, f"{type(exc).__name__} while processing", topic, partition, offset,
            timestamp_ms, key, value[: self._rules.max_record_bytes] if value else value, now_ms,
        )
