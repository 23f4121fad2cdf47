"""Runs ``rules.handle`` for the partitions one worker owns, without going through Kafka for them.

The rules need nothing from the transport but at-least-once delivery to the
record a message is addressed to (``simulation.py`` proves it under arbitrary
order, duplicates and crash-replay). So a message whose target partition is
owned here is delivered at once, in memory; only messages for partitions other
workers own leave as records. With the stage's keys co-partitioned (an
identifier, its cluster and its profile share the partition of their ref),
most of the ~6 messages an event costs never touch the broker. Outbox messages
and their confirmations are the exception (``BROKER_ONLY``): they always go
through the broker, which is what keeps a crash from stranding an outbox.

What the engine gives back is what the runner must publish, in this order
(``runner.py`` explains why): audit facts and dead letters, then the changed
records (changelog), then the resolved events and the remote messages.
The engine itself holds no I/O: records come from a ``RecordSource``.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from pipeline.identity.decide import decide
from pipeline.identity.messages import (
    Append,
    Assign,
    AssignAck,
    ClusterTransfer,
    ClusterTransferAck,
    EndAck,
    Handover,
    HandoverAck,
    Leave,
    LeaveAck,
    Message,
    Observe,
    ProfileEnd,
    Resolution,
    Resolved,
    Sighting,
    Space,
    Unfollow,
    UnfollowAck,
)
from pipeline.identity.model import Incarnation, Limits, MergeDecision, Ref, Refusal
from pipeline.identity.rules import HANDLERS
from pipeline.identity.state import ClusterRecord, IdentifierRecord, ProfileRecord, Record, new_record

RecordKey = tuple[Space, Ref]

#: Deliveries that can add to the audit trail: merges (ProfileEnd), refusals at a cluster root
#: (a request or a transfer re-decides it), the storm guard (sightings, incl. the entry's own).
_WATCHED = frozenset({ProfileEnd, Append, ClusterTransfer, Sighting, Observe})

#: Confirmations: the messages that clear an outbox or stop a re-send.
CONFIRMATIONS = frozenset({AssignAck, EndAck, ClusterTransferAck, HandoverAck, LeaveAck, UnfollowAck,
                           Resolution})
#: Messages a sender keeps in an outbox until confirmed.
CONFIRMED = frozenset({Assign, ProfileEnd, ClusterTransfer, Handover, Leave, Unfollow})
#: Never delivered in memory: they travel through the broker, after the state that sent them is
#: durable, and are replayed from its log like any input. The rest is re-sent by replaying the
#: input that caused it (every handler re-sends on a redelivery at least what it first sent).
#: In memory, a confirmation could clear an outbox whose message's effects a crash then loses,
#: or a confirmed message could be lost with the crash after its outbox was no longer re-sent
#: by anything: nothing would ever re-send it (tests/identity/test_engine.py has both cases).
BROKER_ONLY = CONFIRMATIONS | CONFIRMED


class RecordSource(Protocol):
    """Where a partition's records live between batches (RocksDB in the worker, a dict in tests)."""

    def load(self, partition: int, space: Space, ref: Ref) -> Record | None: ...


@dataclass(frozen=True, slots=True)
class ResolvedEvent:
    """An event folded into a live profile incarnation: goes on keyed by ``profile``."""

    profile: Ref
    incarnation: Incarnation
    event_id: str
    payload: bytes


#: what a merge ended (``Counts.merged``, the ``absorbed`` label of omnipipe_identity_merges_total)
MERGE_KINDS = ("profile", "identifier")


@dataclass
class Counts:
    """What one batch did, for metrics (plain ints so the engine stays free of Prometheus)."""

    events: int = 0
    resolved: int = 0
    forwarded: int = 0  # a Resolved passed on by an ended incarnation (forwarding hop)
    links: int = 0  # link requests newly recorded at a cluster root
    merges: int = 0
    # merges by what ended: "profile" (it had events of its own, handed over to the stronger profile)
    # or "identifier" (an identifier that arrived with a stronger one, e.g. a new e-mail with its
    # customer id: its profile had no events, nothing moved)
    merged: Counter[str] = field(default_factory=Counter)
    refusals: Counter[str] = field(default_factory=Counter)
    local: Counter[str] = field(default_factory=Counter)  # message type -> delivered in memory
    remote: Counter[str] = field(default_factory=Counter)  # message type -> sent to another worker
    created: Counter[tuple[int, Space]] = field(default_factory=Counter)  # new records per partition


