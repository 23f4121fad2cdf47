"""Journeys: deterministic, schema-valid, time-sorted, and exercising the identity rules."""

from __future__ import annotations

import inspect
from collections import defaultdict
from collections.abc import Generator
from functools import lru_cache
from typing import cast

import pytest
from fastavro.validation import validate

from pipeline.simulate.journeys import (
    DAY_MS,
    IDENTIFIER_KINDS,
    SESSION_GAP_MS,
    TOPIC_KEYS,
    JourneyConfig,
    SimEvent,
    build_person,
    iter_events,
    sample_record,
)
from pipeline.topology.catalogue import load_catalogue
from tests.simulate.avro_stub import StubCodec

CFG = JourneyConfig(customers=400, seed=11)


@lru_cache(maxsize=8)
def events_for(cfg: JourneyConfig) -> tuple[SimEvent, ...]:
    return tuple(iter_events(cfg))


@lru_cache(maxsize=1)
def codec() -> StubCodec:
    return StubCodec()


@lru_cache(maxsize=16)
def subject_of(topic_key: str) -> str:
    return load_catalogue()[topic_key].subject


def test_same_seed_same_events_and_different_seed_different() -> None:
    a = list(iter_events(JourneyConfig(customers=120, seed=5)))
    b = list(iter_events(JourneyConfig(customers=120, seed=5)))
    c = list(iter_events(JourneyConfig(customers=120, seed=6)))
    assert a == b
    assert len(a) > 500
    assert [e.record["event_id"] for e in a] != [e.record["event_id"] for e in c]
    assert [e.record["identifiers"] for e in a] != [e.record["identifiers"] for e in c]


def test_adding_people_keeps_existing_journeys() -> None:
    small = [e for e in iter_events(JourneyConfig(customers=60, seed=2)) if e.person < 60]
    big = [e for e in iter_events(JourneyConfig(customers=90, seed=2)) if e.person < 60]
    assert small == big


def test_every_record_is_valid_for_its_schema() -> None:
    c = codec()
    for ev in events_for(CFG):
        schema = c.schemas[subject_of(ev.topic_key)]
        assert validate(ev.record, schema, strict=True), ev.topic_key
        assert isinstance(ev.record["event_time"], int)


def test_every_record_round_trips_through_avro() -> None:
    c = codec()
    for ev in events_for(CFG):
        assert c.decode(c.encode(subject_of(ev.topic_key), ev.record)) == ev.record


def test_topic_keys_are_catalogue_ingest_sources() -> None:
    sources = {spec.key for spec in load_catalogue().ingest_sources}
    assert set(TOPIC_KEYS) == sources
    assert {ev.topic_key for ev in events_for(CFG)} == sources


def test_sorted_by_time_inside_the_span_with_unique_ids() -> None:
    evs = events_for(CFG)
    times = [e.event_time for e in evs]
    assert times == sorted(times)
    assert CFG.start_ms <= times[0] and times[-1] < CFG.end_ms
    ids = [e.record["event_id"] for e in evs]
    assert len(set(ids)) == len(ids)
    assert 8 <= len(evs) / CFG.customers <= 14  # "about 10 events per customer"


def test_every_event_carries_an_identifier_and_keys_hold_no_raw_pii() -> None:
    for ev in events_for(CFG):
        ids = ev.record["identifiers"]
        assert set(ids) == set(IDENTIFIER_KINDS)
        assert any(v is not None for v in ids.values())
        if ev.key is not None:
            assert b"@" not in ev.key and not ev.key.startswith(b"+")


def test_sessions_do_not_overlap() -> None:
    """A person's state changes in time order only if a session ends before the next starts."""
    spans: dict[tuple[int, str], list[int]] = defaultdict(list)
    for ev in events_for(CFG):
        session = ev.record["event_id"].rsplit("-", 1)[0]
        spans[(ev.person, session)].append(ev.event_time)
    assert all(max(ts) - min(ts) < SESSION_GAP_MS for ts in spans.values())


