"""The latency bench's pure parts: pacing, percentiles, histogram quantiles, the report."""

from __future__ import annotations

import math
import time

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram

from pipeline.bench.trigger_latency import (
    MIN_TRIGGERS,
    LatencyResult,
    Published,
    TokenBucket,
    bucket_diff,
    by_thirds,
    histogram_buckets,
    histogram_quantile,
    outbox_sent,
    percentile,
    publish_paced,
    sample_sum,
)
from pipeline.simulate.journeys import SimEvent
from pipeline.simulate.publisher import PublishStats


def test_token_bucket_hands_out_the_rate_and_caps_the_burst() -> None:
    bucket = TokenBucket(1000.0, burst=50.0, now=0.0)
    got = sum(bucket.take(i * 0.01) for i in range(1, 101))  # 1 s in 10 ms ticks
    assert 999 <= got <= 1000  # floating-point time steps may leave the last token a hair short
    assert bucket.take(10.0) == 50  # a long stall: at most the burst
    with pytest.raises(ValueError):
        TokenBucket(0.0, 1.0, 0.0)


def test_percentile_interpolates_between_ranks() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == pytest.approx(50.5)
    assert percentile(values, 0.99) == pytest.approx(99.01)
    assert percentile([7.0], 0.99) == 7.0
    with pytest.raises(ValueError):
        percentile([], 0.5)


def test_histogram_quantile_like_prometheus() -> None:
    buckets = [(0.01, 0.0), (0.1, 50.0), (1.0, 100.0), (math.inf, 100.0)]
    assert histogram_quantile(buckets, 0.5) == pytest.approx(0.1)
    assert histogram_quantile(buckets, 0.25) == pytest.approx(0.055)
    assert histogram_quantile(buckets, 0.99) == pytest.approx(0.1 + 0.9 * 49 / 50)
    assert histogram_quantile([(0.1, 1.0), (math.inf, 10.0)], 0.99) == 0.1  # in +Inf: the top bound
    assert histogram_quantile([(0.1, 0.0), (math.inf, 0.0)], 0.5) is None


def test_registry_readers_and_snapshot_diff() -> None:
    registry = CollectorRegistry()
    counter = Counter("x_triggers_total", "t", ["action", "channel"], registry=registry)
    counter.labels("welcome", "EMAIL").inc(3)
    counter.labels("geo_offer", "PUSH").inc(2)
    assert sample_sum(registry, "x_triggers_total") == 5
    assert sample_sum(registry, "x_triggers_total", channel="PUSH") == 2
    hist = Histogram("x_seconds", "h", ["occasion"], buckets=(0.01, 0.1), registry=registry)
    hist.labels("event").observe(0.005)
    before = histogram_buckets(registry, "x_seconds", occasion="event")
    hist.labels("event").observe(0.05)
    hist.labels("timer").observe(0.05)
    after = histogram_buckets(registry, "x_seconds", occasion="event")
    assert before == [(0.01, 1.0), (0.1, 1.0), (math.inf, 1.0)]
    assert bucket_diff(after, before) == [(0.01, 0.0), (0.1, 1.0), (math.inf, 1.0)]


class _FakeProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes | None]] = []

    def produce(self, topic: str, value: bytes | None = None, key: bytes | None = None) -> None:
        assert value is not None
        self.sent.append((topic, value, key))

    def poll(self, timeout: float = 0) -> int:
        return 0

    def flush(self, timeout: float = 0) -> int:
        return 0


def test_publish_paced_keeps_the_rate_and_stamps_each_event() -> None:
    t = [0.0]
    producer = _FakeProducer()
    events = iter([SimEvent("web", b"k", {"event_id": str(i), "event_time": 1}, 0) for i in range(10_000)])
    out = publish_paced(producer, events, {"web": ("web.events", "subj")},
                        lambda subject, rec: f"{subject}|{rec['event_time']}".encode(),
                        rate=500.0, seconds=2.0, stats=PublishStats(), clock=lambda: t[0],
                        wall_ms=lambda: int(1_000_000 + t[0] * 1000),
                        sleep=lambda s: t.__setitem__(0, t[0] + s))
    assert 995 <= out.sent <= 1000 and not out.exhausted
    assert out.start_ms == 1_000_000 and out.end_ms == 1_002_000
    stamps = [int(v.split(b"|")[1]) for _, v, _ in producer.sent]
    assert stamps == sorted(stamps) and stamps[0] > 1_000_000 and stamps[-1] <= 1_002_000
    assert {topic for topic, _, _ in producer.sent} == {"web.events"}


def test_too_few_triggers_give_no_percentiles() -> None:
    few = LatencyResult(1000.0, 2000.0, 20.0, Published(sent=20_000, elapsed_s=20.0),
                        latencies_ms=[10.0] * (MIN_TRIGGERS - 1))
    text = "\n".join(few.lines())
    assert "no percentiles" in text and "not measured" in text and "1,000 events/s achieved" in text
    many = LatencyResult(1000.0, 2000.0, 20.0, Published(sent=20_000, elapsed_s=20.0),
                         latencies_ms=[float(v) for v in range(200)],
                         hist=[(0.1, 200.0), (math.inf, 200.0)])
    text = "\n".join(many.lines())
    assert "n=200" in text and "target p99 < 100 ms: NOT met" in text and "cross-check" in text


def test_by_thirds_splits_on_the_window() -> None:
    thirds = by_thirds([0, 10, 40, 70, 99, 100, 150], [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0], 0, 100)
    assert thirds == [[1.0, 2.0], [3.0], [4.0, 5.0, 6.0, 7.0]]


def test_a_growing_backlog_is_called_rising() -> None:
    at = list(range(0, 15_000, 50))  # 300 triggers over a 15 s window
    window = Published(sent=15_000, elapsed_s=15.0, start_ms=0, end_ms=15_000)
    result = LatencyResult(1000.0, 2000.0, 15.0, window,
                           latencies_ms=[100.0 + t / 10 for t in at], occurred_ms=at)
    assert any("rising" in line for line in result.lines())


def test_outbox_sent_waits_for_a_commit_or_a_lasting_idle() -> None:
    from types import SimpleNamespace

    unsent: list[object] = []
    profile = SimpleNamespace(stats=SimpleNamespace(commits=3, idle_since=None),
                              engine=SimpleNamespace(unsent=lambda: unsent))
    sent = outbox_sent(profile)  # type: ignore[arg-type]
    assert not sent()
    profile.stats.commits = 4
    unsent.append(object())
    assert not sent()  # committed, still sending
    unsent.clear()
    assert sent()

    idle = SimpleNamespace(stats=SimpleNamespace(commits=3, idle_since=time.monotonic() - 5),
                           engine=SimpleNamespace(unsent=lambda: []))
    sent = outbox_sent(idle)  # type: ignore[arg-type]
    assert not sent()  # an idle mark from before: maybe stale
    time.sleep(0.06)
    assert sent()  # it held
