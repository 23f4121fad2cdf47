"""The ingest stage's consume -> process -> produce loop.

Why not a Faust stream: measured on this 2-core box, a Faust agent that only
iterates its stream reaches ~4.8k events/s while raw aiokafka passes ~59k/s
through; the time goes to per-message asyncio machinery (see BENCHMARKS.md).
Ingest is stateless, so it needs none of Faust's table machinery: it runs
librdkafka (confluent-kafka) in a dedicated thread, handles whole batches
with the pure ``IngestProcessor``, and is started and stopped by the Faust
app like any other service.

At-least-once: input offsets are committed only after every canonical event
and dead letter produced from them was acknowledged by the broker. A
delivery failure stops the stage (the worker exits and replays from the
last commit) rather than skipping records. A schema registry that does not
answer pauses the loop instead (``pipeline/ingest/outage.py``): the records
from the first one it could not decode are held and retried with backoff,
never dead-lettered, and nothing past them is committed.

Order: the outputs leave in event-time order across the input partitions
(``pipeline/runtime/ordering.py``): a decoded record waits until it is the
lowest-timed head of every partition that has, or is about to get, records;
a partition's own order is kept, and offsets are committed only past
released records, so a replay read in one burst reaches identity as if paced.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from pipeline.broker.delivery import DeliveryFailed
from pipeline.broker.delivery import produce as produce_waiting
from pipeline.broker.offset_gaps import OffsetGapGuard
from pipeline.contracts.errors import SchemaRegistryError
from pipeline.dlq.sealer import VaultKey
from pipeline.ingest.outage import Backoff, HeldRecords, RegistryWait
from pipeline.ingest.processor import Accepted, Deferred, IngestProcessor, SourceTopic
from pipeline.metrics.ingest import CONTROL, IngestMetrics
from pipeline.runtime.ordering import ConsumerOrder
from pipeline.runtime.status import StageStatus

log = logging.getLogger(__name__)

Encoder = Callable[[str, dict[str, Any]], bytes]


@dataclass
class IngestConfig:
    client: Mapping[str, Any]  # librdkafka bootstrap/security keys
    group_id: str
    sources: Mapping[str, SourceTopic]
    canonical_topic: str
    canonical_subject: str
    dlq_topic: str
    dlq_subject: str
    dlq_keys_topic: str | None = None  # the DLQ key vault's input; None drops the keys (tests only)
    batch_size: int = 2000
    commit_interval_s: float = 0.5
    # while the schema registry does not answer: retry the held record after 0.2 s, doubling up to this
    registry_retry_max_s: float = 30.0
    registry_retry_initial_s: float = 0.2
    # outputs leave in event-time order across the input partitions (``pipeline/runtime/ordering.py``):
    # at most this many decoded records wait per partition (then it is paused), and an empty partition
    # the broker has more for holds the others back at most this long
    order_max_buffered: int = 5000
    order_max_wait_ms: int = 5000
    # replaying history (the newest time released is older than this): a caught-up partition is waited
    # for too, at most order_idle_ms, as the stage upstream may not have written it yet
    order_history_ms: int = 900_000
    order_idle_ms: int = 0  # its inputs come from producers, not from a stage of ours
    # the broker is Tansu (OMNIPIPE_BROKER_QUIRKS=tansu): re-read fetch gaps (pipeline/broker/offset_gaps.py)
    tansu: bool = False
    consumer_overrides: Mapping[str, Any] = field(default_factory=dict)
    producer_overrides: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class IngestStats:
    """Cumulative counts, readable from other threads (for the demo summary)."""

    consumed: int = 0
    accepted: int = 0
    dead_lettered: int = 0
    commits: int = 0
    first_batch_at: float | None = None  # time.perf_counter() of the first records
    last_commit_at: float | None = None


@dataclass(frozen=True, slots=True)
class _Output:
    """What one input record gives, waiting for its turn in event time (``pipeline/runtime/ordering.py``)."""

    topic: str  # the canonical topic or the dead-letter topic
    value: bytes
    key: bytes | None
    vault_keys: tuple[VaultKey, ...] = ()  # a dead letter's key shares, produced just before it


class IngestLoop:
    """One consumer-group member; ``run`` blocks until ``stop`` is called."""

    def __init__(
        self,
        config: IngestConfig,
        processor: IngestProcessor,
        encode: Encoder,
        metrics: IngestMetrics,
        clock_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        self.config = config
        self._processor = processor
        self._encode = encode
        self._metrics = metrics
        self._gaps = OffsetGapGuard(lambda outcome: metrics.offset_gaps.labels(outcome).inc(),
                                    enabled=config.tansu)
        self._clock_ms = clock_ms
        self._stop = threading.Event()
        self.status = StageStatus("ingest")  # read by /readyz, the lag monitor
        self.stats = IngestStats()
        self._failures = 0
        self._pending: dict[tuple[str, int], int] = {}  # next offset to commit
        # decoded records wait here until they are next in event time across the inputs (then produced)
        self._order: ConsumerOrder[_Output] = ConsumerOrder(
            config.sources, max_buffered=config.order_max_buffered, max_wait_ms=config.order_max_wait_ms,
            idle_ms=config.order_idle_ms)
        self._consumer: Consumer | None = None  # set by ``run`` (the order reads its watermarks)
        self._backoff = Backoff(config.registry_retry_initial_s, config.registry_retry_max_s)
        self._wait: RegistryWait | None = None  # records held while the schema registry is down
        self._assignment_changed = False
        self._channel_label = {
            name: (src.channel.lower() if src.channel else CONTROL)
            for name, src in config.sources.items()
        }

    def stop(self) -> None:
        self._stop.set()

    # -- client setup ------------------------------------------------------

    def _on_delivery(self, err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            self._failures += 1
            self._metrics.delivery_failures.inc()
            log.error("delivery failed: %s", err)

    def _make_clients(self) -> tuple[Consumer, Producer]:
        consumer = Consumer({
            **self.config.client,
            "group.id": self.config.group_id,
            "client.id": f"{self.config.group_id}-ingest",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "fetch.min.bytes": 1,
            "queued.max.messages.kbytes": 65536,
            "session.timeout.ms": 10000,
            "heartbeat.interval.ms": 1000,
            **self.config.consumer_overrides,
        })
        producer = Producer({
            **self.config.client,
            "client.id": f"{self.config.group_id}-ingest",
            "linger.ms": 5,
            "batch.num.messages": 10000,
            "queue.buffering.max.messages": 500000,
            "compression.type": "none",
            "partitioner": "murmur2_random",  # same partitions as Java/aiokafka clients
            "acks": "all",
            "on_delivery": self._on_delivery,
            **self.config.producer_overrides,
        })
        return consumer, producer

    # -- the loop ------------------------------------------------------------

    def _commit(self, consumer: Consumer, producer: Producer) -> None:
        """Wait for every output, then commit the inputs they came from."""
        if not self._pending:
            return
        remaining = producer.flush(30)
        if remaining or self._failures:
            raise DeliveryFailed(
                f"{self._failures} records failed, {remaining} unacknowledged; "
                "not committing, the stage stops and replays"
            )
        offsets = [TopicPartition(t, p, o) for (t, p), o in self._pending.items()]
        self._pending.clear()
        try:
            consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            # e.g. a rebalance took the partitions: their records are re-read by
            # the new owner (duplicates, never loss), so log and carry on.
            self._metrics.commit_failures.inc()
            log.warning("offset commit failed, records since the last commit will be re-read: %s", exc)
            return
        self.stats.commits += 1
        self.stats.last_commit_at = time.perf_counter()
        self._metrics.commits.inc()

    def _encode_dead_letter(self, record: dict[str, Any]) -> bytes:
        """A dead letter must always be publishable, or one record would stop the stage for good."""
        try:
            return self._encode(self.config.dlq_subject, record)
        except SchemaRegistryError:
            raise  # the registry is down, not the record: the caller holds it and retries
        except Exception as exc:
            log.error("dead letter could not be encoded (%s); publishing it without its value",
                      type(exc).__name__)
            fallback = {**record, "value": None, "key": None, "sealed": None,
                        "detail": f"{record.get('reason')}; the dead letter itself failed to encode"}
            return self._encode(self.config.dlq_subject, fallback)

    def _produce_vault_keys(self, producer: Producer, vault_keys: tuple[VaultKey, ...]) -> None:
        """A dead letter's key shares, flushed with it before the offset commit (``pipeline/dlq/``)."""
        topic = self.config.dlq_keys_topic
        if topic is None:
            return
        for vk in vault_keys:
            produce_waiting(producer, topic, vk.payload, vk.ref.encode())

    def run(self) -> None:
        consumer, producer = self._make_clients()
        self._consumer = consumer
        closed = False

        def on_revoke(cons: Consumer, partitions: list[TopicPartition]) -> None:
            # Finish what we own before another member takes it over.
            self._commit(cons, producer)
            self._gaps.forget(partitions)
            self.status.revoked(frozenset((tp.topic, tp.partition) for tp in partitions))
            if self._wait is not None:
                self._wait.drop(partitions)  # the new owner reads them again from the commit
            self._order.revoked(partitions)  # unreleased, so uncommitted: the new owner reads them again

        def on_assign(_cons: Consumer, partitions: list[TopicPartition]) -> None:
            self._gaps.forget(partitions)
            self._order.assigned(_cons, partitions)
            self.status.assigned_to(frozenset((tp.topic, tp.partition) for tp in partitions))
            self.status.restore_done()  # stateless: nothing to restore
            self._assignment_changed = True  # paused or resumed in the loop, once assigned

        self.status.started(self.config.group_id)
        try:
            consumer.subscribe(list(self.config.sources), on_revoke=on_revoke, on_assign=on_assign)
            last_commit = time.monotonic()
            while not self._stop.is_set():
                if self._wait is not None or self._assignment_changed:
                    self._registry_wait(consumer, producer)
                # a short wait: consume() holds a partial batch until the timeout (latency at moderate load)
                batch = consumer.consume(num_messages=self.config.batch_size,
                                         timeout=0.01 if self._wait is None else 0.05)
                if batch:
                    self._take(consumer, self._gaps.filter(consumer, batch), producer)
                self._release(consumer, producer)
                producer.poll(0)
                if time.monotonic() - last_commit >= self.config.commit_interval_s:
                    self._commit(consumer, producer)
                    last_commit = time.monotonic()
            self._commit(consumer, producer)
            consumer.close()
            closed = True
        finally:
            self.status.stopped()
            if not closed:
                consumer.close()
            producer.flush(5)

    def _handle(self, batch: list[Message], producer: Producer) -> HeldRecords | None:
        """Process ``batch`` in order; where the schema registry did not answer, stop and hold the rest."""
        started = time.perf_counter()
        if self.stats.first_batch_at is None:
            self.stats.first_batch_at = started
        cfg = self.config
        process = self._processor.process
        encode = self._encode
        add = self._order.add
        labels = self._channel_label
        now_ms = self._clock_ms()
        consumed: dict[str, int] = {}
        accepted: dict[str, int] = {}
        dead: dict[str, int] = {}
        n_ok = n_dead = n_in = 0
        sample_every = 16
        observe = self._metrics.decode_seconds.observe
        held: HeldRecords | None = None
        for i, msg in enumerate(batch):
            err = msg.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning("consumer error: %s", err)
                continue
            # never None for a message without error
            topic: str = msg.topic()  # type: ignore[assignment]
            partition: int = msg.partition()  # type: ignore[assignment]
            offset: int = msg.offset()  # type: ignore[assignment]
            n_in += 1
            label = labels.get(topic, CONTROL)
            consumed[label] = consumed.get(label, 0) + 1
            _ts_type, ts = msg.timestamp()
            if n_in % sample_every == 0:
                t0 = time.perf_counter()
                result = process(topic, partition, offset, ts, msg.key(), msg.value(), now_ms)
                observe(time.perf_counter() - t0)
            else:
                result = process(topic, partition, offset, ts, msg.key(), msg.value(), now_ms)
            if type(result) is Accepted:
                try:
                    value = encode(cfg.canonical_subject, result.event)
                except SchemaRegistryError as exc:  # the canonical schema could not be fetched
                    result = Deferred(f"encoding {cfg.canonical_subject}: {exc}")
                except Exception as exc:
                    result = self._processor.internal_error(
                        topic, partition, offset, ts, msg.key(), msg.value(), now_ms, exc
                    )
            if type(result) is Accepted:
                # produced once it is next in event time across the inputs (``_release``)
                add(topic, partition, offset, result.event["event_time"],
                    _Output(cfg.canonical_topic, value, result.key.encode()))
                accepted[label] = accepted.get(label, 0) + 1
                n_ok += 1
            else:
                if type(result) is not Deferred:
                    try:
                        value = self._encode_dead_letter(result.dead_letter)  # type: ignore[union-attr]
                    except SchemaRegistryError as exc:  # the dead-letter schema could not be fetched
                        result = Deferred(f"encoding {cfg.dlq_subject}: {exc}")
                if type(result) is Deferred:  # a dependency failed, not the record: hold, never dead-letter
                    n_in -= 1
                    consumed[label] -= 1
                    held = HeldRecords(batch[i:], result.detail)
                    break
                # no key: the record's key may name the person, it is only kept sealed; no time: it
                # leaves after its partition's records before it
                add(topic, partition, offset, None,
                    _Output(cfg.dlq_topic, value, None, result.vault_keys))  # type: ignore[union-attr]
                reason = result.reason.value  # type: ignore[union-attr]
                dead[reason] = dead.get(reason, 0) + 1
                n_dead += 1
        self._release(self._consumer, producer)
        self.stats.consumed += n_in
        self.stats.accepted += n_ok
        self.stats.dead_lettered += n_dead
        self._metrics.add_batch(consumed, accepted, dead)
        self._metrics.batch_seconds.observe(time.perf_counter() - started)
        return held

    def _release(self, consumer: Consumer | None, producer: Producer) -> None:
        """Produce the outputs that are next in event time; their inputs' offsets become committable."""
        released = self._order.release(consumer, int(time.monotonic() * 1000),
                                       history_before=self._clock_ms() - self.config.order_history_ms)
        if not released:
            return
        produce = producer.produce
        poll = producer.poll
        pending = self._pending
        for r in released:
            out = r.item
            if out.vault_keys:
                self._produce_vault_keys(producer, out.vault_keys)
            while True:
                try:
                    produce(out.topic, out.value, out.key)
                    break
                except BufferError:
                    poll(0.05)
            pending[(r.partition.topic, r.partition.partition)] = r.offset + 1

    # -- waiting for the schema registry (see pipeline/ingest/outage.py) -----

    def _take(self, consumer: Consumer, batch: list[Message], producer: Producer) -> None:
        """Process a consumed batch, or queue it behind the held records while waiting."""
        if self._wait is not None:  # e.g. a partition assigned during the wait, before its pause
            self._wait.held.extend(batch)
            return
        held = self._handle(batch, producer)
        if held is not None:
            self._begin_wait(consumer, held)

    def _begin_wait(self, consumer: Consumer, held: HeldRecords) -> None:
        wait = self._wait = RegistryWait.begin(time.monotonic(), held, self._backoff)
        self._metrics.registry_unavailable.set(1)
        self._set_paused(consumer, True)
        topic, partition, offset = wait.first
        log.warning(
            "schema registry unavailable; ingest holds %d records from %s[%d]@%d, dead-letters none, "
            "and retries with backoff up to %gs: %s",
            len(wait.held), topic, partition, offset, self._backoff.max_s, wait.detail,
        )

    def _registry_wait(self, consumer: Consumer, producer: Producer) -> None:
        """Once per loop while waiting (or after a rebalance): retry the held records when due."""
        wait = self._wait
        if self._assignment_changed:
            self._assignment_changed = False
            self._set_paused(consumer, wait is not None)
        if wait is None or not wait.due(time.monotonic()):
            return
        wait.retries += 1
        self._metrics.registry_retries.inc()
        held = self._handle(wait.held, producer) if wait.held else None
        if held is not None:
            wait.failed_again(time.monotonic(), held, self._backoff)
            return
        self._wait = None
        self._metrics.registry_unavailable.set(0)
        self._set_paused(consumer, False)
        log.info("schema registry answers again; ingest resumed after waiting %.1fs (%d retries)",
                 time.monotonic() - wait.started_at, wait.retries)

    def _set_paused(self, consumer: Consumer, paused: bool) -> None:
        """Pause (or resume) every assigned partition; the loop keeps polling, so the group holds."""
        try:
            partitions = consumer.assignment()
            self._order.stage_paused = paused  # the ordering resumes none of them meanwhile
            if partitions:
                (consumer.pause if paused else consumer.resume)(partitions)
            if not paused:
                self._order.reapply_pauses(consumer)  # those whose order buffer is full stay paused
        except KafkaException as exc:  # e.g. mid-rebalance: the next assignment is set again
            self._assignment_changed = True
            log.warning("could not %s partitions: %s", "pause" if paused else "resume", exc)
