"""The event decision clock: per-partition stream time, timers as of their due time (issue 14, item 5).

A replay of history must decide the same whether it is read in one burst or
paced: each partition keeps its own stream time (per input partition of the
pipeline, as Kafka Streams keeps a task's), an event is judged at its input
partition's stream time, and a profile's timers fire as of their due time,
before any later event of that profile is folded, once the partition's own
stream time passes them. Agent tier, no broker: the real engine and decider,
committed and ticked the way ``ProfileLoop`` does.
"""

from __future__ import annotations

import zlib
from collections import Counter
from typing import Any

import pytest

from pipeline.nba.catalogue import load_action_catalogue
from pipeline.nba.decider import Decider
from pipeline.nba.model import ModelHolder, priors
from pipeline.nba.policy import in_holdout
from pipeline.profile.codec import pack
from pipeline.profile.engine import EVENT, TRIGGERS, EventIn, MergeIn, MessageIn, Meta, ProfileEngine
from pipeline.profile.limits import ProfileLimits
from tests.profile.test_engine import DictStore

CATALOGUE = load_action_catalogue()  # the shipped catalogue: win_back after 30d silence, cross-sell expiry 3d
LIMITS = ProfileLimits()
HOUR = 3_600_000
DAY = 24 * HOUR
T0 = 1_780_000_000_000
PARTS = 4
WIN_BACK_AFTER = CATALOGUE.actions["win_back"].trigger.after_ms or 0  # 30d shipped
CROSS_SELL_EXPIRY = CATALOGUE.actions["store_cross_sell"].expiry_ms


def partition_of(profile: str) -> int:
    return zlib.crc32(profile.encode()) % PARTS


def event(profile: str, n: int, kind: str, t: int, **fields: Any) -> dict[str, Any]:
    return {"event_id": f"{profile}-{n}", "event_time": t, "ingest_time": t, "channel": "POS", "type": kind,
            "customer_id": profile[5:], "email_hash": f"{zlib.crc32(profile.encode()):064x}",
            "timezone": "UTC", "items": [], "currency": "EUR", "source_topic": "events.pos",
            "source_partition": partition_of(profile), **fields}


def consent(profile: str, t: int) -> dict[str, Any]:
    return event(profile, 0, "consent_change", t, channel=None, consent_channel="EMAIL",
                 consent_purpose="marketing", consent_granted=True)


def store_purchase(profile: str, n: int, t: int) -> dict[str, Any]:
    return event(profile, n, "store_purchase", t, store_id="S1", amount=30.0,
                 items=[{"sku": "SKU-1", "category": "shoes", "quantity": 1, "unit_price": 30.0}])


