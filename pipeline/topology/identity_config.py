"""Identity limits loaded from ``topologies/identity.yaml``: data, not code."""

from __future__ import annotations

from pathlib import Path

import yaml

from pipeline.errors import TopologyError
from pipeline.identity.model import Limits

DEFAULT_PATH = Path(__file__).resolve().parents[2] / "topologies" / "identity.yaml"
_KEYS = {"limits", "roaming_fanout", "memo_window"}


def load_identity_limits(path: Path | None = None) -> Limits:
    """Validate and build the limits; errors name the file and the field to fix."""
    path = path or DEFAULT_PATH
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise TopologyError(f"cannot read identity configuration {path}: {exc}") from exc
    if not isinstance(doc, dict) or set(doc) - _KEYS:
        raise TopologyError(f"{path}: expected a mapping with only {sorted(_KEYS)}")
    limits = doc.get("limits") or {}
    if not isinstance(limits, dict) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in limits.values()
    ):
        raise TopologyError(f"{path}: 'limits' must map identifier kinds to integers")
    try:
        return Limits(
            per_kind=limits,
            roaming_fanout=doc.get("roaming_fanout"),
            memo_window=doc.get("memo_window", Limits().memo_window),
        )
    except (TypeError, ValueError) as exc:
        raise TopologyError(f"{path}: {exc}") from exc
