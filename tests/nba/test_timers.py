"""Timer conditions (pipeline/nba/timers.py): when each falls due, over folded profiles."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from pipeline.nba.catalogue import load_action_catalogue
from pipeline.nba.timers import Due, due_by, due_times
from pipeline.profile.fold import fold_event
from pipeline.profile.limits import ProfileLimits
from pipeline.profile.state import ProfileState
from tests.profile.strategies import events

CATALOGUE = load_action_catalogue()
LIMITS = ProfileLimits()
MIN = 60_000
T0 = 1_750_000_000_000
_n = 0


def fold(state: ProfileState, kind: str, at: int, **fields: Any) -> None:
    global _n
    _n += 1
    ev = {"event_id": f"e{_n}", "event_time": at, "ingest_time": at, "channel": "WEB", "type": kind,
          "customer_id": "Z", "timezone": "UTC", "items": [], "currency": "EUR", **fields}
    fold_event(state, ev, LIMITS)


def test_an_untouched_cart_falls_due_after_thirty_minutes() -> None:
    s = ProfileState()
    fold(s, "add_to_cart", T0, sku="S1", price=10.0)
    assert due_times(s, CATALOGUE)["abandoned_cart"] == (T0 + 30 * MIN, T0)


def test_a_purchase_that_leaves_items_in_the_cart_ends_the_cart_occurrence() -> None:
    s = ProfileState()
    fold(s, "add_to_cart", T0, sku="S1", price=10.0)
    fold(s, "add_to_cart", T0 + MIN, sku="S2", price=10.0)
    fold(s, "purchase", T0 + 5 * MIN, items=[{"sku": "S1", "quantity": 1, "unit_price": 10.0}], order_id="o1",
         amount=10.0)
    assert s.cart  # S2 is still in it
    assert "abandoned_cart" not in due_times(s, CATALOGUE)
    fold(s, "add_to_cart", T0 + 60 * MIN, sku="S3", price=10.0)  # a new cart after the purchase
    assert due_times(s, CATALOGUE)["abandoned_cart"] == (T0 + 90 * MIN, T0 + 60 * MIN)


def test_a_purchase_in_a_store_ends_the_cart_occurrence_too() -> None:
    s = ProfileState()
    fold(s, "add_to_cart", T0, sku="S1", price=10.0)
    fold(s, "store_purchase", T0 + 5 * MIN, channel="STORE", items=[{"sku": "S9", "quantity": 1,
                                                                      "unit_price": 3.0}], amount=3.0)
    assert "abandoned_cart" not in due_times(s, CATALOGUE)


@given(events(), st.lists(st.integers(-3 * 86_400_000, 60 * 86_400_000), max_size=4))
def test_what_is_due_by_a_time_is_exactly_the_due_times_up_to_it(evs: list[dict[str, Any]],
                                                                  offsets: list[int]) -> None:
    """``due_by`` (run before every fold) skips work, never an occurrence: it agrees with ``due_times``."""
    state = ProfileState()
    for ev in evs:
        fold_event(state, ev, LIMITS)
    pending = due_times(state, CATALOGUE)
    probes = {d + k for d, _b in pending.values() for k in (-1, 0, 1)}
    probes |= {1_700_000_000_000 + k for k in offsets}
    for upto in sorted(probes):
        expected = sorted(Due(d, action, b) for action, (d, b) in pending.items() if d <= upto)
        assert due_by(state, CATALOGUE, upto) == expected
