"""The engine under the worker's commit protocol: several workers, shared durable stores, crashes, rebalances.

``Deployment`` models what ``runner.py`` does with an ``IdentityEngine`` per
worker, with in-memory logs standing in for Kafka:

* input events enter as ``Observe`` at partition ``partition_of(event.key)``
  of the input topic; messages for other workers go to the same partition of
  the messages topic (two logs per partition, read with independent offsets).
  One space-independent hash for every keyspace, as in production, where an
  identifier, its cluster and its profile are co-partitioned. Producer
  retries append extra copies of inputs;
* a worker reads batches (random sizes, its logs interleaved at random, each
  log in order) and commits now and then: (1) publish resolved events and
  audit facts, (2) persist ``take_dirty()`` into the partition's durable
  store (one per partition, shared by whoever owns it next; records are
  serialised in and out, as the changelog does), (3) append the remote
  messages to their logs, (4) advance the consumer offsets;
* a crash loses the engine and everything not committed. It may stop the
  commit before (1), before (2), between (2) and (3) (state persisted, remote
  messages lost), or inside (3) (some remote messages out). The worker
  restarts from the committed offsets, or the group gives its partitions to
  the others;
* a rebalance moves a partition: the old owner commits, revokes, the new
  owner assigns and reads from the committed offsets.

Run to quiescence, the durable stores must hold what the reference model
decides, and what was published must cover it.

A crash between (2) and (3) once left an outbox entry nothing would ever
re-send (``test_a_crash_between_persisting_and_sending_strands_an_outbox``):
an acknowledgement delivered in memory had cleared it. Confirmations now
always go through the broker (``engine.BROKER_ONLY``), and the exact-state
property runs with every crash point.

A crash *inside* (2), when the changelog holds some of a commit's records and
not others, is the same as a crash before (2) here: restores skip records of
a commit without a completion mark (``tests/identity/test_store.py``).
"""

from __future__ import annotations

import pickle
import random
import zlib
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.identity.engine import BROKER_ONLY, BatchOutput, IdentityEngine, RecordKey, ResolvedEvent
from pipeline.identity.messages import Leave, Message, Observe, Space
from pipeline.identity.model import (
    INITIAL,
    Incarnation,
    Limits,
    LinkEvent,
    MergeDecision,
    Ref,
    Refusal,
    RefusalReason,
)
from pipeline.identity.reference import invert, reference_grouping
from pipeline.identity.state import ClusterRecord, IdentifierRecord, ProfileRecord, Record

from .histories import LIMITS, histories

History = list[dict[str, Any]]
Partitioner = Callable[[Ref], int]
Log = tuple[str, int]  # (topic, partition)

INPUT, MESSAGES = "events.canonical", "identity.messages"
TOPICS = (INPUT, MESSAGES)
SAFE_CRASH_POINTS = ("before_publish", "before_persist")  # nothing persisted
CRASH_POINTS = (*SAFE_CRASH_POINTS, "before_remote", "mid_remote")  # state persisted, messages (partly) lost


def crc_partitioner(partitions: int) -> Partitioner:
    """Space-independent and stable across processes: identifier, cluster and profile of a ref meet."""

    def partition_of(ref: Ref) -> int:
        return zlib.crc32(ref.encode()) % partitions

    return partition_of


def payload(event_id: str) -> bytes:
    return f"canonical record of {event_id}".encode()


def observe(event: dict[str, Any]) -> Observe:
    return Observe(LinkEvent.from_canonical(event), payload=payload(event["event_id"]))


