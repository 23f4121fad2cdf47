"""Every malformed kind really is what its reason code says."""

from __future__ import annotations

import io
import struct
from functools import lru_cache

import fastavro
import pytest

from pipeline.simulate.journeys import DAY_MS, DEFAULT_START_MS
from pipeline.simulate.malformed import (
    FUTURE_SKEW_MS,
    MAX_RECORD_BYTES,
    REASONS,
    UNKNOWN_ID,
    assignment,
    make_bad,
)
from pipeline.topology.catalogue import load_catalogue
from tests.simulate.avro_stub import DecodeError, StubCodec

NOW = DEFAULT_START_MS + 14 * DAY_MS
TOPICS = [spec.key for spec in load_catalogue().ingest_sources]  # 7 channels + privacy


@lru_cache(maxsize=1)
def codec() -> StubCodec:
    return StubCodec()


def bad(reason: str, topic_key: str, seq: int = 3) -> bytes:
    subject = load_catalogue()[topic_key].subject
    rec = make_bad(seq, reason, topic_key, subject, codec().encode, seed=9, now_ms=NOW,
                   event_time=NOW - DAY_MS)
    assert rec.reason == reason and rec.topic_key == topic_key
    return rec.value


def fastavro_decode(value: bytes, topic_key: str) -> object:
    """Decode the body with the subject's own schema, ignoring the header's claims."""
    schema = codec().schemas[load_catalogue()[topic_key].subject]
    return fastavro.schemaless_reader(io.BytesIO(value[5:]), schema, None)


@pytest.mark.parametrize("topic_key", TOPICS)
def test_not_avro_has_a_valid_id_and_an_undecodable_body(topic_key: str) -> None:
    value = bad("not_avro", topic_key)
    subject = load_catalogue()[topic_key].subject
    assert value[0] == 0 and struct.unpack(">I", value[1:5])[0] == codec().ids[subject]
    with pytest.raises(Exception):  # noqa: B017 - fastavro's error type varies by cause
        fastavro_decode(value, topic_key)
    with pytest.raises(DecodeError):
        codec().decode(value)


@pytest.mark.parametrize("topic_key", TOPICS)
@pytest.mark.parametrize("seq", range(6))
def test_truncated_cannot_be_decoded(topic_key: str, seq: int) -> None:
    value = bad("truncated", topic_key, seq)
    full = codec().encode(load_catalogue()[topic_key].subject,
                          dict(codec().decode(bad("future_event_time", topic_key, seq)),
                               event_time=NOW - DAY_MS))
    assert 5 < len(value) < len(full)
    with pytest.raises((EOFError, IndexError)):  # fastavro runs out of input mid-varint
        fastavro_decode(value, topic_key)
    with pytest.raises(DecodeError):
        codec().decode(value)


@pytest.mark.parametrize("topic_key", TOPICS)
def test_framing_failures(topic_key: str) -> None:
    magic = bad("bad_magic_byte", topic_key)
    assert magic[:1] == b"{" and magic[0] != 0
    unknown = bad("unknown_schema_id", topic_key)
    assert unknown[0] == 0 and struct.unpack(">I", unknown[1:5])[0] == UNKNOWN_ID
    assert UNKNOWN_ID not in codec().by_id
    assert bad("empty", topic_key) == b""
    for value in (magic, unknown, b""):
        with pytest.raises(DecodeError):
            codec().decode(value)


@pytest.mark.parametrize("topic_key", TOPICS)
def test_valid_but_unacceptable_records(topic_key: str) -> None:
    missing = codec().decode(bad("missing_identifiers", topic_key))
    assert set(missing["identifiers"].values()) == {None}
    future = codec().decode(bad("future_event_time", topic_key))
    assert future["event_time"] == NOW + FUTURE_SKEW_MS
    assert any(v is not None for v in future["identifiers"].values())
    big = bad("oversize", topic_key)
    assert len(big) > MAX_RECORD_BYTES
    assert codec().decode(big)["event_id"]


def test_deterministic_and_seq_dependent() -> None:
    for reason in REASONS:
        assert bad(reason, "web", 5) == bad(reason, "web", 5)
    assert bad("not_avro", "web", 5) != bad("not_avro", "web", 6)


def test_assignment_covers_every_reason_and_topic_pair() -> None:
    inputs = [spec.key for spec in load_catalogue().inputs]
    n = len(REASONS) * len(inputs)
    pairs = [assignment(i, inputs) for i in range(n)]
    assert len(set(pairs)) == n
    assert {r for r, _ in pairs[: len(REASONS)]} == set(REASONS)
    assert assignment(n + 3, inputs) == pairs[3]


def test_unknown_reason_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown bad-record reason"):
        bad("nonsense", "web")
