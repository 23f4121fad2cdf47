"""The contact rules, on generated data: hundreds of customers, weeks of simulated time (no broker).

A simulated world drives the profile engine as the worker does (process a
batch, persist the commit, send the outbox, fire due timers), with a clock
that follows simulated time, upstream redeliveries and crashes of the
engine. Senders answer some triggers (delivered, opened, unsubscribed).
Every trigger and cancellation the engine ever sent is then checked:

- no trigger to a channel without consent, or after an opt-out was processed;
- no SMS or push whose send_after is outside 08:00-21:00 in the customer's
  zone (zones across the world, the run spans DST changes);
- caps (per channel and overall, rolling day and week) and cooldowns never
  exceeded; holdout customers never triggered;
- a purchase withdraws every not yet expired abandoned-cart trigger decided
  before it; a redelivered event never yields a second trigger with another key.
"""

from __future__ import annotations

import datetime as dt
import heapq
import itertools
import random
from collections import defaultdict
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from pipeline.nba.catalogue import load_action_catalogue
from pipeline.nba.decider import Decider
from pipeline.nba.model import ModelHolder, priors
from pipeline.nba.policy import DAY_MS, WEEK_MS, in_holdout
from pipeline.profile.engine import EventIn, OutboxEntry, ProfileEngine
from pipeline.profile.limits import ProfileLimits
from tests.profile.test_engine import DictStore

CATALOGUE = load_action_catalogue()
POLICY = CATALOGUE.policy
LIMITS = ProfileLimits()
MIN_MS = 60_000
HOUR_MS = 3_600_000
START = int(dt.datetime(2026, 3, 20, tzinfo=dt.UTC).timestamp() * 1000)  # spans the March DST changes
ZONES = ["Europe/London", "Europe/Paris", "America/New_York", "America/Los_Angeles", "Australia/Sydney",
         "Asia/Kolkata", "Asia/Tokyo", "America/Sao_Paulo", "Pacific/Auckland", None]
SKUS = [f"SKU-{i}" for i in range(30)]
PARTITIONS = 4