# =========================================================================== the durable side
class DurableStore:
    """Each partition's changelog + RocksDB: shared by every owner, records serialised in and out."""

    _TYPES = {Space.IDENT: IdentifierRecord, Space.CLUSTER: ClusterRecord, Space.PROFILE: ProfileRecord}

    def __init__(self, partitions: int, partition_of: Partitioner) -> None:
        self.tables: list[dict[RecordKey, bytes]] = [{} for _ in range(partitions)]
        self.partition_of = partition_of

    def load(self, partition: int, space: Space, ref: Ref) -> Record | None:
        blob = self.tables[partition].get((space, ref))
        return None if blob is None else pickle.loads(blob)  # type: ignore[no-any-return]

    def persist(self, partition: int, key: RecordKey, rec: Record) -> None:
        space, ref = key
        assert self.partition_of(ref) == partition, f"{key} persisted at partition {partition}"
        assert rec.ref == ref and type(rec) is self._TYPES[space], f"{key} persisted as {rec!r}"
        self.tables[partition][key] = pickle.dumps(rec)

    def records(self, space: Space) -> Iterator[Record]:
        for table in self.tables:
            for (s, _), blob in table.items():
                if s is space:
                    yield pickle.loads(blob)

    def identifiers(self) -> list[IdentifierRecord]:
        return [r for r in self.records(Space.IDENT) if isinstance(r, IdentifierRecord)]

    def clusters(self) -> list[ClusterRecord]:
        return [r for r in self.records(Space.CLUSTER) if isinstance(r, ClusterRecord)]

    def profiles(self) -> dict[Ref, ProfileRecord]:
        return {r.ref: r for r in self.records(Space.PROFILE) if isinstance(r, ProfileRecord)}

    # the readings of simulation.py, over the durable records
    def grouping(self) -> dict[Ref, Ref]:
        return {rec.ref: rec.profile for rec in self.identifiers()}

    def refusals(self) -> list[Refusal]:
        storms = (rec.storm_refusal for rec in self.identifiers())
        return sorted([*(r for rec in self.clusters() if rec.is_root for r in rec.refusals),
                       *(r for r in storms if r is not None)])

    def folded(self) -> dict[str, list[tuple[Ref, Incarnation]]]:
        where: dict[str, list[tuple[Ref, Incarnation]]] = {}
        for rec in self.profiles().values():
            for inc, events in rec.folded.items():
                for event_id in events:
                    where.setdefault(event_id, []).append((rec.ref, inc))
        return where

    def pending(self) -> list[str]:
        """Outbox entries still waiting for an acknowledgement (``simulation.pending``), readably."""
        out = [f"{r.ref}: leave {sorted(r.pending_leave)} unfollow {sorted(r.pending_unfollow)}"
               for r in self.identifiers() if r.pending_leave or r.pending_unfollow]
        out += [f"cluster {c.ref} (forwarded to {c.forwarded_to}): assign {sorted(c.assign_outbox)} "
                f"end {sorted(c.end_outbox)} transfer {c.transfer is not None}"
                for c in self.clusters() if c.assign_outbox or c.end_outbox or c.transfer is not None]
        return out + [f"profile {p.ref}: handover {sorted(p.outbox)}"
                      for p in self.profiles().values() if p.outbox]


# =========================================================================== the workers
@dataclass
class Worker:
    engine: IdentityEngine
    owned: set[int] = field(default_factory=set)
    position: dict[Log, int] = field(default_factory=dict)  # next offset to read, per owned log
    resolved: list[ResolvedEvent] = field(default_factory=list)  # everything below: not yet committed
    merges: list[MergeDecision] = field(default_factory=list)
    refusals: list[Refusal] = field(default_factory=list)
    remote: list[tuple[int, Message]] = field(default_factory=list)
    uncommitted: bool = False


@dataclass
class Stats:
    batches: int = 0
    commits: int = 0
    crashes: Counter[str] = field(default_factory=Counter)
    rebalances: int = 0
    takeovers: int = 0
    retried_inputs: int = 0
    local: Counter[str] = field(default_factory=Counter)
    remote: Counter[str] = field(default_factory=Counter)


