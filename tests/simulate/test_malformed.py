"""Every malformed kind really is what its reason code says."""

from __future__ import annotations

import io
import math
import struct
from collections import Counter
from functools import lru_cache

import fastavro
import pytest

from pipeline.ingest.identifiers import IdentifierError, PiiHasher, resolve_identifiers
from pipeline.ingest.processor import IngestRules
from pipeline.ingest.reasons import ALL_REASONS, Reason
from pipeline.simulate.journeys import DAY_MS, DEFAULT_START_MS
from pipeline.simulate.malformed import (
    FUTURE_SKEW_MS,
    MAKERS,
    MAX_EVENT_AGE_MS,
    MAX_RECORD_BYTES,
    ONLY_ON,
    REASONS,
    UNKNOWN_ID,
    assignment,
    can_make,
    make_bad,
    topics_for,
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


@pytest.mark.parametrize("topic_key", TOPICS)
def test_schema_mismatch_is_a_valid_record_of_another_subject(topic_key: str) -> None:
    subject = load_catalogue()[topic_key].subject
    others = set()
    for seq in range(7):
        value = bad("schema_mismatch", topic_key, seq)
        writer = codec().by_id[struct.unpack(">I", value[1:5])[0]]  # a registered id...
        assert writer != subject  # ...of another subject
        record = codec().decode(value)  # and a well-formed record of that subject
        assert record["identifiers"]["anonymous_id"].startswith("bad-")  # nobody real
        others.add(writer)
    assert others == {load_catalogue()[k].subject for k in TOPICS} - {subject}  # rotates over all


@pytest.mark.parametrize("topic_key", TOPICS)
def test_invalid_identifier_spoils_exactly_one_identifier(topic_key: str) -> None:
    kinds = set()
    for seq in range(4):
        ids = codec().decode(bad("invalid_identifier", topic_key, seq))["identifiers"]
        good = codec().decode(bad("future_event_time", topic_key, seq))["identifiers"]
        changed = [k for k in ids if ids[k] != good[k]]
        assert len(changed) == 1
        with pytest.raises(IdentifierError) as exc:
            resolve_identifiers(ids, PiiHasher(b"k" * 32))
        assert exc.value.kind == changed[0]
        resolve_identifiers(good, PiiHasher(b"k" * 32))  # the untouched ones are fine
        kinds.add(changed[0])
    assert kinds == {"email", "phone", "customer_id", "device_id"}


@pytest.mark.parametrize("topic_key", TOPICS)
def test_stale_event_time_is_past_ingests_age_limit(topic_key: str) -> None:
    record = codec().decode(bad("stale_event_time", topic_key))
    assert record["event_time"] == NOW - MAX_EVENT_AGE_MS - 30 * DAY_MS
    assert any(v is not None for v in record["identifiers"].values())


@pytest.mark.parametrize("topic_key", topics_for("invalid_amount", TOPICS))
def test_invalid_amount_is_a_purchase_with_an_unusable_amount(topic_key: str) -> None:
    amounts = []
    for seq in range(3):
        record = codec().decode(bad("invalid_amount", topic_key, seq))
        assert record["type"] in ("PURCHASE", "STORE_PURCHASE")
        assert not 0 <= record["amount"] < math.inf
        amounts.append(record["amount"])
    assert amounts[0] < 0 and math.isnan(amounts[1]) and amounts[2] == math.inf


def test_invalid_control_is_a_consent_change_missing_a_field() -> None:
    missing = set()
    for seq in range(2):
        record = codec().decode(bad("invalid_control", "privacy", seq))
        assert record["type"] == "CONSENT_CHANGE"
        missing |= {f for f in ("consent_channel", "granted") if record[f] is None}
    assert missing == {"consent_channel", "granted"}


def test_reasons_are_every_data_caused_ingest_reason() -> None:
    assert len(set(REASONS)) == len(REASONS) and set(MAKERS) == set(REASONS)
    not_data = {Reason.UNKNOWN_TOPIC.value, Reason.INTERNAL_ERROR.value}  # ingest's doing, not the record's
    assert set(REASONS) == set(ALL_REASONS) - not_data
    assert topics_for("invalid_amount", TOPICS) == ("web", "app", "pos")
    assert topics_for("invalid_control", TOPICS) == ("privacy",)
    assert all(topics_for(r, TOPICS) == tuple(TOPICS) for r in REASONS if r not in ONLY_ON)


def test_limits_match_ingest_defaults() -> None:
    rules = IngestRules()
    assert rules.max_record_bytes == MAX_RECORD_BYTES
    assert rules.max_event_age_ms == MAX_EVENT_AGE_MS
    assert rules.max_future_skew_ms < FUTURE_SKEW_MS


def test_deterministic_and_seq_dependent() -> None:
    for reason in REASONS:
        for topic_key in topics_for(reason, TOPICS):
            assert bad(reason, topic_key, 5) == bad(reason, topic_key, 5)
    assert bad("not_avro", "web", 5) != bad("not_avro", "web", 6)
    assert bad("schema_mismatch", "web", 5) != bad("schema_mismatch", "web", 6)


def test_assignment_keeps_every_pair_once_when_every_reason_fits_every_topic() -> None:
    inputs = [spec.key for spec in load_catalogue().inputs]
    reasons = [r for r in REASONS if r not in ONLY_ON]
    n = len(reasons) * len(inputs)
    pairs = [assignment(i, inputs, reasons) for i in range(n)]
    assert len(set(pairs)) == n
    assert {r for r, _ in pairs[: len(reasons)]} == set(reasons)
    assert assignment(n + 3, inputs, reasons) == pairs[3]


def test_assignment_covers_every_reason_and_allowed_topic_pair() -> None:
    n = len(REASONS) * len(TOPICS)
    pairs = [assignment(i, TOPICS) for i in range(n)]
    assert set(pairs) == {(r, t) for r in REASONS for t in TOPICS if can_make(r, t)}
    assert all(can_make(r, t) for r, t in pairs)
    assert Counter(r for r, _ in pairs) == dict.fromkeys(REASONS, len(TOPICS))  # reasons equally often
    assert [r for r, _ in pairs[: len(REASONS)]] == list(REASONS)  # reasons change fastest
    assert [assignment(n + i, TOPICS) for i in range(n)] == pairs  # then it repeats


def test_assignment_leaves_out_reasons_no_topic_allows() -> None:
    inputs = [spec.key for spec in load_catalogue().inputs]  # no privacy topic
    pairs = {assignment(i, inputs) for i in range(len(REASONS) * len(inputs))}
    assert {r for r, _ in pairs} == set(REASONS) - {"invalid_control"}
    assert all(can_make(r, t) for r, t in pairs)
    assert {assignment(i, ["privacy"], ["invalid_control", "invalid_amount"]) for i in range(4)} == {
        ("invalid_control", "privacy")}
    with pytest.raises(ValueError, match="none of the reasons"):
        assignment(0, ["email", "sms"], ["invalid_amount", "invalid_control"])


def test_unknown_reason_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown bad-record reason"):
        bad("nonsense", "web")


@pytest.mark.parametrize(("reason", "topic_key"), [("invalid_amount", "email"), ("invalid_amount", "privacy"),
                                                   ("invalid_control", "web")])
def test_reason_on_a_topic_it_cannot_be_made_for_is_rejected(reason: str, topic_key: str) -> None:
    with pytest.raises(ValueError, match="cannot be made for topic"):
        bad(reason, topic_key)
