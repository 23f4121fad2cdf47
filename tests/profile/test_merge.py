"""The merge fold: commutative, associative, and the same as folding all the events into one profile."""

from __future__ import annotations

import dataclasses
from typing import Any

from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from pipeline.profile.fold import fold_event
from pipeline.profile.limits import Caps, ProfileLimits
from pipeline.profile.state import ProfileState, cap_counts, merge
from tests.profile.strategies import events

Event = dict[str, Any]
PHASES = [Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink]  # no tracing 'explain' phase: slow
LIMITS = ProfileLimits(caps=Caps(identifiers_per_kind=2, recent_products=4, recent_categories=3, cart_items=4,
                                 purchase_times=5, memo=6, merged_from=3))
CAPS = LIMITS.caps


def folded(evs: list[dict[str, Any]]) -> ProfileState:
    state = ProfileState()
    for ev in evs:
        fold_event(state, ev, LIMITS)
    return state


def without_cart(state: ProfileState) -> ProfileState:
    """The cart is a running quantity per line: the one part whose merge is not a fold of all events."""
    return dataclasses.replace(state, cart={}, cart_changed_at=None)


def split(evs: list[dict[str, Any]], mask: list[bool]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    left = [ev for ev, m in zip(evs, mask, strict=False) if m]
    right = [ev for ev, m in zip(evs, mask, strict=False) if not m]
    return left, right + evs[len(mask):]


@settings(max_examples=60, deadline=None, phases=PHASES)
@given(events(), events(), st.randoms())
def test_merge_is_commutative(a: list[dict[str, Any]], b: list[dict[str, Any]], rnd: Any) -> None:
    b = [{**ev, "event_id": "b" + ev["event_id"]} for ev in b]
    x, y = folded(a), folded(b)
    assert merge(x, y, CAPS) == merge(y, x, CAPS)


@settings(max_examples=60, deadline=None, phases=PHASES)
@given(events(25), events(25), events(25))
def test_merge_is_associative(a: list[Event], b: list[Event], c: list[Event]) -> None:
    b = [{**ev, "event_id": "b" + ev["event_id"]} for ev in b]
    c = [{**ev, "event_id": "c" + ev["event_id"]} for ev in c]
    x, y, z = folded(a), folded(b), folded(c)
    assert merge(merge(x, y, CAPS), z, CAPS) == merge(x, merge(y, z, CAPS), CAPS)


@settings(max_examples=80, deadline=None, phases=PHASES)
@given(events(60), st.lists(st.booleans(), max_size=60))
def test_merging_two_halves_equals_folding_everything(evs: list[dict[str, Any]], mask: list[bool]) -> None:
    left, right = split(evs, mask)
    assert without_cart(merge(folded(left), folded(right), CAPS)) == without_cart(folded(evs))


@settings(max_examples=50, deadline=None, phases=PHASES)
@given(events(60), st.randoms())
def test_fold_does_not_depend_on_arrival_order_except_the_cart(evs: list[dict[str, Any]], rnd: Any) -> None:
    shuffled = list(evs)
    rnd.shuffle(shuffled)
    assert without_cart(folded(shuffled)) == without_cart(folded(evs))


@settings(max_examples=50, deadline=None, phases=PHASES)
@given(events(30))
def test_merging_an_empty_profile_changes_nothing(evs: list[dict[str, Any]]) -> None:
    state = folded(evs)
    assert merge(state, ProfileState(), CAPS) == state
    assert merge(ProfileState(), state, CAPS) == state


def test_counters_add_times_take_min_and_max() -> None:
    a = folded([{"event_id": "1", "event_time": 100, "channel": "POS", "type": "store_purchase",
                 "customer_id": "C1", "items": [], "amount": 10.0, "currency": "EUR", "store_id": "S1"}])
    b = folded([{"event_id": "2", "event_time": 50, "channel": "POS", "type": "store_purchase",
                 "loyalty_card": "L1", "items": [], "amount": 2.5, "currency": "EUR", "store_id": "S2"}])
    m = merge(a, b, CAPS)
    assert (m.events, m.orders_store, m.revenue) == (2, 2, {"EUR": 1250})
    assert (m.first_seen, m.last_seen, m.last_purchase_at) == (50, 100, 100)
    assert m.registers["store"] == (100, "S1")  # the newer store wins
    assert set(m.identifiers) == {"cust:C1", "card:L1"}
    assert m.channels["POS"][:3] == [2, 50, 100]


def test_consent_refusal_wins_a_tie_and_the_later_change_wins() -> None:
    def consent(eid: str, t: int, granted: bool) -> dict[str, Any]:
        return {"event_id": eid, "event_time": t, "channel": None, "type": "consent_change",
                "customer_id": "C1", "consent_channel": "EMAIL", "consent_purpose": "marketing",
                "consent_granted": granted}

    granted, refused = folded([consent("1", 10, True)]), folded([consent("2", 10, False)])
    assert merge(granted, refused, CAPS).consent["EMAIL/marketing"] == (10, False)
    assert merge(refused, granted, CAPS).consent["EMAIL/marketing"] == (10, False)
    later = folded([consent("3", 11, True)])
    assert merge(refused, later, CAPS).consent["EMAIL/marketing"] == (11, True)


def test_capped_lists_keep_the_newest() -> None:
    a = folded([{"event_id": f"a{i}", "event_time": i, "channel": "WEB", "type": "product_view",
                 "anonymous_id": "A1", "sku": f"S{i}", "category": "c"} for i in range(0, 10, 2)])
    b = folded([{"event_id": f"b{i}", "event_time": i, "channel": "WEB", "type": "product_view",
                 "anonymous_id": "A2", "sku": f"S{i}", "category": "c"} for i in range(1, 10, 2)])
    m = merge(a, b, CAPS)
    assert sorted(m.products) == ["S6", "S7", "S8", "S9"]  # the 4 newest of 10
    assert len(m.memo) == CAPS.memo


def test_category_counts_beyond_the_cap_go_under_other() -> None:
    counts = {f"c{i}": i for i in range(1, 8)}
    capped = cap_counts(counts, 4)
    assert capped == {"c7": 7, "c6": 6, "c5": 5, "other": 1 + 2 + 3 + 4}
    assert sum(capped.values()) == sum(counts.values())
