"""Folding one resolved (canonical) event into a profile: pure, synchronous, no I/O.

Event types are the canonical ones (``ingest/canonical.py``): lower case, and
prefixed with the channel for e-mail, push and SMS (``email_opened``).

The rules for input a profile cannot apply are defined here, and an event is
checked before anything is written, so a rejected event leaves the profile
exactly as it was:

- a purchase or return with a negative, infinite or NaN amount or line price:
  rejected, dead-lettered as ``invalid_amount``;
- a consent change for a channel or purpose outside ``topologies/profile.yaml``,
  or without ``granted``: rejected, dead-lettered as ``invalid_control``;
- removing a product that is not in the cart: the rest of the event applies,
  the cart does not change, counted as ``cart_item_absent`` (the removal may
  have overtaken its add, which came on another channel);
- a cart event without a product: likewise, ``cart_item_missing``;
- the same event id again (an upstream redelivery) while it is among the
  profile's ``caps.memo`` most recently ingested events: nothing changes,
  counted as ``duplicate``. Redeliveries come from a stage replaying its last
  few seconds, so the window is counted in arrivals (ingest time), not in
  event time, where a late event would fall out of the memo at once.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from pipeline.identity.model import FIELD_KIND, STABLE_KINDS
from pipeline.profile.limits import ProfileLimits
from pipeline.profile.state import (
    CLICKED,
    DELIVERED,
    EVENTS,
    FAILED,
    FIRST,
    LAST,
    OPENED,
    SENT,
    UNSUBSCRIBED,
    ProfileState,
    by_first,
    by_time,
    cap_counts,
    cap_identifiers,
    consent_rank,
    new_channel_stats,
    newest,
    register_rank,
)


class Outcome(StrEnum):
    APPLIED = "applied"
    DUPLICATE = "duplicate"
    CART_ITEM_ABSENT = "cart_item_absent"  # applied, cart unchanged
    CART_ITEM_MISSING = "cart_item_missing"  # applied, cart unchanged
    INVALID_AMOUNT = "invalid_amount"  # rejected
    INVALID_CONTROL = "invalid_control"  # rejected
    ERASED = "erased"  # dropped by the engine: a piece of an erased person's past arriving late


ERASED = Outcome.ERASED
REJECTED = frozenset({Outcome.INVALID_AMOUNT, Outcome.INVALID_CONTROL})
ANOMALIES = (Outcome.DUPLICATE, Outcome.CART_ITEM_ABSENT, Outcome.CART_ITEM_MISSING)

ONLINE_PURCHASE = "purchase"
STORE_PURCHASE = "store_purchase"
ERASURE = "erasure_request"
CONSENT = "consent_change"
OUTBOUND = frozenset({"EMAIL", "PUSH", "SMS"})  # their event types carry the channel: email_opened
_ENGAGEMENT = {"sent": SENT, "delivered": DELIVERED, "opened": OPENED, "clicked": CLICKED,
               "reply": CLICKED, "unsubscribed": UNSUBSCRIBED, "stop": UNSUBSCRIBED,
               "bounced": FAILED, "failed": FAILED}
_MARKS = {"checkout": "checkout", "callback_requested": "callback_requested", "complaint": "complaint",
          "app_install": "app_installed", "signup": "signed_up"}
_ID_FIELDS = tuple(FIELD_KIND.items())
MARKETING = "marketing"


def event_digest(event_id: str) -> int:
    """64 bits of the event id: the memo keeps these, not the ids."""
    return int.from_bytes(hashlib.blake2b(event_id.encode(), digest_size=8).digest(), "big")


def minor_units(amount: float) -> int:
    return round(amount * 100)


def _bad_amount(value: Any) -> bool:
    return value is not None and not (isinstance(value, int | float) and 0 <= value < math.inf)


def check(ev: Mapping[str, Any], limits: ProfileLimits) -> Outcome | None:
    """Why the event cannot be applied at all (None: it can)."""
    kind = ev["type"]
    if kind in (ONLINE_PURCHASE, STORE_PURCHASE, "store_return", "add_to_cart"):
        if _bad_amount(ev.get("amount")) or _bad_amount(ev.get("price")) or any(
            _bad_amount(item.get("unit_price")) or not (isinstance(item.get("quantity"), int)
                                                        and item["quantity"] > 0)
            for item in ev.get("items") or ()
        ):
            return Outcome.INVALID_AMOUNT
    elif kind == CONSENT and (ev.get("consent_channel") not in limits.consent_channels
            or (ev.get("consent_purpose") or MARKETING) not in limits.consent_purposes
            or not isinstance(ev.get("consent_granted"), bool)):
        return Outcome.INVALID_CONTROL
    return None


def _set_register(state: ProfileState, name: str, t: int, value: Any) -> None:
    new = (t, value)
    old = state.registers.get(name)
    if old is None or register_rank(new) > register_rank(old):
        state.registers[name] = new


def _set_consent(state: ProfileState, key: str, t: int, granted: bool) -> None:
    new = (t, granted)
    old = state.consent.get(key)
    if old is None or consent_rank(new) > consent_rank(old):
        state.consent[key] = new


def fold_event(state: ProfileState, ev: Mapping[str, Any], limits: ProfileLimits) -> Outcome:
    """Apply one canonical event to ``state`` in place; see the module docstring for the rules."""
    bad = check(ev, limits)
    if bad is not None:
        return bad
    caps = limits.caps
    t: int = ev["event_time"]
    digest = event_digest(ev["event_id"])
    memo = state.memo
    if digest in memo:
        return Outcome.DUPLICATE
    memo[digest] = ev.get("ingest_time") or t  # by arrival: redeliveries come soon after the original
    if len(memo) > caps.memo:
        state.memo = newest(memo, caps.memo, by_time)
    outcome = Outcome.APPLIED

    state.events += 1
    if state.first_seen is None or t < state.first_seen:
        state.first_seen = t
    if state.last_seen is None or t > state.last_seen:
        state.last_seen = t
    ids = state.identifiers
    grew = False
    for name, kind in _ID_FIELDS:
        value = ev.get(name)
        if value:
            ref = f"{kind}:{value}"
            seen = ids.get(ref)
            if seen is None:
                grew = True
                ids[ref] = t
            elif t > seen:
                ids[ref] = t
            if kind in STABLE_KINDS and (state.identified_at is None or t < state.identified_at):
                state.identified_at = t
    if grew:
        state.identifiers = cap_identifiers(ids, caps.identifiers_per_kind)
    channel = ev.get("channel")
    kind = ev["type"]
    if channel is not None:
        stats = state.channels.get(channel)
        if stats is None:
            stats = state.channels[channel] = new_channel_stats(t)
        else:
            if t < stats[FIRST]:
                stats[FIRST] = t
            if t > stats[LAST]:
                stats[LAST] = t
        stats[EVENTS] += 1
        counter = _ENGAGEMENT.get(kind[len(channel) + 1:]) if channel in OUTBOUND else None
        if counter is not None:
            stats[counter] += 1
            if counter == UNSUBSCRIBED:
                _set_consent(state, f"{channel}/{MARKETING}", t, False)
            elif counter == FAILED and channel == "EMAIL":
                _set_register(state, "email_bounced", t, True)
            elif counter == SENT and ev.get("trigger_key"):
                action = str(ev["trigger_key"]).partition(":")[0]
                key = f"{action}/{channel}"
                if t > state.last_trigger.get(key, -1):
                    state.last_trigger[key] = t
    for name in ("timezone", "locale", "region"):
        value = ev.get(name)
        if value:
            _set_register(state, name, t, value)
    mark = _MARKS.get(kind)
    if mark is not None:
        _set_register(state, mark, t, True)
    if ev.get("push_enabled") is not None:
        _set_register(state, "push_enabled", t, bool(ev["push_enabled"]))

    sku = ev.get("sku")
    if kind == "product_view" and sku:
        _view(state, sku, ev.get("category") or "", t, limits)
    elif kind == "add_to_cart":
        outcome = _cart_add(state, ev, t, limits)
    elif kind == "remove_from_cart":
        outcome = _cart_remove(state, sku, t)
    elif kind in (ONLINE_PURCHASE, STORE_PURCHASE):
        _purchase(state, ev, t, limits, store=kind == STORE_PURCHASE)
    elif kind == "store_return":
        state.returns += 1
        amount = ev.get("amount")
        if amount:
            currency = ev.get("currency") or ""
            state.returned[currency] = state.returned.get(currency, 0) + minor_units(amount)
    elif kind == "near_store" and ev.get("store_id"):
        _set_register(state, "near_store", t, [ev["store_id"], ev.get("distance_m")])
    elif kind == CONSENT:
        purpose = ev.get("consent_purpose") or MARKETING
        _set_consent(state, f"{ev['consent_channel']}/{purpose}", t, bool(ev["consent_granted"]))
    return outcome


def _view(state: ProfileState, sku: str, category: str, t: int, limits: ProfileLimits) -> None:
    caps = limits.caps
    old = state.products.get(sku)
    if old is None or (t, category) > old:
        state.products[sku] = (t, category)
        if len(state.products) > caps.recent_products:
            state.products = newest(state.products, caps.recent_products, by_first)
    if category and t > state.categories.get(category, -1):
        state.categories[category] = t
        if len(state.categories) > caps.recent_categories:
            state.categories = newest(state.categories, caps.recent_categories, by_time)


def _cart_add(state: ProfileState, ev: Mapping[str, Any], t: int, limits: ProfileLimits) -> Outcome:
    sku = ev.get("sku")
    if not sku:
        return Outcome.CART_ITEM_MISSING
    category = ev.get("category") or ""
    quantity, _price, _cat, changed = state.cart.get(sku, (0, 0, category, t))
    state.cart[sku] = (quantity + 1, minor_units(ev.get("price") or 0.0), category, max(changed, t))
    if len(state.cart) > limits.caps.cart_items:
        state.cart = newest(state.cart, limits.caps.cart_items, lambda s, line: (line[3], s))
    _touch_cart(state, t)
    _view(state, sku, category, t, limits)
    return Outcome.APPLIED


def _cart_remove(state: ProfileState, sku: str | None, t: int) -> Outcome:
    if not sku:
        return Outcome.CART_ITEM_MISSING
    line = state.cart.get(sku)
    if line is None:
        return Outcome.CART_ITEM_ABSENT
    quantity, price, category, changed = line
    if quantity <= 1:
        del state.cart[sku]
    else:
        state.cart[sku] = (quantity - 1, price, category, max(changed, t))
    _touch_cart(state, t)
    return Outcome.APPLIED


def _touch_cart(state: ProfileState, t: int) -> None:
    if state.cart_changed_at is None or t > state.cart_changed_at:
        state.cart_changed_at = t


def _purchase(state: ProfileState, ev: Mapping[str, Any], t: int, limits: ProfileLimits, *,
              store: bool) -> None:
    caps = limits.caps
    items = ev.get("items") or ()
    amount = ev.get("amount")
    if amount is None:
        amount = sum(item["quantity"] * item["unit_price"] for item in items)
    currency = ev.get("currency") or ""
    state.revenue[currency] = state.revenue.get(currency, 0) + minor_units(amount)
    if store:
        state.orders_store += 1
        if ev.get("store_id"):
            _set_register(state, "store", t, ev["store_id"])
    else:
        state.orders_online += 1
        bought = {item["sku"] for item in items}
        if state.cart:  # the purchased lines leave the cart (all of it, if the order names none)
            for sku in list(state.cart) if not bought else bought & state.cart.keys():
                del state.cart[sku]
            _touch_cart(state, t)
    if state.last_purchase_at is None or t > state.last_purchase_at:
        state.last_purchase_at = t
    counts = state.purchase_categories
    for item in items:
        category = item.get("category") or ""
        if category:
            counts[category] = counts.get(category, 0) + item["quantity"]
    if len(counts) > caps.purchase_categories:
        state.purchase_categories = cap_counts(counts, caps.purchase_categories)
    times = state.purchase_times
    times.append(t)
    times.sort(reverse=True)
    del times[caps.purchase_times:]
