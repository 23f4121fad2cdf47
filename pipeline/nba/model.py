"""Propensity models: pluggable, the first a logistic model per (action, channel).

Priors come from ``topologies/actions.yaml``; learned weights replace them at
run time without a restart: a model document published on the models topic
(``omnipipe models publish FILE``) is validated, then swapped in atomically by
every worker (``ModelHolder``). A document names only the pairs it changes;
the others keep their priors.

Document (JSON or YAML)::

    {"version": "2026-11-23-a", "kind": "logistic",
     "models": {"abandoned_cart/EMAIL": {"intercept": -1.7, "weights": {"cart_items": 0.12}}}}
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Protocol

from pipeline.errors import ConfigError
from pipeline.nba.catalogue import ActionCatalogue
from pipeline.nba.features import FEATURES


class ModelError(ConfigError):
    """A model document that cannot be used; the message says what to fix."""


class Propensity(Protocol):
    """P(the customer converts | this action on this channel), from the profile's features."""

    def predict(self, features: Mapping[str, Any]) -> float: ...

    @property
    def features(self) -> frozenset[str]: ...


def _number(value: Any) -> float:
    if value is None:
        return 0.0
    return float(value)  # bools are 0/1


@dataclass(frozen=True)
class Logistic:
    intercept: float
    weights: tuple[tuple[str, float], ...]

    @cached_property
    def features(self) -> frozenset[str]:
        return frozenset(f for f, _w in self.weights)

    def predict(self, features: Mapping[str, Any]) -> float:
        z = self.intercept + sum(w * _number(features.get(f)) for f, w in self.weights)
        if z >= 0:
            return 1.0 / (1.0 + math.exp(-z))
        e = math.exp(z)
        return e / (1.0 + e)


MODEL_KINDS = {"logistic"}


@dataclass(frozen=True)
class ModelSet:
    version: str
    models: Mapping[tuple[str, str], Propensity]

    def get(self, action: str, channel: str) -> Propensity:
        return self.models[(action, channel)]

    @cached_property
    def features(self) -> frozenset[str]:
        out: frozenset[str] = frozenset()
        for m in self.models.values():
            out |= m.features
        return out


def priors(catalogue: ActionCatalogue) -> ModelSet:
    models: dict[tuple[str, str], Propensity] = {}
    for action in catalogue.actions.values():
        p = action.prior
        for channel in action.channels:
            models[(action.name, channel)] = Logistic(p.intercept + p.channel_bias.get(channel, 0.0),
                                                      tuple(sorted(p.weights.items())))
    return ModelSet("priors", models)


def _finite(value: Any, where: str) -> float:
    try:
        ok = not isinstance(value, bool) and isinstance(value, int | float) and abs(float(value)) <= 1e6
    except OverflowError:  # an int too large for a float
        ok = False
    if not ok or not math.isfinite(value):
        raise ModelError(f"{where}: expected a finite number, got {repr(value)[:40]}")
    return float(value)


def parse_models(doc: Any, catalogue: ActionCatalogue, base: ModelSet | None = None) -> ModelSet:
    """Validate a model document and lay it over ``base`` (the priors by default)."""
    if not isinstance(doc, dict):
        raise ModelError("a model document is a mapping with version, kind and models")
    unknown = set(doc) - {"version", "kind", "models"}
    if unknown:
        raise ModelError(f"unknown keys {sorted(unknown)}; allowed: kind, models, version")
    version = doc.get("version")
    if not isinstance(version, str) or not version or len(version) > 64:
        raise ModelError("version: a non-empty name of at most 64 characters")
    kind = doc.get("kind", "logistic")
    if not isinstance(kind, str) or kind not in MODEL_KINDS:
        raise ModelError(f"kind: {doc.get('kind')!r} is not one of {sorted(MODEL_KINDS)}")
    entries = doc.get("models")
    if not isinstance(entries, dict) or not entries:
        raise ModelError("models: a non-empty mapping of 'action/CHANNEL' -> {intercept, weights}")
    models = dict((base or priors(catalogue)).models)
    for pair, entry in entries.items():
        action, _, channel = str(pair).partition("/")
        known = catalogue.actions.get(action)
        if known is None or channel not in known.channels:
            raise ModelError(f"models.{pair}: no such action/channel pair in the catalogue")
        if not isinstance(entry, dict) or set(entry) - {"intercept", "weights"} or "intercept" not in entry:
            raise ModelError(f"models.{pair}: expected {{intercept, weights}}")
        weights = entry.get("weights") or {}
        if not isinstance(weights, dict):
            raise ModelError(f"models.{pair}.weights: expected a mapping feature -> weight")
        bad = sorted(str(f) for f in set(weights) - set(FEATURES))
        if bad:
            raise ModelError(f"models.{pair}.weights: unknown features {bad}")
        models[(action, channel)] = Logistic(
            _finite(entry["intercept"], f"models.{pair}.intercept"),
            tuple(sorted((f, _finite(w, f"models.{pair}.weights.{f}")) for f, w in weights.items())))
    return ModelSet(version, models)


class ModelHolder:
    """The models in use; ``swap`` is atomic (one reference), readers never lock."""

    def __init__(self, models: ModelSet) -> None:
        self._models = models
        self._lock = threading.Lock()
        self.swaps = 0

    @property
    def current(self) -> ModelSet:
        return self._models

    def swap(self, models: ModelSet) -> None:
        with self._lock:
            self._models = models
            self.swaps += 1