class Deployment:
    """N workers, P partitions (two logs each), one durable store per partition; faults are the caller's."""

    def __init__(self, workers: int, partitions: int, limits: Limits, rng: random.Random, *,
                 max_cached: int = 200_000, partition_of: Partitioner | None = None,
                 owners: list[int] | None = None) -> None:
        self.partitions = partitions
        self.partition_of = partition_of or crc_partitioner(partitions)
        self.limits = limits
        self.rng = rng
        self.max_cached = max_cached
        self.store = DurableStore(partitions, self.partition_of)
        self.logs: dict[Log, list[Message]] = {(t, p): [] for t in TOPICS for p in range(partitions)}
        self.committed: dict[Log, int] = dict.fromkeys(self.logs, 0)
        self.workers = [Worker(self._engine()) for _ in range(workers)]
        for p in range(partitions):  # owners: partition -> worker index (default: at random)
            self._assign(self.workers[owners[p] if owners else rng.randrange(workers)], p)
        self.published_resolved: list[ResolvedEvent] = []
        self.published_merges: list[MergeDecision] = []
        self.published_refusals: set[Refusal] = set()
        self.stats = Stats()

    def _engine(self) -> IdentityEngine:
        return IdentityEngine(self.limits, self.partition_of, self.store, max_cached=self.max_cached)

    def _assign(self, worker: Worker, p: int) -> None:
        worker.engine.assign(p)
        worker.owned.add(p)
        for topic in TOPICS:
            worker.position[(topic, p)] = self.committed[(topic, p)]

    def _revoke(self, worker: Worker, p: int) -> None:
        worker.engine.revoke(p)
        worker.owned.discard(p)
        for topic in TOPICS:
            del worker.position[(topic, p)]

    def owner(self, p: int) -> Worker:
        (w,) = [w for w in self.workers if p in w.owned]
        return w

    def produce(self, msg: Observe) -> None:
        self.logs[(INPUT, self.partition_of(msg.key))].append(msg)

    def unread(self, w: Worker) -> int:
        return sum(len(self.logs[log]) - pos for log, pos in w.position.items())

    # ------------------------------------------------------------------ one worker
    def step(self, w: Worker, max_batch: int | None = None) -> BatchOutput:
        """Read a batch (up to ``max_batch`` next records per log; None: all) and process it."""
        rng = self.rng
        chunks: list[deque[Message]] = []
        for log, pos in w.position.items():
            available = len(self.logs[log]) - pos
            k = available if max_batch is None else rng.randint(0, min(max_batch, available))
            if k:
                chunks.append(deque(self.logs[log][pos:pos + k]))
                w.position[log] = pos + k
        batch: list[Message] = []
        while chunks:
            chunk = rng.choice(chunks)
            batch.append(chunk.popleft())
            if not chunk:
                chunks.remove(chunk)
        out = w.engine.process(batch)
        for p, msg in out.remote:
            assert p == self.partition_of(msg.key), f"{msg} sent to {p}"
            assert p not in w.owned or type(msg) in BROKER_ONLY, f"{msg} sent to own {p}"
        for ev in out.resolved:
            assert ev.payload == payload(ev.event_id), "the payload did not travel with the event"
        w.resolved += out.resolved
        w.merges += out.merges
        w.refusals += out.refusals
        w.remote += out.remote
        w.uncommitted = True
        self.stats.batches += 1
        self.stats.local.update(out.counts.local)
        self.stats.remote.update(out.counts.remote)
        return out

    def commit(self, w: Worker, crash: str | None = None) -> None:
        """The runner's commit, steps (1)-(4); ``crash`` stops it at that point and restarts the worker."""
        if crash == "before_publish":
            return self.restart(w)
        self.published_resolved += w.resolved  # (1) idempotent outputs
        self.published_merges += w.merges
        self.published_refusals.update(w.refusals)
        if crash == "before_persist":
            return self.restart(w)
        for p, key, rec in w.engine.take_dirty():  # (2) changelog + RocksDB
            self.store.persist(p, key, rec)
        remote = w.remote  # (3) messages for other workers
        if crash == "before_remote":
            remote = []
        elif crash == "mid_remote":
            remote = [m for m in remote if self.rng.random() < 0.5]
        for p, msg in remote:
            self.logs[(MESSAGES, p)].append(msg)
        if crash is not None:
            return self.restart(w)
        self.committed.update(w.position)  # (4) offsets
        w.engine.trim()
        w.resolved, w.merges, w.refusals, w.remote, w.uncommitted = [], [], [], [], False
        self.stats.commits += 1

    def restart(self, w: Worker) -> None:
        """A crash: a new engine (empty cache), nothing uncommitted kept, re-read from the offsets."""
        w.engine = self._engine()
        for p in w.owned:
            self._assign(w, p)
        w.resolved, w.merges, w.refusals, w.remote, w.uncommitted = [], [], [], [], False

    def crash(self, w: Worker, point: str, takeover: bool) -> None:
        self.stats.crashes[point] += 1
        self.commit(w, crash=point)
        others = [o for o in self.workers if o is not w]
        if takeover and others:  # the group gives the dead worker's partitions to the others
            for p in sorted(w.owned):
                self._revoke(w, p)  # a fresh engine: nothing unpersisted
                self._assign(self.rng.choice(others), p)
                self.stats.takeovers += 1

    def rebalance(self, p: int, dst: Worker) -> None:
        src = self.owner(p)
        if src is dst:
            return
        self.commit(src)  # on_revoke: commit, then revoke
        self._revoke(src, p)
        self._assign(dst, p)
        self.stats.rebalances += 1

    # ------------------------------------------------------------------ whole runs
    def run(self, inputs: list[Observe], actions: int, max_batch: int, crash_points: tuple[str, ...]) -> None:
        """Random interleaving of inputs, batches, commits, crashes, rebalances; then drain to quiescence."""
        rng = self.rng
        todo = deque(inputs)
        sent: list[Observe] = []
        for _ in range(actions):
            roll = rng.random()
            w = rng.choice(self.workers)
            if todo and roll < 0.3:
                sent.append(todo.popleft())
                self.produce(sent[-1])
            elif sent and roll < 0.33:  # a producer retry: the same input again
                self.produce(rng.choice(sent))
                self.stats.retried_inputs += 1
            elif roll < 0.75:
                self.step(w, max_batch)
            elif roll < 0.88:
                self.commit(w)
            elif roll < 0.95:
                self.crash(w, rng.choice(crash_points), takeover=rng.random() < 0.3)
            else:
                self.rebalance(rng.randrange(self.partitions), w)
        for msg in todo:
            self.produce(msg)
        self.settle()

    def settle(self, crash: Callable[[Worker], str | None] = lambda w: None, max_rounds: int = 500) -> None:
        """Every worker reads all it owns and commits (``crash`` may pick a crash point), until quiescent."""
        for _ in range(max_rounds):
            if not any(w.uncommitted or self.unread(w) for w in self.workers):
                assert all(self.committed[log] == len(entries) for log, entries in self.logs.items())
                assert all(not list(w.engine.take_dirty()) for w in self.workers)
                return
            for w in self.workers:
                if self.unread(w):
                    self.step(w)
                if w.uncommitted:
                    point = crash(w)
                    if point is None:
                        self.commit(w)
                    else:
                        self.crash(w, point, takeover=False)
        raise AssertionError(f"no quiescence after {max_rounds} rounds")


