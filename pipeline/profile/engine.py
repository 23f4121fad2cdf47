"""The profile table of the partitions one worker owns: folds, merges, erasures, exactly once.

Inputs, co-partitioned (partition *p* of each goes to the same worker):
``events.resolved`` (canonical events keyed by profile id, with the identity
incarnation in a header), ``identity.merges`` (MERGE audit records keyed by
the source profile) and ``profile.messages`` (this stage's own messages
between partitions).

Exactly once, without transactions:

- each partition's *meta* record holds, per input topic, the next offset to
  apply; it is written with the records it produced (same changelog commit,
  same RocksDB batch), so a replay skips what the state already holds;
- everything a step sends (a merged profile's state to its target's
  partition, a late event forwarded after a merge, dead letters, erasure
  completions) is first written to the partition's *outbox*, durably with the
  state that produced it, and only sent after that. A replay never re-derives
  a message, it re-sends the stored one;
- outbox messages carry ``(origin partition, seq)``; the receiving partition's
  meta keeps the last seq applied per origin, and in-order delivery (one
  producer, one in-flight request) makes anything at or below it a duplicate.

Upstream redeliveries (the identity stage publishes a resolved event again
after a crash) have new offsets; the profile's event memo drops them
(``fold.py``).

Merges: a MERGE (S, s_inc) -> (T, t_inc) ends S's incarnation: S's state
leaves for T in a ``Transfer`` and S keeps a forwarder, so an event of that
incarnation arriving later follows it (``Forward``). A transfer reaching a
profile whose incarnation has itself ended follows the same way.

Erasure: an ERASURE_REQUEST resolved to P deletes P's record (a tombstone on
the changelog) and, with ``Erase`` messages, the forwarders of every profile
folded into P, and the identity stage is asked to forget P and every
identifier its profile record lists (``identity/runner.py``); a completion
record goes out once the profile deletion is durable (identity's follows
within a commit or two).
P's marker (a keyed hash of its id and the request's event time) stays: a
late piece of the erased past (an event or merged state no newer than the
request, e.g. a redelivery) is dropped, while an event after the request
starts a fresh profile, without consent.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from pipeline.nba.decide import NbaCounts
from pipeline.nba.decider import Decider
from pipeline.nba.timers import due_by, due_times
from pipeline.profile.codec import pack, state_fields, state_from_fields, unpack
from pipeline.profile.fold import CONSENT, ERASED, ERASURE, REJECTED, Outcome, fold_event
from pipeline.profile.limits import ProfileLimits
from pipeline.profile.state import ProfileState, merge
from pipeline.state.erasure import erasure_marker

Ref = str
Incarnation = str

PROFILE_PREFIX = b"p/"
ERASED_PREFIX = b"e/"
OUTBOX_PREFIX = b"o/"
TIMER_PREFIX = b"t/"  # t/<due ms, 13 digits>/<profile>\0<action>: the timer index, ordered by due time
VIEWED_PREFIX = b"v/"  # v/<sku>\0<profile>: who viewed a product recently (back-in-stock feed records)
META_KEY = b"m/meta"

# outbox destinations
MESSAGES = "messages"
ERASURES = "erasures"
DEAD = "dlq"
FORGET = "forget"  # the identity stage is asked to forget the profile and every identifier it lists
TRIGGERS = "triggers"  # [channel, Trigger record, occasion kind]: to triggers.<channel>

# message kinds on profile.messages
TRANSFER = "T"  # [T, origin, seq, target, t_inc, source, s_inc, state fields, {action: fired basis}]
FORWARD = "F"  # [F, origin, seq, target, t_inc, event, judged at]
ERASE = "E"

# decision clocks (``OMNIPIPE_NBA_CLOCK``)
WALL = "wall"  # decide now; timers fire on the wall clock
EVENT = "event"  # decide at the stream time of the event's input partition; timers at their due time
OCCASION = "occasion"  # decide at the occasion's own time (event time, due time)
DECISION_CLOCKS = (WALL, EVENT, OCCASION)


def profile_key(profile: Ref) -> bytes:
    return PROFILE_PREFIX + profile.encode()


def erased_key(profile: Ref, secret: bytes) -> bytes:
    """The erased profile's marker: a keyed hash, so the table keeps no identifier of the person."""
    return erasure_marker(ERASED_PREFIX, profile, secret)


def outbox_key(seq: int) -> bytes:
    return OUTBOX_PREFIX + b"%020d" % seq


def timer_key(due: int, profile: Ref, action: str) -> bytes:
    return TIMER_PREFIX + b"%013d/" % due + profile.encode() + b"\0" + action.encode()


