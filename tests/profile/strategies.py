"""Hypothesis strategies: canonical events of a few customers, as the profile stage receives them."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

_TYPES = {
    "WEB": ["PAGE_VIEW", "PRODUCT_VIEW", "SEARCH", "ADD_TO_CART", "REMOVE_FROM_CART", "CHECKOUT", "PURCHASE",
            "LOGIN"],
    "APP": ["APP_INSTALL", "APP_OPEN", "PRODUCT_VIEW", "ADD_TO_CART", "PURCHASE", "NEAR_STORE"],
    "POS": ["STORE_PURCHASE", "STORE_RETURN", "CARD_REGISTERED"],
    "CALLCENTER": ["CALL_INBOUND", "CALLBACK_REQUESTED", "COMPLAINT"],
    "EMAIL": ["SENT", "DELIVERED", "OPENED", "CLICKED", "BOUNCED", "UNSUBSCRIBED"],
    "PUSH": ["SENT", "DELIVERED", "OPENED", "DISMISSED", "UNSUBSCRIBED"],
    "SMS": ["SENT", "DELIVERED", "CLICKED", "FAILED", "STOP", "REPLY"],
    None: ["CONSENT_CHANGE"],
}
SKUS = [f"SKU-{i}" for i in range(14)]
CATEGORIES = ["shoes", "bags", "toys", "food", "garden"]  # fewer than the per-category cap


@st.composite
def events(draw: st.DrawFn, n_max: int = 40) -> list[dict[str, Any]]:
    n = draw(st.integers(0, n_max))
    out = []
    for i in range(n):
        channel = draw(st.sampled_from(list(_TYPES)))
        raw = draw(st.sampled_from(_TYPES[channel]))
        kind = f"{channel.lower()}_{raw.lower()}" if channel in ("EMAIL", "PUSH", "SMS") else raw.lower()
        sku = draw(st.sampled_from(SKUS))
        items = draw(st.lists(st.fixed_dictionaries({
            "sku": st.sampled_from(SKUS), "category": st.sampled_from(CATEGORIES),
            "quantity": st.integers(1, 3), "unit_price": st.sampled_from([0.5, 9.99, 20.0, 129.0])}),
            max_size=3)) if kind in ("purchase", "store_purchase") else []
        out.append({
            "event_id": f"e{i}",
            "event_time": draw(st.integers(1_700_000_000_000, 1_700_000_100_000)),
            "ingest_time": 1_700_000_200_000 + i,
            "channel": channel,
            "type": kind,
            "customer_id": draw(st.sampled_from([None, "C1", "C2"])),
            "loyalty_card": draw(st.sampled_from([None, "L1"])),
            "email_hash": draw(st.sampled_from([None, "e" * 32, "f" * 32])),
            "phone_hash": None,
            "device_id": draw(st.sampled_from([None, "D1", "D2", "D3", "D4", "D5", "D6"])),
            "anonymous_id": draw(st.sampled_from([None, "A1", "A2"])),
            "timezone": draw(st.sampled_from([None, "Europe/Paris", "America/New_York"])),
            "locale": draw(st.sampled_from([None, "fr-FR", "en-US"])),
            "region": draw(st.sampled_from([None, "FR", "US"])),
            "sku": sku if kind in ("product_view", "add_to_cart", "remove_from_cart") else None,
            "category": (draw(st.sampled_from(CATEGORIES)) if kind in ("product_view", "add_to_cart")
                         else None),
            "price": draw(st.sampled_from([None, 9.99, 20.0])) if kind == "add_to_cart" else None,
            "items": items,
            "amount": (sum(it["quantity"] * it["unit_price"] for it in items)
                       if kind in ("purchase", "store_purchase")
                       else draw(st.sampled_from([None, 12.5])) if kind == "store_return" else None),
            "currency": draw(st.sampled_from(["EUR", "USD"])) if kind in ("purchase", "store_purchase",
                                                                            "store_return") else None,
            "store_id": (draw(st.sampled_from(["S1", "S2"])) if kind in ("store_purchase", "near_store")
                         else None),
            "distance_m": 120.0 if kind == "near_store" else None,
            "push_enabled": draw(st.sampled_from([None, True, False])) if channel == "APP" else None,
            "trigger_key": draw(st.sampled_from([None, "abandoned_cart:x", "win_back:y"])) if raw == "SENT"
            else None,
            "consent_channel": draw(st.sampled_from(["EMAIL", "PUSH", "SMS"])) if channel is None else None,
            "consent_purpose": draw(st.sampled_from(["marketing", "personalisation"])) if channel is None
            else None,
            "consent_granted": draw(st.booleans()) if channel is None else None,
        })
    return out