class Replay:
    """The engine over per-partition logs of ``events.resolved``, committed and ticked like the loop."""

    def __init__(self) -> None:
        self.store = DictStore()
        self.logs: dict[int, list[tuple[str, dict[str, Any]]]] = {p: [] for p in range(PARTS)}
        self.messages: dict[int, list[list[Any]]] = {p: [] for p in range(PARTS)}
        self.merges: dict[int, list[tuple[str, str]]] = {p: [] for p in range(PARTS)}
        self.triggers: list[dict[str, Any]] = []
        self.counts: Counter[str] = Counter()
        self.engine = self.start()

    def start(self) -> ProfileEngine:
        decider = Decider(CATALOGUE, ModelHolder(priors(CATALOGUE)), LIMITS.caps.contacts)
        engine = ProfileEngine(LIMITS, partition_of, self.store, lambda: 0, decider=decider,
                               decision_clock=EVENT)
        for p in range(PARTS):
            engine.assign(p)
        return engine

    def produce(self, profile: str, ev: dict[str, Any]) -> None:
        self.logs[partition_of(profile)].append((profile, ev))

    def merge(self, source: str, target: str) -> None:
        self.merges[partition_of(source)].append((source, target))

    def _take(self, counts: Any) -> None:
        self.counts.update(counts.nba.suppressions)
        self.counts["timers_fired"] += counts.nba.timers_fired

    def commit(self) -> None:
        for p, items in self.engine.take_changes().items():
            self.store.write(p, items)
        unsent = self.engine.unsent()
        for _p, entry in unsent:
            if entry.dest == TRIGGERS:
                self.triggers.append(entry.value[1])
            elif entry.dest == "messages":
                self.messages[entry.partition].append(list(entry.value))
        self.engine.acknowledge(unsent)
        for p, items in self.engine.take_changes().items():
            self.store.write(p, items)

    def step(self, inputs: list[Any]) -> None:
        """One consumed batch: process, commit, then the tick (after a commit, as the loop does)."""
        self._take(self.engine.process(inputs))
        self.commit()
        self._take(self.engine.fire_timers())
        self.commit()

    def _inputs(self, p: int, limit: int) -> list[Any]:
        out: list[Any] = []
        start = self.engine.next_offset("resolved", p)
        for offset, (profile, ev) in list(enumerate(self.logs[p]))[start:start + limit]:
            out.append(EventIn("resolved", p, offset, profile, "", ev, b""))
        start = self.engine.next_offset("merges", p)
        for offset, (source, target) in list(enumerate(self.merges[p]))[start:start + limit]:
            out.append(MergeIn("merges", p, offset, source, "", target, ""))
        start = self.engine.next_offset("messages", p)
        for offset, message in list(enumerate(self.messages[p]))[start:start + limit]:
            out.append(MessageIn("messages", p, offset, message))
        return out

    def burst(self) -> None:
        """As fast as it can be read: each partition's whole log in one batch, one partition after another."""
        while True:
            inputs = [i for p in range(PARTS) for i in self._inputs(p, 10_000)]
            if not inputs:
                return
            self.step(inputs)

    def paced(self) -> None:
        """One event at a time in event-time order across partitions, a commit and a tick after each."""
        order = sorted((ev["event_time"], p, offset) for p, log in self.logs.items()
                       for offset, (_profile, ev) in enumerate(log))
        for _t, p, offset in order:
            profile, ev = self.logs[p][offset]
            assert self.engine.next_offset("resolved", p) == offset
            self.step([EventIn("resolved", p, offset, profile, "", ev, b"")])
            while True:  # what that event set moving between partitions arrives before the next event
                others = [i for q in range(PARTS) for i in self._inputs(q, 10_000)
                          if not isinstance(i, EventIn)]
                if not others:
                    break
                self.step(others)

    def keys(self, *, cancels: bool = False) -> set[str]:
        return {t["idempotency_key"] for t in self.triggers if cancels or t["cancels"] is None}


def _store_customers(replay: Replay, n: int = 64) -> list[str]:
    """The issue's first minimal case: n customers, one store purchase each, 6 h apart."""
    customers = [f"cust:S{i}" for i in range(n)]
    for profile in customers:
        replay.produce(profile, consent(profile, T0 - HOUR))
    for i, profile in enumerate(customers):
        replay.produce(profile, store_purchase(profile, 1, T0 + i * 6 * HOUR))
    return customers


def test_a_burst_over_several_partitions_decides_what_a_paced_replay_decides() -> None:
    burst, paced = Replay(), Replay()
    customers = _store_customers(burst)
    _store_customers(paced)
    assert len({partition_of(c) for c in customers}) == PARTS  # several partitions, each its own clock
    burst.burst()
    paced.paced()
    held_out = {c for c in customers if in_holdout(c, CATALOGUE.policy)}
    cross = [t for t in burst.triggers if t["action"] == "store_cross_sell"]
    assert burst.counts["stale"] == 0, "a partition was judged at a time another partition reached"
    assert {t["profile_id"] for t in cross} == set(customers) - held_out  # every customer decided at lag 0
    assert burst.counts["holdout"] == len(held_out)
    assert all(t["created_at"] == t["source_event_time"] for t in cross)
    assert burst.keys(cancels=True) == paced.keys(cancels=True)
    for p, log in burst.logs.items():  # each partition's clock is its own newest event, never another's
        assert burst.engine.stream_time(p) == max(ev["event_time"] for _profile, ev in log)


