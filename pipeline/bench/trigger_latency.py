"""Event-to-trigger latency at a fixed offered load, the second half of ``make bench``.

A fresh round (its own input, internal and trigger topics, state directory
and consumer groups) runs ingest, identity and profile with the action
catalogue in stage threads of this process, with the wall decision clock of
a worker. Once the stages own their partitions and a short warm-up went
through, a publisher *in a child process* (so its encoding does not share
this process's interpreter lock with the stages, as an outside source would
not) sends simulated events at a fixed rate, token bucket in 10 ms batches,
each event's ``event_time`` stamped with the wall clock as it is produced.

Afterwards the trigger topics are read from the beginning: for every trigger
of an event-kind action (cancellations left out) whose source event was
published in the window, latency = the trigger record's Kafka timestamp
(the profile stage's producer CreateTime) - ``source_event_time``. The
in-process histogram ``omnipipe_nba_event_to_trigger_seconds{occasion="event"}``
(taken after the broker's acknowledgement) is reported beside it as a
cross-check.
"""

from __future__ import annotations

import math
import multiprocessing
import shutil
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from confluent_kafka import TIMESTAMP_CREATE_TIME, Consumer, Message, TopicPartition
from prometheus_client import CollectorRegistry

from pipeline.app import build_identity, build_ingest, build_profile
from pipeline.broker.admin import ensure_topics
from pipeline.broker.client_config import librdkafka_config
from pipeline.contracts.codec import AvroCodec
from pipeline.identity.runner import IdentityLoop
from pipeline.ingest.runner import IngestLoop
from pipeline.nba.catalogue import ActionCatalogue, load_action_catalogue
from pipeline.profile.runner import ProfileLoop
from pipeline.runtime.schemas import build_codec
from pipeline.runtime.stage_threads import StageThreads
from pipeline.settings import Settings
from pipeline.simulate.journeys import JourneyConfig, SimEvent, iter_events
from pipeline.simulate.publisher import ProducerLike, PublishStats, _produce, make_producer
from pipeline.topology.catalogue import TopicCatalogue

#: The trigger topics' keys in the topic catalogue.
TRIGGER_TOPICS = ("triggers_email", "triggers_push", "triggers_sms")
LATENCY_HISTOGRAM = "omnipipe_nba_event_to_trigger_seconds"
TARGET_P99_MS = 100.0
MIN_TRIGGERS = 50  # fewer and the percentiles say nothing
TICK_S = 0.01
WARMUP_S = 2.0
#: The publisher's producer: sent at once, not batched for throughput.
LATENCY_PRODUCER = {"linger.ms": 1, "compression.type": "none"}


# --------------------------------------------------------------------------- pure helpers

