"""Folding events into a profile, and the rules for events a profile cannot apply."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings

from pipeline.profile.codec import ProfileCodecError, decode_state, encode_state
from pipeline.profile.fold import Outcome, fold_event
from pipeline.profile.limits import ProfileLimits
from pipeline.profile.state import ProfileState
from pipeline.profile.views import consented, preferred_channel, profile_json, typical_interval_ms
from tests.profile.strategies import events

LIMITS = ProfileLimits()
T0 = 1_700_000_000_000


def ev(eid: str, kind: str, channel: str | None = "WEB", t: int = T0, **fields: Any) -> dict[str, Any]:
    return {"event_id": eid, "event_time": t, "channel": channel, "type": kind, "customer_id": "C1",
            "items": [], **fields}


def fold_all(*evs: dict[str, Any]) -> tuple[ProfileState, list[Outcome]]:
    state = ProfileState()
    return state, [fold_event(state, e, LIMITS) for e in evs]


def test_cart_add_remove_and_purchase_empties_the_purchased_lines() -> None:
    state, outcomes = fold_all(
        ev("1", "add_to_cart", sku="A", category="shoes", price=10.0),
        ev("2", "add_to_cart", t=T0 + 1, sku="A", category="shoes", price=10.0),
        ev("3", "add_to_cart", t=T0 + 2, sku="B", category="bags", price=5.5),
        ev("4", "remove_from_cart", t=T0 + 3, sku="A"),
    )
    assert outcomes == [Outcome.APPLIED] * 4
    assert {sku: line[:2] for sku, line in state.cart.items()} == {"A": (1, 1000), "B": (1, 550)}
    assert state.cart_changed_at == T0 + 3
    line = {"sku": "A", "category": "shoes", "quantity": 1, "unit_price": 10.0}
    fold_event(state, ev("5", "purchase", t=T0 + 4, amount=10.0, currency="EUR", items=[line]), LIMITS)
    assert list(state.cart) == ["B"]
    assert (state.orders_online, state.revenue, state.purchase_categories) == (1, {"EUR": 1000}, {"shoes": 1})


def test_removing_what_is_not_in_the_cart_is_a_defined_no_op() -> None:
    state, outcomes = fold_all(ev("1", "add_to_cart", sku="A", price=1.0),
                               ev("2", "remove_from_cart", t=T0 + 1, sku="Z"),
                               ev("3", "remove_from_cart", t=T0 + 2))
    assert outcomes == [Outcome.APPLIED, Outcome.CART_ITEM_ABSENT, Outcome.CART_ITEM_MISSING]
    assert list(state.cart) == ["A"] and state.events == 3  # the rest of the event still counts


@pytest.mark.parametrize("bad", [
    {"type": "purchase", "amount": -5.0},
    {"type": "store_purchase", "amount": float("nan"), "channel": "POS"},
    {"type": "purchase", "amount": 1.0, "items": [{"sku": "A", "quantity": 1, "unit_price": -1.0}]},
    {"type": "purchase", "amount": 1.0, "items": [{"sku": "A", "quantity": 0, "unit_price": 1.0}]},
    {"type": "store_return", "amount": float("inf"), "channel": "POS"},
    {"type": "add_to_cart", "sku": "A", "price": -3.0},
])
def test_impossible_amounts_are_rejected_and_leave_the_profile_untouched(bad: dict[str, Any]) -> None:
    state, _ = fold_all(ev("1", "page_view"))
    before = copy.deepcopy(state)
    fields = {"channel": "WEB", **bad}
    assert fold_event(state, ev("2", fields.pop("type"), **fields), LIMITS) is Outcome.INVALID_AMOUNT
    assert state == before


@pytest.mark.parametrize("consent", [
    {"consent_channel": "FAX", "consent_purpose": "marketing", "consent_granted": True},
    {"consent_channel": "EMAIL", "consent_purpose": "profiling", "consent_granted": True},
    {"consent_channel": "EMAIL", "consent_purpose": "marketing", "consent_granted": None},
    {"consent_channel": None, "consent_purpose": "marketing", "consent_granted": False},
])
def test_consent_for_unknown_channel_or_purpose_is_rejected(consent: dict[str, Any]) -> None:
    state = ProfileState()
    outcome = fold_event(state, ev("1", "consent_change", channel=None, **consent), LIMITS)
    assert outcome is Outcome.INVALID_CONTROL
    assert state == ProfileState()


def test_consent_changes_apply_by_event_time_and_unsubscribes_withdraw_marketing() -> None:
    state, _ = fold_all(
        ev("1", "consent_change", channel=None, t=T0 + 10, consent_channel="EMAIL",
           consent_purpose="marketing", consent_granted=True),
        ev("2", "consent_change", channel=None, t=T0 + 5, consent_channel="EMAIL",
           consent_purpose="marketing", consent_granted=False),  # older: loses
        ev("3", "consent_change", channel=None, consent_channel="SMS", consent_purpose="marketing",
           consent_granted=True),
        ev("4", "sms_stop", channel="SMS", t=T0 + 1),
    )
    assert consented(state, "EMAIL") and not consented(state, "SMS")
    assert not consented(state, "PUSH")  # never asked: no consent


def test_redelivered_event_is_a_duplicate() -> None:
    state, outcomes = fold_all(ev("1", "store_purchase", channel="POS", amount=3.0, currency="EUR"),
                               ev("1", "store_purchase", channel="POS", amount=3.0, currency="EUR"))
    assert outcomes == [Outcome.APPLIED, Outcome.DUPLICATE]
    assert (state.events, state.orders_store, state.revenue) == (1, 1, {"EUR": 300})


def test_engagement_and_preferred_channel() -> None:
    evs = [ev(f"c{ch}", "consent_change", channel=None, consent_channel=ch, consent_purpose="marketing",
              consent_granted=True) for ch in ("EMAIL", "SMS")]
    evs += [ev("id", "login", email_hash="e" * 32, phone_hash="p" * 32)]
    evs += [ev(f"m{i}", kind, channel="EMAIL", t=T0 + i) for i, kind in enumerate(["email_delivered"] * 4)]
    evs += [ev(f"s{i}", kind, channel="SMS", t=T0 + i)
            for i, kind in enumerate(["sms_delivered", "sms_delivered", "sms_clicked", "sms_reply"])]
    state, _ = fold_all(*evs)
    assert state.channels["SMS"][6] == 2  # clicked (a reply counts as an answer)
    assert preferred_channel(state, LIMITS) == "SMS"
    fold_event(state, ev("stop", "sms_stop", channel="SMS", t=T0 + 100), LIMITS)
    assert preferred_channel(state, LIMITS) == "EMAIL"  # SMS consent withdrawn


def test_typical_interval_is_the_median_gap() -> None:
    day = 86_400_000
    state, _ = fold_all(*[ev(f"p{i}", "store_purchase", channel="POS", t=T0 + d * day, amount=1.0)
                          for i, d in enumerate([0, 10, 20, 50])])
    assert typical_interval_ms(state) == 10 * day


@settings(max_examples=50, deadline=None)
@given(events(60))
def test_codec_round_trips_and_json_has_no_raw_pii(evs: list[dict[str, Any]]) -> None:
    state = ProfileState()
    for e in evs:
        fold_event(state, e, LIMITS)
    assert decode_state(encode_state(state)) == state
    view = profile_json("cust:C1", state, LIMITS)
    assert view["events"] == state.events


def test_codec_refuses_garbage() -> None:
    with pytest.raises(ProfileCodecError):
        decode_state(b"\x01\x02garbage")
