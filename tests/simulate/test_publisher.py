"""Publisher logic against a fake producer: routing, bad records, pacing, stopping."""

from __future__ import annotations

import itertools
import threading
from collections import Counter
from functools import lru_cache
from pathlib import Path

import pytest

from pipeline.simulate.journeys import DAY_MS, JourneyConfig, SimEvent, iter_events
from pipeline.simulate.malformed import ONLY_ON, REASONS, can_make
from pipeline.simulate.publisher import BadInjection, Pacer, pacing_delay, publish
from pipeline.simulate.runner import SimulationPlan, run_simulation
from pipeline.simulate.truth import TruthRecorder, load_truth
from pipeline.topology.catalogue import load_catalogue
from tests.simulate.avro_stub import StubCodec

CFG = JourneyConfig(customers=120, seed=21)


@lru_cache(maxsize=1)
def codec() -> StubCodec:
    return StubCodec()


@lru_cache(maxsize=1)
def events() -> tuple[SimEvent, ...]:
    return tuple(iter_events(CFG))


class FakeClock:
    """Time that moves only when the code sleeps (or a step per call, if asked)."""

    def __init__(self, step: float = 0.0) -> None:
        self.t = 100.0
        self.step = step
        self.slept = 0.0

    def __call__(self) -> float:
        self.t += self.step
        return self.t

    def sleep(self, d: float) -> None:
        assert d >= 0
        self.t += d
        self.slept += d


class FakeProducer:
    def __init__(self, buffer_full_every: int = 0, stop_after: int = 0,
                 stop: threading.Event | None = None) -> None:
        self.sent: list[tuple[str, bytes, bytes | None]] = []
        self.calls = 0
        self.polls = 0
        self.flushes = 0
        self.full_every = buffer_full_every
        self.stop_after = stop_after
        self.stop = stop

    def produce(self, topic: str, value: bytes | None = None, key: bytes | None = None) -> None:
        self.calls += 1
        if self.full_every and self.calls % self.full_every == 0:
            raise BufferError("queue full")
        assert value is not None
        self.sent.append((topic, value, key))
        if self.stop is not None and len(self.sent) == self.stop_after:
            self.stop.set()

    def poll(self, timeout: float = 0.0) -> int:
        self.polls += 1
        return 0

    def flush(self, timeout: float = 0.0) -> int:
        self.flushes += 1
        return 0


def test_routes_by_catalogue_and_encodes_every_event() -> None:
    prod = FakeProducer()
    truth = TruthRecorder(CFG.seed, CFG.customers)
    stats = publish(events(), encode=codec().encode, producer=prod, truth=truth)
    cat = load_catalogue()
    assert len(prod.sent) == len(events()) == stats.events
    for ev, (topic, value, key) in zip(events(), prod.sent, strict=True):
        assert topic == cat[ev.topic_key].name
        assert key == ev.key
        assert codec().decode(value) == ev.record
    assert stats.events_per_topic == Counter(e.topic_key for e in events())
    assert truth.summary()["events"] == stats.events
    assert prod.flushes == 1 and not stats.stopped and stats.bad == 0


