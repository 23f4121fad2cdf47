"""identity.merges records: encode/decode through the project's codec, deterministic audit ids."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.contracts import AvroCodec, SchemaCatalogue
from pipeline.contracts.catalogue import DEFAULT_ROOT, REGISTRY_DIR, SOURCE_DIR
from pipeline.contracts.compatibility import backward_transitive_problems
from pipeline.contracts.loader import load_sources
from pipeline.contracts.register import unregistered
from pipeline.contracts.store import RegistryStore
from pipeline.contracts.wire import unframe
from pipeline.identity.audit import (
    SUBJECT,
    decision_of,
    merge_audit_id,
    merge_record,
    refusal_audit_id,
    refusal_record,
)
from pipeline.identity.model import MergeDecision, Refusal, RefusalReason
from pipeline.topology.catalogue import load_catalogue

CATALOGUE = SchemaCatalogue.load()
CODEC = AvroCodec(CATALOGUE)
NOW = 1_760_000_000_123
EMAIL = "email:" + "0f" * 16  # a hashed e-mail ref, as ingest keys it

MERGE = MergeDecision("card:L77", "", "cust:C1", "cust:C1#3")
REFUSAL = Refusal(1_759_999_000_000, "evt-9", EMAIL, "cust:C2", "cust:C1", RefusalReason.EMAIL_OWNED, "email")


ALL_FIELDS = {f["name"] for f in CATALOGUE.latest(SUBJECT).schema["fields"]}


def _reason_symbols() -> list[str]:
    field = next(f for f in CATALOGUE.latest(SUBJECT).schema["fields"] if f["name"] == "reason")
    enum = next(branch for branch in field["type"] if isinstance(branch, dict))
    return list(enum["symbols"])


def _round_trip(record: dict[str, object]) -> dict[str, object]:
    framed = CODEC.encode(SUBJECT, record)
    schema_id, _ = unframe(framed)
    assert schema_id == CATALOGUE.latest(SUBJECT).schema_id
    return CODEC.decode(framed, SUBJECT)


def test_topic_catalogue_names_this_subject() -> None:
    assert load_catalogue()["identity_merges"].subject == SUBJECT


def test_subject_is_registered_and_its_snapshot_matches_the_source() -> None:
    sources = load_sources(DEFAULT_ROOT / SOURCE_DIR)
    store = RegistryStore(DEFAULT_ROOT / REGISTRY_DIR)
    assert SUBJECT in CATALOGUE.subjects()
    assert SUBJECT not in {s.subject for s in unregistered(sources, store)}
    versions = CATALOGUE.versions(SUBJECT)
    assert backward_transitive_problems(sources[SUBJECT].schema, [v.schema for v in versions]) == []


def test_merge_round_trips() -> None:
    record = merge_record(MERGE, NOW)
    assert set(record) == ALL_FIELDS
    decoded = _round_trip(record)
    assert decoded == record
    assert decoded["kind"] == "MERGE" and decoded["recorded_at"] == NOW
    assert decoded["event_id"] is None and decoded["reason"] is None
    assert decoded["source_incarnation"] == ""  # the initial incarnation is a value, not a null
    assert decision_of(decoded) == MERGE


@pytest.mark.parametrize("reason", list(RefusalReason))
def test_every_refusal_reason_round_trips(reason: RefusalReason) -> None:
    """Iterates the enum: a new RefusalReason without a schema version fails here."""
    refusal = dataclasses.replace(REFUSAL, reason=reason)
    record = refusal_record(refusal, NOW)
    assert set(record) == ALL_FIELDS
    decoded = _round_trip(record)
    assert decoded == record
    assert decoded["reason"] == reason.name and decoded["kind"] == "REFUSAL"
    assert decoded["source_profile"] is None and decoded["target_profile"] is None
    assert decision_of(decoded) == refusal


def test_reason_symbols_are_exactly_the_model_enum() -> None:
    assert _reason_symbols() == [r.name for r in RefusalReason]


def test_refusal_given_as_plain_value_string_is_the_same_record() -> None:
    as_value = dataclasses.replace(REFUSAL, reason=RefusalReason.EMAIL_OWNED.value)  # type: ignore[arg-type]
    assert refusal_record(as_value, NOW) == refusal_record(REFUSAL, NOW)


def test_audit_id_is_deterministic_and_ignores_the_wall_clock() -> None:
    same_merge = MergeDecision(*dataclasses.astuple(MERGE))
    same_refusal = Refusal(*dataclasses.astuple(REFUSAL))
    assert merge_record(MERGE, NOW)["audit_id"] == merge_record(same_merge, NOW + 60_000)["audit_id"]
    assert refusal_record(REFUSAL, NOW)["audit_id"] == refusal_record(same_refusal, 0)["audit_id"]
    # pinned: the id is a contract with consumers that dedup across restarts and releases
    assert merge_audit_id(MERGE) == "d9b1cbfc81eafdbc973787290decf108"
    assert refusal_audit_id(REFUSAL) == "4dd703816c60c061a20d5def282b99a8"


def test_audit_id_changes_with_every_identifying_field() -> None:
    merges = [MERGE] + [
        dataclasses.replace(MERGE, **{f.name: getattr(MERGE, f.name) + "x"})
        for f in dataclasses.fields(MergeDecision)
    ]
    changed: dict[str, Any] = {
        "event_time": REFUSAL.event_time + 1, "event_id": "evt-10", "ref": "email:" + "1f" * 16,
        "anchor": "cust:C3", "held_by": "cust:C4", "reason": RefusalReason.CUSTOMER_CONFLICT, "kind": "cust",
    }
    assert set(changed) == {f.name for f in dataclasses.fields(Refusal)}
    refusals = [REFUSAL] + [dataclasses.replace(REFUSAL, **{k: v}) for k, v in changed.items()]
    ids = [merge_audit_id(m) for m in merges] + [refusal_audit_id(r) for r in refusals]
    assert len(set(ids)) == len(ids)


def test_field_boundaries_cannot_collide() -> None:
    a = MergeDecision("cust:A", "x", "cust:B", "")
    b = MergeDecision("cust:A", "", "xcust:B", "")
    c = MergeDecision("cust:Ax", "", "cust:B", "")
    assert len({merge_audit_id(a), merge_audit_id(b), merge_audit_id(c)}) == 3


_refs = st.sampled_from(["cust:C1", "cust:C2", "card:L1", EMAIL, "phone:" + "ab" * 16, "dev:D1", "anon:A1"])
_refusals = st.builds(
    Refusal, st.integers(0, 2**42), st.sampled_from(["e1", "e2", "é3"]), _refs, _refs, _refs,
    st.sampled_from(list(RefusalReason)), st.sampled_from(["cust", "card", "email", "phone", "dev"]),
)


@given(st.lists(_refusals, min_size=2, max_size=6, unique=True))
def test_distinct_refusals_have_distinct_ids(refusals: list[Refusal]) -> None:
    assert len({refusal_audit_id(r) for r in refusals}) == len(refusals)


@given(_refusals, st.integers(0, 2**42))
def test_generated_refusals_round_trip(refusal: Refusal, recorded_at: int) -> None:
    record = refusal_record(refusal, recorded_at)
    assert _round_trip(record) == record
    assert decision_of(record) == refusal
