"""What a profile means for people and for decisions: derived figures and the customer-360 JSON.

Derived values (preferred channel, typical purchase interval, cart value,
reachability) are computed on read from the stored state, so they are never
stale and never need merging.
"""

from __future__ import annotations

import itertools
import statistics
from typing import Any

from pipeline.profile.limits import ProfileLimits
from pipeline.profile.state import CHANNEL_FIELDS, CLICKED, DELIVERED, OPENED, SENT, ProfileState


def typical_interval_ms(state: ProfileState) -> int | None:
    """Median gap between the recent purchases (None with fewer than two)."""
    times = sorted(state.purchase_times)
    gaps = [b - a for a, b in itertools.pairwise(times) if b > a]
    return int(statistics.median(gaps)) if gaps else None


def cart_value(state: ProfileState) -> dict[str, Any]:
    """Minor units of the open cart (prices in the currency the lines were added in)."""
    return {"items": sum(q for q, _p, _c, _t in state.cart.values()),
            "value_minor": sum(q * p for q, p, _c, _t in state.cart.values())}


def consented(state: ProfileState, channel: str, purpose: str = "marketing") -> bool:
    """Only an explicit, current grant counts: no record means no consent."""
    entry = state.consent.get(f"{channel}/{purpose}")
    return entry is not None and entry[1]


def reachability(state: ProfileState) -> dict[str, bool]:
    kinds = {ref.partition(":")[0] for ref in state.identifiers}
    bounced = state.registers.get("email_bounced")
    push = state.registers.get("push_enabled")
    return {
        "email": "email" in kinds and not (bounced and bounced[1]),
        "push": "dev" in kinds and bool(push and push[1]),
        "sms": "phone" in kinds,
    }


def preferred_channel(state: ProfileState, limits: ProfileLimits) -> str | None:
    """The reachable, consented engagement channel answered most often (smoothed rate; ties by name)."""
    reach = reachability(state)
    best: tuple[float, str] | None = None
    for channel in limits.engagement_channels:
        if not reach.get(channel.lower(), False) or not consented(state, channel):
            continue
        stats = state.channels.get(channel)
        answered = (stats[OPENED] + stats[CLICKED]) if stats else 0
        reached = max(stats[DELIVERED], stats[SENT]) if stats else 0
        rate = (answered + 1) / (reached + 2)
        if best is None or (rate, channel) > best:
            best = (rate, channel)
    return best[1] if best else None


def profile_json(profile_id: str, state: ProfileState, limits: ProfileLimits) -> dict[str, Any]:
    """The customer-360 view: refs only (e-mail and phone are HMAC hashes), times in epoch ms."""
    identifiers: dict[str, list[str]] = {}
    for ref, _t in sorted(state.identifiers.items(), key=lambda kv: (-kv[1], kv[0])):
        identifiers.setdefault(ref.partition(":")[0], []).append(ref)
    consent = [{"channel": key.partition("/")[0], "purpose": key.partition("/")[2], "granted": granted,
                "changed_at": at} for key, (at, granted) in sorted(state.consent.items())]
    registers = {name: {"value": value, "at": at} for name, (at, value) in sorted(state.registers.items())}
    return {
        "profile_id": profile_id,
        "identifiers": identifiers,
        "events": state.events,
        "first_seen": state.first_seen,
        "last_seen": state.last_seen,
        "identified_at": state.identified_at,
        "channels": {ch: dict(zip(CHANNEL_FIELDS, stats, strict=True))
                     for ch, stats in sorted(state.channels.items())},
        "preferred_channel": preferred_channel(state, limits),
        "reachability": reachability(state),
        "consent": consent,
        "recent_products": [{"sku": sku, "category": cat or None, "viewed_at": t}
                            for sku, (t, cat) in sorted(state.products.items(), key=lambda kv: -kv[1][0])],
        "recent_categories": [c for c, _t in sorted(state.categories.items(), key=lambda kv: -kv[1])],
        "cart": {
            "lines": [{"sku": sku, "quantity": q, "unit_price_minor": p, "category": c or None,
                       "changed_at": t} for sku, (q, p, c, t) in sorted(state.cart.items())],
            **cart_value(state),
            "changed_at": state.cart_changed_at,
        },
        "purchases": {
            "online": state.orders_online,
            "store": state.orders_store,
            "revenue_minor": dict(sorted(state.revenue.items())),
            "last_purchase_at": state.last_purchase_at,
            "by_category": dict(sorted(state.purchase_categories.items())),
            "typical_interval_ms": typical_interval_ms(state),
            "returns": state.returns,
            "returned_minor": dict(sorted(state.returned.items())),
        },
        "traits": registers,
        "last_trigger": [{"action": key.partition("/")[0], "channel": key.partition("/")[2], "at": t}
                         for key, t in sorted(state.last_trigger.items())],
    }