def test_exact_bad_count_is_spread_over_reasons_and_ingest_topics() -> None:
    prod = FakeProducer()
    truth = TruthRecorder(CFG.seed, CFG.customers)
    cat = load_catalogue()
    sources = [spec.key for spec in cat.ingest_sources]  # the default: 7 channels + privacy
    n_bad = 2 * len(REASONS) * len(sources)
    stats = publish(events(), encode=codec().encode, producer=prod, truth=truth,
                    bad=BadInjection(count=n_bad, expected_events=len(events())), now_ms=CFG.end_ms)
    assert stats.bad == n_bad and len(prod.sent) == len(events()) + n_bad
    assert stats.bad_per_reason == {r: n_bad // len(REASONS) for r in REASONS}
    assert set(stats.bad_per_topic) == set(sources)
    pairs = Counter((b.reason, b.topic_key) for b in truth.bad)
    assert set(pairs) == {(r, t) for r in REASONS for t in sources if can_make(r, t)}
    for reason in REASONS:  # a reason any topic allows goes to each exactly twice (two cycles)
        if reason not in ONLY_ON:
            assert {pairs[reason, t] for t in sources} == {2}, reason
    assert pairs["invalid_control", "privacy"] == 2 * len(sources)
    assert sum(pairs["invalid_amount", t] for t in ("web", "app", "pos")) == 2 * len(sources)
    positions = [b.after_events for b in truth.bad]
    assert positions == sorted(positions) and positions[0] < len(events()) // 10
    assert len(set(positions)) > n_bad // 2  # spread, not bunched at the end
    assert {b.topic for b in truth.bad} == {spec.name for spec in cat.ingest_sources}
    good_values = {codec().encode(cat[e.topic_key].subject, e.record) for e in events()}
    bad_values = [v for _, v, _ in prod.sent if v not in good_values]
    assert len(bad_values) == n_bad


def test_exact_count_is_topped_up_when_the_run_is_short() -> None:
    prod = FakeProducer()
    stats = publish(events()[:50], encode=codec().encode, producer=prod,
                    bad=BadInjection(count=20, expected_events=10_000))
    assert stats.bad == 20 and len(prod.sent) == 70


def test_bad_ratio() -> None:
    prod = FakeProducer()
    stats = publish(events()[:1000], encode=codec().encode, producer=prod,
                    bad=BadInjection(ratio=0.05))
    assert stats.bad == 50


def test_buffer_full_is_waited_out() -> None:
    prod = FakeProducer(buffer_full_every=7)
    stats = publish(events()[:300], encode=codec().encode, producer=prod)
    assert len(prod.sent) == 300 and stats.buffer_full_waits > 30 and prod.polls >= stats.buffer_full_waits


def test_stop_flag_ends_the_run_and_still_flushes() -> None:
    stop = threading.Event()
    prod = FakeProducer(stop_after=100, stop=stop)
    truth = TruthRecorder(CFG.seed, CFG.customers)
    stats = publish(events(), encode=codec().encode, producer=prod, stop=stop, truth=truth)
    assert stats.stopped and stats.events == 100 and len(prod.sent) == 100
    assert prod.flushes == 1 and truth.summary()["events"] == 100


def test_max_duration() -> None:
    clock = FakeClock(step=0.001)
    prod = FakeProducer()
    stats = publish(events(), encode=codec().encode, producer=prod, max_duration_s=0.1,
                    clock=clock, sleep=clock.sleep)
    assert stats.stopped and 30 <= stats.events <= 100


def test_rate_is_honoured() -> None:
    clock = FakeClock()
    prod = FakeProducer()
    stats = publish(events()[:1000], encode=codec().encode, producer=prod, rate=2000.0,
                    clock=clock, sleep=clock.sleep, bad=BadInjection(count=10, expected_events=1000))
    assert len(prod.sent) == 1010
    assert stats.elapsed_s == pytest.approx(1010 / 2000.0, rel=0.01)


def test_pacing_delay_is_a_schedule() -> None:
    assert pacing_delay(0, 100.0, 10.0, 10.0) == 0.0
    assert pacing_delay(50, 100.0, 10.0, 10.0) == pytest.approx(0.5)
    assert pacing_delay(50, 100.0, 10.0, 10.6) == 0.0  # behind schedule: send now
    assert pacing_delay(5, 0.0, 10.0, 10.0) == 0.0  # no rate: as fast as possible


def test_pacer_is_smooth_and_bounds_catch_up() -> None:
    p = Pacer(rate=1000.0, now=0.0, max_burst=10)
    sent_at: list[float] = []
    t = 0.0
    while len(sent_at) < 500:
        wait = p.delay(t)
        if wait > 0:
            t += wait
            continue
        p.sent()
        sent_at.append(t)
    gaps = [b - a for a, b in itertools.pairwise(sent_at)]
    assert max(gaps) == pytest.approx(0.001) and sent_at[-1] == pytest.approx(0.499)
    # a 2 s stall: at most max_burst events go back to back, then the rate resumes
    t += 2.0
    burst = 0
    while p.delay(t) == 0.0:
        p.sent()
        burst += 1
    assert burst <= 11
    with pytest.raises(ValueError):
        Pacer(rate=0, now=0.0)


def test_run_simulation_writes_truth(tmp_path: Path) -> None:
    prod = FakeProducer()
    now = 1_780_000_000_000
    plan = SimulationPlan(customers=80, seed=3, bad_count=2 * len(REASONS),
                          truth_path=tmp_path / "truth.jsonl")
    stats = run_simulation(plan, encode=codec().encode, producer=prod, now_ms=now)
    truth = load_truth(tmp_path / "truth.jsonl")
    assert truth.summary["events"] == stats.events and truth.summary["bad"] == 2 * len(REASONS)
    assert truth.summary["end_ms"] <= now - 3_600_000
    assert truth.summary["start_ms"] == truth.summary["end_ms"] - 14 * DAY_MS
    assert sorted(b.reason for b in truth.bad) == sorted(REASONS * 2)
    assert max(p.last_event_ms for p in truth.persons.values()) < truth.summary["end_ms"]
    line = stats.summary_line()
    assert "@" not in line and "+4" not in line


def test_bad_injection_is_checked() -> None:
    with pytest.raises(ValueError):
        BadInjection(ratio=1.5)
    with pytest.raises(ValueError):
        BadInjection(count=-1)
    with pytest.raises(ValueError, match="unknown bad-record reason"):
        BadInjection(count=3, reasons=("nonsense",))
    assert BadInjection().every() == float("inf")
    assert BadInjection(count=10, expected_events=1000).every() == 100.0


def test_bad_topics_limit_the_reasons() -> None:
    inputs = [spec.key for spec in load_catalogue().inputs]
    prod = FakeProducer()
    stats = publish(events()[:500], encode=codec().encode, producer=prod, now_ms=CFG.end_ms,
                    bad=BadInjection(count=5 * len(REASONS), topic_keys=inputs))
    assert set(stats.bad_per_topic) == set(inputs)
    assert set(stats.bad_per_reason) == set(REASONS) - {"invalid_control"}  # privacy-only
    prod = FakeProducer()
    with pytest.raises(ValueError, match="none of the reasons"):  # refused before anything is sent
        publish(events()[:50], encode=codec().encode, producer=prod,
                bad=BadInjection(count=3, reasons=("invalid_amount",), topic_keys=("email",)))
    assert prod.sent == []
