"""Normalise one decoded channel record into the canonical event shape.

Pure: plain dicts in, plain dicts out. The canonical shape is the
``omnipipe.canonical.CanonicalEvent`` schema; every channel maps onto it so
later stages never branch on the source channel's schema.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any
from zoneinfo import available_timezones

from pipeline.ingest.identifiers import ResolvedIdentifiers

_ZONES = frozenset(available_timezones())
#: Channels whose event types are prefixed, so "opened" says which channel.
_PREFIXED = {"EMAIL": "email_", "PUSH": "push_", "SMS": "sms_"}


class FieldError(ValueError):
    """A field holds a value no later stage can apply (e.g. a negative amount)."""


def _amount(value: Any, field: str) -> float | None:
    if value is None:
        return None
    if not (0 <= value < math.inf):  # also false for NaN
        raise FieldError(f"{field} must be a finite, non-negative number")
    return float(value)


def _items(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for item in items:
        if item["quantity"] <= 0:
            raise FieldError("items[].quantity must be positive")
        _amount(item["unit_price"], "items[].unit_price")
    return items


def event_type(channel: str | None, raw_type: str) -> str:
    lowered = raw_type.lower()
    prefix = _PREFIXED.get(channel or "")
    return prefix + lowered if prefix else lowered


def to_canonical(
    record: Mapping[str, Any],
    channel: str | None,
    ids: ResolvedIdentifiers,
    key: str,
    *,
    ingest_time: int,
    source_topic: str,
    source_partition: int,
    source_offset: int,
) -> dict[str, Any]:
    """Build the canonical event; raises FieldError for values that cannot be applied.

    On the hot path of every event: one dict literal, no per-field calls for
    the (mostly absent) optional fields.
    """
    get = record.get
    product = get("product")
    tz = get("timezone")
    items = get("items")
    amount = get("amount")
    distance = get("distance_m")
    return {
        "event_id": record["event_id"],
        "event_time": record["event_time"],
        "ingest_time": ingest_time,
        "channel": channel,
        "type": event_type(channel, record["type"]),
        "key": key,
        "customer_id": ids.customer_id,
        "loyalty_card": ids.loyalty_card,
        "email_hash": ids.email_hash,
        "phone_hash": ids.phone_hash,
        "device_id": ids.device_id,
        "anonymous_id": ids.anonymous_id,
        "timezone": tz if tz in _ZONES else None,
        "locale": get("locale"),
        "sku": product["sku"] if product else None,
        "category": product["category"] if product else None,
        "price": _amount(product["unit_price"], "product.unit_price") if product else None,
        "query": get("query"),
        "items": _items(items) if items else [],
        "order_id": get("order_id") or get("receipt_id"),
        "amount": _amount(amount, "amount") if amount is not None else None,
        "currency": get("currency"),
        "store_id": get("store_id"),
        "region": get("region"),
        "distance_m": _amount(distance, "distance_m") if distance is not None else None,
        "push_token": get("push_token"),
        "push_enabled": get("push_enabled"),
        "message_id": get("message_id"),
        "trigger_key": get("trigger_key"),
        "reason": get("reason"),
        "consent_channel": get("consent_channel"),
        "consent_purpose": get("consent_purpose"),
        "consent_granted": get("granted"),
        "source_topic": source_topic,
        "source_partition": source_partition,
        "source_offset": source_offset,
    }


def check_control(record: Mapping[str, Any]) -> None:
    """A consent change must say which channel and whether it is granted."""
    if record["type"] == "CONSENT_CHANGE" and (
        record.get("consent_channel") is None or record.get("granted") is None
    ):
        raise FieldError("CONSENT_CHANGE needs consent_channel and granted")
