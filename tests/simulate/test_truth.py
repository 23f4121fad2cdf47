"""Ground truth: written once, read back identically, and covering every event's identifiers."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from pipeline.simulate.journeys import JourneyConfig, build_person, iter_events
from pipeline.simulate.truth import TruthRecorder, load_truth

CFG = JourneyConfig(customers=300, seed=4, shared_device_every=40, erasure_share=0.03)


def recorded() -> tuple[TruthRecorder, list]:
    rec = TruthRecorder(CFG.seed, CFG.customers, start_ms=CFG.start_ms)
    events = list(rec.tap(iter_events(CFG)))
    rec.record_bad(0, "empty", "web", "events.web", 10)
    rec.record_bad(1, "not_avro", "app", "events.app", 20)
    return rec, events


def test_round_trip(tmp_path: Path) -> None:
    rec, _events = recorded()
    path = rec.write(tmp_path / "sub" / "truth.jsonl")
    truth = load_truth(path)
    assert truth.summary == rec.summary()
    assert list(truth.persons.values()) == list(rec.persons())
    assert [(b.reason, b.topic_key, b.topic) for b in truth.bad] == [
        ("empty", "web", "events.web"), ("not_avro", "app", "events.app")]
    lines = path.read_text().splitlines()
    assert json.loads(lines[0])["type"] == "summary"
    assert not (tmp_path / "sub" / "truth.jsonl.tmp").exists()


def test_summary_counts() -> None:
    rec, events = recorded()
    s = rec.summary()
    assert s["seed"] == CFG.seed and s["customers"] == CFG.customers and s["start_ms"] == CFG.start_ms
    assert s["events"] == len(events)
    assert s["events_per_topic"] == {k: Counter(e.topic_key for e in events).get(k, 0)
                                     for k in s["events_per_topic"]}
    assert s["bad_per_reason"] == {"empty": 1, "not_avro": 1}
    per_person = {p.person: p.total_events for p in rec.persons()}
    assert per_person == dict(Counter(e.person for e in events))


def test_identifiers_cover_every_event_and_groups_cover_identifiers() -> None:
    rec, events = recorded()
    persons = {p.person: p for p in rec.persons()}
    for ev in events:
        known = persons[ev.person].identifiers
        for kind, value in ev.record["identifiers"].items():
            if value is not None:
                assert value in known[kind]
    for p in persons.values():
        refs = sorted(f"{k}:{v}" for k, vs in p.identifiers.items() for v in vs)
        assert sorted(r for g in p.groups for r in g) == refs


def test_groups_follow_the_links_events_make() -> None:
    rec, events = recorded()
    persons = {p.person: p for p in rec.persons()}
    for ev in events:
        refs = {f"{k}:{v}" for k, v in ev.record["identifiers"].items() if v is not None}
        holders = [g for g in persons[ev.person].groups if refs & set(g)]
        assert len(holders) == 1 and refs <= set(holders[0])
    assert any(len(p.groups) > 1 for p in persons.values())  # unlinked cookies, unregistered cards


def test_only_family_tablets_are_shared() -> None:
    rec, _ = recorded()
    shared = {(k, v) for p in rec.persons() for k, vs in p.shared.items() for v in vs}
    expected = {("device_id", build_person(CFG, 40 * k).shared_device) for k in range(8)}
    assert shared == expected


def test_purchases_revenue_and_quiet_periods() -> None:
    rec, events = recorded()
    persons = list(rec.persons())
    buys = [e for e in events if e.record["type"] in ("PURCHASE", "STORE_PURCHASE")]
    assert sum(p.purchases for p in persons) == len(buys)
    assert abs(sum(p.revenue for p in persons) - sum(e.record["amount"] for e in buys)) < 1.0
    assert any(p.longest_gap_ms >= 4 * 86_400_000 for p in persons)
    assert any(p.erased_at_ms is not None for p in persons)
    assert any(p.anonymous_only for p in persons)