# =========================================================================== 1. the properties
def check_engine_against_reference(history: History, limits_spec: dict[str, int] | None, workers: int,
                                   partitions: int, seed: int, max_batch: int, max_cached: int,
                                   crash_points: tuple[str, ...], exact: bool = True) -> Deployment:
    """Run ``history`` through a faulty deployment; ``exact``: check the durable state, not only outputs."""
    rng = random.Random(seed)
    order = list(history)
    rng.shuffle(order)
    limits = Limits.of(limits_spec)
    deployment = Deployment(workers, partitions, limits, rng, max_cached=max_cached)
    deployment.run([observe(e) for e in order], actions=rng.randint(len(order), 6 * len(order) + 10),
                   max_batch=max_batch, crash_points=crash_points)
    store = deployment.store
    reference = reference_grouping(history, limits)
    grouping = reference.grouping()
    event_ids = {e["event_id"] for e in history}

    assert store.grouping() == grouping
    final_refusals = store.refusals()
    assert final_refusals == reference.refusals()
    missing = set(final_refusals) - deployment.published_refusals
    assert not missing, f"final refusals never published: {missing}"
    assert {ev.event_id for ev in deployment.published_resolved} == event_ids, "an event was never published"
    profiles = store.profiles()
    durable_merges = {m for rec in profiles.values() for m in rec.merges}
    assert durable_merges <= set(deployment.published_merges), "a persisted merge was never published"
    if not exact:
        return deployment

    folded = store.folded()
    assert folded.keys() == event_ids, "an event was lost"
    assert all(len(places) == 1 for places in folded.values()), f"an event was counted twice: {folded}"
    for event_id, [(profile, inc)] in folded.items():
        assert inc not in profiles[profile].ended, f"{event_id} left in an ended incarnation"
    # the last publication of each event leads, through ended incarnations, to where it is folded
    last = {ev.event_id: (ev.profile, ev.incarnation) for ev in deployment.published_resolved}
    for event_id, (profile, inc) in last.items():
        for _ in range(len(profiles) + 1):
            if inc not in profiles[profile].ended:
                break
            profile, inc = profiles[profile].ended[inc]
        assert [(profile, inc)] == folded[event_id], f"{event_id} last published where it does not lead"
    members = invert(grouping)
    for rec in profiles.values():
        assert rec.identifiers() == members.get(rec.ref, frozenset()) or (
            rec.ref not in members and rec.forwarded_to is not None), f"{rec.ref} lists {rec.identifiers()}"
    assert not store.pending(), f"outboxes still waiting for an acknowledgement: {store.pending()}"
    return deployment


DEPLOYMENTS: dict[str, Any] = dict(
    history=histories, limits=LIMITS, workers=st.integers(1, 3), partitions=st.integers(1, 8),
    seed=st.integers(0, 2**32 - 1), max_batch=st.sampled_from([1, 3, 20]),
    max_cached=st.sampled_from([0, 8, 200_000]))


@settings(max_examples=300, deadline=None)
@given(**DEPLOYMENTS)
def test_the_engine_under_the_commit_protocol_agrees_with_the_reference(
        history: History, limits: dict[str, int] | None, workers: int, partitions: int, seed: int,
        max_batch: int, max_cached: int) -> None:
    check_engine_against_reference(history, limits, workers, partitions, seed, max_batch, max_cached,
                                   CRASH_POINTS)