@dataclass
class BatchOutput:
    remote: list[tuple[int, Message]] = field(default_factory=list)
    resolved: list[ResolvedEvent] = field(default_factory=list)
    merges: list[MergeDecision] = field(default_factory=list)
    refusals: list[Refusal] = field(default_factory=list)
    counts: Counts = field(default_factory=Counts)


class PartitionRecords:
    """The records of one owned partition touched since the last flush, plus a read cache."""

    def __init__(self, partition: int, source: RecordSource, max_cached: int) -> None:
        self.partition = partition
        self._source = source
        self._max_cached = max_cached
        self.cache: dict[RecordKey, Record] = {}
        self.dirty: set[RecordKey] = set()
        self.deleted: set[RecordKey] = set()

    def get(self, space: Space, ref: Ref, counts: Counts) -> Record:
        key = (space, ref)
        rec = self.cache.get(key)
        if rec is None:
            rec = self._source.load(self.partition, space, ref)
            if rec is None:
                rec = new_record(space, ref)
                counts.created[(self.partition, space)] += 1
            self.cache[key] = rec
        self.dirty.add(key)
        self.deleted.discard(key)
        return rec

    def delete(self, space: Space, ref: Ref) -> bool:
        """Forget a record (erasure): a tombstone at the next flush. Whether it existed."""
        key = (space, ref)
        existed = key in self.cache or self._source.load(self.partition, space, ref) is not None
        self.cache.pop(key, None)
        self.dirty.discard(key)
        if existed:
            self.deleted.add(key)
        return existed

    def take_dirty(self) -> Iterator[tuple[RecordKey, Record | None]]:
        """The changed records (None: deleted), once; the cache is trimmed when everything is persisted."""
        dirty, self.dirty = self.dirty, set()
        deleted, self.deleted = self.deleted, set()
        for key in dirty:
            yield key, self.cache[key]
        for key in deleted:
            yield key, None

    def trim(self) -> None:
        if len(self.cache) > self._max_cached and not self.dirty and not self.deleted:
            self.cache.clear()

    def peek(self, space: Space, ref: Ref) -> Record | None:
        """Read without creating or dirtying (lookups)."""
        if (space, ref) in self.deleted:
            return None
        return self.cache.get((space, ref)) or self._source.load(self.partition, space, ref)


