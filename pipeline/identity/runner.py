"""The identity stage's consume -> resolve -> publish loop (one consumer-group member).

Why a librdkafka loop and not Faust agents over Faust tables: the design
costs ~6 messages per event (``rules.py``), and a Faust agent that sends one
record per event reached 0.05 of raw aiokafka on this machine
(BENCHMARKS.md). Here messages for partitions this worker owns are delivered
in memory (``engine.py``); only the rest cross the broker, in batches.

State: every changed record goes, once per commit, to the compacted
changelog (the source of truth, which follows the partition) and then to this
worker's RocksDB (``store.py``). Both input topics (events.canonical and
identity.messages) are co-partitioned with the changelog and assigned with
the range assignor, so one worker owns partition *p* of all three.

Commit order, and why (the rules need state never behind what was sent):

1. audit records and dead letters are published and acknowledged. An audit
   fact is derived once, by the delivery that changes the record (a replay
   onto the newer state has none to give), so it leaves before that state;
   it is idempotent (the same audit id), so being ahead of the state only
   means a duplicate after a crash;
2. changed records go to the changelog (headers: this run's id and commit
   number), acknowledged; then the commit's completion mark goes to
   ``identity.commits``; then RocksDB with the changelog offset. Kafka cannot
   write several partitions atomically without transactions (which the
   embedded broker does not honour: its read_committed consumers see aborted
   records), so a worker killed inside this step leaves part of a commit on
   the changelog: every restore skips records of commits without a
   completion mark (``store.restore_partitions``);
3. resolved events and messages for other workers are published and
   acknowledged. A resolved event must not be ahead of the state: the entry
   identifier's memo is what makes a replayed event resolve to the profile
   it went to first. Replayed onto state from before its memo entry, with
   the messages interleaved differently, it can resolve to another profile;
   the profile stage then folds it into both and counts it twice once they
   merge (``tests/e2e/test_profile_pipeline.py`` caught it under load);
4. input offsets are committed.

A crash anywhere replays the uncommitted input onto state that is at least as
new as what any message sent so far assumed; the handlers re-send whatever
was lost (``rules.py``: at-least-once discipline). A delivery failure stops
the stage rather than skipping records.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from pipeline.broker.delivery import produce
from pipeline.broker.offset_gaps import OffsetGapGuard
from pipeline.contracts.errors import DecodeError
from pipeline.dlq.vault import erase_record
from pipeline.identity.audit import merge_record, refusal_record
from pipeline.identity.codec import (
    ERASED_PREFIX,
    IdentityCodecError,
    decode_message,
    encode_message,
    encode_record,
    state_key,
)
from pipeline.identity.engine import BatchOutput, IdentityEngine, ResolvedEvent
from pipeline.identity.link_reader import read_link_event
from pipeline.identity.messages import Message as IdentityMessage
from pipeline.identity.messages import Observe, Space
from pipeline.identity.model import Limits, LinkEvent, MergeDecision, Ref, Refusal
from pipeline.identity.settle import RoundTrips, event_refs, returned_refs, round_trip_refs
from pipeline.identity.state import IdentifierRecord, ProfileRecord
from pipeline.identity.store import RocksRecordStore, read_done_commits, restore_partitions
from pipeline.ingest.reasons import Reason
from pipeline.metrics.identity import IdentityMetrics
from pipeline.runtime.ordering import ConsumerOrder
from pipeline.runtime.routing import announce_owner, poll_owners
from pipeline.runtime.status import StageStatus
from pipeline.state.committer import ChangelogCommitter
from pipeline.state.erasure import erasure_marker

log = logging.getLogger(__name__)

INCARNATION_HEADER = "omnipipe.incarnation"
"""Header of ``events.resolved`` records: the profile incarnation the event was folded into."""

Decoder = Callable[[bytes, str], dict[str, Any]]
Encoder = Callable[[str, dict[str, Any]], bytes]


@dataclass
class IdentityConfig:
    client: Mapping[str, Any]
    group_id: str
    canonical_topic: str
    canonical_subject: str
    messages_topic: str
    forget_topic: str
    changelog_topic: str
    resolved_topic: str
    merges_topic: str
    merges_subject: str
    owners_topic: str
    commits_topic: str
    dlq_topic: str
    dlq_subject: str
    partitions: int
    state_dir: Path
    limits: Limits
    advertised_url: str
    canonical_header: bytes | None = None  # records with this header are read by ``link_reader``
    batch_size: int = 2000
    commit_interval_s: float = 0.2
    #: caught up, a commit follows a partial batch but never sooner than this after the last one: a
    #: trickle of events costs at most 1/gap commits a second instead of one per poll
    caught_up_gap_s: float = 0.02
    max_cached_records: int = 50_000  # per partition, decoded, between commits
    # canonical events are resolved in event-time order across its partitions (``pipeline/runtime/
    # ordering.py``): at most this many wait per partition (then it is paused), and an empty partition
    # the broker has more for (or a broker round trip an event waits for) holds the others at most this long
    order_max_buffered: int = 5000
    order_max_wait_ms: int = 5000
    # replaying history (the newest time released is older than this): a caught-up partition is waited
    # for too, at most order_idle_ms, as the stage upstream may not have written it yet
    order_history_ms: int = 900_000
    order_idle_ms: int = 500
    #: an event waits for a broker round trip under way that moves one of its identifiers (``settle.py``):
    #: what a replay needs to resolve as paced traffic does (OMNIPIPE_IDENTITY_SETTLE=1); it costs a round
    #: trip per new link in a backlog (the bench's 20,000 customers: minutes), so it is off by default
    settle_round_trips: bool = False
    secret: bytes = b"omnipipe"  # keys the erasure markers (the PII hash key in a worker)
    dlq_keys_topic: str | None = None  # an erased ref's dead-letter key shares are destroyed there
    # the broker is Tansu (OMNIPIPE_BROKER_QUIRKS=tansu): re-read fetch gaps (pipeline/broker/offset_gaps.py)
    tansu: bool = False
    consumer_overrides: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class IdentityStats:
    """Cumulative counts, readable from other threads."""

    events: int = 0
    resolved: int = 0
    erased_dropped: int = 0  # events of an erased past, not resolved
    remote_messages: int = 0
    commits: int = 0
    changelog_records: int = 0
    idle_since: float | None = None  # monotonic time since nothing was consumed or pending


@dataclass
class _Pending:
    """Everything produced since the last commit, in publication order."""

    resolved: list[ResolvedEvent] = field(default_factory=list)
    merges: list[MergeDecision] = field(default_factory=list)
    refusals: list[Refusal] = field(default_factory=list)
    dead: list[tuple[Reason, dict[str, Any]]] = field(default_factory=list)
    remote: list[tuple[int, IdentityMessage]] = field(default_factory=list)
    forget: list[tuple[Ref, int]] = field(default_factory=list)  # to forget, sent after the commit
    markers: dict[int, list[tuple[bytes, bytes | None]]] = field(default_factory=dict)  # erasure markers
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)

    def add(self, out: BatchOutput) -> None:
        self.resolved += out.resolved
        self.merges += out.merges
        self.refusals += out.refusals
        self.remote += out.remote

    def __bool__(self) -> bool:
        return bool(self.offsets or self.remote or self.resolved or self.dead or self.forget)


@dataclass(frozen=True, slots=True)
class _Canonical:
    """A canonical record waiting for its turn in event time: its event, or why it is a dead letter."""

    msg: Message
    event: LinkEvent | None
    reason: Reason | None = None
    detail: str = ""


class IdentityLoop:
    """``run`` blocks until ``stop``; ``lookup`` may be called from any thread."""

    def __init__(self, config: IdentityConfig, decode: Decoder, encode: Encoder,
                 partition_of: Callable[[Ref], int], metrics: IdentityMetrics,
                 clock_ms: Callable[[], int] = lambda: int(time.time() * 1000)) -> None:
        self.config = config
        self._decode = decode
        self._encode = encode
        self._metrics = metrics
        self._clock_ms = clock_ms
        self.partition_of = partition_of
        self.store = RocksRecordStore(config.state_dir)
        self.engine = IdentityEngine(config.limits, partition_of, self.store,
                                     max_cached=config.max_cached_records)
        self.stats = IdentityStats()
        self.owners: dict[int, str] = {}  # partition -> web URL of the worker owning it
        self.assigned = threading.Event()  # set once partitions are owned and restored
        self._lock = threading.Lock()  # engine state: the loop vs lookups
        self._stop = threading.Event()
        self.status = StageStatus("identity")  # read by /readyz, the lag monitor
        self._pending = _Pending()
        self._committer = ChangelogCommitter(self.store, config.changelog_topic, config.commits_topic,
                                             metrics.delivery_failures.inc)
        self._record_counts: dict[tuple[int, Space], int] = {}
        self._erased: dict[int, dict[bytes, int]] = {}  # partition -> erasure marker -> request time
        self._gaps = OffsetGapGuard(lambda outcome: metrics.offset_gaps.labels(outcome).inc(),
                                    enabled=config.tansu)
        # canonical events wait here until they are next in event time across its partitions
        self._order: ConsumerOrder[_Canonical] = ConsumerOrder(
            [config.canonical_topic], max_buffered=config.order_max_buffered,
            max_wait_ms=config.order_max_wait_ms, idle_ms=config.order_idle_ms)
        self._round_trips = RoundTrips()  # messages through the broker an event may wait for (settle.py)
        self._settling: tuple[frozenset[Ref], int] | None = None  # what the next event waits for, until
        self.settle_waits = 0  # times the next event waited for a round trip through the broker
        self.settle_timeouts = 0  # round trips not back within order_max_wait_ms (the events went on)

    def stop(self) -> None:
        self._stop.set()

    # ------------------------------------------------------------------ clients
    def _make_clients(self) -> tuple[Consumer, Producer, Consumer]:
        cfg = self.config
        consumer = Consumer({
            **cfg.client,
            "group.id": cfg.group_id,
            "client.id": f"{cfg.group_id}-identity",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            # co-partitioning: partition p of every input topic goes to the same member
            "partition.assignment.strategy": "range",
            "queued.max.messages.kbytes": 65536,
            "session.timeout.ms": 10000,
            "heartbeat.interval.ms": 1000,
            "max.poll.interval.ms": 600000,  # restoring a big partition happens inside poll
            **cfg.consumer_overrides,
        })
        producer = Producer({
            **cfg.client,
            "client.id": f"{cfg.group_id}-identity",
            "linger.ms": 5,
            "batch.num.messages": 10000,
            "queue.buffering.max.messages": 1000000,
            "partitioner": "murmur2_random",  # resolved events: the profile id's partition, as Java clients
            "acks": "all",
            "on_delivery": self._committer.on_delivery,
        })
        owners = Consumer({
            **cfg.client,
            "group.id": f"{cfg.group_id}-identity-owners",  # assigned by hand, never joins
            "enable.auto.commit": False,
        })
        return consumer, producer, owners

    # ------------------------------------------------------------------ ownership
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition], producer: Producer) -> None:
        self._gaps.forget(partitions)
        self._order.assigned(consumer, partitions)
        self._round_trips.clear()  # what was under way is re-sent from the restored outboxes
        self._settling = None
        self.status.assigned_to(frozenset((tp.topic, tp.partition) for tp in partitions))
        numbers = sorted({tp.partition for tp in partitions} - set(self.engine.partitions))
        started = time.monotonic()
        cfg = self.config
        done = read_done_commits(cfg.client, cfg.commits_topic) if numbers else {}
        restored = restore_partitions(self.store, cfg.client, cfg.changelog_topic, numbers, done=done,
                                      tansu=cfg.tansu)
        if restored.undone:
            # rewrite what the incomplete commit touched, so its records are never a key's last word
            self._persist(producer, {p: [(key, self.store.raw(p, key)) for key in sorted(keys)]
                                     for p, keys in restored.undone.items()})
            log.warning("identity partitions %s: skipped %d changelog records of an incomplete commit",
                        sorted(restored.undone), sum(map(len, restored.undone.values())))
        took = time.monotonic() - started
        self._metrics.restore_seconds.observe(took)
        if numbers:
            log.info("identity partitions %s: restored %d changelog records in %.2fs",
                     numbers, sum(restored.applied.values()), took)
        for p in numbers:
            self._erased[p] = {key: int(value) for key, value in self.store.items(p, ERASED_PREFIX)}
            with self._lock:
                self.engine.assign(p)
                for space in Space:
                    self._record_counts[(p, space)] = self.store.count_space(p, space)
            cfg = self.config
            announce_owner(producer, cfg.owners_topic, p, cfg.advertised_url, self._clock_ms())
            self.owners[p] = self.config.advertised_url
        producer.flush(10)
        self._update_gauges()
        self.assigned.set()
        self.status.restore_done()

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition], producer: Producer) -> None:
        self._commit(consumer, producer)
        self._gaps.forget(partitions)
        self._order.revoked(partitions)  # unresolved, so uncommitted: the new owner reads them again
        self._round_trips.clear()
        self._settling = None
        self.status.revoked(frozenset((tp.topic, tp.partition) for tp in partitions))
        with self._lock:
            for p in sorted({tp.partition for tp in partitions}):
                self.engine.revoke(p)
                for space in Space:
                    self._record_counts.pop((p, space), None)
        self._update_gauges()

    # ------------------------------------------------------------------ the loop
    def run(self) -> None:
        cfg = self.config
        consumer, producer, owners = self._make_clients()
        closed = False
        self.status.started(cfg.group_id)
        try:
            md = owners.list_topics(cfg.owners_topic, timeout=10)
            owners.assign([TopicPartition(cfg.owners_topic, p, -2)  # OFFSET_BEGINNING
                           for p in md.topics[cfg.owners_topic].partitions])
            consumer.subscribe(
                [cfg.canonical_topic, cfg.messages_topic, cfg.forget_topic],
                on_assign=lambda c, ps: self._on_assign(c, ps, producer),
                on_revoke=lambda c, ps: self._on_revoke(c, ps, producer),
            )
            last_commit = time.monotonic()
            while not self._stop.is_set():
                batch = consumer.consume(num_messages=cfg.batch_size, timeout=0.01)
                if batch or self._order.buffered():  # buffered: released once next in event time
                    self._handle(self._gaps.filter(consumer, batch) if batch else [], consumer)
                    self.stats.idle_since = None
                producer.poll(0)
                poll_owners(owners, self.config.owners_topic, self.owners)
                now = time.monotonic()
                # caught up (a partial batch): commit now, the output leaves with it (latency); under
                # load batches are full and commits come every commit_interval_s (throughput)
                if self._pending and (now - last_commit >= cfg.commit_interval_s
                                      or (len(batch) < cfg.batch_size
                                          and now - last_commit >= cfg.caught_up_gap_s)):
                    self._commit(consumer, producer)
                    last_commit = time.monotonic()
                elif (not batch and not self._pending and not self._order.buffered()
                      and self.stats.idle_since is None):
                    self.stats.idle_since = now
            self._commit(consumer, producer)
            consumer.close()
            closed = True
        finally:
            self.status.stopped()
            if not closed:
                consumer.close()
            owners.close()
            producer.flush(5)
            self.store.close()

    def _handle(self, batch: list[Message], consumer: Consumer | None = None) -> None:
        """Take a batch: canonical events are buffered and resolved once next in event time across
        the canonical partitions (``pipeline/runtime/ordering.py``), messages and erasures at once."""
        started = time.perf_counter()
        cfg = self.config
        pending = self._pending
        inputs: list[IdentityMessage] = []
        forget: list[Message] = []
        decode = self._decode
        fast = cfg.canonical_header
        add = self._order.add
        for msg in batch:
            err = msg.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning("consumer error: %s", err)
                continue
            topic: str = msg.topic()  # type: ignore[assignment]
            partition: int = msg.partition()  # type: ignore[assignment]
            offset: int = msg.offset()  # type: ignore[assignment]
            value = msg.value()
            if topic == cfg.canonical_topic:  # its offset is committable once it is released
                try:
                    if fast is not None and value is not None and value[:5] == fast:
                        event = read_link_event(value)
                    else:
                        event = LinkEvent.from_canonical(decode(value, cfg.canonical_subject))  # type: ignore[arg-type]
                    add(topic, partition, offset, event.event_time, _Canonical(msg, event))
                except DecodeError as exc:
                    add(topic, partition, offset, None,
                        _Canonical(msg, None, _decode_reason(exc.reason), str(exc)))
                except (ValueError, KeyError, TypeError) as exc:
                    add(topic, partition, offset, None,
                        _Canonical(msg, None, Reason.INVALID_IDENTIFIER, f"{type(exc).__name__}: {exc}"))
                continue
            pending.offsets[(topic, partition)] = offset + 1
            if topic == cfg.forget_topic:
                forget.append(msg)
            else:
                try:
                    message = decode_message(value)  # type: ignore[arg-type]
                except IdentityCodecError as exc:
                    self._dead_letter(Reason.INTERNAL_ERROR, f"undecodable identity message: {exc}", msg)
                    continue
                inputs.append(message)
                if self._round_trips:
                    self._round_trips.back(returned_refs(message))  # applied just below
        now_ms = int(time.monotonic() * 1000)
        if not inputs and not forget and not batch and not self._ready(now_ms):
            return  # nothing was ready: the buffered events wait for a partition or a round trip
        with self._lock:
            # the messages first (what earlier events caused), then the events that are next in time
            outs = [self._track(self.engine.process(inputs))] if inputs else []
            outs += self._resolve_in_order(consumer, now_ms)
            for msg in forget:
                self._forget(msg)
        if not outs and not forget and not batch:
            return  # the buffered events still wait (a partition behind them, a round trip)
        for out in outs:
            pending.add(out)
            counts = out.counts
            self._metrics.add(counts)
            for (p, space), n in counts.created.items():
                self._record_counts[(p, space)] = self._record_counts.get((p, space), 0) + n
            self.stats.events += counts.events
            self.stats.resolved += counts.resolved
            self.stats.remote_messages += len(out.remote)
        self._metrics.batch_seconds.observe(time.perf_counter() - started)

    # ------------------------------------------------------------------ event-time order
    def _ready(self, now_ms: int) -> bool:
        """Whether a round trip the next event waits for is back (or its wait ran out)."""
        settling = self._settling
        if settling is None:
            return True
        refs, deadline = settling
        if not self._round_trips.blocking(refs):
            self._settling = None
            return True
        if now_ms < deadline:
            return False
        self._round_trips.give_up(refs)  # not back in time (e.g. its partition moved to another worker)
        self._settling = None
        self.settle_timeouts += 1
        return True

    def _track(self, out: BatchOutput) -> BatchOutput:
        """Count the round trips through the broker (to partitions read here) an event may wait for."""
        if not self.config.settle_round_trips:
            return out
        owned = self.engine.partitions
        peek = self.engine.peek
        for q, m in out.remote:
            if q in owned:
                self._round_trips.sent(round_trip_refs(m, peek))
        return out

    def _resolve_in_order(self, consumer: Consumer | None, now_ms: int) -> list[BatchOutput]:
        """Resolve the canonical events that are next in event time (under the lock).

        As paced traffic would: an event waits while a broker round trip that
        changes how one of its identifiers resolves is under way (an ``Assign``
        from its cluster root, a ``Resolution`` for a cookie that follows a
        login), so it resolves to the profile an earlier event linked it to,
        not to the one it had before. An event whose identifiers an earlier
        event of the same run touched waits for that run to be applied first.
        """
        if not self._ready(now_ms):
            return []
        released = self._order.release(consumer, now_ms,
                                       history_before=self._clock_ms() - self.config.order_history_ms)
        outs: list[BatchOutput] = []
        run: list[IdentityMessage] = []
        run_refs: set[Ref] = set()
        round_trips = self._round_trips
        settle = self.config.settle_round_trips
        pending = self._pending
        for i, r in enumerate(released):
            item = r.item
            event = item.event
            if event is not None and not (self._erased and self._erased_past(event)):
                refs = event_refs(event) if settle else frozenset()
                if run_refs and not run_refs.isdisjoint(refs):
                    outs.append(self._track(self.engine.process(run)))
                    run, run_refs = [], set()
                blocking = round_trips.blocking(refs) if round_trips else frozenset()
                if blocking:
                    self._order.unrelease(released[i:])
                    self._settling = (blocking, now_ms + self.config.order_max_wait_ms)
                    self.settle_waits += 1
                    break
                run.append(Observe(event, item.msg.value()))  # type: ignore[arg-type]
                run_refs.update(refs)
            elif event is None:
                self._dead_letter(item.reason, item.detail, item.msg)  # type: ignore[arg-type]
            else:
                self._metrics.erased_events_dropped.inc()
                self.stats.erased_dropped += 1
            pending.offsets[(r.partition.topic, r.partition.partition)] = r.offset + 1
        if run:
            outs.append(self._track(self.engine.process(run)))
        return outs

    def _erased_past(self, event: LinkEvent) -> bool:
        """Whether the event's key (strongest) identifier was erased at or after the event: a replayed
        or late piece of the erased past. Only the key counts: an event of someone else that also
        carries an erased identifier (a shared device) is theirs and goes on."""
        ref = event.refs[0]
        markers = self._erased.get(self.partition_of(ref))
        if not markers:
            return False
        at = markers.get(erasure_marker(ERASED_PREFIX, ref, self.config.secret))
        return at is not None and event.event_time <= at

    def _forget(self, msg: Message) -> None:
        """An erasure (sent by the profile stage, then by this method): ``profile`` or ``ref``.

        ``["profile", P]``: ask every identifier P's profile record lists, and
        P itself last, to be forgotten; the requests go through the broker
        after this commit, so P's record (the only list of its members) is
        deleted only once they are all out. ``["ref", R]``: delete R's records
        in every keyspace (tombstones on the changelog).
        """
        try:
            kind, ref, at = msgpack.unpackb(msg.value(), raw=False)  # type: ignore[arg-type]
            if kind not in ("profile", "ref") or not isinstance(ref, str) or not isinstance(at, int):
                raise ValueError(kind)
        except (ValueError, TypeError, msgpack.UnpackException):
            self._dead_letter(Reason.INTERNAL_ERROR, "undecodable identity erasure request", msg)
            return
        if kind == "profile":
            members = self.engine.members_of(ref)
            self._pending.forget += [(m, at) for m in members if m != ref] + [(ref, at)]
            return
        deleted = self.engine.forget(ref)
        p = self.partition_of(ref)
        marker = erasure_marker(ERASED_PREFIX, ref, self.config.secret)
        erased = self._erased.setdefault(p, {})
        if at > erased.get(marker, -1):  # a replay of this identifier's older events is dropped
            erased[marker] = at
            self._pending.markers.setdefault(p, []).append((marker, str(at).encode()))
        for space, n in deleted.items():
            if n:
                self._record_counts[(p, space)] = max(0, self._record_counts.get((p, space), 0) - n)
        self._metrics.forgotten.inc(1 if any(deleted.values()) else 0)

    def _dead_letter(self, reason: Reason, detail: str, msg: Message) -> None:
        _ts_type, ts = msg.timestamp()
        self._pending.dead.append((reason, {  # an ``omnipipe.dlq.DeadLetter``; detail never holds PII
            "source_topic": msg.topic(),
            "source_partition": msg.partition(),
            "source_offset": msg.offset(),
            "source_timestamp": ts if ts and ts > 0 else None,
            "reason": reason.value,
            "detail": detail[:500],
            "stage": "identity",
            "schema_id": None,
            "dead_lettered_at": self._clock_ms(),
            "key": msg.key(),
            "value": msg.value(),
        }))
        self._metrics.dead_letters.labels(reason.value).inc()

    # ------------------------------------------------------------------ commit
    def _commit(self, consumer: Consumer, producer: Producer) -> None:
        pending = self._pending
        if not pending:
            return
        started = time.perf_counter()
        cfg = self.config
        now = self._clock_ms()
        self._pending = _Pending()
        # 1. audit facts and dead letters (only derived once: a replay onto newer state has none to give)
        audit = cfg.merges_subject
        for merge in pending.merges:
            produce(producer, cfg.merges_topic, self._encode(audit, merge_record(merge, now)),
                          merge.source.encode())
        for refusal in pending.refusals:
            produce(producer, cfg.merges_topic, self._encode(audit, refusal_record(refusal, now)),
                          refusal.ref.encode())
        for _reason, dead in pending.dead:
            produce(producer, cfg.dlq_topic, self._encode(cfg.dlq_subject, dead), dead["key"] or b"")
        self._committer.flush(producer, "outputs")
        # 2. changed records: changelog first, then RocksDB at the changelog offset
        with self._lock:
            dirty = list(self.engine.take_dirty())
        by_partition: dict[int, list[tuple[bytes, bytes | None]]] = {
            p: list(items) for p, items in pending.markers.items()}
        for p, (space, ref), rec in dirty:
            by_partition.setdefault(p, []).append(
                (state_key(space, ref), encode_record(rec) if rec is not None else None))
        self._persist(producer, by_partition)
        self.stats.changelog_records += len(dirty)
        self._metrics.changelog_records.inc(len(dirty))
        # 3. resolved events, and messages for the partitions other workers own
        for ev in pending.resolved:
            produce(producer, cfg.resolved_topic, ev.payload, ev.profile.encode(), None,
                    [(INCARNATION_HEADER, ev.incarnation.encode())])
        for p, msg in pending.remote:
            produce(producer, cfg.messages_topic, encode_message(msg), msg.key.encode(), p)
        for ref, at in pending.forget:
            produce(producer, cfg.forget_topic, forget_request("ref", ref, at), ref.encode(),
                    self.partition_of(ref))
            if cfg.dlq_keys_topic:  # crypto-shred the person's dead letters (pipeline/dlq/vault.py)
                produce(producer, cfg.dlq_keys_topic, erase_record(ref, at), ref.encode())
        self._committer.flush(producer, "messages")
        # 4. inputs
        offsets = [TopicPartition(t, p, o) for (t, p), o in pending.offsets.items()]
        if offsets:
            try:
                consumer.commit(offsets=offsets, asynchronous=False)
                self.stats.commits += 1
                self._metrics.commits.inc()
            except KafkaException as exc:
                self._metrics.commit_failures.inc()
                log.warning("offset commit failed, records since the last commit will be re-read: %s", exc)
        with self._lock:
            self.engine.trim()
        self._update_gauges()
        self._metrics.commit_seconds.observe(time.perf_counter() - started)

    def _persist(self, producer: Producer, by_partition: dict[int, list[tuple[bytes, bytes | None]]]) -> None:
        """Changelog, completion mark, RocksDB (``state/committer.py``)."""
        self._committer.persist(producer, by_partition)

    def _update_gauges(self) -> None:
        totals = dict.fromkeys(Space, 0)
        for (_p, space), n in list(self._record_counts.items()):
            totals[space] += n
        for space, n in totals.items():
            self._metrics.records.labels(space.value).set(n)

    # ------------------------------------------------------------------ reads (any thread)
    def owner_of(self, ref: Ref) -> tuple[int, str | None]:
        p = self.partition_of(ref)
        return p, self.owners.get(p)

    def resolve_local(self, ref: Ref) -> dict[str, Any] | None:
        """The identifier's profile, if this worker owns its partition (None: not here or unknown)."""
        with self._lock:
            rec = self.engine.peek(Space.IDENT, ref)
        if not isinstance(rec, IdentifierRecord):
            return None
        return {"ref": ref, "profile_id": rec.profile, "incarnation": rec.incarnation,
                "resolved_by": self.config.advertised_url}

    def profile_local(self, profile: Ref) -> dict[str, Any] | None:
        with self._lock:
            rec = self.engine.peek(Space.PROFILE, profile)
        if not isinstance(rec, ProfileRecord):
            return None
        return {"profile_id": profile, "live": rec.live, "forwarded_to": rec.forwarded_to,
                "identifiers": rec.listing(self.config.limits)}

    def owns(self, ref: Ref) -> bool:
        return self.engine.owns(self.partition_of(ref))


def forget_request(kind: str, ref: Ref, at: int) -> bytes:
    """A value on ``identity.forget``: ``("profile", P, t)`` from the profile stage, ``("ref", R, t)`` from
    here; ``t`` is the erasure request's event time."""
    return msgpack.packb([kind, ref, at], use_bin_type=True)  # type: ignore[no-any-return]


def _decode_reason(reason: str) -> Reason:
    try:
        return Reason(reason)
    except ValueError:
        return Reason.NOT_AVRO
