"""What bounds a profile (caps) and what consent may name; loaded by ``topology/profile_config.py``."""

from __future__ import annotations

from dataclasses import dataclass, field

CHANNELS: tuple[str, ...] = ("WEB", "APP", "POS", "CALLCENTER", "EMAIL", "PUSH", "SMS")


@dataclass(frozen=True, slots=True)
class Caps:
    identifiers_per_kind: int = 4
    recent_products: int = 10
    recent_categories: int = 5
    cart_items: int = 30
    purchase_categories: int = 24
    purchase_times: int = 16
    memo: int = 64
    merged_from: int = 128
    contacts: int = 32


@dataclass(frozen=True, slots=True)
class ProfileLimits:
    caps: Caps = field(default_factory=Caps)
    consent_channels: tuple[str, ...] = CHANNELS
    consent_purposes: tuple[str, ...] = ("marketing", "personalisation", "analytics", "service")
    engagement_channels: tuple[str, ...] = ("EMAIL", "PUSH", "SMS")
