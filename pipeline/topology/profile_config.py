"""Profile caps and consent vocabulary loaded from ``topologies/profile.yaml``: data, not code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from pipeline.errors import TopologyError
from pipeline.profile.limits import CHANNELS, Caps, ProfileLimits

DEFAULT_PATH = Path(__file__).resolve().parents[2] / "topologies" / "profile.yaml"
_KEYS = {"caps", "consent", "engagement_channels"}


def _channels(path: Path, where: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(c, str) for c in value):
        raise TopologyError(f"{path}: {where} must be a non-empty list of channels")
    unknown = sorted(set(value) - set(CHANNELS))
    if unknown:
        raise TopologyError(f"{path}: {where} names unknown channels {unknown}; known: {list(CHANNELS)}")
    return tuple(value)


def load_profile_limits(path: Path | None = None) -> ProfileLimits:
    """Validate and build the limits; errors name the file and the field to fix."""
    path = path or DEFAULT_PATH
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise TopologyError(f"cannot read profile configuration {path}: {exc}") from exc
    if not isinstance(doc, dict) or set(doc) - _KEYS:
        raise TopologyError(f"{path}: expected a mapping with only {sorted(_KEYS)}")
    caps = doc.get("caps") or {}
    known = set(Caps.__dataclass_fields__)
    if not isinstance(caps, dict) or set(caps) - known:
        raise TopologyError(f"{path}: 'caps' takes only {sorted(known)}")
    for name, value in caps.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise TopologyError(f"{path}: caps.{name} must be a positive integer, got {value!r}")
    consent = doc.get("consent") or {}
    if not isinstance(consent, dict) or set(consent) - {"channels", "purposes"}:
        raise TopologyError(f"{path}: 'consent' takes 'channels' and 'purposes'")
    purposes = consent.get("purposes", list(ProfileLimits().consent_purposes))
    if not isinstance(purposes, list) or not purposes or not all(
        isinstance(p, str) and p and "/" not in p for p in purposes
    ):
        raise TopologyError(f"{path}: consent.purposes must be a non-empty list of names without '/'")
    default = ProfileLimits()
    return ProfileLimits(
        caps=Caps(**caps),
        consent_channels=_channels(path, "consent.channels",
                                   consent.get("channels", list(default.consent_channels))),
        consent_purposes=tuple(purposes),
        engagement_channels=_channels(path, "engagement_channels",
                                      doc.get("engagement_channels", list(default.engagement_channels))),
    )