@settings(max_examples=100, deadline=None)
@given(**DEPLOYMENTS)
def test_crashes_before_anything_is_persisted_are_harmless(
        history: History, limits: dict[str, int] | None, workers: int, partitions: int, seed: int,
        max_batch: int, max_cached: int) -> None:
    check_engine_against_reference(history, limits, workers, partitions, seed, max_batch, max_cached,
                                   SAFE_CRASH_POINTS)


# =========================================================================== 2. single batches
class DictSource:
    """A ``RecordSource`` over plain dicts (what a worker's RocksDB is to the engine)."""

    def __init__(self) -> None:
        self.records: dict[tuple[int, Space, Ref], Record] = {}

    def load(self, partition: int, space: Space, ref: Ref) -> Record | None:
        rec = self.records.get((partition, space, ref))
        return None if rec is None else pickle.loads(pickle.dumps(rec))  # type: ignore[no-any-return]

    def persist(self, engine: IdentityEngine) -> int:
        n = 0
        for p, (space, ref), rec in engine.take_dirty():
            self.records[(p, space, ref)] = pickle.loads(pickle.dumps(rec))
            n += 1
        return n


LOGIN = {"event_id": "login", "event_time": 10, "customer_id": "C", "anonymous_id": "x"}
BROWSE = {"event_id": "browse", "event_time": 5, "anonymous_id": "x"}
PARTS = {"cust:C": 0, "anon:x": 1}  # a customer and a cookie on different partitions


def engine_owning(partitions: list[int], source: DictSource | None = None, limits: Limits | None = None,
                  partition_of: Partitioner = PARTS.__getitem__) -> IdentityEngine:
    engine = IdentityEngine(limits or Limits(), partition_of, source or DictSource())
    for p in partitions:
        engine.assign(p)
    return engine


# what a login costs: resolve at the customer, the cookie follows it, joins its listing, ends its own profile
LOGIN_DELIVERIES = Counter({"Observe": 1, "Resolved": 1, "Sighting": 1, "Follow": 1, "Resolution": 1,
                            "Member": 1, "Leave": 1, "LeaveAck": 1, "ProfileEnd": 1})
# of those, outbox messages and confirmations go through the broker even between partitions one worker owns
LOGIN_VIA_BROKER = Counter({"Resolution": 1, "Leave": 1, "LeaveAck": 1, "ProfileEnd": 1})


def settle(engine: IdentityEngine, out: BatchOutput, source: DictSource | None = None) -> BatchOutput:
    """Feed a lone worker's broker-bound messages back to it (after persisting, as the runner does)."""
    total = out
    while out.remote:
        assert all(engine.owns(p) and type(m) in BROKER_ONLY for p, m in out.remote)
        if source is not None:
            source.persist(engine)
        out = engine.process([m for _, m in out.remote])
        total.resolved += out.resolved
        total.merges += out.merges
        total.refusals += out.refusals
        total.counts.local += out.counts.local
        total.counts.remote += out.counts.remote
        total.counts.created += out.counts.created
        total.counts.events += out.counts.events
        total.counts.resolved += out.counts.resolved
        total.counts.forwarded += out.counts.forwarded
        total.counts.links += out.counts.links
        total.counts.merges += out.counts.merges
        total.counts.refusals += out.counts.refusals
    total.remote = []
    return total


def test_a_worker_owning_every_partition_handles_a_login_in_one_call() -> None:
    source = DictSource()
    engine = engine_owning([0, 1], source)
    first = engine.process([observe(LOGIN)])
    assert [type(m).__name__ for _, m in first.remote] == ["Resolution"]  # the rest waits for it
    out = settle(engine, first, source)

    assert out.resolved == [ResolvedEvent("cust:C", INITIAL, "login", payload("login"))]
    assert out.merges == [MergeDecision("anon:x", INITIAL, "cust:C", INITIAL)]  # the cookie's own profile
    assert out.refusals == []
    counts = out.counts
    assert (counts.events, counts.resolved, counts.forwarded, counts.links, counts.merges) == (1, 1, 0, 0, 1)
    assert counts.refusals == Counter()
    assert counts.local == LOGIN_DELIVERIES and counts.remote == LOGIN_VIA_BROKER
    assert counts.created == Counter({(0, Space.IDENT): 1, (0, Space.PROFILE): 1,
                                      (1, Space.IDENT): 1, (1, Space.PROFILE): 1})

    source.persist(engine)
    assert len(source.records) == 4
    ident = source.load(1, Space.IDENT, "anon:x")
    assert isinstance(ident, IdentifierRecord)
    assert (ident.profile, ident.target, ident.via, ident.pending_leave) == ("cust:C", "cust:C", "cust:C", {})
    profile = source.load(0, Space.PROFILE, "cust:C")
    assert isinstance(profile, ProfileRecord)
    assert profile.identifiers() == {"cust:C", "anon:x"} and profile.folded == {INITIAL: {"login"}}
    assert engine.peek(Space.IDENT, "anon:x") == ident

    again = settle(engine, engine.process([observe(LOGIN)]))  # a redelivery: resolved the same way
    assert again.resolved == out.resolved and again.counts.created == Counter()
    assert again.counts.events == 1 and again.merges == []


