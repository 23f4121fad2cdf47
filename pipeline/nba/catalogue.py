"""The action catalogue and contact policy, loaded from ``topologies/actions.yaml``: data, not code.

Marketers edit the file; the worker validates it at start and refuses to run
with an error that names the file, the entry and what to fix (an unknown
event type, feature, channel or operator, a duration it cannot read, a
probability outside 0..1).
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from pipeline.errors import TopologyError
from pipeline.nba.features import FEATURES

DEFAULT_PATH = Path(__file__).resolve().parents[2] / "topologies" / "actions.yaml"
TRIGGER_CHANNELS = ("EMAIL", "PUSH", "SMS")

#: Canonical event types (``ingest/canonical.event_type`` of every input schema's ``type`` symbols);
#: tests/nba/test_catalogue.py checks this list against the schemas.
EVENT_TYPES = frozenset({
    "page_view", "product_view", "search", "add_to_cart", "remove_from_cart", "checkout", "purchase", "login",
    "signup", "app_install", "app_open", "near_store", "store_purchase", "store_return", "card_registered",
    "call_inbound", "call_outbound", "callback_requested", "complaint",
    "email_sent", "email_delivered", "email_opened", "email_clicked", "email_bounced", "email_unsubscribed",
    "push_sent", "push_delivered", "push_opened", "push_dismissed", "push_unsubscribed",
    "sms_sent", "sms_delivered", "sms_clicked", "sms_failed", "sms_stop", "sms_reply",
    "consent_change", "erasure_request",
})
#: Conditions the per-partition timers find (issue 5, item 2) and the time each needs.
TIMERS = {
    "cart_idle": "after",  # cart unchanged for ``after``
    "browse_idle": "after",  # products viewed, nothing added or bought, for ``after``
    "silence": "after",  # no event at all for ``after``
    "replenishment_due": "factor",  # ``factor`` x the customer's own typical purchase interval since the last
}
#: Catalogue feeds that announce something about a product rather than a customer.
FEEDS = frozenset({"back_in_stock"})
DEFAULT_VIEWED_WITHIN = "30d"

OPS: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le, ">": operator.gt,
    ">=": operator.ge,
}
_DURATION = re.compile(r"^(\d+)\s*(s|m|h|d)$")
_UNIT_MS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_CLOCK = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


@dataclass(frozen=True)
class Rule:
    """``feature op value``; a feature without a value (never bought: no interval) fails the rule."""

    feature: str
    op: str
    value: Any

    def holds(self, features: Mapping[str, Any]) -> bool:
        got = features.get(self.feature)
        if got is None:
            return False
        return OPS[self.op](got, self.value)

    def __str__(self) -> str:
        return f"{self.feature} {self.op} {self.value!r}"


@dataclass(frozen=True)
class Trigger:
    kind: str  # "event", "timer" or "feed"
    name: str  # the event type(s) joined by "|", the timer or the feed
    after_ms: int | None = None
    factor: float | None = None
    #: feed triggers: only customers who viewed the product this recently (the fan-out stays bounded)
    within_ms: int | None = None

    @property
    def events(self) -> frozenset[str]:
        return frozenset(self.name.split("|")) if self.kind == "event" else frozenset()


@dataclass(frozen=True)
class Prior:
    """The configured logistic prior of an action: log-odds = intercept + channel bias + sum(w * feature)."""

    intercept: float
    weights: Mapping[str, float]
    channel_bias: Mapping[str, float]


@dataclass(frozen=True)
class Action:
    name: str
    trigger: Trigger
    eligibility: tuple[Rule, ...]
    channels: tuple[str, ...]
    value: float
    cooldown_ms: int
    expiry_ms: int
    template: str
    description: str = ""
    prior: Prior = Prior(-2.0, {}, {})
    cancel_on: frozenset[str] = frozenset()  # event types that withdraw a pending trigger of this action


@dataclass(frozen=True)
class Caps:
    day: int | None
    week: int | None


@dataclass(frozen=True)
class Policy:
    channel_cost: Mapping[str, float]
    channel_caps: Mapping[str, Caps]
    overall: Caps
    quiet_start_min: int  # minutes after local midnight when quiet hours start
    quiet_end_min: int
    quiet_channels: frozenset[str]
    holdout_fraction: float
    holdout_salt: str
    attribution_window_ms: int = 7 * 86_400_000
    default_timezone: str = "UTC"


@dataclass(frozen=True)
class ActionCatalogue:
    actions: Mapping[str, Action]
    policy: Policy

    def for_event(self, event_type: str) -> tuple[Action, ...]:
        return self._by_event.get(event_type, ())

    @cached_property
    def _by_event(self) -> dict[str, tuple[Action, ...]]:
        return {e: tuple(a for a in self.actions.values() if e in a.trigger.events) for e in EVENT_TYPES}

    def for_feed(self, feed: str) -> list[Action]:
        return [a for a in self.actions.values() if a.trigger.kind == "feed" and a.trigger.name == feed]

    @cached_property
    def timer_actions(self) -> list[Action]:
        return [a for a in self.actions.values() if a.trigger.kind == "timer"]

    @cached_property
    def cancelling_events(self) -> frozenset[str]:
        out: frozenset[str] = frozenset()
        for a in self.actions.values():
            out |= a.cancel_on
        return out


class _Reader:
    """Typed access to the YAML document; every error names the file and the path to the field."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, where: str, what: str) -> TopologyError:
        return TopologyError(f"{self.path}: {where}: {what}")

    def mapping(self, value: Any, where: str, keys: set[str] | frozenset[str],
                required: set[str] | frozenset[str] = frozenset()) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(where, "expected a mapping")
        unknown = set(value) - keys
        if unknown:
            raise self.fail(where, f"unknown keys {sorted(unknown)}; allowed: {sorted(keys)}")
        missing = required - set(value)
        if missing:
            raise self.fail(where, f"missing {sorted(missing)}")
        return value

    def duration(self, value: Any, where: str) -> int:
        m = _DURATION.match(str(value).strip()) if isinstance(value, str | int) else None
        if m is None or int(m.group(1)) <= 0:
            raise self.fail(where, f"expected a positive duration like 30m, 24h or 30d, got {value!r}")
        return int(m.group(1)) * _UNIT_MS[m.group(2)]

    def number(self, value: Any, where: str, low: float = 0.0, high: float = math.inf) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
            raise self.fail(where, f"expected a number in [{low}, {high}], got {value!r}")
        return float(value)

    def count(self, value: Any, where: str) -> int | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise self.fail(where, f"expected a non-negative integer, got {value!r}")
        return value

    def channels(self, value: Any, where: str) -> tuple[str, ...]:
        if not isinstance(value, list) or not value:
            raise self.fail(where, f"expected a non-empty list of {list(TRIGGER_CHANNELS)}")
        unknown = [c for c in value if c not in TRIGGER_CHANNELS]
        if unknown:
            raise self.fail(where, f"unknown channels {unknown}; triggers go to {list(TRIGGER_CHANNELS)}")
        return tuple(value)

    def clock(self, value: Any, where: str) -> int:
        m = _CLOCK.match(str(value))
        if m is None:
            raise self.fail(where, f"expected a local time HH:MM, got {value!r}")
        return int(m.group(1)) * 60 + int(m.group(2))


