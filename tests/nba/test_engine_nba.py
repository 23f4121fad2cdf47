"""The profile engine's next-best-action plumbing: the timer index, the feed, erasure of both indexes."""

from __future__ import annotations

from typing import Any

from pipeline.nba.catalogue import load_action_catalogue
from pipeline.nba.decider import Decider
from pipeline.nba.model import ModelHolder, priors
from pipeline.profile.engine import (
    MESSAGES,
    TIMER_PREFIX,
    VIEWED_PREFIX,
    EventIn,
    FeedIn,
    MergeIn,
    MessageIn,
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
        self.messages: list[list[Any]] = []  # engine to engine (profile.messages), delivered by deliver()
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
        self.messages += [e.value for _p, e in unsent if e.dest == MESSAGES]
        self.engine.acknowledge(unsent)
        for p, items in self.engine.take_changes().items():
            self.store.write(p, items)

    def event(self, kind: str, at: int, profile: str = P, **fields: Any) -> None:
        ev = {"event_id": f"e{self.offset}", "event_time": at, "ingest_time": at, "channel": "WEB",
              "type": kind, "customer_id": "Z", "email_hash": "ab" * 32, "timezone": "UTC", "items": [],
              "currency": "EUR", **fields}
        self.engine.process([EventIn("r", 0, self.offset, profile, "", ev, b"")])
        self.offset += 1
        self.commit()

    def merge(self, source: str, target: str) -> None:
        self.engine.process([MergeIn("identity.merges", 0, self.offset, source, "", target, "")])
        self.offset += 1
        self.commit()

    def deliver(self) -> None:
        messages, self.messages = self.messages, []
        for i, message in enumerate(messages):
            self.engine.process([MessageIn("profile.messages", 0, self.offset + i, message)])
        self.offset += len(messages)
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


def test_a_merge_withdraws_a_cart_trigger_the_other_identity_has_since_bought() -> None:
    h = Harness()
    _consented(h)
    h.event("add_to_cart", START + MIN, sku="S1", price=10.0)
    h.tick(START + 31 * MIN)
    (cart,) = [t for t in h.sent if t["action"] == "abandoned_cart"]
    device = "dev:D1"  # the same person, not yet linked, buys in the app
    h.event("purchase", START + 40 * MIN, profile=device, customer_id=None, email_hash=None, channel="APP",
            items=[{"sku": "S1", "quantity": 1, "unit_price": 10.0}], order_id="o1", amount=10.0)
    h.merge(device, P)
    h.deliver()
    cancels = [t for t in h.sent if t["cancels"]]
    assert [t["cancels"] for t in cancels] == [cart["idempotency_key"]]
    assert cancels[0]["reasons"] == [f"merged profile purchased at {START + 40 * MIN}"]
    h.merge(device, P)  # a redelivered merge withdraws nothing twice
    h.deliver()
    assert len([t for t in h.sent if t["cancels"]]) == 1


def test_a_merge_withdraws_triggers_on_a_channel_the_other_identity_opted_out_of() -> None:
    h = Harness()
    _consented(h)
    h.event("add_to_cart", START + MIN, sku="S1", price=10.0)
    h.tick(START + 31 * MIN)
    (cart,) = [t for t in h.sent if t["action"] == "abandoned_cart" and not t["cancels"]]
    other = "email:" + "cd" * 32
    h.event("consent_change", START + 35 * MIN, profile=other, channel=None, customer_id=None,
            consent_channel="EMAIL", consent_purpose="marketing", consent_granted=False)
    h.merge(other, P)
    h.deliver()
    cancels = [t for t in h.sent if t["cancels"]]
    assert [(t["cancels"], t["channel"]) for t in cancels] == [(cart["idempotency_key"], "EMAIL")]


def test_an_erasure_withdrawal_names_no_customer_or_recipient() -> None:
    h = Harness()
    _consented(h)
    h.event("add_to_cart", START + MIN, sku="S1", price=10.0)
    h.tick(START + 31 * MIN)
    (cart,) = [t for t in h.sent if t["action"] == "abandoned_cart"]
    assert cart["customer_id"] == "Z" and cart["recipient_ref"]
    h.event("erasure_request", START + 32 * MIN, channel=None)
    (cancel,) = [t for t in h.sent if t["cancels"]]
    assert cancel["cancels"] == cart["idempotency_key"]
    assert cancel["customer_id"] is None and cancel["recipient_ref"] == ""


def test_a_feed_reaches_only_recent_viewers_and_writes_no_profile_it_does_not_decide_for() -> None:
    h = Harness()
    _consented(h)
    h.event("product_view", START + MIN, sku="S9", category="toys")
    h.commit()
    within = CATALOGUE.actions["back_in_stock"].trigger.within_ms
    assert within is not None
    at = START + MIN + within + 1  # one millisecond too late
    h.now = at
    h.engine.process_feed(FeedIn("catalogue.stock", 0, 0, {"feed_id": "f1", "sku": "S9", "category": "toys",
                                                            "in_stock": True, "changed_at": at}))
    changes = h.engine.take_changes()
    written = [k for k, _v in changes.get(0, []) if k.startswith(b"p/")]
    assert written == []  # the viewer was read, not decided for: no profile write
    for p, items in changes.items():
        h.store.write(p, items)
    h.event("product_view", at + MIN, sku="S9", category="toys")  # seen again: now it concerns them
    h.now = at + 2 * MIN
    h.engine.process_feed(FeedIn("catalogue.stock", 0, 1, {"feed_id": "f2", "sku": "S9", "category": "toys",
                                                            "in_stock": True, "changed_at": at + 2 * MIN}))
    h.commit()
    assert [t["action"] for t in h.sent] == ["back_in_stock"]


class TombstoneStore(DictStore):
    """Like RocksDB before compaction: a deleted key stays as a tombstone that a range read steps over."""

    def __init__(self) -> None:
        super().__init__()
        self.tombstones: set[tuple[int, bytes]] = set()
        self.steps = 0

    def write(self, partition: int, items: list[tuple[bytes, bytes | None]]) -> None:
        for key, value in items:
            if value is None:
                self.tombstones.add((partition, key))
            else:
                self.tombstones.discard((partition, key))
        super().write(partition, items)

    def items(self, partition: int, prefix: bytes = b"", start: bytes = b"") -> Any:
        live = self.data.get(partition, {})
        dead = {k for p, k in self.tombstones if p == partition}
        for key in sorted(set(live) | dead):
            if not key.startswith(prefix) or key < start:
                continue
            self.steps += 1
            if key in live:
                yield key, live[key]


def test_a_tick_starts_after_the_entries_it_already_fired() -> None:
    h = Harness()
    h.store = store = TombstoneStore()
    h.engine = h.start()
    for i in range(50):
        h.event("add_to_cart", START + MIN + i, profile=f"cust:{i}", customer_id=str(i), sku="S1", price=1.0)
    carts = [k for k in h.keys(TIMER_PREFIX) if parse_timer_key(k)[2] == "abandoned_cart"]
    assert len(carts) == 50
    h.tick(START + 31 * MIN + 100)  # every cart falls due (none has consent: decided, suppressed)
    assert not [k for k in h.keys(TIMER_PREFIX) if parse_timer_key(k)[2] == "abandoned_cart"]
    store.steps = 0
    h.tick(START + 32 * MIN)
    # the 50 fired entries are tombstones now; the tick seeks past them to the next live entry
    assert store.steps == 1


def test_a_trigger_decided_in_the_erasure_batch_never_leaves() -> None:
    h = Harness()
    _consented(h)

    def ev(kind: str, at: int) -> dict[str, Any]:
        return {"event_id": f"b{at}", "event_time": at, "ingest_time": at, "channel": "WEB", "type": kind,
                "customer_id": "Z", "email_hash": "ab" * 32, "timezone": "UTC", "items": [],
                "currency": "EUR"}

    counts = h.engine.process([EventIn("r", 0, 100, P, "", ev("login", START + MIN), b""),
                               EventIn("r", 0, 101, P, "", ev("erasure_request", START + 2 * MIN), b"")])
    assert counts.nba.triggers[("welcome", "EMAIL")] == 1  # decided, then the erasure came
    h.commit()
    assert h.sent == []  # the welcome decided before the erasure in the same batch was dropped, not sent


def test_a_trigger_sent_before_the_erasure_is_withdrawn() -> None:
    h = Harness()
    _consented(h)
    h.event("login", START + MIN)
    (welcome,) = [t for t in h.sent if t["action"] == "welcome"]
    h.event("erasure_request", START + 2 * MIN, channel=None)
    assert [t["cancels"] for t in h.sent if t["cancels"]] == [welcome["idempotency_key"]]


def test_on_the_wall_clock_too_a_due_timer_fires_before_a_later_event_of_its_profile_is_folded() -> None:
    """No tick ran between the two purchases (one batch): the silence that fell due is not skipped."""
    h = Harness()
    _consented(h)
    day = 24 * 60 * MIN
    purchase = {"channel": "POS", "store_id": "S1", "amount": 30.0,
                "items": [{"sku": "S1", "category": "shoes", "quantity": 1, "unit_price": 30.0}]}
    h.event("store_purchase", START + 60 * MIN, **purchase)
    h.now = START + 40 * day  # live: the wall clock is at the second purchase
    ev = {"event_id": "late", "event_time": h.now, "ingest_time": h.now, "type": "store_purchase",
          "customer_id": "Z", "email_hash": "ab" * 32, "timezone": "UTC", "currency": "EUR", **purchase}
    h.engine.process([EventIn("r", 0, h.offset, P, "", ev, b"")])
    h.commit()
    (win_back,) = [t for t in h.sent if t["action"] == "win_back"]
    assert win_back["source_event_time"] == START + 60 * MIN + 30 * day  # the occurrence that fell due
    assert win_back["created_at"] == h.now  # decided on the wall clock, as live
    record = h.engine.peek(P)
    assert record is not None and record.state is not None and record.state.orders_store == 2
