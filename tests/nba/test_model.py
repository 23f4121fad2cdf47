"""Propensity models (pipeline/nba/model.py): priors, the logistic model, model documents, the atomic swap."""

from __future__ import annotations

import math
import threading
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.errors import OmnipipeError
from pipeline.nba.catalogue import load_action_catalogue
from pipeline.nba.features import FEATURES
from pipeline.nba.model import Logistic, ModelError, ModelHolder, ModelSet, parse_models, priors

CAT = load_action_catalogue()
PAIRS = {(a.name, c) for a in CAT.actions.values() for c in a.channels}


# ------------------------------------------------------------------------------------------ priors
def test_priors_cover_every_action_channel_pair_of_the_catalogue() -> None:
    models = priors(CAT)
    assert models.version == "priors"
    assert set(models.models) == PAIRS
    assert ("geo_offer", "PUSH") in PAIRS and ("geo_offer", "EMAIL") not in PAIRS
    for action, channel in PAIRS:
        m = models.get(action, channel)
        assert 0.0 < m.predict({}) < 1.0
        assert m.features <= set(FEATURES)
    assert models.features == {f for a in CAT.actions.values() for f in a.prior.weights}


def test_priors_add_the_channel_bias_to_the_intercept() -> None:
    models = priors(CAT)
    email = Logistic(-2.0, (("cart_items", 0.1), ("messages_answered", 0.1)))
    assert models.get("abandoned_cart", "EMAIL") == email
    push = models.get("abandoned_cart", "PUSH")
    assert isinstance(push, Logistic)
    assert push.intercept == pytest.approx(-1.7)
    assert push.weights == (("cart_items", 0.1), ("messages_answered", 0.1))
    assert models.get("abandoned_cart", "SMS").predict({}) == pytest.approx(1 / (1 + math.exp(1.8)))
    with pytest.raises(KeyError):
        models.get("geo_offer", "EMAIL")


# ------------------------------------------------------------------------------------------ Logistic
def reference(z: float) -> float:
    return 0.5 * (1.0 + math.tanh(z / 2.0))


FEATURE_NAMES = ("cart_items", "orders", "messages_answered")
moderate = st.builds(
    lambda b, ws: Logistic(b, tuple(sorted(zip(FEATURE_NAMES, ws, strict=False)))),
    st.floats(-5, 5), st.lists(st.floats(-2, 2), min_size=0, max_size=3),
)
values = st.one_of(st.none(), st.booleans(), st.integers(-4, 4), st.floats(-4, 4))


@given(moderate, st.fixed_dictionaries({f: values for f in FEATURE_NAMES}))
def test_predict_is_a_probability_strictly_between_0_and_1(model: Logistic, feats: dict[str, Any]) -> None:
    p = model.predict(feats)
    assert 0.0 < p < 1.0
    z = model.intercept + sum(w * float(feats[f] or 0) for f, w in model.weights)
    assert p == pytest.approx(reference(z), rel=1e-12, abs=1e-15)


@settings(max_examples=300)
@given(st.floats(-50, 50), st.floats(1e-6, 100),
       st.floats(-1e3, 1e3, allow_subnormal=False), st.floats(-1e3, 1e3, allow_subnormal=False))
def test_predict_is_monotone_in_a_positive_weight_feature(b: float, w: float, x1: float, x2: float) -> None:
    lo, hi = sorted((x1, x2))
    m = Logistic(b, (("cart_items", w), ("orders", -0.5)))
    feats = {"orders": 3}
    assert m.predict({**feats, "cart_items": lo}) <= m.predict({**feats, "cart_items": hi})
    assert Logistic(b, (("cart_items", -w),)).predict({"cart_items": lo}) >= \
        Logistic(b, (("cart_items", -w),)).predict({"cart_items": hi})


@pytest.mark.parametrize(("model", "feats", "expected"), [
    (Logistic(1e6, ()), {}, 1.0),
    (Logistic(-1e6, ()), {}, 0.0),
    (Logistic(0.0, (("revenue_minor", 1e6),)), {"revenue_minor": 1e300}, 1.0),
    (Logistic(0.0, (("revenue_minor", -1e6),)), {"revenue_minor": 1e300}, 0.0),
    (Logistic(0.0, (("revenue_minor", 1e6),)), {"revenue_minor": 10**20}, 1.0),
    (Logistic(0.0, (("revenue_minor", 1e6),)), {"revenue_minor": 1.7e308}, 1.0),  # z overflows to inf
    (Logistic(0.0, (("revenue_minor", -1e6),)), {"revenue_minor": 1.7e308}, 0.0),  # z = -inf
    (Logistic(745.0, ()), {}, 1.0),
    (Logistic(-800.0, ()), {}, 0.0),
    (Logistic(-745.0, ()), {}, 5e-324),  # the smallest subnormal, not 0
    (Logistic(-700.0, ()), {}, math.exp(-700.0)),
    (Logistic(0.0, ()), {}, 0.5),
])
def test_predict_is_stable_for_huge_log_odds(model: Logistic, feats: dict[str, Any], expected: float) -> None:
    p = model.predict(feats)
    assert 0.0 <= p <= 1.0
    assert p == pytest.approx(expected, rel=1e-9, abs=0.0)