def _win_back_customer(replay: Replay) -> str:
    """The issue's second minimal case: purchases at T+1 h and T+40 d; silent for 30 d in between."""
    profile = "cust:W"
    replay.produce(profile, consent(profile, T0))
    replay.produce(profile, store_purchase(profile, 1, T0 + HOUR))
    replay.produce(profile, store_purchase(profile, 2, T0 + 40 * DAY))
    return profile


@pytest.mark.parametrize("mode", ["burst", "paced"])
def test_a_timer_due_before_a_later_event_fires_before_that_event_is_folded(mode: str) -> None:
    replay = Replay()
    profile = _win_back_customer(replay)
    getattr(replay, mode)()
    (win_back,) = [t for t in replay.triggers if t["action"] == "win_back"]
    due = T0 + HOUR + WIN_BACK_AFTER
    assert win_back["profile_id"] == profile
    assert win_back["source_event_time"] == due  # as of its due time ...
    assert win_back["created_at"] == due and win_back["send_after"] == due
    assert "trigger timer silence" in win_back["reasons"]
    # ... and as of the state then: one order, not the one 40 days in
    record = replay.engine.peek(profile)
    assert record is not None and record.state is not None and record.state.orders_store == 2
    crosses = sorted(t["source_event_time"] for t in replay.triggers if t["action"] == "store_cross_sell")
    assert crosses == [T0 + HOUR, T0 + 40 * DAY]


def test_the_burst_and_the_paced_replay_give_the_same_win_back() -> None:
    burst, paced = Replay(), Replay()
    _win_back_customer(burst)
    _win_back_customer(paced)
    burst.burst()
    paced.paced()
    assert burst.keys(cancels=True) == paced.keys(cancels=True)
    assert len([t for t in burst.triggers if t["action"] == "win_back"]) == 1


def test_a_partition_fires_its_timers_on_its_own_stream_time_not_another_partitions() -> None:
    replay = Replay()
    quiet = "cust:Q"
    busy = next(f"cust:B{i}" for i in range(100) if partition_of(f"cust:B{i}") != partition_of(quiet))
    replay.produce(quiet, consent(quiet, T0))
    replay.produce(quiet, store_purchase(quiet, 1, T0 + HOUR))
    replay.produce(busy, consent(busy, T0))
    replay.produce(busy, store_purchase(busy, 1, T0 + 50 * DAY))  # its partition is 50 days on
    replay.burst()
    assert not [t for t in replay.triggers if t["action"] == "win_back" and t["profile_id"] == quiet]
    assert replay.engine.stream_time(partition_of(quiet)) == T0 + HOUR
    # the quiet partition's own clock passes the due time: then it fires, as of the due time
    other = next(f"cust:O{i}" for i in range(100) if partition_of(f"cust:O{i}") == partition_of(quiet))
    replay.produce(other, consent(other, T0 + 35 * DAY))
    replay.burst()
    (win_back,) = [t for t in replay.triggers if t["action"] == "win_back" and t["profile_id"] == quiet]
    assert win_back["created_at"] == win_back["source_event_time"] == T0 + HOUR + WIN_BACK_AFTER


def test_a_late_event_is_judged_at_its_input_partitions_stream_time() -> None:
    """Kafka Streams' notion: lateness is against the partition the event came in on, never going back."""
    early = "cust:E"
    near = [c for c in (f"cust:L{i}" for i in range(100)) if partition_of(c) == partition_of(early)]
    late, other = near[:2]  # the same profile partition as ``early``
    replay = Replay()
    for profile in (early, late, other):
        replay.produce(profile, consent(profile, T0))
    lag = CROSS_SELL_EXPIRY + DAY
    pos0 = {"source_topic": "events.pos", "source_partition": 0}
    pos1 = {"source_topic": "events.pos", "source_partition": 1}
    replay.produce(early, {**store_purchase(early, 1, T0 + lag), **pos0})
    replay.produce(late, {**store_purchase(late, 1, T0), **pos0})  # its input partition is further on
    replay.produce(other, {**store_purchase(other, 1, T0), **pos1})  # another input partition: on time
    replay.burst()
    assert replay.counts["stale"] == 1
    cross = {t["profile_id"]: t for t in replay.triggers if t["action"] == "store_cross_sell"}
    assert late not in cross
    if not in_holdout(other, CATALOGUE.policy):
        assert cross[other]["created_at"] == T0