class World:
    """Customers acting over simulated days; the engine runs at the simulated clock."""

    def __init__(self, customers: int, days: int, seed: int) -> None:
        self.rnd = random.Random(seed)
        self.now = START
        self.store = DictStore()
        self.engine = self._start()
        self.queue: list[tuple[int, int, dict[str, Any]]] = []  # (time, seq, event)
        self.seq = 0
        self.offsets = [0] * PARTITIONS
        self.sent: list[tuple[int, str, dict[str, Any]]] = []  # (clock, channel, trigger record), all sends
        self.processed: list[tuple[int, dict[str, Any]]] = []  # (clock, event) in processing order
        self.tz: dict[str, str | None] = {}
        for i in range(customers):
            self._customer(f"cust:C{i}", days)

    def partition_of(self, ref: str) -> int:
        return sum(ref.encode()) % PARTITIONS

    def _start(self) -> ProfileEngine:
        decider = Decider(CATALOGUE, ModelHolder(priors(CATALOGUE)), LIMITS.caps.contacts)
        engine = ProfileEngine(LIMITS, self.partition_of, self.store, clock_ms=lambda: self.now,
                               decider=decider)
        for p in range(PARTITIONS):
            engine.assign(p)
        self._send(engine)
        return engine

    # ------------------------------------------------------------------ the simulated customers
    def _push(self, t: int, ev: dict[str, Any]) -> None:
        self.seq += 1
        heapq.heappush(self.queue, (t, self.seq, ev))

    def _event(self, profile: str, t: int, kind: str, channel: str | None, **fields: Any) -> dict[str, Any]:
        n = int(profile[6:])
        ev = {"event_id": f"{profile}-{self.seq}-{kind}", "event_time": t, "ingest_time": t,
              "channel": channel, "type": kind, "customer_id": profile[5:], "loyalty_card": None,
              "email_hash": f"{n:064x}", "phone_hash": f"{n + 1:064x}" if n % 3 else None,
              "device_id": f"D{n}" if n % 2 else None, "anonymous_id": None,
              "timezone": self.tz[profile], "push_enabled": True if n % 2 and channel == "APP" else None,
              "sku": None, "category": None, "price": None, "items": [], "amount": None, "currency": "EUR",
              "store_id": None, "trigger_key": None, "consent_channel": None, "consent_purpose": None,
              "consent_granted": None}
        ev.update(fields)
        self._push(t, ev)
        return ev

    def _customer(self, profile: str, days: int) -> None:
        rnd = self.rnd
        self.tz[profile] = rnd.choice(ZONES)
        t = START + rnd.randrange(DAY_MS)
        self._event(profile, t + MIN_MS, "signup", "WEB")
        for channel in ("EMAIL", "PUSH", "SMS"):  # most grant, some later withdraw, some grant again
            if rnd.random() < 0.8:
                self._event(profile, t + rnd.randrange(2 * HOUR_MS), "consent_change", None,
                            consent_channel=channel, consent_purpose="marketing", consent_granted=True)
            if rnd.random() < 0.25:
                self._event(profile, t + rnd.randrange(days * DAY_MS), "consent_change", None,
                            consent_channel=channel, consent_purpose="marketing",
                            consent_granted=rnd.random() < 0.3)
        end = START + days * DAY_MS
        if rnd.random() < 0.4:  # goes silent after a while (win-back)
            end = START + rnd.randrange(3, 10) * DAY_MS
        while t < end:
            t += rnd.randrange(2 * HOUR_MS, 3 * DAY_MS)
            channel = rnd.choice(["WEB", "WEB", "APP"])
            for _ in range(rnd.randint(1, 4)):
                t += rnd.randrange(MIN_MS, 10 * MIN_MS)
                sku = rnd.choice(SKUS)
                self._event(profile, t, "product_view", channel, sku=sku, category=f"cat{sku[-1]}")
            if rnd.random() < 0.5:
                t += rnd.randrange(MIN_MS, 5 * MIN_MS)
                self._event(profile, t, "add_to_cart", channel, sku=rnd.choice(SKUS), price=25.0)
                if rnd.random() < 0.4:
                    self._event(profile, t + 2 * MIN_MS, "checkout", channel)
                if rnd.random() < 0.5:  # buys now, later (maybe after a reminder), or never
                    t += rnd.choice([3 * MIN_MS, 50 * MIN_MS, 5 * HOUR_MS, 2 * DAY_MS])
                    self._event(profile, t, "purchase", channel, amount=60.0,
                                items=[{"sku": rnd.choice(SKUS), "category": "cat1", "quantity": 1,
                                        "unit_price": 60.0}])
            if rnd.random() < 0.15:
                self._event(profile, t + HOUR_MS, "store_purchase", "POS", amount=30.0, store_id="S1",
                            items=[{"sku": "SKU-1", "category": "cat1", "quantity": 1, "unit_price": 30.0}])
            if rnd.random() < 0.2 and int(profile[6:]) % 2:
                self._event(profile, t + 2 * HOUR_MS, "near_store", "APP", store_id="S2")

    def _sender(self, record: dict[str, Any]) -> None:
        """Some triggers are delivered, opened, or end in an unsubscribe (an opt-out)."""
        if record["cancels"] is not None or self.rnd.random() < 0.3:
            return
        channel = record["channel"]
        profile = record["profile_id"]
        t = max(record["send_after"], self.now) + MIN_MS
        key = record["idempotency_key"]
        for report in ("sent", "delivered"):
            self._event(profile, t, f"{channel.lower()}_{report}", channel, trigger_key=key)
        answer = self.rnd.random()
        if answer < 0.3:
            name = {"EMAIL": "opened", "PUSH": "opened", "SMS": "clicked"}[channel]
            self._event(profile, t + 5 * MIN_MS, f"{channel.lower()}_{name}", channel, trigger_key=key)
        elif answer < 0.36:
            name = {"EMAIL": "unsubscribed", "PUSH": "unsubscribed", "SMS": "stop"}[channel]
            self._event(profile, t + 5 * MIN_MS, f"{channel.lower()}_{name}", channel, trigger_key=key)

    # ------------------------------------------------------------------ the worker's protocol
    def _send(self, engine: ProfileEngine, crash_inside: bool = False) -> None:
        unsent = engine.unsent()
        if crash_inside and unsent:
            unsent = unsent[: self.rnd.randrange(len(unsent))]
        for _p, entry in unsent:
            self._deliver(entry)
        if crash_inside:
            raise _Crash
        engine.acknowledge(unsent)

    def _deliver(self, entry: OutboxEntry) -> None:
        if entry.dest == "triggers":
            channel, record, _kind = entry.value
            self.sent.append((self.now, channel, record))
            self._sender(record)
        assert entry.dest != "messages"  # one profile per customer here: nothing to hand over

    def _commit(self, crash: str | None) -> None:
        try:
            if crash == "before_persist":
                raise _Crash
            for p, items in self.engine.take_changes().items():
                self.store.write(p, items)
            self._send(self.engine, crash_inside=crash == "inside_send")
        except _Crash:
            self.engine = self._start()

    def run(self, crash_rate: float, redelivery_rate: float) -> None:
        tick = 5 * MIN_MS
        while self.queue:
            until = self.now + tick
            batch: list[EventIn] = []
            while self.queue and self.queue[0][0] <= until:
                _t, _s, ev = heapq.heappop(self.queue)
                for _copy in range(2 if self.rnd.random() < redelivery_rate else 1):
                    p = self.partition_of(ev["customer_id"] and f"cust:{ev['customer_id']}")
                    batch.append(EventIn("events.resolved", p, self.offsets[p], f"cust:{ev['customer_id']}",
                                         "", dict(ev), b""))
                    self.offsets[p] += 1
            self.now = until
            if batch:
                crash = self.rnd.choice(["before_persist", "inside_send"]) \
                    if self.rnd.random() < crash_rate else None
                while True:  # after a crash the batch is read again: the engine skips what it holds
                    self.engine.process(batch)
                    engine = self.engine
                    self._commit(crash)
                    if self.engine is engine:
                        break
                    crash = None
                for item in batch:
                    self.processed.append((self.now, item.event))
            self.engine.fire_timers(self.now)
            self._commit(None)