@given(st.floats(-1e6, 1e6), st.floats(-1e6, 1e6), st.floats(-1e12, 1e12))
def test_predict_never_raises_or_leaves_zero_one(b: float, w: float, x: float) -> None:
    p = Logistic(b, (("events", w),)).predict({"events": x})
    assert 0.0 <= p <= 1.0


def test_predict_treats_none_as_zero_and_bools_as_zero_or_one() -> None:
    m = Logistic(-1.0, (("identified", 2.0), ("orders", 0.5)))
    assert m.predict({"identified": None, "orders": None}) == m.predict({}) == m.predict({"identified": 0})
    assert m.predict({"identified": True}) == m.predict({"identified": 1}) == m.predict({"identified": 1.0})
    assert m.predict({"identified": False}) == m.predict({"identified": 0})
    assert m.predict({"identified": True}) == pytest.approx(reference(1.0))
    assert m.predict({"orders": 4, "unused": "ignored"}) == pytest.approx(reference(1.0))
    assert m.features == {"identified", "orders"}


# ------------------------------------------------------------------------------------------ parse_models
VALID: dict[str, Any] = {
    "version": "2026-11-23-a", "kind": "logistic",
    "models": {
        "abandoned_cart/EMAIL": {"intercept": -1.7, "weights": {"cart_items": 0.12, "identified": 1}},
        "geo_offer/PUSH": {"intercept": -1},
    },
}


def test_a_valid_document_overrides_only_the_named_pairs() -> None:
    base = priors(CAT)
    models = parse_models(VALID, CAT)
    assert models.version == "2026-11-23-a"
    assert set(models.models) == PAIRS
    learned = Logistic(-1.7, (("cart_items", 0.12), ("identified", 1.0)))
    assert models.get("abandoned_cart", "EMAIL") == learned
    assert models.get("geo_offer", "PUSH") == Logistic(-1.0, ())
    changed = {("abandoned_cart", "EMAIL"), ("geo_offer", "PUSH")}
    for pair in PAIRS - changed:
        assert models.models[pair] == base.models[pair], pair
    # the same action on another channel keeps its prior
    assert models.get("abandoned_cart", "PUSH") == base.get("abandoned_cart", "PUSH")
    assert priors(CAT).get("abandoned_cart", "EMAIL") == base.get("abandoned_cart", "EMAIL")


def test_kind_is_optional_and_yaml_documents_parse_the_same() -> None:
    doc = {k: v for k, v in VALID.items() if k != "kind"}
    assert parse_models(doc, CAT) == parse_models(VALID, CAT)
    text = yaml.safe_dump(VALID)
    assert parse_models(yaml.safe_load(text), CAT) == parse_models(VALID, CAT)
    assert parse_models({**VALID, "version": "v" * 64}, CAT).version == "v" * 64


def test_a_document_lays_over_the_given_base_without_changing_it() -> None:
    first = parse_models(VALID, CAT)
    second = parse_models({"version": "b", "models": {"welcome/PUSH": {"intercept": 0.5, "weights": {}}}},
                          CAT, base=first)
    assert second.get("abandoned_cart", "EMAIL") == first.get("abandoned_cart", "EMAIL")
    assert second.get("welcome", "PUSH") == Logistic(0.5, ())
    assert first.get("welcome", "PUSH") == priors(CAT).get("welcome", "PUSH")
    assert second.version == "b" and first.version == "2026-11-23-a"


def _with_entry(entry: Any, pair: str = "abandoned_cart/EMAIL") -> dict[str, Any]:
    return {"version": "v1", "models": {pair: entry}}


