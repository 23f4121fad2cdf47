"""The profile engine's next-best-action plumbing: the timer index, the feed, erasure of both indexes."""

from __future__ import annotations

from typing import Any

from pipeline.nba.catalogue import load_action_catalogue
from pipeline.nba.decider import Decider
from pipeline.nba.model import ModelHolder, priors
from pipeline.profile.engine import (
    TIMER_PREFIX,
    VIEWED_PREFIX,
    EventIn,
    FeedIn,
    ProfileEngine,
    parse_timer_key,
)
from pipeline.profile.limits import ProfileLimits
from tests.nba.test_rules import START
from tests.profile.test_engine import DictStore

CATALOGUE = load_action_catalogue()
LIMITS = ProfileLimits()
MIN = 60_000
P = "cust:Z"


class Harness:
    def __init__(self) -> None:
        self.store = DictStore()
        self.now = START
        self.offset = 0
        self.sent: list[dict[str, Any]] = []
        self.engine = self.start()

    def start(self) -> ProfileEngine:
        decider = Decider(CATALOGUE, ModelHolder(priors(CATALOGUE)), LIMITS.caps.contacts)
        engine = ProfileEngine(LIMITS, lambda ref: 0, self.store, lambda: self.now, decider=decider)
        engine.assign(0)
        return engine

    def commit(self) -> None:
        for p, items in self.engine.take_changes().items():
            self.store.write(p, items)
        unsent = self.engine.unsent()
        self.sent += [e.value[1] for _p, e in unsent if e.dest == "triggers"]
        self.engine.acknowledge(unsent)
        for p, items in self.engine.take_changes().items():
            self.store.write(p, items)

    def event(self, kind: str, at: int, **fields: Any) -> None:
        ev = {"event_id": f"e{self.offset}", "event_time": at, "ingest_time": at, "channel": "WEB",
              "type": kind, "customer_id": "Z", "email_hash": "ab" * 32, "timezone": "UTC", "items": [],
              "currency": "EUR", **fields}
        self.engine.process([EventIn("r", 0, self.offset, P, "", ev, b"")])
        self.offset += 1
        self.commit()

    def tick(self, at: int) -> None:
        self.now = at
        self.engine.fire_timers(at)
        self.commit()

    def keys(self, prefix: bytes) -> list[bytes]:
        return [k for k, _v in self.store.items(0, prefix)]


def _consented(h: Harness) -> None:
    h.event("consent_change", START, channel=None, consent_channel="EMAIL", consent_purpose="marketing",
            consent_granted=True)


def test_a_touched_cart_re_arms_and_an_occurrence_fires_once() -> None:
    h = Harness()
    _consented(h)
    h.event("add_to_cart", START + MIN, sku="S1", price=10.0)
    due = [parse_timer_key(k) for k in h.keys(TIMER_PREFIX)]
    assert (START + 31 * MIN, P, "abandoned_cart") in due
    h.event("add_to_cart", START + 20 * MIN, sku="S2", price=10.0)  # later due: no index write
    assert (START + 31 * MIN, P, "abandoned_cart") in [parse_timer_key(k) for k in h.keys(TIMER_PREFIX)]
    h.tick(START + 31 * MIN)  # the armed entry falls due, the cart moved on: re-armed, nothing sent
    assert not [t for t in h.sent if t["action"] == "abandoned_cart"]
    assert (START + 50 * MIN, P, "abandoned_cart") in [parse_timer_key(k) for k in h.keys(TIMER_PREFIX)]
    h.tick(START + 50 * MIN)
    carts = [t for t in h.sent if t["action"] == "abandoned_cart"]
    assert len(carts) == 1 and {i["sku"] for i in carts[0]["items"]} == {"S1", "S2"}
    armed = [parse_timer_key(k)[2] for k in h.keys(TIMER_PREFIX)]
    assert "abandoned_cart" not in armed  # a fired occurrence is not armed again (no index churn)
    for minute in (60, 120, 600):  # the same occurrence never fires again
        h.tick(START + minute * MIN)
    assert len([t for t in h.sent if t["action"] == "abandoned_cart"]) == 1
    h.engine = h.start()  # a restart reads the same index and record
    h.tick(START + 700 * MIN)
    assert len([t for t in h.sent if t["action"] == "abandoned_cart"]) == 1


def test_the_feed_reaches_viewers_once_per_partition_and_erasure_clears_both_indexes() -> None:
    h = Harness()
    _consented(h)
    h.event("product_view", START + MIN, sku="S9", category="toys")
    assert h.keys(VIEWED_PREFIX) == [VIEWED_PREFIX + b"S9\0" + P.encode()]
    record = {"feed_id": "f1", "sku": "S9", "category": "toys", "in_stock": True,
              "changed_at": START + 2 * MIN}
    h.now = START + 2 * MIN
    h.engine.process_feed(FeedIn("catalogue.stock", 0, 0, record))
    h.commit()
    h.engine.process_feed(FeedIn("catalogue.stock", 0, 0, record))  # a replay of the same offset
    h.commit()
    stock = [t for t in h.sent if t["action"] == "back_in_stock"]
    assert len(stock) == 1 and stock[0]["items"][0]["sku"] == "S9"
    h.event("add_to_cart", START + 3 * MIN, sku="S1", price=5.0)
    assert h.keys(TIMER_PREFIX)
    h.event("erasure_request", START + 4 * MIN, channel=None)
    assert not h.keys(TIMER_PREFIX) and not h.keys(VIEWED_PREFIX)  # the index keys named the profile
    # the pending back-in-stock trigger is withdrawn: nothing reaches an erased person
    assert [t["cancels"] for t in h.sent if t["cancels"]] == [stock[0]["idempotency_key"]]
