"""``omnipipe simulate`` and the simulator thread used by the demo."""

from __future__ import annotations

import argparse
import threading
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.broker.client_config import librdkafka_config
from pipeline.runtime.cluster import cluster, load_topology, prepare_topics
from pipeline.runtime.schemas import build_codec
from pipeline.settings import Settings
from pipeline.simulate.publisher import PublishStats
from pipeline.simulate.runner import SimulationPlan, run_simulation, stop_on_signals
from pipeline.topology.catalogue import TopicCatalogue

#: The simulator must be able to write the oversize records ingest refuses.
SIMULATOR_MAX_RECORD = 4 * 1024 * 1024


def _plan(customers: int, seed: int, rate: float, duration: float, bad: int, truth: Path,
          days: float = 14.0) -> SimulationPlan:
    return SimulationPlan(
        customers=customers, seed=seed, days=days,
        rate=rate if rate > 0 else None,
        max_duration_s=duration if duration > 0 else None,
        bad_count=bad or None,
        truth_path=truth,
    )


@dataclass
class SimulationRun:
    """A simulator publishing in a background thread."""

    thread: threading.Thread
    result: list[PublishStats] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)

    def join(self, timeout: float | None = 120.0) -> PublishStats:
        self.thread.join(timeout)
        if self.errors:
            raise self.errors[0]
        if not self.result:
            raise RuntimeError("the simulator did not finish")
        return self.result[0]


def start_simulation(
    settings: Settings, catalogue: TopicCatalogue, *, customers: int, seed: int, rate: float,
    duration: float, bad: int, truth: Path, stop: threading.Event,
) -> SimulationRun:
    codec = build_codec(settings, max_record_size=SIMULATOR_MAX_RECORD)
    plan = _plan(customers, seed, rate, duration, bad, truth)
    result: list[PublishStats] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            result.append(run_simulation(
                plan, encode=codec.encode, bootstrap_servers=settings.kafka_bootstrap_servers,
                client_config=librdkafka_config(settings),
                catalogue=catalogue, stop=stop,
            ))
        except BaseException as exc:  # handed to join()
            errors.append(exc)

    run = SimulationRun(threading.Thread(target=target, name="omnipipe-simulator", daemon=True),
                        result, errors)
    run.thread.start()
    return run


def run_simulate(settings: Settings, args: argparse.Namespace) -> int:
    catalogue = load_topology(settings)
    codec = build_codec(settings, max_record_size=SIMULATOR_MAX_RECORD)
    plan = _plan(args.customers, args.seed, args.rate, args.duration, args.bad, args.truth, args.days)
    stop = threading.Event()
    with cluster(settings) as resolved, stop_on_signals(stop):
        if settings.embedded:
            print(f"no KAFKA_BOOTSTRAP_SERVERS: publishing to a throw-away embedded broker "
                  f"at {resolved.kafka_bootstrap_servers}")
        prepare_topics(resolved, catalogue)
        stats = run_simulation(
            plan, encode=codec.encode, bootstrap_servers=resolved.kafka_bootstrap_servers,
            client_config=librdkafka_config(resolved),
            catalogue=catalogue, stop=stop,
            progress=lambda s: print(f"  ... {s.events} events, {s.rate:,.0f}/s", flush=True),
        )
    print(stats.summary_line())
    print(f"ground truth: {args.truth}")
    return 0 if not stats.delivery_errors else 1