def timer_start(due: int) -> bytes:
    """The first index key that can be due at ``due`` or later."""
    return TIMER_PREFIX + b"%013d/" % max(due, 0)


def viewed_key(sku: str, profile: Ref) -> bytes:
    return VIEWED_PREFIX + sku.encode() + b"\0" + profile.encode()


def parse_timer_key(key: bytes) -> tuple[int, Ref, str]:
    due, _, rest = key[len(TIMER_PREFIX):].partition(b"/")
    profile, _, action = rest.partition(b"\0")
    return int(due), profile.decode(), action.decode()


class RawStore(Protocol):
    def raw(self, partition: int, key: bytes) -> bytes | None: ...

    def items(self, partition: int, prefix: bytes = b"",
              start: bytes = b"") -> Iterator[tuple[bytes, bytes]]: ...


@dataclass(slots=True)
class ProfileRecord:
    """A profile id's live state (None: nothing live), where its ended incarnations went, its timers.

    ``timers``: action -> [armed due time or -1, basis of the last occurrence fired or -1];
    ``viewed``: the products indexed under ``v/`` for this profile.
    """

    state: ProfileState | None = None
    ended: dict[Incarnation, tuple[Ref, Incarnation]] = field(default_factory=dict)
    timers: dict[str, list[int]] = field(default_factory=dict)
    viewed: list[str] = field(default_factory=list)


def encode_record(rec: ProfileRecord) -> bytes:
    return pack([{inc: list(to) for inc, to in rec.ended.items()},
                 state_fields(rec.state) if rec.state is not None else None, rec.timers, rec.viewed])


def decode_record(data: bytes) -> ProfileRecord:
    ended, fields, *rest = unpack(data)
    return ProfileRecord(state_from_fields(fields) if fields is not None else None,
                         {inc: (to[0], to[1]) for inc, to in ended.items()}, rest[0] if rest else {},
                         rest[1] if len(rest) > 1 else [])


@dataclass(slots=True)
class Meta:
    """Per partition: next input offset per topic, last seq applied per origin, next outbox seq.

    Also the partition's live profiles and their stored bytes (keys and
    values), kept with every commit so the gauges need no scan at assignment;
    and its event clock: ``stream_time``, the newest event time this
    partition has taken, and ``source_times``, the same per input partition
    of the pipeline the events came from (``events.pos#3``: the canonical
    event's source topic and partition). Both only move forward and are
    committed with the state they judged, so a replay after a crash resumes
    the same clock.
    """

    next_offset: dict[str, int] = field(default_factory=dict)
    applied_seq: dict[int, int] = field(default_factory=dict)
    next_seq: int = 0
    live: int = 0
    stored_bytes: int = 0
    stream_time: int = 0
    source_times: dict[str, int] = field(default_factory=dict)

    def encode(self) -> bytes:
        return pack([self.next_offset, self.applied_seq, self.next_seq, self.live, self.stored_bytes,
                     self.stream_time, self.source_times])

    @classmethod
    def decode(cls, data: bytes) -> Meta:
        offsets, seqs, next_seq, live, size, *clock = unpack(data)  # a meta written before the clock: 0
        return cls(dict(offsets), {int(k): v for k, v in seqs.items()}, next_seq, live, size,
                   clock[0] if clock else 0, dict(clock[1]) if len(clock) > 1 else {})


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    seq: int
    dest: str  # MESSAGES, ERASURES, DEAD, FORGET
    partition: int  # MESSAGES: target partition; else -1
    key: bytes
    value: Any  # MESSAGES: a message list; ERASURES/DEAD: a record dict (the runner encodes it)

    def encode(self) -> bytes:
        return pack([self.dest, self.partition, self.key, self.value])

    @classmethod
    def decode(cls, seq: int, data: bytes) -> OutboxEntry:
        dest, partition, key, value = unpack(data)
        return cls(seq, dest, partition, key, value)


def _dead_letter(topic: str, partition: int, offset: int, reason: str, detail: str, key: bytes | None,
                 payload: bytes | None) -> dict[str, Any]:
    """An ``omnipipe.dlq.DeadLetter`` value (the runner stamps ``dead_lettered_at``); no personal data."""
    return {"source_topic": topic, "source_partition": partition, "source_offset": offset,
            "source_timestamp": None, "reason": reason, "detail": detail[:500], "stage": "profile",
            "schema_id": None, "dead_lettered_at": 0, "key": key, "value": payload}


def _drop_index(part: _Partition, profile: Ref, rec: ProfileRecord) -> None:
    for action, (armed, _fired) in rec.timers.items():
        if armed != -1:
            part.index[timer_key(armed, profile, action)] = False
    for sku in rec.viewed:
        part.index[viewed_key(sku, profile)] = False
    rec.timers, rec.viewed = {}, []


