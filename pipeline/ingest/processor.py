"""The ingest decision for one record: accept as canonical, dead-letter, or defer.

Pure and synchronous (the clock is passed in), so every rule is tested
without a broker, and no exception can escape for any input bytes: whatever
goes wrong with the record becomes a dead letter with a reason code; a
dependency that did not answer (the schema registry) defers the record, to be
retried, never dead-lettered.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from pipeline.dlq.crypto import SourceCoordinates
from pipeline.dlq.sealer import DeadLetterSealer, VaultKey
from pipeline.ingest.canonical import FieldError, check_control, to_canonical
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
    dead_letter: dict[str, Any]  # raw bytes only sealed (pipeline/dlq/crypto.py)
    vault_keys: tuple[VaultKey, ...] = ()  # for dlq.keys, acknowledged before the offset is committed


@dataclass(frozen=True, slots=True)
class Deferred:
    """A dependency (the schema registry) did not answer: the record may be fine.

    Never a dead letter: the caller holds the record and retries it later.
    ``detail`` names the dependency and the failure, never record contents.
    """

    detail: str


@dataclass(frozen=True, slots=True)
class IngestRules:
    max_record_bytes: int = 256 * 1024
    max_future_skew_ms: int = 5 * 60 * 1000
    max_event_age_ms: int = 400 * 86_400_000


_REASONS = {r.value: r for r in Reason}
#: Refused after the record decoded: its identifiers can be read to file the dead letter under them.
_DECODED_REASONS = frozenset({
    Reason.MISSING_IDENTIFIERS, Reason.INVALID_IDENTIFIER, Reason.FUTURE_EVENT_TIME,
    Reason.STALE_EVENT_TIME, Reason.INVALID_AMOUNT, Reason.INVALID_CONTROL, Reason.INTERNAL_ERROR,
})


class IngestProcessor:
    """Holds what is parsed once (sources, hasher, rules); ``process`` is per record."""

    def __init__(
        self,
        sources: Mapping[str, SourceTopic],
        decoder: RecordDecoder,
        hasher: PiiHasher,
        rules: IngestRules | None = None,
        sealer: DeadLetterSealer | None = None,
    ) -> None:
        self._sources = dict(sources)
        self._decoder = decoder
        self._identifiers = IdentifierResolver(hasher)
        self._rules = rules or IngestRules()
        # without one (tools, tests), dead letters are still sealed, under a key nobody keeps
        self._sealer = sealer or DeadLetterSealer(os.urandom(32), hasher)

    def process(
        self,
        topic: str,
        partition: int,
        offset: int,
        timestamp_ms: int | None,
        key: bytes | None,
        value: bytes | None,
        now_ms: int,
    ) -> Accepted | Rejected | Deferred:
        try:
            return self._decide(topic, partition, offset, value, now_ms)
        except _Unavailable as unavailable:
            return Deferred(unavailable.detail)
        except _Refused as refused:
            return self._rejected(refused.reason, refused.detail, topic, partition, offset,
                                  timestamp_ms, key, value, now_ms, refused.schema_id)
        except Exception as exc:  # a bug must not kill the worker
            return self.internal_error(topic, partition, offset, timestamp_ms, key, value, now_ms, exc)

    def _decide(
        self, topic: str, partition: int, offset: int, value: bytes | None, now_ms: int
    ) -> Accepted:
        """The rules, in order; each refusal raises ``_Refused`` with its reason."""
        source = self._sources.get(topic)
        if source is None:
            raise _Refused(Reason.UNKNOWN_TOPIC, f"ingest does not consume {topic}")
        if not value:
            raise _Refused(Reason.EMPTY, "record value is empty or null")
        rules = self._rules
        if len(value) > rules.max_record_bytes:
            raise _Refused(
                Reason.OVERSIZE,
                f"record is {len(value)} bytes, limit is {rules.max_record_bytes}; "
                f"the dead letter keeps the first {rules.max_record_bytes} bytes",
            )
        try:
            record = self._decoder.decode(value, source.subject)
        except Exception as exc:  # every decode failure is a dead letter, but a dependency's
            if getattr(exc, "retryable", False):  # registry_unavailable: says nothing about the record
                raise _Unavailable(str(exc)) from None
            reason = _REASONS.get(getattr(exc, "reason", ""), Reason.NOT_AVRO)
            raise _Refused(reason, str(exc), getattr(exc, "schema_id", None)) from None
        try:
            ids = self._identifiers.resolve(record.get("identifiers"))
        except IdentifierError as exc:
            raise _Refused(Reason.INVALID_IDENTIFIER, str(exc)) from None
        profile_key = ids.strongest_key()
        if profile_key is None:
            raise _Refused(Reason.MISSING_IDENTIFIERS, "the event carries no identifier")
        event_time = record["event_time"]
        if event_time > now_ms + rules.max_future_skew_ms:
            raise _Refused(
                Reason.FUTURE_EVENT_TIME,
                f"event_time is {(event_time - now_ms) / 1000:.0f}s in the future",
            )
        if event_time < now_ms - rules.max_event_age_ms:
            raise _Refused(
                Reason.STALE_EVENT_TIME,
                f"event_time is {(now_ms - event_time) / 86_400_000:.0f} days old",
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
            raise _Refused(reason, str(exc)) from None
        return Accepted(profile_key, event)

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
        return self._rejected(Reason.INTERNAL_ERROR, f"{type(exc).__name__} while processing",
                              topic, partition, offset, timestamp_ms, key, value, now_ms)

    def _rejected(
        self,
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
        """The one place a dead letter is built.

        The value is cut to the record limit so the dead letter itself stays
        publishable; only oversize records are affected, and the source
        coordinates point at the full record. The key and value are never
        kept in plaintext: they are sealed under key shares of the record's
        refs (``pipeline/dlq/``), which an erasure of the person destroys.
        """
        limit = self._rules.max_record_bytes
        kept = value[:limit] if value and len(value) > limit else value
        sealed = self._sealer.seal(SourceCoordinates(topic, partition, offset),
                                   self._identifiers_of(reason, topic, value), key, kept, now_ms)
        return Rejected(reason, {  # an ``omnipipe.dlq.DeadLetter``; ``detail`` never holds raw PII
            "source_topic": topic,
            "source_partition": partition,
            "source_offset": offset,
            "source_timestamp": timestamp_ms,
            "reason": reason.value,
            "detail": detail[:500],
            "stage": "ingest",
            "schema_id": schema_id,
            "dead_lettered_at": now_ms,
            **sealed.fields,
        }, sealed.vault_keys)

    def _identifiers_of(self, reason: Reason, topic: str, value: bytes | None) -> Mapping[str, Any] | None:
        """The raw identifiers of a record refused after it decoded, to file its dead letter under.

        Decoded again here rather than carried out of ``_decide``: only
        rejected records pay for it, and the accepted path stays as it is.
        """
        source = self._sources.get(topic)
        if reason not in _DECODED_REASONS or source is None or not value:
            return None
        try:
            identifiers = self._decoder.decode(value, source.subject).get("identifiers")
        except Exception:  # an internal error may be the decoder's own: then nothing is attributable
            return None
        return identifiers if isinstance(identifiers, Mapping) else None


class _Unavailable(Exception):
    """A dependency failed while deciding; ``process`` returns ``Deferred``."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class _Refused(Exception):
    """A rule refused the record; ``process`` turns it into a dead letter."""

    def __init__(self, reason: Reason, detail: str, schema_id: int | None = None) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.schema_id = schema_id