def test_the_cookies_earlier_browsing_is_handed_over_to_the_customer() -> None:
    source = DictSource()
    engine = engine_owning([0, 1], source)
    first = engine.process([observe(BROWSE)])
    assert first.resolved == [ResolvedEvent("anon:x", INITIAL, "browse", payload("browse"))]
    out = settle(engine, engine.process([observe(LOGIN)]), source)
    assert out.resolved == [ResolvedEvent("cust:C", INITIAL, "login", payload("login"))]
    assert out.counts.local == LOGIN_DELIVERIES + Counter({"Handover": 1, "HandoverAck": 1})
    assert out.counts.remote == LOGIN_VIA_BROKER + Counter({"Handover": 1, "HandoverAck": 1})
    source.persist(engine)
    customer, cookie = source.load(0, Space.PROFILE, "cust:C"), source.load(1, Space.PROFILE, "anon:x")
    assert isinstance(customer, ProfileRecord) and isinstance(cookie, ProfileRecord)
    assert customer.folded == {INITIAL: {"login", "browse"}}
    assert cookie.folded == {} and cookie.outbox == {} and cookie.forwarded_to == "cust:C"

    late = engine.process([observe({**BROWSE, "event_id": "late", "event_time": 1})])  # follows the merge
    assert late.resolved == [ResolvedEvent("cust:C", INITIAL, "late", payload("late"))]
    assert late.counts.forwarded == 0  # the cookie resolves to the customer at once, no hop


def test_two_workers_exchange_exactly_the_messages_for_each_others_partitions() -> None:
    source = DictSource()
    workers = [engine_owning([0], source), engine_owning([1], source)]
    inbox: list[list[Message]] = [[observe(LOGIN)], []]
    resolved: list[ResolvedEvent] = []
    local: Counter[str] = Counter()
    remote: Counter[str] = Counter()
    rounds = 0
    while any(inbox):
        rounds += 1
        assert rounds < 20
        for i, engine in enumerate(workers):
            batch, inbox[i] = inbox[i], []
            out = engine.process(batch)
            other = 1 - i
            for p, msg in out.remote:
                assert workers[other].owns(p) or type(msg) in BROKER_ONLY
                inbox[p].append(msg)
            resolved += out.resolved
            local += out.counts.local
            remote += out.counts.remote
            source.persist(engine)
    assert resolved == [ResolvedEvent("cust:C", INITIAL, "login", payload("login"))]
    # the customer's worker sends the cookie's worker a Sighting and a Resolution, and gets back a Follow and
    # a Member; the LeaveAck (a confirmation) goes through the broker too, though its own worker takes it;
    # every message is still delivered exactly once, as on one worker
    assert remote == Counter({"Sighting": 1, "Follow": 1, "Member": 1}) + LOGIN_VIA_BROKER
    assert local == LOGIN_DELIVERIES
    ident = source.load(1, Space.IDENT, "anon:x")
    assert isinstance(ident, IdentifierRecord) and ident.profile == "cust:C"


def test_a_card_already_linked_to_a_customer_is_refused_to_another() -> None:
    engine = engine_owning(list(range(4)), partition_of=crc_partitioner(4))
    first = settle(engine, engine.process([observe({"event_id": "e1", "event_time": 1, "customer_id": "C1",
                                                    "loyalty_card": "K"})]))
    assert first.counts.links == 1 and first.counts.refusals == Counter()
    assert first.merges == [MergeDecision("card:K", INITIAL, "cust:C1", INITIAL)]
    second = settle(engine, engine.process([observe({"event_id": "e2", "event_time": 2, "customer_id": "C2",
                                                     "loyalty_card": "K"})]))
    assert second.counts.refusals == Counter({"card_owned": 1})
    assert second.refusals == [
        Refusal(2, "e2", "card:K", "cust:C2", "cust:C1", RefusalReason.CARD_OWNED, "card")]
    assert second.merges == [] and second.counts.merges == 0
    assert second.resolved == [ResolvedEvent("cust:C2", INITIAL, "e2", payload("e2"))]
    card = engine.peek(Space.IDENT, "card:K")
    assert isinstance(card, IdentifierRecord) and card.profile == "cust:C1"
    created = second.counts.created
    assert sum(created.values()) == 3 and {space for _, space in created} == {Space.IDENT, Space.CLUSTER,
                                                                             Space.PROFILE}


