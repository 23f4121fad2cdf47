"""One simulation run end to end: generate journeys, publish them, write the truth.

This is what ``omnipipe simulate`` calls; the CLI supplies the encoder (the
project's ``AvroCodec.encode``), the Kafka connection and the stop flag.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from pipeline.simulate.journeys import (
    DAY_MS,
    EXPECTED_EVENTS_PER_CUSTOMER,
    HOUR_MS,
    JourneyConfig,
    iter_events,
)
from pipeline.simulate.malformed import Encode
from pipeline.simulate.publisher import BadInjection, ProducerLike, PublishStats, publish
from pipeline.simulate.truth import TruthRecorder
from pipeline.topology.catalogue import TopicCatalogue


@dataclass(frozen=True)
class SimulationPlan:
    """What ``omnipipe simulate`` was asked to do."""

    customers: int = 1000
    seed: int = 1
    days: float = 14.0
    start_ms: int | None = None  # None: the span ends an hour before now, so no event is "future"
    rate: float | None = None  # events/s; None or <= 0 for as fast as possible
    max_duration_s: float | None = None
    bad_count: int | None = None
    bad_ratio: float = 0.0
    truth_path: Path | None = None

    def journey_config(self, now_ms: int) -> JourneyConfig:
        start = self.start_ms
        if start is None:
            start = now_ms - int(self.days * DAY_MS) - HOUR_MS
        return JourneyConfig(customers=self.customers, seed=self.seed, start_ms=start, days=self.days)


def run_simulation(
    plan: SimulationPlan,
    *,
    encode: Encode,
    bootstrap_servers: str | None = None,
    client_config: Mapping[str, Any] | None = None,
    producer: ProducerLike | None = None,
    catalogue: TopicCatalogue | None = None,
    stop: threading.Event | None = None,
    progress: Callable[[PublishStats], None] | None = None,
    now_ms: int | None = None,
) -> PublishStats:
    """Publish the plan's journeys (plus bad records) and write the truth file if asked."""
    now = now_ms if now_ms is not None else int(time.time() * 1000)
    cfg = plan.journey_config(now)
    truth = TruthRecorder(plan.seed, plan.customers, start_ms=cfg.start_ms, end_ms=cfg.end_ms,
                          days=plan.days)
    injection = BadInjection(
        ratio=plan.bad_ratio, count=plan.bad_count,
        expected_events=int(plan.customers * EXPECTED_EVENTS_PER_CUSTOMER),
    )
    stats = publish(
        iter_events(cfg), encode=encode, producer=producer, bootstrap_servers=bootstrap_servers,
        client_config=client_config, catalogue=catalogue, rate=plan.rate,
        max_duration_s=plan.max_duration_s, bad=injection, truth=truth, stop=stop, seed=plan.seed,
        now_ms=now, progress=progress,
    )
    if plan.truth_path is not None:
        truth.write(plan.truth_path)
    return stats


@contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[threading.Event]:
    """Set ``stop`` on SIGINT/SIGTERM inside the block; a second signal interrupts for real.

    Must be entered from the main thread (a Python signal-handling rule).
    """
    previous: dict[signal.Signals, Any] = {}

    def handler(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            raise KeyboardInterrupt  # second signal: the user means it
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, handler)
    try:
        yield stop
    finally:
        for sig, prev in previous.items():
            signal.signal(sig, prev)


@dataclass(frozen=True)
class GenerationSpeed:
    customers: int
    events: int
    seconds: float

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


def measure_generation(customers: int, seed: int = 1, days: float = 14.0) -> GenerationSpeed:
    """Time pure journey generation (no encoding, no Kafka): the simulator's own ceiling."""
    cfg = JourneyConfig(customers=customers, seed=seed, days=days)
    t0 = time.perf_counter()
    n = 0
    for _ in iter_events(cfg):
        n += 1
    return GenerationSpeed(customers, n, time.perf_counter() - t0)
