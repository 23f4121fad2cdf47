"""Audit records for ``identity.merges``: every applied merge and every refused link.

The identity stage publishes each :class:`MergeDecision` and :class:`Refusal`
as an ``omnipipe.identity.IdentityAudit`` record (``schemas/src/identity_audit.avsc``)
for reviewers and for the profile stage. Delivery is at-least-once and the
handlers re-send on replay, so the same decision can be published many
times: ``audit_id`` is a hash of the decision itself (never of the wall
clock), and consumers drop ids they have seen.

A refusal that a late event re-decides (earlier stamp, other ``held_by``)
is a different decision and gets a new id on purpose: dedup removes exact
repeats, not corrections. Refs only, never raw PII (ingest hashed it).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from pipeline.identity.model import MergeDecision, Refusal, RefusalReason

SUBJECT = "omnipipe.identity.IdentityAudit"
MERGE = "MERGE"
REFUSAL = "REFUSAL"

_ID_VERSION = 1  # bump only with a new id scheme: old and new ids of one decision would differ
_ID_CHARS = 32  # 128 bits of SHA-256, as ingest truncates its hashes

_MERGE_FIELDS = ("source_profile", "source_incarnation", "target_profile", "target_incarnation")
_REFUSAL_FIELDS = ("event_id", "event_time", "ref", "anchor", "held_by", "reason", "fault_kind")


def _audit_id(kind: str, parts: tuple[str | int, ...]) -> str:
    """Hash of the kind and the decision's fields; JSON keeps the encoding unambiguous."""
    text = json.dumps([_ID_VERSION, kind, *parts], separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:_ID_CHARS]


def merge_audit_id(decision: MergeDecision) -> str:
    return _audit_id(MERGE, (decision.source, decision.source_incarnation,
                             decision.target, decision.target_incarnation))


def refusal_audit_id(refusal: Refusal) -> str:
    reason = RefusalReason(refusal.reason)
    return _audit_id(REFUSAL, (refusal.event_time, refusal.event_id, refusal.ref, refusal.anchor,
                               refusal.held_by, reason.value, refusal.kind))


def merge_record(decision: MergeDecision, recorded_at_ms: int) -> dict[str, Any]:
    """The IdentityAudit value of an applied merge (refusal fields null)."""
    record: dict[str, Any] = {
        "audit_id": merge_audit_id(decision),
        "kind": MERGE,
        "recorded_at": recorded_at_ms,
        "source_profile": decision.source,
        "source_incarnation": decision.source_incarnation,
        "target_profile": decision.target,
        "target_incarnation": decision.target_incarnation,
    }
    record.update(dict.fromkeys(_REFUSAL_FIELDS))
    return record


def refusal_record(refusal: Refusal, recorded_at_ms: int) -> dict[str, Any]:
    """The IdentityAudit value of a refused link (merge fields null); the reason by member name."""
    record: dict[str, Any] = {
        "audit_id": refusal_audit_id(refusal),
        "kind": REFUSAL,
        "recorded_at": recorded_at_ms,
    }
    record.update(dict.fromkeys(_MERGE_FIELDS))
    record.update(
        event_id=refusal.event_id,
        event_time=refusal.event_time,
        ref=refusal.ref,
        anchor=refusal.anchor,
        held_by=refusal.held_by,
        reason=RefusalReason(refusal.reason).name,
        fault_kind=refusal.kind,
    )
    return record


def decision_of(record: Mapping[str, Any]) -> MergeDecision | Refusal:
    """Back from a decoded IdentityAudit value to the model's decision (for consumers and tests)."""
    if record["kind"] == MERGE:
        return MergeDecision(record["source_profile"], record["source_incarnation"],
                             record["target_profile"], record["target_incarnation"])
    if record["kind"] == REFUSAL:
        return Refusal(record["event_time"], record["event_id"], record["ref"], record["anchor"],
                       record["held_by"], RefusalReason[record["reason"]], record["fault_kind"])
    raise ValueError(f"unknown IdentityAudit kind {record['kind']!r}")
