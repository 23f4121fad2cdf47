"""An in-memory, seeded stand-in for Kafka that runs ``rules.py`` over N partitions.

It is as unkind as at-least-once delivery is allowed to be, so the property
tests can show the handlers need nothing more:

* any interleaving: each step picks a random partition with work, then a
  random message from its inbox (no per-partition FIFO at all), and input
  events are injected in the given arrival order at random points;
* duplicates: any sent message (input events too) may be delivered twice, at
  unrelated times;
* crashes: a partition's output is only flushed at a commit; when it crashes
  instead, each uncommitted message's output is independently kept or lost,
  its record updates are kept (state ahead of the input, as with a changelog
  written before the offset commit), and all uncommitted messages are
  replayed, in order, before the partition takes anything new.

Keyspaces are partitioned with different hashes, so an identifier, its
cluster and its profile generally live on different partitions.
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline.identity.messages import Message, Observe, Space
from pipeline.identity.model import Incarnation, Limits, LinkEvent, Ref, Refusal, as_link_event
from pipeline.identity.rules import handle
from pipeline.identity.state import ClusterRecord, IdentifierRecord, ProfileRecord, Record, new_record


@dataclass(frozen=True)
class Faults:
    """Per-message probabilities of the delivery faults the simulation injects."""

    duplicate: float = 0.1
    crash: float = 0.02
    commit: float = 0.3
    inject: float = 0.3

    @classmethod
    def none(cls) -> Faults:
        return cls(duplicate=0.0, crash=0.0, commit=1.0)


def partition_of(space: Space, key: Ref, partitions: int) -> int:
    """Stable across runs and processes (unlike ``hash``), different per keyspace."""
    digest = hashlib.blake2b(f"{space}|{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % partitions


@dataclass
class _Partition:
    tables: dict[Space, dict[Ref, Record]] = field(default_factory=lambda: {s: {} for s in Space})
    inbox: list[Message] = field(default_factory=list)
    replay: deque[Message] = field(default_factory=deque)
    uncommitted: list[tuple[Message, list[Message]]] = field(default_factory=list)

    def record(self, space: Space, key: Ref) -> Record:
        table = self.tables[space]
        rec = table.get(key)
        if rec is None:
            rec = table[key] = new_record(space, key)
        return rec


@dataclass
class SimulationStats:
    delivered: Counter[str] = field(default_factory=Counter)
    duplicated: int = 0
    crashes: int = 0
    lost_outputs: int = 0

    @property
    def messages(self) -> int:
        return sum(self.delivered.values())


Handler = Callable[[Message, Record, Limits], list[Message]]


class PartitionedSimulation:
    """Run events through the partitioned rules until nothing is in flight, then inspect the tables.

    ``run`` may be called again with more events: the tables carry over.
    ``handler`` is ``rules.handle`` unless a test wraps it.
    """

    def __init__(self, partitions: int = 4, *, limits: Limits | Mapping[str, int] | None = None,
                 seed: int = 0, faults: Faults | None = None, max_steps: int = 2_000_000,
                 handler: Handler = handle) -> None:
        if partitions < 1:
            raise ValueError("partitions must be at least 1")
        self.partitions = partitions
        self.limits = Limits.of(limits)
        self.faults = faults or Faults()
        self.max_steps = max_steps
        self.handler = handler
        self.stats = SimulationStats()
        self._rng = random.Random(seed)
        self._parts = [_Partition() for _ in range(partitions)]

    # ------------------------------------------------------------------ running
    def run(self, events: Iterable[LinkEvent | Mapping[str, Any]]) -> SimulationStats:
        """Inject ``events`` in the given (arrival) order and run to quiescence."""
        inputs = deque(as_link_event(e) for e in events)
        rng, faults = self._rng, self.faults
        steps = 0
        while True:
            busy = [p for p in self._parts if p.inbox or p.replay]
            if inputs and (not busy or rng.random() < faults.inject):
                self._send([Observe(inputs.popleft())])
                continue
            if not busy:
                dirty = [p for p in self._parts if p.uncommitted]
                if not dirty:
                    return self.stats
                for p in dirty:
                    self._commit(p)
                continue
            steps += 1
            if steps > self.max_steps:
                raise RuntimeError(f"no quiescence after {self.max_steps} deliveries")
            self._step(rng.choice(busy))

    def _step(self, part: _Partition) -> None:
        rng = self._rng
        if part.replay:
            msg = part.replay.popleft()
        else:
            i = rng.randrange(len(part.inbox))
            part.inbox[i], part.inbox[-1] = part.inbox[-1], part.inbox[i]
            msg = part.inbox.pop()
        out = self.handler(msg, part.record(msg.space, msg.key), self.limits)
        self.stats.delivered[type(msg).__name__] += 1
        part.uncommitted.append((msg, out))
        roll = rng.random()
        if roll < self.faults.crash:
            self._crash(part)
        elif roll < self.faults.crash + self.faults.commit:
            self._commit(part)

    def _commit(self, part: _Partition) -> None:
        for _, out in part.uncommitted:
            self._send(out)
        part.uncommitted.clear()

    def _crash(self, part: _Partition) -> None:
        self.stats.crashes += 1
        for _, out in part.uncommitted:
            if self._rng.random() < 0.5:
                self._send(out)  # flushed before the crash
            else:
                self.stats.lost_outputs += len(out)
        part.replay = deque([msg for msg, _ in part.uncommitted] + list(part.replay))
        part.uncommitted.clear()

    def _send(self, messages: Iterable[Message]) -> None:
        for msg in messages:
            inbox = self._parts[partition_of(msg.space, msg.key, self.partitions)].inbox
            inbox.append(msg)
            if self._rng.random() < self.faults.duplicate:
                inbox.append(msg)
                self.stats.duplicated += 1

    # ------------------------------------------------------------------ inspecting
    def records(self, space: Space) -> Iterator[Record]:
        for part in self._parts:
            yield from part.tables[space].values()

    def identifiers(self) -> Iterator[IdentifierRecord]:
        for rec in self.records(Space.IDENT):
            assert isinstance(rec, IdentifierRecord)
            yield rec

    def clusters(self) -> Iterator[ClusterRecord]:
        for rec in self.records(Space.CLUSTER):
            assert isinstance(rec, ClusterRecord)
            yield rec

    def profiles(self) -> Iterator[ProfileRecord]:
        for rec in self.records(Space.PROFILE):
            assert isinstance(rec, ProfileRecord)
            yield rec

    def record(self, space: Space, key: Ref) -> Record | None:
        return self._parts[partition_of(space, key, self.partitions)].tables[space].get(key)

    def grouping(self) -> dict[Ref, Ref]:
        """Every identifier seen -> the profile id its record resolves to."""
        return {rec.ref: rec.profile for rec in self.identifiers()}

    def refusals(self) -> list[Refusal]:
        """Refusals as the cluster roots and the storm guard decide them now (a late event can move one)."""
        storms = (rec.storm_refusal for rec in self.identifiers())
        return sorted([*(r for rec in self.clusters() if rec.is_root for r in rec.refusals),
                       *(r for r in storms if r is not None)])

    def folded(self) -> dict[str, list[tuple[Ref, Incarnation]]]:
        """Event id -> every (profile, incarnation) holding it; exactly one each when all is well."""
        where: dict[str, list[tuple[Ref, Incarnation]]] = {}
        for rec in self.profiles():
            for inc, events in rec.folded.items():
                for event_id in events:
                    where.setdefault(event_id, []).append((rec.ref, inc))
        return where

    def pending(self) -> int:
        """Outbox entries still waiting for an acknowledgement (0 once quiescent)."""
        n = 0
        for rec in self.records(Space.IDENT):
            assert isinstance(rec, IdentifierRecord)
            n += len(rec.pending_leave) + len(rec.pending_unfollow)
        for c in self.clusters():
            n += len(c.assign_outbox) + len(c.end_outbox) + (c.transfer is not None)
        n += sum(len(p.outbox) for p in self.profiles())
        return n