def _trigger(r: _Reader, value: Any, where: str) -> Trigger:
    doc = r.mapping(value, where, {"event", "timer", "feed", "after", "factor", "viewed_within"})
    kinds = [k for k in ("event", "timer", "feed") if k in doc]
    if len(kinds) != 1:
        raise r.fail(where, "name exactly one of event, timer or feed")
    kind = kinds[0]
    if kind == "event":
        events = doc["event"] if isinstance(doc["event"], list) else [doc["event"]]
        unknown = [e for e in events if e not in EVENT_TYPES]
        if unknown or not events:
            raise r.fail(f"{where}.event", f"unknown event types {unknown}; known: {sorted(EVENT_TYPES)}")
        if "after" in doc or "factor" in doc or "viewed_within" in doc:
            raise r.fail(where, "an event trigger takes no after/factor/viewed_within")
        return Trigger("event", "|".join(events))
    if kind == "feed":
        if doc["feed"] not in FEEDS:
            raise r.fail(f"{where}.feed", f"unknown feed {doc['feed']!r}; known: {sorted(FEEDS)}")
        if "after" in doc or "factor" in doc:
            raise r.fail(where, "a feed trigger takes no after/factor")
        within = r.duration(doc.get("viewed_within", DEFAULT_VIEWED_WITHIN), f"{where}.viewed_within")
        return Trigger("feed", doc["feed"], within_ms=within)
    if "viewed_within" in doc:
        raise r.fail(where, "only a feed trigger takes viewed_within")
    timer = doc["timer"]
    needs = TIMERS.get(timer)
    if needs is None:
        raise r.fail(f"{where}.timer", f"unknown timer {timer!r}; known: {sorted(TIMERS)}")
    other = "factor" if needs == "after" else "after"
    if needs not in doc or other in doc:
        raise r.fail(where, f"timer {timer} takes {needs} (and not {other})")
    if needs == "after":
        return Trigger("timer", timer, after_ms=r.duration(doc["after"], f"{where}.after"))
    return Trigger("timer", timer, factor=r.number(doc["factor"], f"{where}.factor", 0.1, 10.0))