class _Crash(Exception):
    pass


@pytest.fixture(scope="module")
def world() -> World:
    w = World(customers=300, days=40, seed=5)
    w.run(crash_rate=0.02, redelivery_rate=0.03)
    return w


def _triggers(world: World) -> list[tuple[int, str, dict[str, Any]]]:
    return [s for s in world.sent if s[2]["cancels"] is None]


def test_the_world_exercises_every_rule(world: World) -> None:
    """Not vacuous: triggers of many actions on every channel, cancellations, opt-outs, holdouts."""
    sent = _triggers(world)
    actions = {r["action"] for _t, _c, r in sent}
    assert len(sent) > 500
    assert {"abandoned_cart", "browse_abandonment", "welcome", "win_back", "geo_offer"} <= actions
    assert {c for _t, c, _r in sent} == {"EMAIL", "PUSH", "SMS"}
    assert any(r["cancels"] for _t, _c, r in world.sent)
    assert any(r["send_after"] > r["created_at"] for _t, _c, r in sent)  # quiet hours deferred some
    assert any(in_holdout(p, POLICY) for p in world.tz)
    opt_outs = [ev for _t, ev in world.processed if ev["type"] in ("email_unsubscribed", "sms_stop")
                or ev.get("consent_granted") is False]
    assert len(opt_outs) > 20