BAD: list[tuple[str, Any, str]] = [
    ("list", [VALID], "a model document is a mapping"),
    ("string", "version: v1", "a model document is a mapping"),
    ("none", None, "a model document is a mapping"),
    ("unknown key", {**VALID, "owner": "ds-team"}, "unknown keys ['owner']"),
    ("no version", {k: v for k, v in VALID.items() if k != "version"}, "version:"),
    ("empty version", {**VALID, "version": ""}, "version:"),
    ("long version", {**VALID, "version": "v" * 65}, "version:"),
    ("number version", {**VALID, "version": 7}, "version:"),
    ("unknown kind", {**VALID, "kind": "gradient_boosting"}, "kind: 'gradient_boosting'"),
    ("no models", {"version": "v1"}, "models: a non-empty mapping"),
    ("empty models", {"version": "v1", "models": {}}, "models: a non-empty mapping"),
    ("models list", {"version": "v1", "models": [VALID["models"]]}, "models: a non-empty mapping"),
    ("channel not of the action", _with_entry({"intercept": 0}, "geo_offer/EMAIL"),
     "models.geo_offer/EMAIL: no such action/channel pair"),
    ("unknown action", _with_entry({"intercept": 0}, "birthday/EMAIL"), "models.birthday/EMAIL: no such"),
    ("no channel", _with_entry({"intercept": 0}, "abandoned_cart"), "models.abandoned_cart: no such"),
    ("not a trigger channel", _with_entry({"intercept": 0}, "abandoned_cart/WEB"),
     "models.abandoned_cart/WEB: no such"),
    ("entry not a mapping", _with_entry(-1.0), "models.abandoned_cart/EMAIL: expected {intercept, weights}"),
    ("no intercept", _with_entry({"weights": {"cart_items": 1}}), "expected {intercept, weights}"),
    ("extra entry key", _with_entry({"intercept": 0, "bias": 1}), "expected {intercept, weights}"),
    ("weights list", _with_entry({"intercept": 0, "weights": [["cart_items", 1]]}),
     "models.abandoned_cart/EMAIL.weights: expected a mapping"),
    ("unknown feature", _with_entry({"intercept": 0, "weights": {"cart_itemz": 1, "orders": 1}}),
     "models.abandoned_cart/EMAIL.weights: unknown features ['cart_itemz']"),
]
for _name, _value in [("nan", math.nan), ("inf", math.inf), ("-inf", -math.inf), ("true", True),
                      ("false", False), ("string", "0.5"), ("none", None), ("too large", 1e7)]:
    BAD.append((f"intercept {_name}", _with_entry({"intercept": _value}),
                f"models.abandoned_cart/EMAIL.intercept: expected a finite number, got {_value!r}"))
    BAD.append((f"weight {_name}",
                _with_entry({"intercept": 0, "weights": {"orders": 1, "cart_items": _value}}),
                f"models.abandoned_cart/EMAIL.weights.cart_items: expected a finite number, got {_value!r}"))


@pytest.mark.parametrize(("doc", "message"), [pytest.param(d, m, id=n) for n, d, m in BAD])
def test_bad_documents_are_rejected_naming_the_problem(doc: Any, message: str) -> None:
    with pytest.raises(ModelError) as info:
        parse_models(doc, CAT)
    assert message in str(info.value)
    assert isinstance(info.value, OmnipipeError)


def test_one_bad_pair_rejects_the_whole_document() -> None:
    doc = {"version": "v2", "models": {"abandoned_cart/EMAIL": {"intercept": 0.0},
                                       "geo_offer/EMAIL": {"intercept": 0.0}}}
    with pytest.raises(ModelError, match="geo_offer/EMAIL"):
        parse_models(doc, CAT)


def test_an_unhashable_kind_is_a_model_error() -> None:
    with pytest.raises(ModelError, match="kind"):
        parse_models({**VALID, "kind": ["logistic"]}, CAT)


def test_an_integer_beyond_float_range_is_a_model_error() -> None:
    with pytest.raises(ModelError, match="intercept: expected a finite number"):
        parse_models(_with_entry({"intercept": 10**400}), CAT)


# ------------------------------------------------------------------------------------------ ModelHolder
def test_swap_replaces_current_and_counts() -> None:
    a = priors(CAT)
    b = parse_models(VALID, CAT)
    holder = ModelHolder(a)
    assert holder.current is a and holder.swaps == 0
    holder.swap(b)
    assert holder.current is b and holder.swaps == 1
    holder.swap(b)
    holder.swap(a)
    assert holder.current is a and holder.swaps == 3


def test_readers_only_ever_see_one_of_the_two_model_sets_while_writers_swap() -> None:
    a = priors(CAT)
    b = parse_models(VALID, CAT)
    holder = ModelHolder(a)
    stop = threading.Event()
    seen: dict[int, int] = {}
    wrong: list[Any] = []

    def read() -> None:
        while not stop.is_set():
            m = holder.current
            if m is not a and m is not b:
                wrong.append(m)
                return
            assert isinstance(m, ModelSet)
            m.get("abandoned_cart", "EMAIL").predict({"cart_items": 2})
            seen[id(m)] = seen.get(id(m), 0) + 1

    writers_per_thread = 5000

    def write(first: ModelSet, second: ModelSet) -> None:
        for i in range(writers_per_thread):
            holder.swap(first if i % 2 else second)

    readers = [threading.Thread(target=read) for _ in range(2)]
    writers = [threading.Thread(target=write, args=(a, b)), threading.Thread(target=write, args=(b, a))]
    for t in readers + writers:
        t.start()
    for t in writers:
        t.join(timeout=30)
    stop.set()
    for t in readers:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in readers + writers)
    assert wrong == []
    assert holder.swaps == 2 * writers_per_thread
    assert holder.current in (a, b)
    assert sum(seen.values()) > 0
