"""Profile features the action catalogue may name in eligibility rules: a closed, documented set.

Each feature is a pure function of a profile and the decision time, so a typo
in ``topologies/actions.yaml`` is an error at start, not a rule that is
silently never true.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pipeline.profile.state import CLICKED, EVENTS, OPENED, ProfileState
from pipeline.profile.views import cart_value, reachability, typical_interval_ms

DAY_MS = 86_400_000

Feature = Callable[[ProfileState, int], Any]


def _days_since(t: int | None, now: int) -> float | None:
    return None if t is None else (now - t) / DAY_MS


def _channel_events(channel: str) -> Feature:
    return lambda s, now: (s.channels.get(channel) or [0])[EVENTS]


def _answered(s: ProfileState, now: int) -> int:
    return sum(stats[OPENED] + stats[CLICKED] for stats in s.channels.values())


FEATURES: dict[str, Feature] = {
    "events": lambda s, now: s.events,
    "identified": lambda s, now: s.identified_at is not None,
    "days_since_identified": lambda s, now: _days_since(s.identified_at, now),
    "days_since_first_seen": lambda s, now: _days_since(s.first_seen, now),
    "days_since_last_seen": lambda s, now: _days_since(s.last_seen, now),
    "cart_items": lambda s, now: cart_value(s)["items"],
    "cart_value_minor": lambda s, now: cart_value(s)["value_minor"],
    "recent_products": lambda s, now: len(s.products),
    "orders_online": lambda s, now: s.orders_online,
    "orders_store": lambda s, now: s.orders_store,
    "orders": lambda s, now: s.orders_online + s.orders_store,
    "revenue_minor": lambda s, now: sum(s.revenue.values()),
    "days_since_last_purchase": lambda s, now: _days_since(s.last_purchase_at, now),
    "typical_purchase_interval_days": lambda s, now: (
        None if (i := typical_interval_ms(s)) is None else i / DAY_MS),
    "web_events": _channel_events("WEB"),
    "app_events": _channel_events("APP"),
    "store_visits": _channel_events("POS"),
    "calls": _channel_events("CALLCENTER"),
    "messages_answered": _answered,
    "reachable_email": lambda s, now: reachability(s)["email"],
    "reachable_push": lambda s, now: reachability(s)["push"],
    "reachable_sms": lambda s, now: reachability(s)["sms"],
    "has_app": lambda s, now: any(ref.startswith("dev:") for ref in s.identifiers),
    "checkout_started": lambda s, now: "checkout" in s.registers,
    "callback_requested": lambda s, now: "callback_requested" in s.registers,
}
