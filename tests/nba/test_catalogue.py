"""The action catalogue: the shipped file loads, every mistake is refused with a message naming it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.errors import TopologyError
from pipeline.ingest.canonical import event_type
from pipeline.nba.catalogue import DEFAULT_PATH, EVENT_TYPES, load_action_catalogue
from pipeline.nba.features import FEATURES
from pipeline.profile.fold import fold_event
from pipeline.profile.limits import ProfileLimits
from pipeline.profile.state import ProfileState

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas" / "src"
SHIPPED = {"abandoned_cart", "browse_abandonment", "store_cross_sell", "replenishment", "geo_offer",
           "app_install_invite", "callback_offer", "win_back", "welcome", "back_in_stock"}


def test_the_shipped_catalogue_loads_with_every_required_action() -> None:
    cat = load_action_catalogue()
    assert set(cat.actions) == SHIPPED
    assert cat.actions["abandoned_cart"].trigger.after_ms == 30 * 60_000
    assert cat.actions["replenishment"].trigger.factor == 1.0
    assert {a.name for a in cat.for_event("store_purchase")} == {"store_cross_sell"}
    assert cat.policy.quiet_start_min == 21 * 60 and cat.policy.quiet_end_min == 8 * 60
    assert cat.policy.quiet_channels == {"PUSH", "SMS"}


def test_known_event_types_are_exactly_what_the_input_schemas_can_carry() -> None:
    channels = {"web_event": "WEB", "app_event": "APP", "pos_event": "POS", "callcenter_event": "CALLCENTER",
                "email_event": "EMAIL", "push_event": "PUSH", "sms_event": "SMS", "privacy_control": None}
    found = set()
    for stem, channel in channels.items():
        schema = json.loads((SCHEMAS / f"{stem}.avsc").read_text())
        (field,) = [f for f in schema["fields"] if f["name"] == "type"]
        found |= {event_type(channel, symbol) for symbol in field["type"]["symbols"]}
    assert found == EVENT_TYPES


def _broken(tmp_path: Path, edit: Any) -> Path:
    doc = yaml.safe_load(DEFAULT_PATH.read_text())
    edit(doc)
    path = tmp_path / "actions.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.mark.parametrize(("edit", "message"), [
    (lambda d: d["actions"]["welcome"]["trigger"].update(event="sign_up"), "unknown event types ['sign_up']"),
    (lambda d: d["actions"]["win_back"]["trigger"].update(timer="quiet"), "unknown timer 'quiet'"),
    (lambda d: d["actions"]["win_back"]["trigger"].update(after="a month"), "actions.win_back.trigger.after"),
    (lambda d: d["actions"]["win_back"]["trigger"].update(factor=2), "takes after (and not factor)"),
    (lambda d: d["actions"]["geo_offer"].update(channels=["FAX"]), "unknown channels ['FAX']"),
    (lambda d: d["actions"]["geo_offer"].update(eligibility=["app_installs > 0"]), "unknown feature"),
    (lambda d: d["actions"]["geo_offer"].update(eligibility=["has_app ~ true"]), "unknown operator '~'"),
    (lambda d: d["actions"]["geo_offer"].update(eligibility=["has_app == yes please"]), "feature op value"),
    (lambda d: d["actions"]["geo_offer"].pop("template"), "actions.geo_offer: missing ['template']"),
    (lambda d: d["actions"]["geo_offer"].update(eligibility=["cart_items > [1]"]), "a number or true/false"),
    (lambda d: d["actions"]["geo_offer"].update(eligibility=["cart_items > 2025-01-01"]),
     "a number or true/false"),
    (lambda d: d["actions"]["geo_offer"].update(cooldown="1h"), "must be at least the expiry"),
    (lambda d: d["actions"]["win_back"]["trigger"].update(viewed_within="7d"), "only a feed trigger"),
    (lambda d: d["actions"]["back_in_stock"]["trigger"].update(viewed_within="soon"),
     "actions.back_in_stock.trigger.viewed_within"),
    (lambda d: d["actions"]["geo_offer"].update(cooldown="0d"), "actions.geo_offer.cooldown"),
    (lambda d: d["actions"].update({"Bad-Name": d["actions"]["geo_offer"]}), "lower_snake_case"),
    (lambda d: d["policy"]["holdout"].update(fraction=0.9), "policy.holdout.fraction"),
    (lambda d: d["policy"]["quiet_hours"].update(start="25:00"), "policy.quiet_hours.start"),
    (lambda d: d["channels"]["SMS"]["caps"].update(day=5, week=2), "day cap 5 exceeds the week cap 2"),
    (lambda d: d["channels"].pop("PUSH"), "channels: missing ['PUSH']"),
    (lambda d: d.update(extra=1), "unknown keys ['extra']"),
])
def test_mistakes_are_refused_at_start_naming_what_to_fix(tmp_path: Path, edit: Any, message: str) -> None:
    path = _broken(tmp_path, edit)
    with pytest.raises(TopologyError) as err:
        load_action_catalogue(path)
    assert message in str(err.value) and str(path) in str(err.value)


def test_eligibility_rules_read_profile_features() -> None:
    cat = load_action_catalogue()
    state = ProfileState()
    t = 1_700_000_000_000
    fold_event(state, {"event_id": "1", "event_time": t, "channel": "WEB", "type": "add_to_cart",
                       "customer_id": "C1", "sku": "A", "category": "shoes", "price": 20.0, "items": []},
               ProfileLimits())
    features = {name: f(state, t + 60_000) for name, f in FEATURES.items()}
    assert all(rule.holds(features) for rule in cat.actions["abandoned_cart"].eligibility)
    assert not all(rule.holds(features) for rule in cat.actions["win_back"].eligibility)  # never bought
    assert features["typical_purchase_interval_days"] is None  # and a rule on it fails rather than errs
    assert not any(rule.holds(features) for rule in cat.actions["replenishment"].eligibility[1:])
