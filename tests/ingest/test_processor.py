"""The ingest decision, record by record, with the real codec and no broker."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.contracts.catalogue import SchemaCatalogue
from pipeline.contracts.codec import AvroCodec
from pipeline.dlq.crypto import KeyEncryptionKey, RawRecord
from pipeline.dlq.reader import Readability, open_dead_letter
from pipeline.dlq.sealer import DeadLetterSealer
from pipeline.dlq.vault import VaultView, apply, decode_record
from pipeline.ingest.identifiers import PiiHasher
from pipeline.ingest.processor import Accepted, IngestProcessor, IngestRules, Rejected, SourceTopic
from pipeline.ingest.reasons import ALL_REASONS, Reason
from pipeline.topology.catalogue import load_catalogue

NOW = 1_795_000_000_000
KEY = b"unit-test-key-0123456789"
CAT = load_catalogue()
CODEC = AvroCodec(SchemaCatalogue.load())
SOURCES = {t.name: SourceTopic(t.name, t.subject, t.channel) for t in CAT.ingest_sources}
WEB = CAT["web"]


DLQ_KEY = b"unit-test-dlq-key-0123456789"


def proc(**rules: Any) -> IngestProcessor:
    return IngestProcessor(SOURCES, CODEC, PiiHasher(KEY), IngestRules(**rules),
                           DeadLetterSealer(DLQ_KEY, PiiHasher(KEY)))


def opened(result: Rejected) -> RawRecord:
    """The raw bytes of a dead letter, through the vault its key records build."""
    rows: dict[bytes, bytes] = {}
    for vk in result.vault_keys:
        apply(rows, decode_record(vk.payload))
    out = open_dead_letter(result.dead_letter, KeyEncryptionKey(DLQ_KEY), VaultView(rows))
    assert out.readability is Readability.DECRYPTED and out.record is not None, out
    return out.record


def web_event(**overrides: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "event_id": "e-1", "event_time": NOW - 60_000,
        "identifiers": {"anonymous_id": "cookie-1", "customer_id": "c-42", "email": "Ann@Example.com"},
        "timezone": "Europe/Paris", "locale": "fr-FR", "type": "ADD_TO_CART",
        "product": {"sku": "sku-1", "category": "shoes", "quantity": 1, "unit_price": 59.0},
        "items": [], "amount": None,
    }
    event.update(overrides)
    return event


def run(record: dict[str, Any], topic: str = WEB.name, **rules: Any) -> Accepted | Rejected:
    subject = SOURCES[topic].subject
    return proc(**rules).process(topic, 3, 77, NOW, b"k", CODEC.encode(subject, record), NOW)


def test_good_event_becomes_canonical_keyed_by_strongest_identifier() -> None:
    result = run(web_event())
    assert isinstance(result, Accepted)
    e = result.event
    assert result.key == "cust:c-42" == e["key"]
    assert e["type"] == "add_to_cart" and e["channel"] == "WEB"
    assert e["email_hash"] == PiiHasher(KEY).email("ann@example.com")
    assert "Ann@Example.com" not in repr(e) and "ann@example.com" not in repr(e)
    assert (e["sku"], e["price"], e["timezone"]) == ("sku-1", 59.0, "Europe/Paris")
    assert (e["source_topic"], e["source_partition"], e["source_offset"]) == (WEB.name, 3, 77)
    CODEC.encode(CAT["canonical"].subject, e)  # the canonical contract accepts it


def test_email_channel_types_say_which_channel() -> None:
    rec = {"event_id": "m1", "event_time": NOW, "identifiers": {"email": "a@example.org"},
           "type": "OPENED", "message_id": "gw-1", "trigger_key": "t-1"}
    result = run(rec, CAT["email"].name)
    assert isinstance(result, Accepted)
    assert result.event["type"] == "email_opened"
    assert result.key.startswith("email:")


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        (web_event(identifiers={}), Reason.MISSING_IDENTIFIERS),
        (web_event(identifiers={"customer_id": "", "anonymous_id": None}), Reason.MISSING_IDENTIFIERS),
        (web_event(identifiers={"email": "not-an-email"}), Reason.INVALID_IDENTIFIER),
        (web_event(identifiers={"customer_id": "has space"}), Reason.INVALID_IDENTIFIER),
        (web_event(event_time=NOW + 3_600_000), Reason.FUTURE_EVENT_TIME),
        (web_event(event_time=NOW - 500 * 86_400_000), Reason.STALE_EVENT_TIME),
        (web_event(type="PURCHASE", amount=-5.0), Reason.INVALID_AMOUNT),
        (web_event(type="PURCHASE", amount=math.nan), Reason.INVALID_AMOUNT),
        (web_event(items=[{"sku": "x", "category": None, "quantity": 0, "unit_price": 1.0}]),
         Reason.INVALID_AMOUNT),
    ],
)
def test_rule_violations_are_dead_lettered_with_their_reason(record: dict, reason: Reason) -> None:
    result = run(record)
    assert isinstance(result, Rejected)
    assert result.reason is reason
    dl = result.dead_letter
    assert dl["reason"] == reason.value and dl["source_offset"] == 77
    assert dl["value"] is None and dl["key"] is None  # kept only sealed
    assert opened(result) == RawRecord(b"k", CODEC.encode(WEB.avro_subject, record))
    assert "not-an-email" not in dl["detail"]
    CODEC.encode(CAT["dlq"].subject, dl)


def test_consent_change_must_be_complete() -> None:
    privacy = CAT["privacy"]
    rec = {"event_id": "p1", "event_time": NOW, "identifiers": {"customer_id": "c1"},
           "type": "CONSENT_CHANGE", "consent_channel": "SMS", "granted": None}
    assert run(rec, privacy.name).reason is Reason.INVALID_CONTROL  # type: ignore[union-attr]
    ok = run({**rec, "granted": False}, privacy.name)
    assert isinstance(ok, Accepted)
    assert ok.event["channel"] is None and ok.event["consent_granted"] is False


def test_unknown_timezone_is_dropped_not_fatal() -> None:
    result = run(web_event(timezone="Mars/Olympus_Mons"))
    assert isinstance(result, Accepted) and result.event["timezone"] is None


def test_oversize_keeps_a_bounded_prefix() -> None:
    result = run(web_event(url="x" * 5000), max_record_bytes=2048)
    assert isinstance(result, Rejected) and result.reason is Reason.OVERSIZE
    assert len(opened(result).value or b"") == 2048


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"", Reason.EMPTY),
        (b'{"event_id": "json"}', Reason.BAD_MAGIC_BYTE),
        (b"\x00\x00", Reason.TRUNCATED),
        (b"\x00\x00\x0f\x42\x3f" + b"\x02abc", Reason.UNKNOWN_SCHEMA_ID),
    ],
)
def test_framing_failures(value: bytes, reason: Reason) -> None:
    result = proc().process(WEB.name, 0, 1, None, None, value, NOW)
    assert isinstance(result, Rejected) and result.reason is reason


def test_record_of_another_subject_is_refused() -> None:
    pos = CODEC.encode(CAT["pos"].subject, {
        "event_id": "r1", "event_time": NOW, "identifiers": {"loyalty_card": "L1"},
        "type": "STORE_PURCHASE", "store_id": "s1"})
    result = proc().process(WEB.name, 0, 1, None, None, pos, NOW)
    assert isinstance(result, Rejected)
    assert result.reason in (Reason.SCHEMA_MISMATCH, Reason.NOT_AVRO)


@given(st.binary(max_size=400), st.sampled_from(sorted(SOURCES)))
def test_garbage_never_raises_and_always_gets_a_reason(value: bytes, topic: str) -> None:
    result = proc().process(topic, 0, 1, None, None, value, NOW)
    if isinstance(result, Rejected):
        assert result.reason.value in ALL_REASONS
        assert opened(result).value == value or result.reason is Reason.OVERSIZE


_VALID = CODEC.encode(WEB.subject, web_event())


@given(st.integers(0, len(_VALID) - 1), st.integers(1, 255), st.integers(0, len(_VALID)))
def test_corrupted_valid_records_never_raise(pos: int, flip: int, cut: int) -> None:
    data = bytearray(_VALID)
    data[pos] ^= flip
    for value in (bytes(data), _VALID[:cut]):
        result = proc().process(WEB.name, 0, 1, None, None, value, NOW)
        assert isinstance(result, Accepted | Rejected)
