"""Publish simulated events (and injected bad records) to Kafka.

The encoder is injected (``encode(subject, record) -> bytes``, the project's
``AvroCodec.encode``) and so is the producer (tests pass a fake), so this
module only decides what goes where and when: topic names and subjects come
from the topic catalogue, pacing from :class:`Pacer`, bad records from
``malformed``. Only counts are ever logged, never identifiers.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from pipeline.simulate.journeys import SimEvent
from pipeline.simulate.malformed import REASONS, Encode, assignment, make_bad
from pipeline.simulate.truth import TruthRecorder
from pipeline.topology.catalogue import TopicCatalogue, load_catalogue

log = logging.getLogger(__name__)

#: Producer defaults tuned for throughput; the caller's client config wins.
PRODUCER_DEFAULTS: dict[str, Any] = {
    "linger.ms": 20,
    "batch.num.messages": 10_000,
    "queue.buffering.max.messages": 500_000,
    "queue.buffering.max.kbytes": 512 * 1024,
    "compression.type": "lz4",
    "acks": "all",
}


class ProducerLike(Protocol):
    """The part of ``confluent_kafka.Producer`` the publisher uses."""

    def produce(self, topic: str, value: bytes | None = ..., key: bytes | None = ...) -> None: ...

    def poll(self, timeout: float = ...) -> int: ...

    def flush(self, timeout: float = ...) -> int: ...


# --------------------------------------------------------------------------- pacing

def pacing_delay(sent: int, rate: float, started: float, now: float) -> float:
    """Seconds to wait before sending event number ``sent`` (0-based) at ``rate`` events/s.

    The n-th event is due at ``started + n / rate``: a schedule, not a sleep
    per event, so short oversleeps are caught up and the average rate is exact.
    """
    if rate <= 0:
        return 0.0
    return max(0.0, started + sent / rate - now)


class Pacer:
    """Smooth token pacing with a bounded catch-up burst.

    Follows :func:`pacing_delay`'s schedule, but when the sender falls more
    than ``max_burst`` events behind (a broker stall, a GC pause), the
    schedule restarts from now instead of firing the whole backlog at once.
    """

    def __init__(self, rate: float, now: float, max_burst: float | None = None) -> None:
        if rate <= 0:
            raise ValueError("rate must be > 0 events/s")
        self.rate = rate
        self.max_burst = max_burst if max_burst is not None else max(1.0, rate * 0.1)
        self._started = now
        self._sent = 0

    def delay(self, now: float) -> float:
        """Seconds until the next event may go (0 when it may go now)."""
        wait = pacing_delay(self._sent, self.rate, self._started, now)
        if wait == 0.0 and (now - self._started) * self.rate - self._sent > self.max_burst:
            self._started = now - self.max_burst / self.rate
            self._sent = 0
        return wait

    def sent(self, n: int = 1) -> None:
        self._sent += n


# --------------------------------------------------------------------------- bad records

@dataclass(frozen=True)
class BadInjection:
    """How many malformed records to mix in: a ratio of good events, or an exact count.

    With an exact count the run's length is not known in advance, so records
    are spread at ``count / expected_events`` and any left over are sent just
    before the final flush.
    """

    ratio: float = 0.0
    count: int | None = None
    expected_events: int | None = None
    reasons: Sequence[str] = REASONS
    #: default: every topic ingest consumes (the channels and privacy control), so every
    #: reason has a topic; each reason only goes to topics it can be made for.
    topic_keys: Sequence[str] | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.ratio < 1.0:
            raise ValueError("bad ratio must be in [0, 1)")
        if self.count is not None and self.count < 0:
            raise ValueError("bad count must be >= 0")
        unknown = set(self.reasons) - set(REASONS)
        if unknown:
            raise ValueError(f"unknown bad-record reason(s) {sorted(unknown)}; expected {REASONS}")

    def every(self) -> float:
        """Good events between two bad ones (inf when none are wanted)."""
        if self.count is not None:
            if self.count <= 0:
                return float("inf")
            return max(1.0, (self.expected_events or self.count) / self.count)
        return 1.0 / self.ratio if self.ratio > 0 else float("inf")


# --------------------------------------------------------------------------- stats

@dataclass
class PublishStats:
    """What a run sent; printable without any personal data."""

    events_per_topic: Counter[str] = field(default_factory=Counter)
    bad_per_reason: Counter[str] = field(default_factory=Counter)
    bad_per_topic: Counter[str] = field(default_factory=Counter)
    elapsed_s: float = 0.0
    delivery_errors: int = 0
    buffer_full_waits: int = 0
    stopped: bool = False  # the stop flag or max duration ended the run early
    unflushed: int = 0

    @property
    def events(self) -> int:
        return sum(self.events_per_topic.values())

    @property
    def bad(self) -> int:
        return sum(self.bad_per_reason.values())

    @property
    def rate(self) -> float:
        """Records (good + bad) per second of wall time."""
        return (self.events + self.bad) / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "events": self.events, "bad": self.bad, "elapsed_s": round(self.elapsed_s, 3),
            "rate": round(self.rate, 1), "events_per_topic": dict(sorted(self.events_per_topic.items())),
            "bad_per_reason": dict(sorted(self.bad_per_reason.items())),
            "bad_per_topic": dict(sorted(self.bad_per_topic.items())),
            "delivery_errors": self.delivery_errors, "buffer_full_waits": self.buffer_full_waits,
            "stopped": self.stopped, "unflushed": self.unflushed,
        }

    def summary_line(self) -> str:
        topics = " ".join(f"{k}={v}" for k, v in sorted(self.events_per_topic.items()))
        bad = " ".join(f"{k}={v}" for k, v in sorted(self.bad_per_reason.items())) or "none"
        return (f"published {self.events} events + {self.bad} bad in {self.elapsed_s:.1f}s "
                f"({self.rate:,.0f}/s); per topic: {topics}; bad: {bad}; "
                f"delivery errors: {self.delivery_errors}{' (stopped early)' if self.stopped else ''}")


# --------------------------------------------------------------------------- publishing

def make_producer(bootstrap_servers: str, client_config: Mapping[str, Any] | None = None,
                  stats: PublishStats | None = None) -> ProducerLike:
    """A confluent-kafka producer; delivery failures are counted into ``stats``."""
    from confluent_kafka import Producer

    def on_delivery(err: Any, msg: Any) -> None:
        if err is not None and stats is not None:
            stats.delivery_errors += 1
            if stats.delivery_errors <= 5:  # topic and error only: no keys, no values
                log.warning("delivery to %s failed: %s", msg.topic(), err)

    conf: dict[str, Any] = {**PRODUCER_DEFAULTS, **dict(client_config or {})}
    conf["bootstrap.servers"] = bootstrap_servers
    conf.setdefault("delivery.report.only.error", True)
    conf["on_delivery"] = on_delivery
    producer: ProducerLike = Producer(conf)
    return producer


def _produce(producer: ProducerLike, topic: str, value: bytes, key: bytes | None,
             stats: PublishStats, stop: threading.Event | None) -> bool:
    """Produce one record, waiting out a full local queue; False if stopped while waiting."""
    while True:
        try:
            producer.produce(topic, value=value, key=key)
            return True
        except BufferError:
            stats.buffer_full_waits += 1
            producer.poll(0.05)
            if stop is not None and stop.is_set():
                return False


def publish(
    events: Iterable[SimEvent],
    *,
    encode: Encode,
    producer: ProducerLike | None = None,
    bootstrap_servers: str | None = None,
    client_config: Mapping[str, Any] | None = None,
    catalogue: TopicCatalogue | None = None,
    rate: float | None = None,
    max_duration_s: float | None = None,
    bad: BadInjection | None = None,
    truth: TruthRecorder | None = None,
    stop: threading.Event | None = None,
    seed: int = 1,
    now_ms: int | None = None,
    flush_timeout_s: float = 60.0,
    progress: Callable[[PublishStats], None] | None = None,
    progress_every_s: float = 5.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> PublishStats:
    """Send ``events`` (already time-ordered) and any injected bad records; return the stats.

    ``rate`` (events/s, None or <= 0 for as fast as possible) counts good and
    bad records alike. The run ends when the events are exhausted,
    ``max_duration_s`` has passed, or ``stop`` is set (Ctrl-C); it always
    flushes (with a shorter timeout once stopped). Every event sent is fed to
    ``truth`` and so is every bad record.
    """
    stats = PublishStats()
    if producer is None:
        if not bootstrap_servers:
            raise ValueError("publish() needs a producer or bootstrap_servers")
        producer = make_producer(bootstrap_servers, client_config, stats)
    cat = catalogue or load_catalogue()
    topics = {spec.key: (spec.name, spec.avro_subject) for spec in cat.ingest_sources}
    subjects = {key: subject for key, (_name, subject) in topics.items()}
    injection = bad or BadInjection()
    bad_topics = list(injection.topic_keys or topics)
    for key in bad_topics:
        if key not in topics:
            raise ValueError(f"bad-record topic {key!r} is not an ingest source in the catalogue")
    every = injection.every()
    if every != float("inf"):
        assignment(0, bad_topics, injection.reasons)  # fail now if no reason fits these topics
    limit = injection.count
    wall_now_ms = now_ms if now_ms is not None else int(time.time() * 1000)

    started = clock()
    pacer = Pacer(rate, started) if rate and rate > 0 else None
    deadline = started + max_duration_s if max_duration_s and max_duration_s > 0 else None
    next_progress = started + progress_every_s
    good = 0
    n_bad = 0
    next_bad_at = every  # inject after this many good events
    last_time = 0

    def send_bad() -> bool:
        nonlocal n_bad
        reason, topic_key = assignment(n_bad, bad_topics, injection.reasons)
        name, subject = topics[topic_key]
        br = make_bad(n_bad, reason, topic_key, subject, encode, seed=seed,
                      now_ms=max(wall_now_ms, last_time), event_time=last_time or wall_now_ms,
                      subjects=subjects)
        if not _produce(producer, name, br.value, br.key, stats, stop):
            return False
        stats.bad_per_reason[reason] += 1
        stats.bad_per_topic[topic_key] += 1
        if truth is not None:
            truth.record_bad(n_bad, reason, topic_key, name, good)
        n_bad += 1
        return True

    def pace() -> bool:
        """Wait for the next slot; False when the run must end."""
        while True:
            now = clock()
            if stop is not None and stop.is_set():
                return False
            if deadline is not None and now >= deadline:
                return False
            if pacer is None:
                return True
            wait = pacer.delay(now)
            if wait <= 0:
                pacer.sent()
                return True
            sleep(min(wait, 0.05))

    try:
        for ev in events:
            if not pace():
                stats.stopped = True
                break
            name, subject = topics[ev.topic_key]
            last_time = ev.record["event_time"]
            if not _produce(producer, name, encode(subject, ev.record), ev.key, stats, stop):
                stats.stopped = True
                break
            good += 1
            stats.events_per_topic[ev.topic_key] += 1
            if truth is not None:
                truth.observe(ev)
            while good >= next_bad_at and (limit is None or n_bad < limit):
                if not pace() or not send_bad():
                    stats.stopped = True
                    break
                next_bad_at += every
            if stats.stopped:
                break
            if good & 1023 == 0:
                producer.poll(0)
                if progress is not None and clock() >= next_progress:
                    next_progress = clock() + progress_every_s
                    stats.elapsed_s = clock() - started
                    progress(stats)
        if not stats.stopped and limit is not None:
            while n_bad < limit:  # top up an exact count the run was too short to spread
                if not pace() or not send_bad():
                    stats.stopped = True
                    break
    finally:
        stats.unflushed = producer.flush(5.0 if stats.stopped else flush_timeout_s)
        stats.elapsed_s = clock() - started
    log.info("%s", stats.summary_line())
    return stats