def test_web_events_before_login_are_anonymous_and_login_links_the_cookie() -> None:
    first_with_customer: dict[str, SimEvent] = {}
    anonymous_before: set[str] = set()
    for ev in events_for(CFG):
        if ev.topic_key != "web":
            continue
        ids = ev.record["identifiers"]
        cookie = ids["anonymous_id"]
        assert cookie is not None
        if ids["customer_id"] is None:
            if cookie not in first_with_customer:
                anonymous_before.add(cookie)
            assert ids["email"] is None and ids["phone"] is None
        elif cookie not in first_with_customer:
            first_with_customer[cookie] = ev
    assert first_with_customer
    assert {e.record["type"] for e in first_with_customer.values()} <= {"LOGIN", "SIGNUP"}
    logged_after_browsing = anonymous_before & set(first_with_customer)
    assert len(logged_after_browsing) > 20


def test_behaviours_all_show_up() -> None:
    seen = {(e.topic_key, e.record["type"]) for e in events_for(CFG)}
    for wanted in [
        ("web", "SIGNUP"), ("web", "LOGIN"), ("web", "ADD_TO_CART"), ("web", "REMOVE_FROM_CART"),
        ("web", "CHECKOUT"), ("web", "PURCHASE"), ("web", "SEARCH"),
        ("app", "APP_INSTALL"), ("app", "APP_OPEN"), ("app", "LOGIN"), ("app", "NEAR_STORE"),
        ("app", "PURCHASE"), ("pos", "STORE_PURCHASE"), ("pos", "CARD_REGISTERED"),
        ("callcenter", "CALL_INBOUND"), ("callcenter", "CALLBACK_REQUESTED"),
        ("email", "DELIVERED"), ("email", "OPENED"), ("email", "CLICKED"),
        ("push", "DELIVERED"), ("sms", "DELIVERED"),
        ("privacy", "CONSENT_CHANGE"),
    ]:
        assert wanted in seen, wanted
    big = JourneyConfig(customers=3000, seed=11)
    rare = {(e.topic_key, e.record["type"]) for e in events_for(big)}
    for wanted in [("email", "UNSUBSCRIBED"), ("sms", "STOP"), ("push", "OPENED"),
                   ("privacy", "ERASURE_REQUEST")]:
        assert wanted in rare, wanted


def test_push_enabled_app_opens_carry_a_token() -> None:
    opens = [e.record for e in events_for(CFG) if e.record["type"] == "APP_OPEN"]
    assert any(r["push_enabled"] for r in opens) and any(r["push_enabled"] is False for r in opens)
    assert all((r["push_token"] is not None) == bool(r["push_enabled"]) for r in opens)


def test_abandoned_carts_and_anonymous_only_visitors_exist() -> None:
    added: set[int] = set()
    bought: set[int] = set()
    kinds: dict[int, set[str]] = defaultdict(set)
    for ev in events_for(CFG):
        if ev.record["type"] == "ADD_TO_CART":
            added.add(ev.person)
        if ev.record["type"] in ("PURCHASE", "CHECKOUT"):
            bought.add(ev.person)
        kinds[ev.person].update(k for k, v in ev.record["identifiers"].items() if v is not None)
    assert len(added - bought) > 20
    assert sum(1 for k in kinds.values() if k == {"anonymous_id"}) > 10


def test_some_cards_are_used_in_store_long_before_they_are_linked() -> None:
    first_use: dict[str, int] = {}
    first_link: dict[str, int] = {}
    for ev in events_for(CFG):
        ids = ev.record["identifiers"]
        card = ids["loyalty_card"]
        if card is None:
            continue
        first_use.setdefault(card, ev.event_time)
        if ids["customer_id"] is not None:
            first_link.setdefault(card, ev.event_time)
    late = [c for c in first_link if first_link[c] - first_use[c] >= 3 * DAY_MS]
    assert len(late) >= 5
    assert any(c not in first_link for c in first_use)  # some never linked at all


