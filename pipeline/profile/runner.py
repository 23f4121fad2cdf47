"""The profile stage's consume -> fold -> persist -> send loop (one consumer-group member).

A librdkafka loop under the Faust app, like ingest and identity, for the same
measured reason (one Faust send per event reached 0.05 of raw aiokafka,
BENCHMARKS.md); its table is RocksDB per partition plus a compacted
changelog, restored the same way as identity's (``pipeline/state``).

Commit order (the engine's docstring says why it is exactly once):

1. the commit's changed records, tombstones, outbox entries and the
   partition's meta (input offsets applied) go to the changelog, tagged with
   this run and commit; then the completion mark on ``profile.commits``; then
   RocksDB;
2. the outbox is sent (profile messages in order, one request in flight;
   erasure completions and dead letters stamped with the send time) and
   acknowledged; the sent entries are deleted with the next commit;
3. input offsets are committed (only to keep consumer lag meaningful: a
   re-read input below the stored offsets is skipped).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from pipeline.broker.delivery import produce
from pipeline.broker.offset_gaps import OffsetGapGuard
from pipeline.contracts.errors import DecodeError
from pipeline.identity.audit import MERGE
from pipeline.identity.runner import INCARNATION_HEADER, forget_request
from pipeline.ingest.reasons import Reason
from pipeline.metrics.nba import NbaMetrics
from pipeline.metrics.profile import ProfileMetrics
from pipeline.nba.catalogue import ActionCatalogue
from pipeline.nba.decider import Decider
from pipeline.nba.model import ModelError, ModelHolder, parse_models, priors
from pipeline.profile.codec import ProfileCodecError, pack, unpack
from pipeline.profile.engine import (
    DEAD,
    ERASURES,
    FORGET,
    MESSAGES,
    TRIGGERS,
    BadIn,
    EventIn,
    FeedIn,
    Input,
    MergeIn,
    MessageIn,
    ProfileEngine,
    ProfileRecord,
    SkipIn,
    feed_position_key,
)
from pipeline.profile.limits import ProfileLimits
from pipeline.profile.views import profile_json
from pipeline.runtime.routing import announce_owner, poll_owners
from pipeline.runtime.status import StageStatus
from pipeline.state.changelog import read_done_commits, restore_partitions
from pipeline.state.committer import ChangelogCommitter
from pipeline.state.partition_store import PartitionStore

log = logging.getLogger(__name__)

TIMER_TICK_S = 0.1  # how often due timers are looked for (their resolution)

Decoder = Callable[[bytes, str], dict[str, Any]]
Encoder = Callable[[str, dict[str, Any]], bytes]


@dataclass
class ProfileConfig:
    client: Mapping[str, Any]
    group_id: str
    resolved_topic: str
    canonical_subject: str
    merges_topic: str
    merges_subject: str
    messages_topic: str
    changelog_topic: str
    commits_topic: str
    owners_topic: str
    erasures_topic: str
    forget_topic: str
    erasures_subject: str
    dlq_topic: str
    dlq_subject: str
    partitions: int
    state_dir: Path
    limits: ProfileLimits
    advertised_url: str
    batch_size: int = 2000
    commit_interval_s: float = 0.2
    #: caught up, a commit follows a partial batch but never sooner than this after the last one: a
    #: trickle of events costs at most 1/gap commits a second instead of one per poll
    caught_up_gap_s: float = 0.02
    max_cached_records: int = 100_000
    secret: bytes = b"omnipipe"  # keys the erased-profile markers (the PII hash key in a worker)
    # the broker is Tansu (OMNIPIPE_BROKER_QUIRKS=tansu): re-read fetch gaps (pipeline/broker/offset_gaps.py)
    tansu: bool = False
    consumer_overrides: Mapping[str, Any] = field(default_factory=dict)
    # next-best-action (None: the stage only keeps profiles)
    actions: ActionCatalogue | None = None
    triggers_topics: Mapping[str, str] = field(default_factory=dict)  # channel -> topic
    triggers_subject: str = ""
    models_topic: str = ""
    stock_topic: str = ""
    stock_subject: str = ""
    timers_per_tick: int = 10_000
    #: "wall"; "event": per-partition stream time (each event judged at its input partition's, each timer at
    #: its due time, fired once its partition's stream time passes it), for replays; "occasion": each decision
    #: as of its own occasion (the event's time, the timer's due time): a pure function of the profile's
    #: history, so a crash-and-replay run can be checked against a recomputation (timers fire at stream time)
    decision_clock: str = "wall"


@dataclass
class ProfileStats:
    """Cumulative counts, readable from other threads."""

    consumed: int = 0
    events: int = 0  # resolved events taken (folded, dropped as duplicates, dead-lettered or forwarded)
    folds: int = 0
    commits: int = 0
    erasures: int = 0
    idle_since: float | None = None


class ProfileLoop:
    """``run`` blocks until ``stop``; ``lookup`` may be called from any thread."""

    def __init__(self, config: ProfileConfig, decode: Decoder, encode: Encoder,
                 partition_of: Callable[[str], int], metrics: ProfileMetrics,
                 clock_ms: Callable[[], int] = lambda: int(time.time() * 1000),
                 nba_metrics: NbaMetrics | None = None) -> None:
        self.config = config
        self._decode = decode
        self._encode = encode
        self._metrics = metrics
        self._gaps = OffsetGapGuard(lambda outcome: metrics.offset_gaps.labels(outcome).inc(),
                                    enabled=config.tansu)
        self._clock_ms = clock_ms
        self.partition_of = partition_of
        self.store = PartitionStore(config.state_dir)
        self.models: ModelHolder | None = None
        decider = None
        if config.actions is not None:
            self.models = ModelHolder(priors(config.actions))
            decider = Decider(config.actions, self.models, config.limits.caps.contacts)
        self._nba = nba_metrics
        self._pending = False  # state changed outside the consumed inputs (timers, feed records)
        self.engine = ProfileEngine(config.limits, partition_of, self.store, clock_ms,
                                    max_cached=config.max_cached_records, secret=config.secret,
                                    decider=decider, decision_clock=config.decision_clock)
        self.stats = ProfileStats()
        self.owners: dict[int, str] = {}
        self.assigned = threading.Event()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.status = StageStatus("profile")  # read by /readyz, the lag monitor
        self._dirty_since: float | None = None
        self._offsets: dict[tuple[str, int], int] = {}
        self._stock: Consumer | None = None
        self._stock_partitions: list[int] = []
        self._timers_at = 0.0
        self._committer = ChangelogCommitter(self.store, config.changelog_topic, config.commits_topic,
                                             metrics.delivery_failures.inc)

    def stop(self) -> None:
        self._stop.set()

    # ------------------------------------------------------------------ clients
    def _make_clients(self) -> tuple[Consumer, Producer, Consumer]:
        cfg = self.config
        consumer = Consumer({
            **cfg.client,
            "group.id": cfg.group_id,
            "client.id": f"{cfg.group_id}-profile",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "partition.assignment.strategy": "range",  # co-partitioned inputs: partition p together
            "queued.max.messages.kbytes": 65536,
            "session.timeout.ms": 10000,
            "heartbeat.interval.ms": 1000,
            "max.poll.interval.ms": 600000,
            **cfg.consumer_overrides,
        })
        producer = Producer({
            **cfg.client,
            "client.id": f"{cfg.group_id}-profile",
            "linger.ms": 5,
            "batch.num.messages": 10000,
            "queue.buffering.max.messages": 1000000,
            "max.in.flight.requests.per.connection": 1,  # messages to a partition arrive in seq order
            "partitioner": "murmur2_random",  # erasure requests land on the profile id's identity partition
            "acks": "all",
            "on_delivery": self._committer.on_delivery,
        })
        owners = Consumer({**cfg.client, "group.id": f"{cfg.group_id}-profile-owners",
                           "enable.auto.commit": False})
        return consumer, producer, owners

    def _make_side_consumers(self) -> tuple[Consumer | None, Consumer | None]:
        """The models topic (read whole, latest wins) and the stock feed (positioned at assignment)."""
        cfg = self.config
        if cfg.actions is None:
            return None, None
        side = {**cfg.client, "enable.auto.commit": False, "auto.offset.reset": "earliest"}
        models = None
        if cfg.models_topic:
            models = Consumer({**side, "group.id": f"{cfg.group_id}-profile-models"})
            md = models.list_topics(cfg.models_topic, timeout=10)
            models.assign([TopicPartition(cfg.models_topic, p, -2)
                           for p in md.topics[cfg.models_topic].partitions])
        stock = None
        if cfg.stock_topic:
            stock = Consumer({**side, "group.id": f"{cfg.group_id}-profile-stock"})
            md = stock.list_topics(cfg.stock_topic, timeout=10)
            self._stock_partitions = sorted(md.topics[cfg.stock_topic].partitions)
        return models, stock

    # ------------------------------------------------------------------ ownership
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition], producer: Producer) -> None:
        self._gaps.forget(partitions)
        self.status.assigned_to(frozenset((tp.topic, tp.partition) for tp in partitions))
        cfg = self.config
        numbers = sorted({tp.partition for tp in partitions} - set(self.engine.partitions))
        started = time.monotonic()
        done = read_done_commits(cfg.client, cfg.commits_topic) if numbers else {}
        restored = restore_partitions(self.store, cfg.client, cfg.changelog_topic, numbers, done=done,
                                      tansu=cfg.tansu)
        if restored.undone:
            self._persist(producer, {p: [(key, self.store.raw(p, key)) for key in sorted(keys)]
                                     for p, keys in restored.undone.items()})
            log.warning("profile partitions %s: skipped %d changelog records of an incomplete commit",
                        sorted(restored.undone), sum(map(len, restored.undone.values())))
        took = time.monotonic() - started
        self._metrics.restore_seconds.observe(took)
        if numbers:
            log.info("profile partitions %s: restored %d changelog records in %.2fs",
                     numbers, sum(restored.applied.values()), took)
        with self._lock:
            for p in numbers:
                self.engine.assign(p)
            feed_from = {fp: min((self.engine.next_offset(feed_position_key(cfg.stock_topic, fp), p)
                                  for p in self.engine.partitions), default=0)
                         for fp in self._stock_partitions}
        if self._stock is not None and self.engine.partitions:
            self._stock.assign([TopicPartition(cfg.stock_topic, fp, at) for fp, at in feed_from.items()])
        self._send_outbox(producer)  # what a previous owner persisted but may not have sent
        for p in numbers:
            announce_owner(producer, cfg.owners_topic, p, cfg.advertised_url, self._clock_ms())
            self.owners[p] = cfg.advertised_url
        producer.flush(10)
        self._update_gauges()
        self.assigned.set()
        self.status.restore_done()

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition], producer: Producer) -> None:
        self._commit(consumer, producer)
        self._gaps.forget(partitions)
        self.status.revoked(frozenset((tp.topic, tp.partition) for tp in partitions))
        with self._lock:
            for p in sorted({tp.partition for tp in partitions}):
                self.engine.revoke(p)
        self._update_gauges()

    # ------------------------------------------------------------------ the loop
    def run(self) -> None:
        cfg = self.config
        consumer, producer, owners = self._make_clients()
        models, self._stock = self._make_side_consumers()
        closed = False
        self.status.started(cfg.group_id)
        try:
            md = owners.list_topics(cfg.owners_topic, timeout=10)
            owners.assign([TopicPartition(cfg.owners_topic, p, -2)
                           for p in md.topics[cfg.owners_topic].partitions])
            consumer.subscribe(
                [cfg.resolved_topic, cfg.merges_topic, cfg.messages_topic],
                on_assign=lambda c, ps: self._on_assign(c, ps, producer),
                on_revoke=lambda c, ps: self._on_revoke(c, ps, producer),
            )
            last_commit = time.monotonic()
            while not self._stop.is_set():
                batch = consumer.consume(num_messages=cfg.batch_size, timeout=0.01)
                if batch:
                    self._handle(self._gaps.filter(consumer, batch))
                    self.stats.idle_since = None
                producer.poll(0)
                poll_owners(owners, self.config.owners_topic, self.owners)
                if models is not None:
                    self._poll_models(models)
                if self._stock is not None and self.engine.partitions:
                    self._poll_stock(self._stock)
                now = time.monotonic()
                # caught up (a partial batch): commit now, the triggers leave with it (latency); under
                # load batches are full and commits come every commit_interval_s (throughput)
                if (self._offsets or self._pending) and (now - last_commit >= cfg.commit_interval_s
                                                         or (len(batch) < cfg.batch_size
                                                             and now - last_commit >= cfg.caught_up_gap_s)):
                    self._commit(consumer, producer)
                    self._fire_timers()
                    last_commit = time.monotonic()
                elif not batch and not self._offsets:
                    self._fire_timers()
                    if self.stats.idle_since is None and not self._pending:
                        self.stats.idle_since = now
            self._commit(consumer, producer)
            consumer.close()
            closed = True
        finally:
            self.status.stopped()
            if not closed:
                consumer.close()
            owners.close()
            for side in (models, self._stock):
                if side is not None:
                    side.close()
            producer.flush(5)
            self.store.close()

    def _handle(self, batch: list[Message]) -> None:
        started = time.perf_counter()
        inputs: list[Input] = []
        for msg in batch:
            err = msg.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning("consumer error: %s", err)
                continue
            topic: str = msg.topic()  # type: ignore[assignment]
            partition: int = msg.partition()  # type: ignore[assignment]
            offset: int = msg.offset()  # type: ignore[assignment]
            self._offsets[(topic, partition)] = offset + 1
            inputs.append(self._parse(msg, topic, partition, offset))
        with self._lock:
            counts = self.engine.process(inputs)
        self._metrics.add(counts)
        if self._nba is not None:
            self._nba.add(counts.nba)
        self.stats.consumed += len(inputs)
        self.stats.events += sum(1 for i in inputs if isinstance(i, EventIn))
        self.stats.folds += counts.folds
        self._metrics.batch_seconds.observe(time.perf_counter() - started)

    def _parse(self, msg: Message, topic: str, partition: int, offset: int) -> Input:
        cfg = self.config
        value = msg.value()
        try:
            if topic == cfg.resolved_topic:
                event = self._decode(value, cfg.canonical_subject)  # type: ignore[arg-type]
                key = msg.key()
                if not key:
                    raise ValueError("resolved event without a profile id key")
                return EventIn(topic, partition, offset, key.decode(), _incarnation(msg.headers()), event,
                               value)  # type: ignore[arg-type]
            if topic == cfg.merges_topic:
                record = self._decode(value, cfg.merges_subject)  # type: ignore[arg-type]
                if record["kind"] != MERGE:
                    return SkipIn(topic, partition, offset)
                return MergeIn(topic, partition, offset, record["source_profile"],
                               record["source_incarnation"], record["target_profile"],
                               record["target_incarnation"])
            message = unpack(value)  # type: ignore[arg-type]
            if not isinstance(message, list) or len(message) < 5:
                raise ProfileCodecError("not a profile message")
            return MessageIn(topic, partition, offset, message)
        except DecodeError as exc:
            reason = exc.reason if exc.reason in Reason.__members__.values() else Reason.NOT_AVRO.value
            return BadIn(topic, partition, offset, reason, str(exc), msg.key(), value)
        except (ProfileCodecError, ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
            return BadIn(topic, partition, offset, Reason.INTERNAL_ERROR.value,
                         f"undecodable {topic} record: {type(exc).__name__}", msg.key(), value)

    # ------------------------------------------------------------------ commit
    def _commit(self, consumer: Consumer, producer: Producer) -> None:
        if not self._offsets and not self._pending:
            return
        started = time.perf_counter()
        with self._lock:
            changes = self.engine.take_changes()
        self._pending = False
        self._persist(producer, changes)
        self._send_outbox(producer)
        offsets = [TopicPartition(t, p, o) for (t, p), o in self._offsets.items()]
        self._offsets = {}
        self.stats.commits += 1
        self._metrics.commits.inc()
        if offsets:
            try:
                consumer.commit(offsets=offsets, asynchronous=False)
            except KafkaException as exc:
                self._metrics.commit_failures.inc()
                log.warning("offset commit failed; the records since are skipped when re-read: %s", exc)
        with self._lock:
            self.engine.trim()
        self._update_gauges()
        self._metrics.commit_seconds.observe(time.perf_counter() - started)

    def _persist(self, producer: Producer, by_partition: dict[int, list[tuple[bytes, bytes | None]]]) -> None:
        """Changelog, completion mark, RocksDB (``state/committer.py``)."""
        n = self._committer.persist(producer, by_partition)
        self._metrics.changelog_records.inc(n)
        with self._lock:
            sizes, self.engine.written_sizes = self.engine.written_sizes, []
        for size in sizes:
            self._metrics.record_bytes.observe(size)

    def _send_outbox(self, producer: Producer) -> None:
        cfg = self.config
        with self._lock:
            unsent = self.engine.unsent()
        if not unsent:
            return
        now = self._clock_ms()
        erasures = 0
        triggers: list[tuple[str, int]] = []
        for _p, entry in unsent:
            self._metrics.messages.labels(entry.dest).inc()
            if entry.dest == MESSAGES:
                produce(producer, cfg.messages_topic, pack(entry.value), entry.key, entry.partition)
            elif entry.dest == ERASURES:
                erasures += 1
                produce(producer, cfg.erasures_topic,
                        self._encode(cfg.erasures_subject, {**entry.value, "completed_at": now}), entry.key)
            elif entry.dest == FORGET:
                profile, at = entry.value
                produce(producer, cfg.forget_topic, forget_request("profile", profile, at), entry.key)
            elif entry.dest == TRIGGERS:
                channel, record, occasion = entry.value
                produce(producer, cfg.triggers_topics[channel], self._encode(cfg.triggers_subject, record),
                        entry.key)
                if occasion != "cancel":
                    triggers.append((occasion, record["source_event_time"]))
            elif entry.dest == DEAD:
                produce(producer, cfg.dlq_topic,
                        self._encode(cfg.dlq_subject, {**entry.value, "dead_lettered_at": now}), entry.key)
        self._committer.flush(producer, "outbox")
        if triggers and self._nba is not None:
            sent = self._clock_ms()  # acknowledged by the broker: the senders can read them now
            for occasion, at in triggers:
                self._nba.latency.labels(occasion).observe(max(0, sent - at) / 1000)
        with self._lock:
            self.engine.acknowledge(unsent)
        self.stats.erasures += erasures
        self._metrics.erasures.inc(erasures)

    # ------------------------------------------------------------------ timers, models, feed
    def _fire_timers(self) -> None:
        """At most every TIMER_TICK_S: a range read of each partition's index (after a commit)."""
        if self.config.actions is None or not self.engine.partitions:
            return
        now = time.monotonic()
        if now - self._timers_at < TIMER_TICK_S:
            return
        self._timers_at = now
        with self._lock:
            counts = self.engine.fire_timers(limit=self.config.timers_per_tick)  # each partition's horizon
            changed = self.engine.has_changes()  # decisions, re-armed or dropped index entries
        self._pending = self._pending or changed
        if self._nba is not None:
            self._nba.add(counts.nba)

    def _poll_models(self, consumer: Consumer) -> None:
        for msg in consumer.consume(num_messages=10, timeout=0):
            if msg.error() is not None or msg.value() is None or self.models is None:
                continue
            try:
                doc = json.loads(msg.value())  # type: ignore[arg-type]
                models = parse_models(doc, self.config.actions)  # type: ignore[arg-type]
            except (ValueError, ModelError) as exc:
                log.error("propensity models on %s offset %s rejected, keeping %s: %s",
                          self.config.models_topic, msg.offset(), self.models.current.version, exc)
                if self._nba is not None:
                    self._nba.model_updates.labels("rejected").inc()
                continue
            self.models.swap(models)
            log.info("propensity models %s swapped in", models.version)
            if self._nba is not None:
                self._nba.model_updates.labels("accepted").inc()
                self._nba.model_swapped.set(time.time())

    def _poll_stock(self, consumer: Consumer) -> None:
        cfg = self.config
        for msg in consumer.consume(num_messages=500, timeout=0):
            if msg.error() is not None:
                continue
            try:
                record = self._decode(msg.value(), cfg.stock_subject)  # type: ignore[arg-type]
            except DecodeError as exc:
                log.warning("undecodable record on %s offset %s skipped: %s", cfg.stock_topic, msg.offset(),
                            exc.reason)
                record = {"in_stock": False}
            with self._lock:
                counts = self.engine.process_feed(
                    FeedIn(cfg.stock_topic, msg.partition(), msg.offset(), record))  # type: ignore[arg-type]
            self._pending = True
            if self._nba is not None:
                self._nba.feed_records.inc()
                self._nba.add(counts.nba)

    def _update_gauges(self) -> None:
        with self._lock:
            live, size = self.engine.totals()
        self._metrics.profiles.set(live)
        self._metrics.profile_bytes.set(size)

    # ------------------------------------------------------------------ reads (any thread)
    def owner_of(self, profile: str) -> tuple[int, str | None]:
        p = self.partition_of(profile)
        return p, self.owners.get(p)

    def owns(self, profile: str) -> bool:
        return self.engine.owns(self.partition_of(profile))

    def record(self, profile: str) -> ProfileRecord | None:
        with self._lock:
            return self.engine.peek(profile)

    def profile_local(self, profile: str) -> dict[str, Any] | None:
        """The customer-360 JSON of a live profile this worker owns (None: unknown or merged away)."""
        rec = self.record(profile)
        if rec is None or rec.state is None:
            return None
        return {**profile_json(profile, rec.state, self.config.limits), "owner": self.config.advertised_url}


def _incarnation(headers: Any) -> str:
    for name, value in headers or ():
        if name == INCARNATION_HEADER and isinstance(value, bytes):
            return value.decode()
    return ""

