"""The profile engine under the worker's commit protocol, with crashes at every step (no broker).

A history is what the identity stage hands over: resolved events keyed by
profile, and merges (source -> stronger target) forming a forest. However the
inputs are spread over partitions and batches, whenever a worker crashes and
replays, every final profile must equal the fold of exactly the events of
every profile merged into it (the cart aside: it is a running quantity).
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from pipeline.profile.engine import (
    META_KEY,
    PROFILE_PREFIX,
    EventIn,
    MergeIn,
    MessageIn,
    Meta,
    OutboxEntry,
    ProfileEngine,
    decode_record,
    profile_key,
)
from pipeline.profile.fold import fold_event
from pipeline.profile.limits import ProfileLimits
from pipeline.profile.state import ProfileState
from tests.profile.strategies import events

LIMITS = ProfileLimits()
Merge = tuple[str, str, str, str]
RESOLVED, MERGES, MESSAGES = "events.resolved", "identity.merges", "profile.messages"


class DictStore:
    """``PartitionStore`` in memory: survives an engine crash like RocksDB does."""

    def __init__(self) -> None:
        self.data: dict[int, dict[bytes, bytes]] = {}

    def raw(self, partition: int, key: bytes) -> bytes | None:
        return self.data.get(partition, {}).get(key)

    def items(self, partition: int, prefix: bytes = b"", start: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        for key in sorted(self.data.get(partition, {})):
            if key.startswith(prefix) and key >= start:
                yield key, self.data[partition][key]

    def write(self, partition: int, items: list[tuple[bytes, bytes | None]]) -> None:
        db = self.data.setdefault(partition, {})
        for key, value in items:
            if value is None:
                db.pop(key, None)
            else:
                db[key] = value


class Cluster:
    """One worker owning every partition, a broker of lists, committed offsets that may lag."""

    def __init__(self, partitions: int, rnd: random.Random) -> None:
        self.n = partitions
        self.rnd = rnd
        self.store = DictStore()
        self.topics: dict[str, list[list[Any]]] = {t: [[] for _ in range(partitions)]
                                                   for t in (RESOLVED, MERGES, MESSAGES)}
        self.committed: dict[tuple[str, int], int] = {}
        self.sent: list[OutboxEntry] = []  # every external output ever sent (duplicates included)
        self.engine = self._start()

    def partition_of(self, ref: str) -> int:
        return sum(ref.encode()) % self.n

    def _start(self) -> ProfileEngine:
        engine = ProfileEngine(LIMITS, self.partition_of, self.store, clock_ms=lambda: 0)
        for p in range(self.n):
            engine.assign(p)
        self.position = dict(self.committed)
        self._send(engine)  # the outbox a crash left behind
        return engine

    def _send(self, engine: ProfileEngine, crash_inside: bool = False) -> None:
        unsent = engine.unsent()
        if crash_inside and unsent:
            unsent = unsent[: self.rnd.randrange(len(unsent))]
        for _p, entry in unsent:
            if entry.dest == "messages":
                self.topics[MESSAGES][entry.partition].append(list(entry.value))
            else:
                self.sent.append(entry)
        if crash_inside:
            raise _Crash
        engine.acknowledge(unsent)

    def _read(self, limit: int) -> list[Any]:
        batch: list[Any] = []
        for topic, parts in self.topics.items():
            for p, records in enumerate(parts):
                start = self.position.get((topic, p), 0)
                for offset in range(start, min(len(records), start + limit)):
                    record = records[offset]
                    if topic == RESOLVED:
                        profile, inc, ev = record
                        batch.append(EventIn(topic, p, offset, profile, inc, ev, b""))
                    elif topic == MERGES:
                        batch.append(MergeIn(topic, p, offset, *record))
                    else:
                        batch.append(MessageIn(topic, p, offset, record))
                    self.position[(topic, p)] = offset + 1
        self.rnd.shuffle(batch)  # topics and partitions interleave freely (order within one is kept)
        batch.sort(key=lambda i: (i.topic, i.partition, i.offset))
        return batch

    def step(self, crash: str | None) -> bool:
        batch = self._read(self.rnd.randint(1, 6))
        try:
            self.engine.process(batch)
            if crash == "before_persist":
                raise _Crash
            for p, items in self.engine.take_changes().items():
                self.store.write(p, items)
            if crash == "before_send":
                raise _Crash
            self._send(self.engine, crash_inside=crash == "inside_send")
            if crash == "before_offsets":
                raise _Crash
            self.committed.update(self.position)
        except _Crash:
            self.engine = self._start()
        return bool(batch)

    def live(self) -> dict[str, ProfileState]:
        out = {}
        for p in range(self.n):
            for key, value in self.store.items(p, PROFILE_PREFIX):
                rec = decode_record(value)
                if rec.state is not None:
                    out[key[len(PROFILE_PREFIX):].decode()] = rec.state
        return out


class _Crash(Exception):
    pass


def comparable(state: ProfileState) -> ProfileState:
    return dataclasses.replace(state, cart={}, cart_changed_at=None, merged_from={})


@st.composite
def histories(draw: st.DrawFn) -> tuple[list[tuple[str, str, dict[str, Any]]], list[Merge]]:
    n = draw(st.integers(1, 7))
    profiles = [f"p{i}" for i in range(n)]
    merges = []
    for i in range(1, n):
        if draw(st.booleans()):
            merges.append((profiles[i], "", profiles[draw(st.integers(0, i - 1))], ""))
    evs = draw(events(40))
    resolved = [(draw(st.sampled_from(profiles)), "", ev) for ev in evs]
    return resolved, merges


def root_of(profile: str, merges: list[tuple[str, str, str, str]]) -> str:
    to = {s: t for s, _si, t, _ti in merges}
    while profile in to:
        profile = to[profile]
    return profile


@settings(max_examples=60, deadline=None, report_multiple_bugs=False,
          phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink])
@given(histories(), st.integers(1, 4), st.randoms(use_true_random=False),
       st.lists(st.sampled_from([None, None, None, "before_persist", "before_send", "inside_send",
                                 "before_offsets"]), min_size=1, max_size=30))
def test_every_profile_is_the_fold_of_its_events_despite_crashes(history: Any, partitions: int, rnd: Any,
                                                                 crashes: list[str | None]) -> None:
    resolved, merges = history
    cluster = Cluster(partitions, rnd)
    inputs: list[tuple[str, Any]] = [(RESOLVED, r) for r in resolved] + [(MERGES, m) for m in merges]
    rnd.shuffle(inputs)
    for i, (topic, record) in enumerate(inputs):  # ingested in the order they arrive
        if topic == RESOLVED:
            record[2]["ingest_time"] = 1_700_000_200_000 + i
    merged = {ref for s, _si, t, _ti in merges for ref in (s, t)}
    for topic, record in inputs:  # a redelivery upstream now and then: the memo drops it
        key = record[0]
        cluster.topics[topic][cluster.partition_of(key)].append(record)
        if topic == RESOLVED and key not in merged and rnd.random() < 0.1:
            cluster.topics[topic][cluster.partition_of(key)].append(record)
    steps = 0
    while True:
        crash = crashes[steps % len(crashes)] if steps < 4 * len(crashes) else None
        steps += 1
        if not cluster.step(crash) and crash is None and not cluster.engine.unsent():
            break
        assert steps < 2000
    expected: dict[str, ProfileState] = {root_of(s, merges): ProfileState() for s, *_ in merges}
    for profile, _inc, ev in resolved:
        fold_event(expected.setdefault(root_of(profile, merges), ProfileState()), ev, LIMITS)
    live = cluster.live()
    assert {p: comparable(s) for p, s in live.items()} == {p: comparable(s) for p, s in expected.items()}
    for root, state in live.items():
        assert set(state.merged_from) == {s for s, *_ in merges if root_of(s, merges) == root}
    for p in range(partitions):  # the gauges' figures, kept in meta, agree with what is stored
        meta = Meta.decode(cluster.store.raw(p, META_KEY) or Meta().encode())
        stored = list(cluster.store.items(p, PROFILE_PREFIX))
        assert meta.live == sum(1 for _k, v in stored if decode_record(v).state is not None)
        assert meta.stored_bytes == sum(len(k) + len(v) for k, v in stored)


def _engine() -> tuple[ProfileEngine, DictStore]:
    store = DictStore()
    engine = ProfileEngine(LIMITS, lambda ref: 0, store, clock_ms=lambda: 0)
    engine.assign(0)
    return engine, store


def _ev(eid: str, kind: str, t: int = 1000, **fields: Any) -> dict[str, Any]:
    return {"event_id": eid, "event_time": t, "channel": "WEB", "type": kind, "customer_id": "C1",
            "items": [], **fields}


def _run(engine: ProfileEngine, store: DictStore, inputs: list[Any]) -> list[OutboxEntry]:
    engine.process(inputs)
    for p, items in engine.take_changes().items():
        store.write(p, items)
    out = engine.unsent()
    engine.acknowledge(out)
    return [e for _p, e in out]


def test_erasure_deletes_the_profile_and_forwarders_and_later_events_start_fresh() -> None:
    engine, store = _engine()
    consent = _ev("c", "consent_change", channel=None, consent_channel="EMAIL", consent_purpose="marketing",
                  consent_granted=True)
    out = _run(engine, store, [
        EventIn(RESOLVED, 0, 0, "dev:D1", "", _ev("1", "page_view", device_id="D1"), b""),
        EventIn(RESOLVED, 0, 1, "cust:C1", "", consent, b""),
        MergeIn(MERGES, 0, 0, "dev:D1", "", "cust:C1", ""),
    ])
    transfer = [e for e in out if e.dest == "messages"]
    out = _run(engine, store, [MessageIn(MESSAGES, 0, 0, transfer[0].value)])
    assert engine.peek("cust:C1").state.events == 2  # type: ignore[union-attr]
    erasure = _ev("x", "erasure_request", t=2000)
    out = _run(engine, store, [EventIn(RESOLVED, 0, 2, "cust:C1", "", erasure, b"")])
    erase = [e for e in out if e.dest == "messages"]
    done = [e for e in out if e.dest == "erasures"]
    assert [e.value["profiles_erased"] for e in done] == [2] and done[0].value["found"]
    _run(engine, store, [MessageIn(MESSAGES, 0, 1, erase[0].value)])
    assert store.raw(0, profile_key("cust:C1")) is None and store.raw(0, profile_key("dev:D1")) is None
    assert not list(store.items(0, b"p/"))  # nothing readable is left
    late = _run(engine, store, [EventIn(RESOLVED, 0, 3, "cust:C1", "", _ev("0", "page_view", t=1500), b"")])
    assert getattr(engine.peek("cust:C1"), "state", None) is None and not late  # the erased past: dropped
    assert not any(b"C1" in k for k, _v in store.items(0))  # the erasure marker is a keyed hash
    _run(engine, store, [EventIn(RESOLVED, 0, 4, "cust:C1", "", _ev("2", "page_view", t=3000), b"")])
    fresh = engine.peek("cust:C1").state  # type: ignore[union-attr]
    assert fresh is not None and fresh.events == 1 and fresh.consent == {}


def test_rejected_event_becomes_a_dead_letter_and_the_profile_is_untouched() -> None:
    engine, store = _engine()
    _run(engine, store, [EventIn(RESOLVED, 0, 0, "cust:C1", "", _ev("1", "page_view"), b"")])
    before = store.raw(0, profile_key("cust:C1"))
    out = _run(engine, store, [EventIn(RESOLVED, 0, 1, "cust:C1", "", _ev("2", "purchase", amount=-1.0),
                                       b"payload")])
    assert [(e.dest, e.value["reason"], e.value["value"]) for e in out] == [
        ("dlq", "invalid_amount", b"payload")]
    assert store.raw(0, profile_key("cust:C1")) == before


@pytest.mark.parametrize("replays", [1, 3])
def test_a_replayed_input_offset_is_skipped(replays: int) -> None:
    engine, store = _engine()
    item = EventIn(RESOLVED, 0, 0, "cust:C1", "", _ev("1", "store_purchase", amount=5.0, currency="EUR"), b"")
    _run(engine, store, [item])
    for _ in range(replays):
        engine2 = ProfileEngine(LIMITS, lambda ref: 0, store, clock_ms=lambda: 0)
        engine2.assign(0)
        counts = engine2.process([dataclasses.replace(item, event={**item.event, "event_id": "other"})])
        assert counts.skipped_replays == 1
    assert engine.peek("cust:C1").state.orders_store == 1  # type: ignore[union-attr]