def test_family_tablets_see_two_customers_log_in() -> None:
    cfg = JourneyConfig(customers=400, seed=11, shared_device_every=50)
    logins: dict[str, set[str]] = defaultdict(set)
    for ev in events_for(cfg):
        ids = ev.record["identifiers"]
        if ev.record["type"] == "LOGIN" and ids["device_id"]:
            logins[ids["device_id"]].add(ids["customer_id"])
    shared = {d for d, custs in logins.items() if len(custs) > 1}
    expected = {build_person(cfg, 50 * k).shared_device for k in range(8)}
    assert shared == expected
    assert all(len(logins[d]) == 2 for d in shared)


def test_nothing_happens_after_an_erasure_request() -> None:
    erased_at: dict[int, int] = {}
    for ev in events_for(JourneyConfig(customers=400, seed=11, erasure_share=0.05)):
        assert ev.person not in erased_at, "event after erasure"
        if ev.record["type"] == "ERASURE_REQUEST":
            erased_at[ev.person] = ev.event_time
            assert ev.record["identifiers"]["customer_id"] or ev.record["identifiers"]["loyalty_card"]
    assert len(erased_at) > 5


def test_identifiers_look_like_what_ingest_accepts() -> None:
    people = [build_person(CFG, i) for i in range(CFG.customers)]
    emails = [p.email for p in people if p.email]
    phones = [p.phone for p in people if p.phone]
    assert all(e.endswith("@example.com") for e in emails)
    assert all(ph.startswith("+") and ph[1:].isdigit() and 7 <= len(ph) - 1 <= 15 for ph in phones)
    for kind in ("customer_id", "loyalty_card", "email", "phone"):
        values = [getattr(p, kind) for p in people if getattr(p, kind)]
        assert len(values) == len(set(values)), f"{kind} must belong to one person"
    zones = {p.tz.split("/")[0] for p in people}
    assert zones == {"Europe", "America", "Asia", "Australia"}


@pytest.mark.parametrize("topic_key", TOPIC_KEYS)
def test_sample_records_are_valid(topic_key: str) -> None:
    rec = sample_record(topic_key, seed=3, n=7, event_time=CFG.start_ms)
    assert validate(rec, codec().schemas[subject_of(topic_key)], strict=True)
    assert rec == sample_record(topic_key, seed=3, n=7, event_time=CFG.start_ms)


def test_generation_is_lazy() -> None:
    """The first events come out before the whole population is expanded."""
    gen = cast(Generator[SimEvent, None, None], iter_events(JourneyConfig(customers=20_000, seed=1)))
    first = [next(gen) for _ in range(50)]
    assert len(first) == 50
    state = inspect.getgeneratorlocals(gen)
    assert len(state["pending"]) < 1000  # events waiting to be emitted
    assert len(state["sessions"]) < 5000  # planned sessions of the people arrived so far


@pytest.mark.parametrize(("seed", "days"), [(1, 0.25), (2, 1.0), (3, 3.0), (4, 30.0)])
def test_invariants_hold_for_other_seeds_and_spans(seed: int, days: float) -> None:
    cfg = JourneyConfig(customers=150, seed=seed, days=days, erasure_share=0.05)
    c = codec()
    last = cfg.start_ms
    erased: set[int] = set()
    for ev in iter_events(cfg):
        assert last <= ev.event_time < cfg.end_ms
        last = ev.event_time
        assert ev.person not in erased
        if ev.record["type"] == "ERASURE_REQUEST":
            erased.add(ev.person)
        assert validate(ev.record, c.schemas[subject_of(ev.topic_key)], strict=True)


def test_config_is_checked() -> None:
    with pytest.raises(ValueError, match="days"):
        JourneyConfig(days=0.1)
    with pytest.raises(ValueError, match="customers"):
        JourneyConfig(customers=-1)
    with pytest.raises(ValueError, match="shares"):
        JourneyConfig(anonymous_share=0.7, store_only_share=0.5)
    assert list(iter_events(JourneyConfig(customers=0))) == []