def test_revoking_a_partition_with_unpersisted_records_raises() -> None:
    source = DictSource()
    engine = engine_owning([0, 1], source)
    engine.process([observe(LOGIN)])
    with pytest.raises(RuntimeError, match="unpersisted"):
        engine.revoke(0)

    engine = engine_owning([0, 1], source)
    engine.process([observe(LOGIN)])
    source.persist(engine)
    engine.revoke(0)
    assert not engine.owns(0) and engine.owns(1)
    out = engine.process([observe(LOGIN)])  # the customer's records now belong to another worker
    assert [type(m).__name__ for _, m in out.remote] == ["Observe"] and out.resolved == []


def test_a_storm_refusal_moved_earlier_by_a_late_sighting_is_published_again() -> None:
    """Regression: only the first storm refusal was published, never the one the reference keeps."""
    engine = engine_owning([0], limits=Limits(roaming_fanout=1), partition_of=lambda ref: 0)
    published: list[Refusal] = []
    events = [{"event_id": "a", "event_time": 2, "customer_id": "C0", "anonymous_id": "bot"},
              {"event_id": "b", "event_time": 3, "customer_id": "C1", "anonymous_id": "bot"},
              {"event_id": "c", "event_time": 1, "customer_id": "C2", "anonymous_id": "bot"}]
    for event in events:
        published += engine.process([observe(event)]).refusals
    final = reference_grouping(events, {"roaming_fanout": 1}).refusals()
    assert final == [Refusal(2, "a", "anon:bot", "cust:C0", "anon:bot", RefusalReason.ROAMING_FANOUT, "anon")]
    assert published[-1:] == final


# =========================================================================== regressions
def test_a_crash_between_persisting_and_sending_strands_an_outbox() -> None:
    """Two customers claim a phone; the later claim arrives first; one crash between steps (2) and (3).

    Worker 0 owns cust:C2 and phone:P, worker 1 owns cust:C3. When e2 (earlier in
    event time) makes C2 the phone's owner, root C2 assigns P, P sends Leave to
    its old profile C3 (remote). With everything delivered in memory, the
    AssignAck came back at once; the crash persisted all of that but lost the
    Leave, and the replayed input (the ClusterTransfer at C2) found the Assign
    acknowledged and re-sent nothing to P: P's Leave stayed pending for ever
    and C3 kept listing the phone.
    """
    parts = {"cust:C2": 0, "phone:P": 0, "cust:C3": 1}
    d = Deployment(2, 2, Limits(), random.Random(0), partition_of=parts.__getitem__, owners=[0, 1])
    d.produce(observe({"event_id": "e1", "event_time": 2, "customer_id": "C3", "phone_hash": "P"}))
    d.settle()
    d.produce(observe({"event_id": "e2", "event_time": 1, "customer_id": "C2", "phone_hash": "P"}))
    crashed: list[Worker] = []

    def crash_once_when_a_leave_is_outgoing(w: Worker) -> str | None:
        if crashed or not any(isinstance(m, Leave) for _, m in w.remote):
            return None
        crashed.append(w)
        return "before_remote"

    d.settle(crash=crash_once_when_a_leave_is_outgoing)
    assert crashed
    assert d.store.grouping() == {"cust:C2": "cust:C2", "phone:P": "cust:C2", "cust:C3": "cust:C3"}  # right
    assert d.store.profiles()["cust:C3"].identifiers() == {"cust:C3"}  # listed phone:P
    assert not d.store.pending()  # phone:P: leave ['cust:C3']


def test_a_crash_between_persisting_and_sending_leaves_no_transfer_waiting() -> None:
    """One link event, one worker, one crash between steps (2) and (3).

    The Join makes card:K's cluster join cust:C1's; with the ClusterTransfer
    delivered in memory and only its acknowledgement through the broker, the
    crash persisted the transfer as absorbed (and card:K adopted by C1) but lost
    the acknowledgement. The replayed event's Join then finds card:K already in
    C1's cluster and sends no Union, so nothing ever touched card:K's cluster
    record again and its transfer stayed pending for ever.
    """
    d = Deployment(1, 1, Limits(), random.Random(0), partition_of=lambda ref: 0, owners=[0])
    d.produce(observe({"event_id": "e1", "event_time": 1, "customer_id": "C1", "loyalty_card": "K"}))
    crashed: list[Worker] = []

    def crash_at_the_first_commit(w: Worker) -> str | None:
        if crashed:
            return None
        crashed.append(w)
        return "before_remote"

    d.settle(crash=crash_at_the_first_commit)
    assert crashed and d.store.grouping() == {"cust:C1": "cust:C1", "card:K": "cust:C1"}
    assert not d.store.pending()  # cluster card:K (forwarded to cust:C1): transfer True