class IdentityEngine:
    """Deliver messages to owned partitions until only remote work is left."""

    def __init__(self, limits: Limits, partition_of: Callable[[Ref], int], source: RecordSource,
                 *, max_cached: int = 200_000) -> None:
        self.limits = limits
        self.partition_of = partition_of
        self.source = source
        self.max_cached = max_cached
        self.partitions: dict[int, PartitionRecords] = {}

    # ------------------------------------------------------------------ ownership
    def assign(self, partition: int) -> None:
        self.partitions.setdefault(partition, PartitionRecords(partition, self.source, self.max_cached))

    def revoke(self, partition: int) -> None:
        records = self.partitions.pop(partition, None)
        if records is not None and records.dirty:
            raise RuntimeError(f"partition {partition} revoked with unpersisted records")

    def owns(self, partition: int) -> bool:
        return partition in self.partitions

    # ------------------------------------------------------------------ processing
    def process(self, messages: Iterable[Message]) -> BatchOutput:
        """Hot loop: ~6 deliveries per event, so lookups are hoisted and counts kept in plain dicts."""
        out = BatchOutput()
        counts = out.counts
        queue: deque[tuple[int, Message]] = deque()
        append, popleft = queue.append, queue.popleft
        limits, partition_of, parts = self.limits, self.partition_of, self.partitions
        remote_out = out.remote
        local: dict[type, int] = {}
        remote: dict[type, int] = {}
        handlers = HANDLERS

        for msg in messages:
            p = partition_of(msg.key)
            if p in parts:
                append((p, msg))
            else:
                remote_out.append((p, msg))
                remote[type(msg)] = remote.get(type(msg), 0) + 1
        while queue:
            p, msg = popleft()
            kind = type(msg)
            local[kind] = local.get(kind, 0) + 1
            rec = parts[p].get(msg.space, msg.key, counts)
            if kind in _WATCHED:
                before = _audit_state(rec, msg, limits)
                sent = handlers[kind](rec, msg, limits)
                if before is not None:
                    self._audit(rec, before, out, kind is Append)
            else:
                sent = handlers[kind](rec, msg, limits)
            if kind is Resolved:
                assert isinstance(rec, ProfileRecord) and isinstance(msg, Resolved)
                if msg.incarnation in rec.ended:
                    counts.forwarded += 1
                else:
                    out.resolved.append(ResolvedEvent(rec.ref, msg.incarnation, msg.event_id, msg.payload))
            elif kind is Observe:
                counts.events += 1
            for m in sent:
                q = partition_of(m.key)
                if q in parts and type(m) not in BROKER_ONLY:
                    append((q, m))
                else:
                    remote_out.append((q, m))
                    remote[type(m)] = remote.get(type(m), 0) + 1
        counts.resolved = len(out.resolved)
        counts.local.update({k.__name__: n for k, n in local.items()})
        counts.remote.update({k.__name__: n for k, n in remote.items()})
        return out

    @staticmethod
    def _audit(rec: Record, before: tuple[int, frozenset[Refusal], int], out: BatchOutput,
               appended: bool) -> None:
        merges, refusals, requests = before
        if isinstance(rec, ProfileRecord):
            new = rec.merges[merges:]
            out.merges.extend(new)
            out.counts.merges += len(new)
            for merge in new:  # what it folded waits in the outbox for the stronger profile's ack
                had_events = bool(rec.outbox.get(merge.source_incarnation))
                out.counts.merged["profile" if had_events else "identifier"] += 1
        elif isinstance(rec, ClusterRecord):
            if appended:  # a transfer brings requests already counted where they were appended
                out.counts.links += max(0, len(rec.requests) - requests)
            for refusal in rec.refusals:
                if refusal not in refusals:
                    out.refusals.append(refusal)
                    out.counts.refusals[refusal.reason.value] += 1
        elif isinstance(rec, IdentifierRecord) and rec.storm is not None:
            storm = rec.storm_refusal
            assert storm is not None
            if storm in refusals:
                return
            # new, or moved earlier by a late sighting (the stamp only moves earlier): the final one
            out.refusals.append(storm)
            out.counts.refusals[storm.reason.value] += 1

    # ------------------------------------------------------------------ erasure
    def members_of(self, profile: Ref) -> list[Ref]:
        """Every identifier resolving to the profile: the stable ones its cluster root holds (the
        profile id is the root's ref), the roaming ones its profile record lists, and itself."""
        records = self.partitions.get(self.partition_of(profile))
        members = {profile}
        if records is not None:
            rec = records.peek(Space.PROFILE, profile)
            if isinstance(rec, ProfileRecord):
                members.update(rec.members)
            root = records.peek(Space.CLUSTER, profile)
            if isinstance(root, ClusterRecord) and root.is_root:
                members.update(root.members)
                members.update(root.assigned)
        return sorted(members)

    def forget(self, ref: Ref) -> dict[Space, int]:
        """Delete the identifier's records in every keyspace (it must be in an owned partition)."""
        records = self.partitions[self.partition_of(ref)]
        return {space: int(records.delete(space, ref)) for space in Space}

    # ------------------------------------------------------------------ persistence hooks
    def take_dirty(self) -> Iterator[tuple[int, RecordKey, Record | None]]:
        for p, records in self.partitions.items():
            for key, rec in records.take_dirty():
                yield p, key, rec

    def trim(self) -> None:
        for records in self.partitions.values():
            records.trim()

    def peek(self, space: Space, ref: Ref) -> Record | None:
        records = self.partitions.get(self.partition_of(ref))
        return records.peek(space, ref) if records is not None else None


def _audit_state(rec: Record, msg: Message, limits: Limits) -> tuple[int, frozenset[Refusal], int] | None:
    """What a handler may add to the audit trail, taken before it runs (None: nothing to watch).

    A transfer brings the refusals its source root had decided (the same
    ``decide`` over the requests and members it carries): those are not new.
    """
    if isinstance(rec, ProfileRecord):
        return len(rec.merges), frozenset(), 0
    if isinstance(rec, ClusterRecord):
        known = frozenset(rec.refusals)
        if isinstance(msg, ClusterTransfer) and rec.forwarded_to is None and msg.requests:
            known |= frozenset(decide(msg.requests, msg.members, limits).refusals)
        return 0, known, len(rec.requests)
    if isinstance(rec, IdentifierRecord) and rec.fanout:
        storm = rec.storm_refusal
        return 0, frozenset([storm]) if storm else frozenset(), 0
    return None