class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up; ``take`` hands out the whole ones."""

    def __init__(self, rate: float, burst: float, now: float) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a token bucket needs rate > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self.tokens = 0.0
        self.last = now

    def take(self, now: float) -> int:
        self.tokens = min(self.burst, self.tokens + max(0.0, now - self.last) * self.rate)
        self.last = now
        n = int(self.tokens)
        self.tokens -= n
        return n


def percentile(values: Sequence[float], q: float) -> float:
    """The q-quantile (0..1) of ``values``, linear between the closest ranks (numpy's default)."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def histogram_quantile(buckets: Sequence[tuple[float, float]], q: float) -> float | None:
    """Prometheus' ``histogram_quantile`` over cumulative ``(le, count)`` buckets, ``+Inf`` last.

    Linear within the bucket the rank falls in (from 0 for the first); a rank in
    the ``+Inf`` bucket gives the highest finite bound. None without observations.
    """
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for le, count in buckets:
        if count >= rank and count > below:
            if math.isinf(le):
                return lower
            return lower + (le - lower) * (rank - below) / (count - below)
        lower, below = le, count
    return lower


def bucket_diff(after: Sequence[tuple[float, float]],
                before: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The observations between two snapshots of one histogram (same bounds)."""
    if not before:
        return list(after)
    return [(le, a - b) for (le, a), (_, b) in zip(after, before, strict=True)]


def by_thirds(at: Sequence[int], values: Sequence[float], start: int, end: int) -> list[list[float]]:
    """``values`` split by when they occurred (``at``) into the first, middle and last third of a window."""
    out: list[list[float]] = [[], [], []]
    span = max(1, end - start)
    for t, v in zip(at, values, strict=True):
        out[min(2, max(0, (t - start) * 3 // span))].append(v)
    return out


def sample_sum(registry: CollectorRegistry, name: str, **labels: str) -> float:
    """The sum of the samples called ``name`` (e.g. ``omnipipe_nba_triggers_total``) whose labels match."""
    return sum(s.value for m in registry.collect() for s in m.samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def histogram_buckets(registry: CollectorRegistry, name: str, **labels: str) -> list[tuple[float, float]]:
    """A histogram child's cumulative ``(le, count)`` buckets, ascending, ``+Inf`` last."""
    out = [(float(s.labels["le"]), s.value) for m in registry.collect() for s in m.samples
           if s.name == f"{name}_bucket" and all(s.labels.get(k) == v for k, v in labels.items())]
    return sorted(out)


# --------------------------------------------------------------------------- the publisher (child process)

@dataclass
class Published:
    sent: int = 0
    elapsed_s: float = 0.0
    start_ms: int = 0  # wall clock of the window: every event_time stamped in it lies between
    end_ms: int = 0
    exhausted: bool = False  # the simulation ran out of events
    behind: int = 0  # ticks that started late (the publisher could not keep up)
    delivery_errors: int = 0
    unflushed: int = 0

    @property
    def rate(self) -> float:
        return self.sent / self.elapsed_s if self.elapsed_s > 0 else 0.0


def publish_paced(producer: ProducerLike, events: Iterator[SimEvent],
                  routes: dict[str, tuple[str, str]], encode: Callable[[str, dict[str, Any]], bytes],
                  rate: float, seconds: float, stats: PublishStats,
                  clock: Callable[[], float] = time.monotonic, wall_ms: Callable[[], int] | None = None,
                  sleep: Callable[[float], None] = time.sleep) -> Published:
    """Send ``events`` in order at ``rate`` for ``seconds``, each stamped with the wall clock as it goes."""
    now_ms = wall_ms or (lambda: int(time.time() * 1000))
    started = clock()
    out = Published(start_ms=now_ms())
    bucket = TokenBucket(rate, max(1.0, rate * 0.05), started)
    next_tick = started
    while not out.exhausted:
        now = clock()
        if now - started >= seconds:
            break
        for _ in range(bucket.take(now)):
            ev = next(events, None)
            if ev is None:
                out.exhausted = True
                break
            name, subject = routes[ev.topic_key]
            record = {**ev.record, "event_time": now_ms()}
            _produce(producer, name, encode(subject, record), ev.key, stats, None)
            out.sent += 1
        producer.poll(0)
        next_tick += TICK_S
        delay = next_tick - clock()
        if delay > 0:
            sleep(delay)
        else:
            out.behind += 1
            next_tick = clock()
    out.elapsed_s = clock() - started
    out.end_ms = now_ms()
    out.unflushed = producer.flush(30)
    out.delivery_errors = stats.delivery_errors
    return out


def _publisher_main(conn: Connection, settings: Settings, catalogue: TopicCatalogue, customers: int,
                    seed: int) -> None:
    """Child process: ("publish", rate, seconds) -> Published, until ("stop",)."""
    codec = build_codec(settings)
    stats = PublishStats()
    assert settings.kafka_bootstrap_servers
    producer = make_producer(settings.kafka_bootstrap_servers,
                             {**librdkafka_config(settings), **LATENCY_PRODUCER}, stats)
    routes = {spec.key: (spec.name, spec.avro_subject) for spec in catalogue.ingest_sources}
    events = iter_events(JourneyConfig(customers=customers, seed=seed))
    first = next(events)  # the generator's set-up cost, outside any window
    conn.send(("ready",))

    def stream() -> Iterator[SimEvent]:
        yield first
        yield from events

    it = stream()
    while True:
        msg = conn.recv()
        if msg[0] != "publish":
            break
        conn.send(("done", publish_paced(producer, it, routes, codec.encode, msg[1], msg[2], stats)))
    producer.flush(5)


# --------------------------------------------------------------------------- the round

@dataclass
class LatencyResult:
    offered: float
    pipeline_rate: float
    seconds: float
    published: Published
    latencies_ms: list[float] = field(default_factory=list)
    occurred_ms: list[int] = field(default_factory=list)  # each latency's source_event_time
    per_action: Counter[str] = field(default_factory=Counter)
    timestamp_types: Counter[int] = field(default_factory=Counter)
    hist: list[tuple[float, float]] = field(default_factory=list)
    stages: dict[str, list[float]] = field(default_factory=dict)  # stage -> ms from event_time to its output
    drained: bool = True
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        p = self.published
        half = abs(self.offered - self.pipeline_rate / 2) < 1
        how = "half the median pipeline throughput" if half else "not the target's load: half of"
        out = [f"  offered load {self.offered:,.0f} events/s ({how} "
               f"{self.pipeline_rate:,.0f}/s) for {self.seconds:g}s: published {p.sent:,} in "
               f"{p.elapsed_s:.1f}s = {p.rate:,.0f} events/s achieved"
               + (f" ({p.behind} late ticks)" if p.behind else "")]
        n = len(self.latencies_ms)
        actions = ", ".join(f"{a}={c}" for a, c in sorted(self.per_action.items()))
        stamp = "producer CreateTime" if set(self.timestamp_types) <= {TIMESTAMP_CREATE_TIME} else \
            f"timestamp types {dict(self.timestamp_types)}"
        if n < MIN_TRIGGERS:
            out.append(f"  event -> trigger: only {n} event triggers in the window ({actions or 'none'}), "
                       f"fewer than {MIN_TRIGGERS}: no percentiles")
            out.append("  target p99 < 100 ms: not measured")
        else:
            p99 = percentile(self.latencies_ms, 0.99)
            out.append(f"  event -> trigger (record {stamp} - source_event_time): n={n:,}  "
                       f"p50 {percentile(self.latencies_ms, 0.5):,.0f} ms  p99 {p99:,.0f} ms  "
                       f"max {max(self.latencies_ms):,.0f} ms  ({actions})")
            met = "met" if p99 < TARGET_P99_MS else "NOT met"
            out.append(f"  target p99 < {TARGET_P99_MS:.0f} ms: {met}")
            thirds = (by_thirds(self.occurred_ms, self.latencies_ms, p.start_ms, p.end_ms)
                      if len(self.occurred_ms) == n else [])
            if thirds and all(thirds):
                p50s = [percentile(t, 0.5) for t in thirds]
                trend = ("rising: the pipeline falls behind at this load" if p50s[2] > 1.5 * p50s[0] + 20
                         else "steady")
                out.append("  p50 by third of the window: " + " / ".join(f"{v:,.0f}" for v in p50s)
                           + f" ms ({trend})")
        total = self.hist[-1][1] if self.hist else 0
        q50, q99 = histogram_quantile(self.hist, 0.5), histogram_quantile(self.hist, 0.99)
        if q50 is None or q99 is None:
            out.append(f'  cross-check, in-process histogram {LATENCY_HISTOGRAM}{{occasion="event"}}: '
                       "no observations")
        else:
            out.append(f'  cross-check, in-process histogram {LATENCY_HISTOGRAM}{{occasion="event"}} '
                       f"(to the broker's ack, bucket interpolation): n={total:,.0f}  "
                       f"p50 ~{q50 * 1000:,.0f} ms  p99 ~{q99 * 1000:,.0f} ms")
        parts = [f"{stage} p50 {percentile(ms, 0.5):,.0f} / p99 {percentile(ms, 0.99):,.0f} ms "
                 f"(n={len(ms):,})" for stage, ms in self.stages.items() if ms]
        if parts:
            out.append("  where the time goes, event_time -> the stage's output record: " + "; ".join(parts))
        out.extend(f"  note: {note}" for note in self.notes)
        return out


def _wait(cond: Callable[[], bool], timeout: float, run: StageThreads, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if not run.alive():
            raise RuntimeError(f"a stage thread died while waiting for {what}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.01)


def _recv(conn: Connection, proc: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while not conn.poll(0.1):
        if not proc.is_alive():
            raise RuntimeError(f"the publisher process exited ({proc.exitcode})")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the publisher did not answer within {timeout:.0f}s")
    return conn.recv()


def _drained(ingest: IngestLoop, identity: IdentityLoop, profile: ProfileLoop,
             total: int) -> Callable[[], bool]:
    """True once ``total`` published events went through all three stages and their triggers were sent.

    An idle profile loop (nothing consumed, no offsets, nothing pending) has committed, and so sent, all.
    """
    def through() -> bool:
        ist = identity.stats
        quiet = time.monotonic() - 1.0  # and both stateful stages idle for a second: nothing in flight
        return (ingest.stats.consumed >= total
                and ist.resolved + ist.erased_dropped >= ingest.stats.accepted
                and profile.stats.events >= ist.resolved
                and ist.idle_since is not None and ist.idle_since < quiet
                and profile.stats.idle_since is not None and profile.stats.idle_since < quiet
                and not profile.engine.unsent())
    return through


def outbox_sent(profile: ProfileLoop) -> Callable[[], bool]:
    """Called once the profile stage took the events wanted: true once their triggers were sent.

    A commit takes the outbox and sends it, so one commit begun after now is
    enough; so is an idle loop (nothing consumed, nothing pending: all
    committed), when it went idle after now or stays idle for 50 ms (an idle
    mark read just before the loop clears it for the batch it took is stale).
    """
    commits, since = profile.stats.commits, time.monotonic()
    seen: list[Any] = [None, 0.0]  # an idle mark, when first seen

    def sent() -> bool:
        idle = profile.stats.idle_since
        if idle is not None and idle != seen[0]:
            seen[0], seen[1] = idle, time.monotonic()
        done = (profile.stats.commits > commits
                or (idle is not None and (idle > since or time.monotonic() - seen[1] >= 0.05)))
        return done and not profile.engine.unsent()
    return sent


def _read_topics(settings: Settings, names: Sequence[str], handle: Callable[[Message], None]) -> int:
    """Every record in ``names``, from the beginning, to ``handle``; returns the partitions left unread."""
    consumer = Consumer({**librdkafka_config(settings), "group.id": f"bench-latency-{uuid.uuid4().hex[:6]}",
                         "enable.auto.commit": False, "enable.partition.eof": False})
    try:
        ends: dict[tuple[str, int], int] = {}
        assign = []
        for name in names:
            md = consumer.list_topics(name, timeout=10)
            for p in md.topics[name].partitions:
                lo, hi = consumer.get_watermark_offsets(TopicPartition(name, p), timeout=10)
                if hi > lo:
                    ends[(name, p)] = hi
                    assign.append(TopicPartition(name, p, lo))
        if not assign:
            return 0
        consumer.assign(assign)
        deadline = time.monotonic() + 120
        while ends and time.monotonic() < deadline:
            for msg in consumer.consume(num_messages=1000, timeout=0.5):
                if msg.error() is not None:
                    continue
                where = (msg.topic(), msg.partition())
                offset = msg.offset()
                if where in ends and offset is not None and offset + 1 >= ends[where]:
                    del ends[where]
                if msg.value() is not None:
                    handle(msg)
        return len(ends)
    finally:
        consumer.close()


def _read_triggers(settings: Settings, catalogue: TopicCatalogue, codec: AvroCodec, actions: ActionCatalogue,
                   start_ms: int, end_ms: int, result: LatencyResult) -> None:
    topics = [catalogue[k] for k in TRIGGER_TOPICS]
    subject = topics[0].avro_subject

    def handle(msg: Message) -> None:
        rec = codec.decode(msg.value(), subject)  # type: ignore[arg-type]
        action = actions.actions.get(rec["action"])
        if rec.get("cancels") is not None or action is None or action.trigger.kind != "event":
            return
        if not start_ms <= rec["source_event_time"] <= end_ms:
            return  # the warm-up's
        ts_type, ts = msg.timestamp()
        result.timestamp_types[ts_type] += 1
        result.latencies_ms.append(float(ts - rec["source_event_time"]))
        result.occurred_ms.append(rec["source_event_time"])
        result.per_action[action.name] += 1

    left = _read_topics(settings, [t.name for t in topics], handle)
    if left:
        result.notes.append(f"{left} trigger partitions not read to their end")


def _read_stages(settings: Settings, catalogue: TopicCatalogue, codec: AvroCodec, start_ms: int, end_ms: int,
                 result: LatencyResult) -> None:
    """Where the time goes: each window event's record timestamp on canonical and on resolved."""
    for key, label in (("canonical", "ingest"), ("resolved", "ingest+identity")):
        spec = catalogue[key]
        delays: list[float] = []

        def handle(msg: Message, subject: str = spec.avro_subject, out: list[float] = delays) -> None:
            at = codec.decode(msg.value(), subject)["event_time"]  # type: ignore[arg-type]
            if start_ms <= at <= end_ms:
                out.append(float(msg.timestamp()[1] - at))

        _read_topics(settings, [spec.name], handle)
        result.stages[label] = delays


def measure_trigger_latency(settings: Settings, catalogue: TopicCatalogue, pipeline_rate: float,
                            seconds: float, customers: int, seed: int = 11,
                            consumer_overrides: Mapping[str, Any] | None = None,
                            offered: float | None = None) -> LatencyResult:
    """``catalogue``: fresh topic names for this round (inputs included), created here.

    ``consumer_overrides`` replace the stages' consumer overrides (experiments only: the bench
    measures the stages as ``pipeline.app`` builds them for a worker).
    """
    if offered is None:
        offered = pipeline_rate / 2
        how = f"half the median ingest+identity+profile+nba throughput ({pipeline_rate:,.0f}/s)"
    else:
        how = f"as asked (--latency-rate; the target's load is half of {pipeline_rate:,.0f}/s)"
    print(f"trigger latency: offered load {offered:,.0f} events/s = {how}, {seconds:g}s, "
          "wall decision clock")
    ensure_topics(librdkafka_config(settings), catalogue)
    tag = uuid.uuid4().hex[:6]
    state = Path(tempfile.mkdtemp(prefix="omnipipe-bench-latency-"))
    s = settings.model_copy(update={"data_dir": state, "group_id": f"bench-lat-{tag}", "nba_clock": "wall"})
    codec = build_codec(s, max_record_size=2 * s.max_record_bytes, strict_encode=False)
    actions = load_action_catalogue(s.actions_config_path)
    registry = CollectorRegistry()
    extra: dict[str, Any] = {} if consumer_overrides is None else {"consumer_overrides": consumer_overrides}
    ingest = build_ingest(s, catalogue, codec, registry, **extra)
    identity = build_identity(s, catalogue, codec, registry, **extra)
    profile = build_profile(s, catalogue, codec, registry, actions, **extra)
    ctx = multiprocessing.get_context("spawn")
    conn, child_conn = ctx.Pipe()
    proc = ctx.Process(target=_publisher_main, args=(child_conn, s, catalogue, customers, seed),
                       name="bench-latency-publisher", daemon=True)
    proc.start()
    result = LatencyResult(offered, pipeline_rate, seconds, Published())
    try:
        with StageThreads("bench-latency", ingest=ingest, identity=identity, profile=profile) as run:
            _wait(lambda: identity.assigned.is_set() and profile.assigned.is_set(), 120, run,
                  "the identity and profile partitions")
            _recv(conn, proc, 120)  # ready
            # the warm-up: ingest has no assignment flag, so its first records tell that it is consuming
            conn.send(("publish", offered, WARMUP_S))
            warm: Published = _recv(conn, proc, WARMUP_S + 60)[1]
            _wait(_drained(ingest, identity, profile, warm.sent), 60, run, "the warm-up events")
            before = histogram_buckets(registry, LATENCY_HISTOGRAM, occasion="event")
            conn.send(("publish", offered, seconds))
            result.published = _recv(conn, proc, seconds + 120)[1]
            conn.send(("stop",))
            total = warm.sent + result.published.sent
            try:
                _wait(_drained(ingest, identity, profile, total), 150, run, "the window's events")
            except RuntimeError as exc:
                result.drained = False
                result.notes.append(f"not drained: {exc}; triggers emitted later are missing")
            after = histogram_buckets(registry, LATENCY_HISTOGRAM, occasion="event")
            result.hist = bucket_diff(after, before)
        proc.join(10)
        p = result.published
        if p.exhausted:
            result.notes.append(f"the simulation of {customers:,} customers ran out of events")
        if p.delivery_errors or p.unflushed:
            result.notes.append(f"publisher: {p.delivery_errors} delivery errors, {p.unflushed} unflushed")
        if ingest.stats.dead_lettered:
            result.notes.append(f"ingest dead-lettered {ingest.stats.dead_lettered} records")
        _read_triggers(s, catalogue, codec, actions, p.start_ms, p.end_ms, result)
        _read_stages(s, catalogue, codec, p.start_ms, p.end_ms, result)
    finally:
        if proc.is_alive():
            proc.terminate()
            proc.join(5)
        shutil.rmtree(state, ignore_errors=True)
    return result