def _touch(part: _Partition, profile: Ref) -> None:
    part.dirty.add(profile)
    part.deleted.discard(profile)


# ------------------------------------------------------------------------------- inputs
@dataclass(frozen=True, slots=True)
class EventIn:
    topic: str
    partition: int
    offset: int
    profile: Ref
    incarnation: Incarnation
    event: Mapping[str, Any]
    payload: bytes  # as consumed, for a dead letter


@dataclass(frozen=True, slots=True)
class MergeIn:
    topic: str
    partition: int
    offset: int
    source: Ref
    source_incarnation: Incarnation
    target: Ref
    target_incarnation: Incarnation


@dataclass(frozen=True, slots=True)
class MessageIn:
    topic: str
    partition: int
    offset: int
    message: list[Any]  # [kind, origin partition, seq, target, target incarnation, ...]


@dataclass(frozen=True, slots=True)
class BadIn:
    """A record this stage cannot read: it becomes a dead letter, in order with everything else."""

    topic: str
    partition: int
    offset: int
    reason: str
    detail: str
    key: bytes | None
    payload: bytes | None


@dataclass(frozen=True, slots=True)
class SkipIn:
    """A record that carries nothing for this stage (a refusal on identity.merges): only its offset counts."""

    topic: str
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class FeedIn:
    """A catalogue feed record (``catalogue.stock``): every owned partition applies it once."""

    topic: str
    partition: int  # of the feed topic
    offset: int
    record: Mapping[str, Any]

    @property
    def position_key(self) -> str:
        """Where each profile partition's meta keeps its next offset of this feed partition."""
        return feed_position_key(self.topic, self.partition)


def feed_position_key(topic: str, partition: int) -> str:
    return f"{topic}#{partition}"


Input = EventIn | MergeIn | MessageIn | BadIn | SkipIn


@dataclass
class Counts:
    folds: int = 0
    merges_folded: int = 0  # transfers folded into a live profile
    forwarded: int = 0
    consent_changes: int = 0
    erasures: int = 0
    skipped_replays: int = 0
    duplicate_messages: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)  # anomalies and rejections by Outcome
    dead_letters: dict[str, int] = field(default_factory=dict)  # by reason
    nba: NbaCounts = field(default_factory=NbaCounts)


@dataclass
class _Partition:
    meta: Meta
    records: dict[Ref, ProfileRecord] = field(default_factory=dict)
    dirty: set[Ref] = field(default_factory=set)
    deleted: set[Ref] = field(default_factory=set)
    sizes: dict[Ref, int] = field(default_factory=dict)  # stored bytes of the records read or written
    markers: dict[bytes, int] = field(default_factory=dict)  # every erasure marker -> erased at (rare)
    erased: dict[bytes, int] = field(default_factory=dict)  # markers written this commit -> erased at
    index: dict[bytes, bool] = field(default_factory=dict)  # timer/viewed index keys to put (True) or delete
    new_outbox: list[OutboxEntry] = field(default_factory=list)
    unsent: dict[int, OutboxEntry] = field(default_factory=dict)  # durable, not yet acknowledged
    sent: set[int] = field(default_factory=set)  # acknowledged, key still to delete
    meta_dirty: bool = False
    #: no live timer entry is due before this: a tick seeks past the entries it already fired (their
    #: deletions would otherwise be stepped over on every tick until RocksDB compacts them away)
    timer_floor: int = 0



def source_of(item: EventIn) -> str:
    """The pipeline input partition an event was read from (``events.pos#3``), else the stage's own."""
    topic = item.event.get("source_topic")
    if topic is None:
        return f"{item.topic}#{item.partition}"
    return f"{topic}#{item.event.get('source_partition')}"