def test_each_link_request_is_counted_once() -> None:
    engine = engine_owning(list(range(4)), partition_of=crc_partitioner(4))
    links = 0
    for event in [{"event_id": "e1", "event_time": 1, "customer_id": "C1", "loyalty_card": "K"},
                  {"event_id": "e2", "event_time": 2, "customer_id": "C2", "loyalty_card": "K"}]:
        links += settle(engine, engine.process([observe(event)])).counts.links
    assert links == 2  # was 3: e2's request was counted at root C2, then again at C1 after the transfer


def test_each_refusal_is_counted_once() -> None:
    engine = engine_owning(list(range(4)), partition_of=crc_partitioner(4))
    counted: Counter[str] = Counter()
    events = [{"event_id": "e1", "event_time": 1, "customer_id": "C2", "loyalty_card": "K"},
              {"event_id": "e2", "event_time": 2, "customer_id": "C3", "loyalty_card": "K"},  # card_owned
              {"event_id": "e3", "event_time": 3, "customer_id": "C1", "email_hash": "m"},
              {"event_id": "e4", "event_time": 4, "customer_id": "C3", "email_hash": "m"}]  # email_owned
    for event in events:
        counted += settle(engine, engine.process([observe(event)])).counts.refusals
    assert len(reference_grouping(events).refusals()) == 2
    assert counted == Counter({"card_owned": 1, "email_owned": 1})  # card_owned was 2: again at root C1


# =========================================================================== regression
# rules.py once ordered a cookie's Follow/Unfollow by its event-time clock: a Follow and an earlier
# Unfollow of one target could carry the same clock, and the Unfollow won the tie. Now a move counter.
def test_a_cookie_that_comes_back_to_a_target_without_a_newer_stamp_still_follows_it() -> None:
    """Five events, one worker, no fault: the cookie ends on the card's stale profile.

    x's clock is the max of its two registers, pinned at d's stamp by the
    device sighting (latest in event time, first to arrive). x then follows K,
    C, and K again: Unfollow(K, clock d) and the later Follow(K, clock d) tie,
    on_unfollow takes ties and on_follow does not, so K keeps x as an inactive
    follower and never pushes its new profile. The pure simulation
    (``simulation.py``, no faults, any partition count) shows the same.
    """
    events = [{"event_id": "d", "event_time": 30, "device_id": "D", "anonymous_id": "x"},
              {"event_id": "k1", "event_time": 9, "loyalty_card": "K", "anonymous_id": "x"},
              {"event_id": "c", "event_time": 12, "customer_id": "C", "anonymous_id": "x"},
              {"event_id": "k2", "event_time": 13, "loyalty_card": "K", "anonymous_id": "x"},
              {"event_id": "link", "event_time": 14, "customer_id": "C2", "loyalty_card": "K"}]
    d = Deployment(1, 1, Limits(), random.Random(0), partition_of=lambda ref: 0, owners=[0])
    for event in events:  # in this arrival order, each settled before the next
        d.produce(observe(event))
        d.settle()
    assert reference_grouping(events).grouping()["anon:x"] == "cust:C2"  # x's latest stable event: k2 -> K
    assert d.store.grouping()["anon:x"] == "cust:C2"  # is card:K


def test_an_erased_profile_and_every_identifier_it_lists_are_forgotten() -> None:
    source = DictSource()
    engine = engine_owning([0, 1], source)
    settle(engine, engine.process([Observe(LinkEvent.from_canonical(LOGIN), b"")]), source)
    source.persist(engine)
    assert engine.members_of("cust:C") == ["anon:x", "cust:C"]
    for ref in engine.members_of("cust:C"):
        engine.forget(ref)
    tombstones = {(p, key): rec for p, key, rec in engine.take_dirty()}
    assert tombstones and all(rec is None for rec in tombstones.values())
    assert {key[1] for _p, key in tombstones} == {"cust:C", "anon:x"}
    for p, key in tombstones:
        source.records.pop((p, *key), None)
    for space in Space:
        assert engine.peek(space, "cust:C") is None and engine.peek(space, "anon:x") is None
    assert engine.members_of("cust:C") == ["cust:C"]  # a replayed request finds nothing more to list