def _rules(r: _Reader, value: Any, where: str) -> tuple[Rule, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise r.fail(where, "expected a list of rules like 'cart_items > 0'")
    rules = []
    for i, text in enumerate(value):
        parts = str(text).split()
        if len(parts) != 3:
            raise r.fail(f"{where}[{i}]", f"expected 'feature op value', got {text!r}")
        feature, op, raw = parts
        if feature not in FEATURES:
            raise r.fail(f"{where}[{i}]", f"unknown feature {feature!r}; known: {sorted(FEATURES)}")
        if op not in OPS:
            raise r.fail(f"{where}[{i}]", f"unknown operator {op!r}; known: {sorted(OPS)}")
        parsed = yaml.safe_load(raw)
        if not isinstance(parsed, int | float | bool):
            raise r.fail(f"{where}[{i}]", f"value must be a number or true/false, got {raw!r}")
        rules.append(Rule(feature, op, parsed))
    return tuple(rules)


def _prior(r: _Reader, value: Any, where: str, channels: tuple[str, ...]) -> Prior:
    if value is None:
        return Prior(-2.0, {}, {})
    doc = r.mapping(value, where, {"intercept", "weights", "channels"}, {"intercept"})
    weights = r.mapping(doc.get("weights") or {}, f"{where}.weights", set(FEATURES))
    bias = r.mapping(doc.get("channels") or {}, f"{where}.channels", set(channels))
    return Prior(
        r.number(doc["intercept"], f"{where}.intercept", -20.0, 20.0),
        {f: r.number(w, f"{where}.weights.{f}", -100.0, 100.0) for f, w in weights.items()},
        {c: r.number(b, f"{where}.channels.{c}", -20.0, 20.0) for c, b in bias.items()},
    )


def _events(r: _Reader, value: Any, where: str) -> frozenset[str]:
    events = value if isinstance(value, list) else [] if value is None else [value]
    unknown = [e for e in events if e not in EVENT_TYPES]
    if unknown:
        raise r.fail(where, f"unknown event types {unknown}; known: {sorted(EVENT_TYPES)}")
    return frozenset(events)


def _caps(r: _Reader, value: Any, where: str) -> Caps:
    doc = r.mapping(value or {}, where, {"day", "week"})
    caps = Caps(r.count(doc.get("day"), f"{where}.day"), r.count(doc.get("week"), f"{where}.week"))
    if caps.day is not None and caps.week is not None and caps.day > caps.week:
        raise r.fail(where, f"day cap {caps.day} exceeds the week cap {caps.week}")
    return caps


def load_action_catalogue(path: Path | None = None) -> ActionCatalogue:
    """Validate and build the catalogue; every error names the file and the field to fix."""
    path = path or DEFAULT_PATH
    r = _Reader(path)
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise TopologyError(f"cannot read the action catalogue {path}: {exc}") from exc
    doc = r.mapping(doc, "top level", {"channels", "policy", "actions"}, {"channels", "policy", "actions"})
    costs: dict[str, float] = {}
    chan_caps: dict[str, Caps] = {}
    channels = r.mapping(doc["channels"], "channels", set(TRIGGER_CHANNELS), set(TRIGGER_CHANNELS))
    for name, entry in channels.items():
        e = r.mapping(entry, f"channels.{name}", {"cost", "caps"}, {"cost"})
        costs[name] = r.number(e["cost"], f"channels.{name}.cost")
        chan_caps[name] = _caps(r, e.get("caps"), f"channels.{name}.caps")
    pol = r.mapping(doc["policy"], "policy",
                    {"overall_caps", "quiet_hours", "holdout", "attribution_window", "default_timezone"},
                    {"overall_caps", "quiet_hours", "holdout"})
    default_tz = pol.get("default_timezone", "UTC")
    try:
        ZoneInfo(str(default_tz))
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise r.fail("policy.default_timezone",
                     f"unknown time zone {default_tz!r} (IANA names: Europe/Paris)") from exc
    quiet = r.mapping(pol["quiet_hours"], "policy.quiet_hours", {"start", "end", "channels"},
                      {"start", "end", "channels"})
    holdout = r.mapping(pol["holdout"], "policy.holdout", {"fraction", "salt"}, {"fraction", "salt"})
    if not isinstance(holdout["salt"], str) or not holdout["salt"]:
        raise r.fail("policy.holdout.salt", "expected a non-empty string (changing it reshuffles the groups)")
    policy = Policy(
        channel_cost=costs,
        channel_caps=chan_caps,
        overall=_caps(r, pol["overall_caps"], "policy.overall_caps"),
        quiet_start_min=r.clock(quiet["start"], "policy.quiet_hours.start"),
        quiet_end_min=r.clock(quiet["end"], "policy.quiet_hours.end"),
        quiet_channels=frozenset(r.channels(quiet["channels"], "policy.quiet_hours.channels")),
        holdout_fraction=r.number(holdout["fraction"], "policy.holdout.fraction", 0.0, 0.5),
        holdout_salt=holdout["salt"],
        attribution_window_ms=r.duration(pol.get("attribution_window", "7d"), "policy.attribution_window"),
        default_timezone=str(default_tz),
    )
    if not isinstance(doc["actions"], dict) or not doc["actions"]:
        raise r.fail("actions", "expected a non-empty mapping of action name -> definition")
    actions: dict[str, Action] = {}
    keys = {"description", "trigger", "eligibility", "channels", "value", "cooldown", "expiry", "template",
            "propensity", "cancel_on"}
    for name, entry in doc["actions"].items():
        where = f"actions.{name}"
        if not re.fullmatch(r"[a-z][a-z0-9_]*", str(name)):
            raise r.fail(where, "action names are lower_snake_case (they go into trigger keys and metrics)")
        e = r.mapping(entry, where, keys, keys - {"description", "eligibility", "propensity", "cancel_on"})
        if not isinstance(e["template"], str) or not e["template"]:
            raise r.fail(f"{where}.template", "expected a template id")
        cooldown = r.duration(e["cooldown"], f"{where}.cooldown")
        expiry = r.duration(e["expiry"], f"{where}.expiry")
        if cooldown < expiry:
            raise r.fail(f"{where}.cooldown", "must be at least the expiry: an occasion decided again "
                                              "under another key (after a merge) must not give a second "
                                              "live trigger")
        actions[name] = Action(
            name=name,
            trigger=_trigger(r, e["trigger"], f"{where}.trigger"),
            eligibility=_rules(r, e.get("eligibility"), f"{where}.eligibility"),
            channels=r.channels(e["channels"], f"{where}.channels"),
            value=r.number(e["value"], f"{where}.value"),
            cooldown_ms=cooldown,
            expiry_ms=expiry,
            template=e["template"],
            description=str(e.get("description", "")),
            prior=_prior(r, e.get("propensity"), f"{where}.propensity", r.channels(e["channels"], where)),
            cancel_on=_events(r, e.get("cancel_on"), f"{where}.cancel_on"),
        )
    return ActionCatalogue(actions, policy)