def test_no_trigger_without_consent_or_after_an_opt_out(world: World) -> None:
    consent: dict[tuple[str, str], list[tuple[int, int, bool]]] = defaultdict(list)  # by processing order
    for i, (_clock, ev) in enumerate(world.processed):
        profile = f"cust:{ev['customer_id']}"
        if ev["type"] == "consent_change":
            consent[(profile, ev["consent_channel"])].append((i, ev["event_time"], ev["consent_granted"]))
        elif ev["type"] in ("email_unsubscribed", "push_unsubscribed", "sms_stop"):
            consent[(profile, ev["channel"])].append((i, ev["event_time"], False))
    checked = 0
    for clock, channel, record in _triggers(world):
        history = [h for h in consent[(record["profile_id"], channel)]
                   if world.processed[h[0]][0] <= clock]  # processed before the trigger left
        assert history, f"trigger {record['idempotency_key']} to {channel} without any consent"
        latest = max(history, key=lambda h: (h[1], not h[2]))  # the profile's rule: latest event time wins
        assert latest[2], f"trigger {record['idempotency_key']} to {channel} after an opt-out"
        checked += 1
    assert checked > 500


def test_no_push_or_sms_outside_allowed_local_hours(world: World) -> None:
    checked = 0
    for _clock, channel, record in _triggers(world):
        if channel not in ("PUSH", "SMS"):
            continue
        tz = ZoneInfo(world.tz[record["profile_id"]] or POLICY.default_timezone)
        local = dt.datetime.fromtimestamp(record["send_after"] / 1000, tz=tz)
        assert 8 * 60 <= local.hour * 60 + local.minute < 21 * 60, (record, local)
        assert record["send_after"] < record["expires_at"]
        checked += 1
    assert checked > 100


def test_caps_and_cooldowns_are_never_exceeded_and_holdout_never_triggered(world: World) -> None:
    by_profile: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for _clock, _channel, record in _triggers(world):
        by_profile[record["profile_id"]][record["idempotency_key"]] = record  # duplicates: same key
    for profile, records in by_profile.items():
        assert not in_holdout(profile, POLICY), profile
        trig = sorted(records.values(), key=lambda r: r["send_after"])
        for caps, channel in [(POLICY.overall, None)] + [(c, ch) for ch, c in POLICY.channel_caps.items()]:
            times = [r["send_after"] for r in trig if channel is None or r["channel"] == channel]
            for i, s in enumerate(times):
                window = [x for x in times[: i + 1] if x > s - DAY_MS]
                assert caps.day is None or len(window) <= caps.day, (profile, channel, "day")
                window = [x for x in times[: i + 1] if x > s - WEEK_MS]
                assert caps.week is None or len(window) <= caps.week, (profile, channel, "week")
        by_action: dict[str, list[int]] = defaultdict(list)
        for r in trig:
            by_action[r["action"]].append(r["created_at"])
        for action, created in by_action.items():
            created.sort()
            cooldown = CATALOGUE.actions[action].cooldown_ms
            assert all(b - a >= cooldown for a, b in itertools.pairwise(created)), (profile, action)


def test_a_purchase_withdraws_pending_abandoned_cart_triggers(world: World) -> None:
    cancelled = {r["cancels"] for _t, _c, r in world.sent if r["cancels"]}
    carts = {r["idempotency_key"]: (clock, r) for clock, _c, r in _triggers(world)
             if r["action"] == "abandoned_cart"}
    checked = 0
    for clock, ev in world.processed:
        if ev["type"] not in ("purchase", "store_purchase"):
            continue
        profile = f"cust:{ev['customer_id']}"
        for key, (sent_at, r) in carts.items():
            if r["profile_id"] == profile and sent_at <= clock and r["created_at"] <= ev["event_time"] \
                    < r["expires_at"]:
                assert key in cancelled, (key, ev["event_id"])
                checked += 1
    assert checked > 5


def test_a_redelivered_event_never_yields_another_key(world: World) -> None:
    keys: dict[tuple[str, str, int], set[str]] = defaultdict(set)
    records: dict[str, dict[str, Any]] = {}
    for _clock, _channel, r in _triggers(world):
        keys[(r["profile_id"], r["action"], r["source_event_time"])].add(r["idempotency_key"])
        seen = records.setdefault(r["idempotency_key"], r)
        assert seen == r  # a re-sent trigger is the same record, byte for byte after encoding
    assert all(len(k) == 1 for k in keys.values())