class ProfileEngine:
    """Not thread-safe: the runner holds a lock around it (lookups read from the web thread).

    The decision clock (``decision_clock``):

    - ``wall``: every decision at ``clock_ms()``; timers fire once the wall
      clock passes their due time;
    - ``event`` (replays of history): each partition keeps its stream time,
      per input partition of the pipeline (``Meta.source_times``) and
      overall (``Meta.stream_time``), as Kafka Streams keeps a task's; an
      event is judged at its input partition's stream time (so a late event
      is late, and a partition another one is ahead of is not), a timer at
      its own due time, and a partition's timers fire once *its* stream time
      passes them;
    - ``occasion``: every decision at the occasion's own time, timers like
      ``event``.

    On every clock, a profile's timers due at or before an event's time fire
    (in due order, as of their due time) before that event is folded, and a
    profile's due timers fire before a merge moves its state or brings
    another's in; so on the event and occasion clocks, what a timer decides
    does not depend on when a tick ran (only on the order its inputs came).
    """

    def __init__(self, limits: ProfileLimits, partition_of: Callable[[Ref], int], store: RawStore,
                 clock_ms: Callable[[], int], max_cached: int = 100_000, secret: bytes = b"omnipipe",
                 decider: Decider | None = None, decision_clock: str = WALL) -> None:
        if decision_clock not in DECISION_CLOCKS:
            raise ValueError(f"unknown decision clock {decision_clock!r}: use one of "
                             f"{', '.join(DECISION_CLOCKS)}")
        self.limits = limits
        self.decider = decider
        self.partition_of = partition_of
        self.store = store
        self.clock_ms = clock_ms  # the wall clock
        self.decision_clock = decision_clock
        self.max_cached = max_cached
        self.secret = secret
        self._parts: dict[int, _Partition] = {}
        self.written_sizes: list[int] = []  # record sizes written since the runner last took them

    # ------------------------------------------------------------------ ownership
    @property
    def partitions(self) -> list[int]:
        return sorted(self._parts)

    def owns(self, partition: int) -> bool:
        return partition in self._parts

    def assign(self, p: int) -> None:
        data = self.store.raw(p, META_KEY)
        part = _Partition(Meta.decode(data) if data is not None else Meta())
        for key, value in self.store.items(p, OUTBOX_PREFIX):
            seq = int(key[len(OUTBOX_PREFIX):])
            part.unsent[seq] = OutboxEntry.decode(seq, value)
        part.markers = {key: int(value) for key, value in self.store.items(p, ERASED_PREFIX)}
        self._parts[p] = part

    def revoke(self, p: int) -> None:
        self._parts.pop(p, None)

    def next_offset(self, topic: str, p: int) -> int:
        return self._parts[p].meta.next_offset.get(topic, 0)

    def stream_time(self, p: int) -> int:
        """Partition ``p``'s stream time: the newest event time it has taken (0 before any)."""
        return self._parts[p].meta.stream_time

    # ------------------------------------------------------------------ clocks
    def _clock(self, judged: int) -> int:
        """The ``clock`` handed to the decider for an occasion judged at ``judged`` on the event clock
        (the decider decides at ``max(occasion time, clock)``)."""
        if self.decision_clock == WALL:
            return self.clock_ms()
        return judged if self.decision_clock == EVENT else 0

    def _timer_clock(self) -> int:
        """A timer decides as of its due time, except on the wall clock (then: now, as live)."""
        return self.clock_ms() if self.decision_clock == WALL else 0

    def _horizon(self, part: _Partition) -> int:
        """Timers of ``part`` due at or before this may fire."""
        return self.clock_ms() if self.decision_clock == WALL else part.meta.stream_time

    # ------------------------------------------------------------------ records
    def _get(self, part: _Partition, p: int, profile: Ref) -> ProfileRecord:
        rec = part.records.get(profile)
        if rec is None:
            key = profile_key(profile)
            data = self.store.raw(p, key) if profile not in part.deleted else None
            rec = part.records[profile] = decode_record(data) if data is not None else ProfileRecord()
            if data is not None:
                part.sizes[profile] = len(key) + len(data)
        return rec

    def peek(self, profile: Ref) -> ProfileRecord | None:
        p = self.partition_of(profile)
        part = self._parts.get(p)
        if part is None:
            return None
        rec = part.records.get(profile)
        if rec is None and profile not in part.deleted:
            data = self.store.raw(p, profile_key(profile))
            rec = decode_record(data) if data is not None else None
        return rec

    def _emit(self, part: _Partition, dest: str, partition: int, key: bytes, value: Any) -> None:
        meta = part.meta
        part.new_outbox.append(OutboxEntry(meta.next_seq, dest, partition, key, value))
        meta.next_seq += 1
        part.meta_dirty = True

    def _send(self, part: _Partition, p: int, message: list[Any]) -> None:
        """A message to ``message[3]``'s partition; ``message[1:3]`` become (origin, seq)."""
        message[1], message[2] = p, part.meta.next_seq
        self._emit(part, MESSAGES, self.partition_of(message[3]), message[3].encode(), message)

    # ------------------------------------------------------------------ processing
    def process(self, inputs: Iterable[Input]) -> Counts:
        counts = Counts()
        for item in inputs:
            p = item.partition
            part = self._parts.get(p)
            if part is None:
                continue  # revoked meanwhile: the new owner applies it
            offsets = part.meta.next_offset
            if item.offset < offsets.get(item.topic, 0):
                counts.skipped_replays += 1
                continue
            offsets[item.topic] = item.offset + 1
            part.meta_dirty = True
            if isinstance(item, EventIn):
                self._event(part, p, item, counts)
            elif isinstance(item, MergeIn):
                self._merge(part, p, item.source, item.source_incarnation, item.target,
                            item.target_incarnation, counts)
            elif isinstance(item, MessageIn):
                self._message(part, p, item.message, counts)
            elif isinstance(item, BadIn):
                counts.dead_letters[item.reason] = counts.dead_letters.get(item.reason, 0) + 1
                self._emit(part, DEAD, -1, item.key or b"", _dead_letter(
                    item.topic, item.partition, item.offset, item.reason, item.detail, item.key,
                    item.payload))
        return counts

    def _event(self, part: _Partition, p: int, item: EventIn, counts: Counts) -> None:
        t = item.event["event_time"]
        meta = part.meta
        source = source_of(item)
        judged = meta.source_times.get(source, 0)
        if t > judged:
            meta.source_times[source] = judged = t
        if t > meta.stream_time:
            meta.stream_time = t
        rec = self._get(part, p, item.profile)
        end = rec.ended.get(item.incarnation)
        if end is not None:  # judged where it was read: a forwarded event is not late for the trip
            counts.forwarded += 1
            self._send(part, p, [FORWARD, 0, 0, end[0], end[1], dict(item.event), judged])
            return
        self._apply(part, p, item.profile, rec, item.event, counts, item, judged)

    def _apply(self, part: _Partition, p: int, profile: Ref, rec: ProfileRecord, ev: Mapping[str, Any],
               counts: Counts, source: EventIn | None, judged: int) -> None:
        if ev["type"] == ERASURE:
            self._erase(part, p, profile, rec, ev, counts, judged)
            return
        created = rec.state is None
        if created and self._erased_after(part, profile, ev["event_time"]):
            counts.outcomes[ERASED] = counts.outcomes.get(ERASED, 0) + 1
            return
        if not created:  # what fell due before this event, as of then (the event may end the condition)
            self._fire_due(part, profile, rec, ev["event_time"], counts)
        state = rec.state if rec.state is not None else ProfileState()
        outcome = fold_event(state, ev, self.limits)
        if outcome in REJECTED:
            counts.outcomes[outcome] = counts.outcomes.get(outcome, 0) + 1
            counts.dead_letters[outcome.value] = counts.dead_letters.get(outcome.value, 0) + 1
            self._emit(part, DEAD, -1, str(ev["event_id"]).encode(), _dead_letter(
                source.topic if source else "profile.messages", source.partition if source else p,
                source.offset if source else -1, outcome.value,
                f"{ev['type']} event {ev['event_id']} cannot apply to a profile: {outcome.value}",
                None, source.payload if source else None))
            return
        if outcome is not Outcome.APPLIED:
            counts.outcomes[outcome] = counts.outcomes.get(outcome, 0) + 1
            if outcome is Outcome.DUPLICATE:
                return
        counts.folds += 1
        if ev["type"] == CONSENT:
            counts.consent_changes += 1
        if created:
            rec.state = state
            part.meta.live += 1
        _touch(part, profile)
        if self.decider is not None:
            for e in self.decider.after_event(profile, state, ev, self._clock(judged), counts.nba):
                self._emit(part, TRIGGERS, -1, profile.encode(), [e.channel, e.record, e.kind])

    def _merge(self, part: _Partition, p: int, source: Ref, s_inc: Incarnation, target: Ref,
               t_inc: Incarnation, counts: Counts) -> None:
        if source == target:
            return  # a newer incarnation of the same id: the state stays where it is
        rec = self._get(part, p, source)
        if s_inc in rec.ended:
            return  # this end is already applied
        rec.ended[s_inc] = (target, t_inc)
        if rec.state is not None:  # what fell due here fires here, before the state leaves
            self._fire_due(part, source, rec, self._horizon(part), counts)
        state, rec.state = rec.state, None
        if state is not None:
            part.meta.live -= 1
        fired = {action: entry[1] for action, entry in sorted(rec.timers.items()) if entry[1] != -1}
        _drop_index(part, source, rec)
        _touch(part, source)
        self._send(part, p, [TRANSFER, 0, 0, target, t_inc, source, s_inc,
                             state_fields(state) if state is not None else None, fired])

    def _message(self, part: _Partition, p: int, msg: list[Any], counts: Counts) -> None:
        kind, origin, seq, target, t_inc = msg[:5]
        if seq <= part.meta.applied_seq.get(origin, -1):
            counts.duplicate_messages += 1
            return
        part.meta.applied_seq[origin] = seq
        rec = self._get(part, p, target)
        if kind == ERASE:  # drop the forwarders into the erased person's profiles
            erased = set(msg[5])
            rec.ended = {inc: to for inc, to in rec.ended.items() if to[0] not in erased}
            if rec.state is None and not rec.ended:
                self._delete(part, target, rec, counts)
            else:
                _touch(part, target)
            return
        end = rec.ended.get(t_inc)
        if end is not None:  # the target's incarnation ended too: follow it
            counts.forwarded += 1
            self._send(part, p, [kind, 0, 0, end[0], end[1], *msg[5:]])
            return
        if kind == FORWARD:
            ev = msg[5]
            judged = msg[6] if len(msg) > 6 else ev["event_time"]  # a message sent before the clock
            self._apply(part, p, target, rec, ev, counts, None, judged)
        elif kind == TRANSFER:
            source, fields = msg[5], msg[7]
            incoming = state_from_fields(fields) if fields is not None else ProfileState()
            if rec.state is None and self._erased_after(part, target, incoming.last_seen or 0):
                counts.outcomes[ERASED] = counts.outcomes.get(ERASED, 0) + 1
                return
            incoming.merged_from[source] = incoming.last_seen or 0
            if rec.state is None:
                part.meta.live += 1
            else:  # the target's own due timers fire as of its own state, before the merge changes it
                self._fire_due(part, target, rec, self._horizon(part), counts)
            rec.state = merge(rec.state or ProfileState(), incoming, self.limits.caps)
            for action, basis in (msg[8] if len(msg) > 8 else {}).items():
                entry = rec.timers.setdefault(action, [-1, -1])
                entry[1] = max(entry[1], basis)  # an occurrence fired there is not fired again here
            counts.merges_folded += 1
            _touch(part, target)
            if self.decider is not None:
                for e in self.decider.after_merge(target, rec.state, self._clock(part.meta.stream_time),
                                                  counts.nba):
                    self._emit(part, TRIGGERS, -1, target.encode(), [e.channel, e.record, e.kind])

    def _erase(self, part: _Partition, p: int, profile: Ref, rec: ProfileRecord, ev: Mapping[str, Any],
               counts: Counts, judged: int) -> None:
        state = rec.state
        sources = sorted(state.merged_from) if state is not None else []
        erased = [profile, *sources]
        for source in sources:
            self._send(part, p, [ERASE, 0, 0, source, "", erased])
        identifiers = len(state.identifiers) if state is not None else 0
        if self.decider is not None and state is not None and state.contacts:
            # triggers decided since the last commit have not left: they never will (not sent, so
            # nothing to withdraw); earlier ones have been sent and are withdrawn
            key = profile.encode()
            unsent = {e.value[1]["idempotency_key"] for e in part.new_outbox if e.dest == TRIGGERS
                      and e.key == key}
            part.new_outbox = [e for e in part.new_outbox if not (e.dest == TRIGGERS and e.key == key)]
            for e in self.decider.on_erasure(profile, state, ev["event_time"], self._clock(judged),
                                             counts.nba, unsent=unsent):
                self._emit(part, TRIGGERS, -1, key, [e.channel, e.record, e.kind])
        self._delete(part, profile, rec, counts)
        marker = erased_key(profile, self.secret)
        part.erased[marker] = part.markers[marker] = max(part.markers.get(marker, 0), ev["event_time"])
        self._emit(part, FORGET, -1, profile.encode(), [profile, ev["event_time"]])
        counts.erasures += 1
        self._emit(part, ERASURES, -1, str(ev["event_id"]).encode(), {
            "request_event_id": ev["event_id"],
            "requested_at": ev["event_time"],
            "completed_at": 0,  # set when sent, after the deletion is durable
            "profiles_erased": (1 if state is not None else 0) + len(sources),
            "identifiers_erased": identifiers,
            "found": state is not None,
        })

    def _erased_after(self, part: _Partition, profile: Ref, t: int) -> bool:
        """Whether ``profile`` was erased at or after event time ``t`` (a late piece of the erased past)."""
        if not part.markers:  # markers are kept in memory: no store read on every new profile
            return False
        at = part.markers.get(erased_key(profile, self.secret))
        return at is not None and t <= at

    def _delete(self, part: _Partition, profile: Ref, rec: ProfileRecord, counts: Counts) -> None:
        if rec.state is not None:
            part.meta.live -= 1
        _drop_index(part, profile, rec)  # index keys name the profile: an erasure leaves none
        rec.state, rec.ended = None, {}
        part.records.pop(profile, None)
        part.deleted.add(profile)
        part.dirty.discard(profile)

    # ------------------------------------------------------------------ commit
    def take_changes(self) -> dict[int, list[tuple[bytes, bytes | None]]]:
        """Each partition's changed records, tombstones, outbox entries and meta: one commit."""
        out: dict[int, list[tuple[bytes, bytes | None]]] = {}
        for p, part in self._parts.items():
            items: list[tuple[bytes, bytes | None]] = []
            sizes, meta = part.sizes, part.meta
            for profile in sorted(part.dirty):
                rec = part.records[profile]
                if self.decider is not None and rec.state is not None:
                    self._arm(part, profile, rec)
                key = profile_key(profile)
                value = encode_record(rec) if rec.state is not None or rec.ended else None
                items.append((key, value))
                size = len(key) + len(value) if value is not None else 0
                meta.stored_bytes += size - sizes.get(profile, 0)
                sizes[profile] = size
                if value is not None:
                    self.written_sizes.append(size)
            for profile in sorted(part.deleted):
                items.append((profile_key(profile), None))
                meta.stored_bytes -= sizes.pop(profile, 0)
            items.extend((key, b"" if put else None) for key, put in sorted(part.index.items()))
            part.index.clear()
            items.extend((marker, str(at).encode()) for marker, at in sorted(part.erased.items()))
            part.erased.clear()
            items.extend((outbox_key(seq), None) for seq in sorted(part.sent))
            for entry in part.new_outbox:
                items.append((outbox_key(entry.seq), entry.encode()))
                part.unsent[entry.seq] = entry
            if part.meta_dirty or items:
                items.append((META_KEY, part.meta.encode()))
            part.dirty.clear()
            part.deleted.clear()
            part.sent.clear()
            part.new_outbox = []
            part.meta_dirty = False
            if items:
                out[p] = items
        return out

    # ------------------------------------------------------------------ timers
    def _arm(self, part: _Partition, profile: Ref, rec: ProfileRecord) -> None:
        """Index a changed profile's timers; only an *earlier* due time costs an index write.

        A later one (the cart touched again, another event before the silence
        ends) keeps the armed entry: when it falls due, ``fire_timers``
        recomputes and re-arms. So a busy profile costs no index churn.
        """
        assert self.decider is not None and rec.state is not None
        for action, (due, basis) in due_times(rec.state, self.decider.catalogue).items():
            armed, fired = rec.timers.get(action, (-1, -1))
            if basis == fired or (armed != -1 and armed <= due):
                continue
            if armed != -1:
                part.index[timer_key(armed, profile, action)] = False
            part.index[timer_key(due, profile, action)] = True
            part.timer_floor = min(part.timer_floor, due)
            rec.timers[action] = [due, fired]
        if self.decider.feeds and (rec.viewed or rec.state.products):
            now_viewed = set(rec.state.products)
            was = set(rec.viewed)
            if now_viewed != was:
                for sku in was - now_viewed:
                    part.index[viewed_key(sku, profile)] = False
                for sku in now_viewed - was:
                    part.index[viewed_key(sku, profile)] = True
                rec.viewed = sorted(now_viewed)

    def _fire_due(self, part: _Partition, profile: Ref, rec: ProfileRecord, upto: int,
                  counts: Counts) -> None:
        """Fire ``profile``'s timers due at or before ``upto`` that have not fired, in due order.

        Computed from the state itself, so an occurrence not yet in the index
        (the profile changed since the last commit) is not missed either; an
        armed index entry left behind is recognised as fired when it falls due.
        """
        if self.decider is None or rec.state is None:
            return
        for d, action, basis in due_by(rec.state, self.decider.catalogue, upto):
            entry = rec.timers.setdefault(action, [-1, -1])
            if entry[1] == basis:
                continue  # this occurrence already fired
            entry[1] = basis
            _touch(part, profile)
            clock = self._timer_clock()
            for e in self.decider.on_timer(profile, rec.state, action, d, basis, clock, counts.nba):
                self._emit(part, TRIGGERS, -1, profile.encode(), [e.channel, e.record, e.kind])

    def fire_timers(self, now: int | None = None, limit: int = 10_000) -> Counts:
        """Decide for every timer due: a range read of each partition's index, no profile scan.

        Due means at or before the partition's horizon: ``now`` (default: the
        wall clock) on the wall clock, else the partition's own stream time,
        so a partition's timers never fire because another partition moved
        on. Reads the index as last persisted: call it after ``take_changes``
        was persisted (the runner does, after each commit). What it changes
        (decisions, re-armed or dropped entries) goes with the next commit.
        """
        counts = Counts()
        if self.decider is None:
            return counts
        done = 0
        for p, part in self._parts.items():
            if self.decision_clock == WALL:
                horizon = now if now is not None else self.clock_ms()
            else:
                horizon = part.meta.stream_time
            floor = horizon + 1  # where the next tick starts, if every entry up to the horizon is handled
            for key, _value in self.store.items(p, TIMER_PREFIX, timer_start(part.timer_floor)):
                due, profile, action = parse_timer_key(key)
                if due > horizon or done >= limit:
                    floor = min(floor, due)
                    break
                if key in part.index:
                    continue  # handled since the last commit
                done += 1
                part.index[key] = False
                rec = self._get(part, p, profile)
                entry = rec.timers.get(action)
                if entry is None or entry[0] != due:
                    continue  # a stale entry: the profile was re-armed, merged away or erased
                entry[0] = -1
                _touch(part, profile)
                if rec.state is None or action not in self.decider.catalogue.actions:
                    rec.timers.pop(action, None)
                    continue
                pending = due_times(rec.state, self.decider.catalogue).get(action)
                if pending is None or pending[1] == entry[1]:
                    continue  # the condition is gone, or this occurrence already fired
                if pending[0] > horizon:  # the condition moved on (the cart was touched): re-arm
                    entry[0] = pending[0]
                    part.index[timer_key(pending[0], profile, action)] = True
                    floor = min(floor, pending[0])
                    continue
                entry[1] = pending[1]
                for e in self.decider.on_timer(profile, rec.state, action, pending[0], pending[1],
                                               horizon if self.decision_clock == WALL else 0, counts.nba):
                    self._emit(part, TRIGGERS, -1, profile.encode(), [e.channel, e.record, e.kind])
            part.timer_floor = floor
        return counts

    # ------------------------------------------------------------------ feeds
    def process_feed(self, item: FeedIn) -> Counts:
        """A catalogue feed record, applied once to every owned partition (offsets kept in each meta).

        Finds the profiles that viewed the product through the ``v/`` index
        as last persisted (a view in the current commit interval is missed).
        """
        counts = Counts()
        for p, part in self._parts.items():
            offsets = part.meta.next_offset
            if item.offset < offsets.get(item.position_key, 0):
                counts.skipped_replays += 1
                continue
            offsets[item.position_key] = item.offset + 1
            part.meta_dirty = True
            if self.decider is None or not item.record.get("in_stock"):
                continue
            sku = str(item.record["sku"])
            feed = {"id": item.record["feed_id"], "at": item.record["changed_at"], "sku": sku,
                    "category": item.record.get("category")}
            within = self.decider.feed_window_ms("back_in_stock")
            prefix = VIEWED_PREFIX + sku.encode() + b"\0"
            for key, _value in self.store.items(p, prefix):
                profile = key[len(prefix):].decode()
                rec = self._get(part, p, profile)
                state = rec.state
                viewed = state.products.get(sku) if state is not None else None
                if state is None or viewed is None:
                    part.index[key] = False  # stale: lazily dropped
                    continue
                if viewed[0] < feed["at"] - within:
                    continue  # viewed too long ago to be told
                recorded = counts.nba.recorded.total()
                emitted = self.decider.on_feed(profile, state, "back_in_stock", feed, self._clock(feed["at"]),
                                               counts.nba)
                if emitted or counts.nba.recorded.total() != recorded:
                    _touch(part, profile)  # only a decision changes the profile: no write per viewer
                for e in emitted:
                    self._emit(part, TRIGGERS, -1, profile.encode(), [e.channel, e.record, e.kind])
        return counts

    def has_changes(self) -> bool:
        return any(part.dirty or part.deleted or part.index or part.new_outbox or part.meta_dirty
                   for part in self._parts.values())

    def unsent(self) -> list[tuple[int, OutboxEntry]]:
        """Durable outbox entries not yet acknowledged, in seq order per partition."""
        return [(p, part.unsent[seq]) for p, part in self._parts.items() for seq in sorted(part.unsent)]

    def acknowledge(self, entries: Iterable[tuple[int, OutboxEntry]]) -> None:
        """Sent and acknowledged: their keys are deleted with the next commit."""
        for p, entry in entries:
            part = self._parts.get(p)
            if part is not None and part.unsent.pop(entry.seq, None) is not None:
                part.sent.add(entry.seq)
                part.meta_dirty = True

    def trim(self) -> None:
        """Drop decoded records kept between commits beyond the cache bound (they are on disk)."""
        for part in self._parts.values():
            if len(part.records) > self.max_cached and not part.dirty:
                part.records.clear()
                part.sizes.clear()

    def totals(self) -> tuple[int, int]:
        """Live profiles and their stored bytes over the owned partitions."""
        metas = [part.meta for part in self._parts.values()]
        return sum(m.live for m in metas), sum(m.stored_bytes for m in metas)