def test_the_clock_survives_a_restart_and_a_redelivery_decides_the_same() -> None:
    crashed, clean = Replay(), Replay()
    for replay in (crashed, clean):
        _store_customers(replay, 16)
        _win_back_customer(replay)
    inputs = [i for p in range(PARTS) for i in crashed._inputs(p, 10_000)]
    crashed.engine.process(inputs)  # never committed: the crash loses it, the input is read again
    crashed.engine = crashed.start()
    assert [crashed.engine.stream_time(p) for p in range(PARTS)] == [0] * PARTS
    crashed.burst()
    clocks = [crashed.engine.stream_time(p) for p in range(PARTS)]
    crashed.engine = crashed.start()  # a restart after the commit resumes the same clock
    assert [crashed.engine.stream_time(p) for p in range(PARTS)] == clocks
    clean.burst()
    assert crashed.keys(cancels=True) == clean.keys(cancels=True)
    assert len(crashed.triggers) == len(clean.triggers)


def test_a_merge_fires_the_sources_due_timers_before_its_state_leaves_and_carries_what_fired() -> None:
    """The state moves to another partition: a due occurrence fires once, as if a tick had run first."""
    source = "card:M1"
    target = next(f"cust:M{i}" for i in range(100) if partition_of(f"cust:M{i}") != partition_of(source))
    neighbour = next(f"cust:N{i}" for i in range(100) if partition_of(f"cust:N{i}") == partition_of(source))
    runs = []
    for mode in ("burst", "paced"):
        replay = Replay()
        replay.produce(source, {**consent(source, T0), "customer_id": None})
        replay.produce(source, {**store_purchase(source, 1, T0 + HOUR), "customer_id": None})
        replay.produce(neighbour, consent(neighbour, T0 + 31 * DAY))  # the source's partition passes the due
        if mode == "burst":  # the merge is read in the same batch: no tick ran before it
            replay.merge(source, target)
            replay.burst()
        else:  # a tick after every event, then the merge
            replay.paced()
            replay.merge(source, target)
            replay.burst()
        replay.produce(target, consent(target, T0 + 32 * DAY))  # the target's partition passes the due too
        replay.burst()
        runs.append(replay)
    burst, paced = runs
    for replay in runs:
        wins = [t for t in replay.triggers if t["action"] == "win_back"]
        assert [(t["profile_id"], t["source_event_time"]) for t in wins] == [
            (source, T0 + HOUR + WIN_BACK_AFTER)]
        assert replay.counts["timers_fired"] == 1  # the occurrence fired at the source is not fired again
    assert burst.keys(cancels=True) == paced.keys(cancels=True)
    record = burst.engine.peek(target)
    assert record is not None and record.state is not None and source in record.state.merged_from


def test_a_partition_meta_written_before_the_clock_reads_as_a_clock_at_zero() -> None:
    """An upgraded worker restores state committed without a stream time: it starts from 0, loses nothing."""
    old = pack([{"resolved": 7}, {1: 3}, 9, 2, 400])  # the five fields a meta had before
    meta = Meta.decode(old)
    assert (meta.next_offset, meta.applied_seq, meta.next_seq, meta.live, meta.stored_bytes) == (
        {"resolved": 7}, {1: 3}, 9, 2, 400)
    assert (meta.stream_time, meta.source_times) == (0, {})
    meta.stream_time, meta.source_times = T0, {"events.pos#1": T0}
    assert Meta.decode(meta.encode()) == meta
