"""Consumer lag: the pure computation and the monitor's series, with a fake offset reader."""

from __future__ import annotations

import logging
import threading
from collections.abc import Collection

import pytest
from prometheus_client import CollectorRegistry

from pipeline.metrics.lag import NAME, LagMonitor, PartitionLag, Watermarks, partition_lags
from pipeline.runtime.status import StageStatus

TP = tuple[str, int]


def test_lag_is_high_watermark_minus_committed_for_owned_partitions() -> None:
    owned = {("events.canonical", 1), ("events.canonical", 0), ("identity.messages", 3)}
    committed: dict[TP, int | None] = {("events.canonical", 0): 40, ("events.canonical", 1): 7,
                                       ("identity.messages", 3): 12, ("events.canonical", 2): 0}
    marks = {("events.canonical", 0): Watermarks(0, 100), ("events.canonical", 1): Watermarks(0, 7),
             ("identity.messages", 3): Watermarks(0, 20), ("events.canonical", 2): Watermarks(0, 999)}
    assert partition_lags("identity", owned, committed, marks) == [
        PartitionLag("identity", "events.canonical", 0, 60),
        PartitionLag("identity", "events.canonical", 1, 0),
        PartitionLag("identity", "identity.messages", 3, 8),
    ]  # partition 2 is not owned here: another worker reports it


def test_no_commit_or_a_commit_below_retention_counts_every_held_record() -> None:
    owned = {("events.web", 0), ("events.web", 1), ("events.web", 2)}
    committed: dict[TP, int | None] = {("events.web", 0): None, ("events.web", 1): 5}
    marks = {("events.web", 0): Watermarks(10, 50), ("events.web", 1): Watermarks(20, 50),
             ("events.web", 2): Watermarks(0, 9)}
    lags = {lag.partition: lag.records for lag in partition_lags("ingest", owned, committed, marks)}
    assert lags == {0: 40, 1: 30, 2: 9}


def test_commit_past_the_watermark_is_no_lag_and_unknown_watermarks_are_skipped() -> None:
    owned = {("events.resolved", 0), ("events.resolved", 1)}
    lags = partition_lags("profile", owned, {("events.resolved", 0): 12},
                          {("events.resolved", 0): Watermarks(0, 10)})
    assert lags == [PartitionLag("profile", "events.resolved", 0, 0)]


class FakeReader:
    def __init__(self, committed: dict[TP, int | None], marks: dict[TP, Watermarks]) -> None:
        self.committed_offsets = committed
        self.marks = marks
        self.groups: list[str] = []
        self.fail = False
        self.closed = threading.Event()

    def committed(self, group_id: str, partitions: Collection[TP]) -> dict[TP, int | None]:
        if self.fail:
            raise RuntimeError("KafkaError{code=_TIMED_OUT}")
        self.groups.append(group_id)
        return {tp: self.committed_offsets.get(tp) for tp in partitions}

    def watermarks(self, partitions: Collection[TP]) -> dict[TP, Watermarks]:
        return {tp: self.marks[tp] for tp in partitions if tp in self.marks}

    def close(self) -> None:
        self.closed.set()


def _lag(registry: CollectorRegistry, stage: str, topic: str, partition: int) -> float | None:
    return registry.get_sample_value(NAME, {"stage": stage, "topic": topic, "partition": str(partition)})


def _series(registry: CollectorRegistry) -> int:
    return sum(len(m.samples) for m in registry.collect() if m.name == NAME)


def test_monitor_serves_the_owned_partitions_of_each_stage_under_its_group() -> None:
    ingest, identity = StageStatus("ingest"), StageStatus("identity")
    ingest.started("g-ingest")
    ingest.assigned_to(frozenset({("events.web", 0), ("events.pos", 1)}))
    identity.started("g-identity")
    identity.assigned_to(frozenset({("events.canonical", 2)}))
    reader = FakeReader({("events.web", 0): 3, ("events.pos", 1): 10, ("events.canonical", 2): 100},
                        {("events.web", 0): Watermarks(0, 8), ("events.pos", 1): Watermarks(0, 10),
                         ("events.canonical", 2): Watermarks(0, 250)})
    registry = CollectorRegistry()
    monitor = LagMonitor(registry, {"ingest": ingest, "identity": identity}, lambda: reader)
    assert _series(registry) == 0  # nothing read before the worker starts the monitor
    monitor.refresh()
    assert sorted(reader.groups) == ["g-identity", "g-ingest"]
    assert _lag(registry, "ingest", "events.web", 0) == 5
    assert _lag(registry, "ingest", "events.pos", 1) == 0
    assert _lag(registry, "identity", "events.canonical", 2) == 150
    assert _series(registry) == 3


def test_a_revoked_partition_leaves_the_scrape_before_the_next_reading() -> None:
    status = StageStatus("profile")
    status.started("g-profile")
    status.assigned_to(frozenset({("events.resolved", 0), ("events.resolved", 1)}))
    reader = FakeReader({}, {("events.resolved", 0): Watermarks(0, 4),
                             ("events.resolved", 1): Watermarks(0, 6)})
    registry = CollectorRegistry()
    LagMonitor(registry, {"profile": status}, lambda: reader).refresh()
    assert _lag(registry, "profile", "events.resolved", 1) == 6
    status.revoked(frozenset({("events.resolved", 1)}))  # now another worker's: it must not count twice
    assert _lag(registry, "profile", "events.resolved", 1) is None
    assert _lag(registry, "profile", "events.resolved", 0) == 4
    status.stopped()
    assert _series(registry) == 0


def test_a_failing_read_drops_the_stage_instead_of_serving_a_stale_figure(
        caplog: pytest.LogCaptureFixture) -> None:
    status = StageStatus("identity")
    status.started("g-identity")
    status.assigned_to(frozenset({("events.canonical", 0)}))
    reader = FakeReader({("events.canonical", 0): 1}, {("events.canonical", 0): Watermarks(0, 9)})
    registry = CollectorRegistry()
    monitor = LagMonitor(registry, {"identity": status}, lambda: reader)
    monitor.refresh()
    assert _lag(registry, "identity", "events.canonical", 0) == 8
    reader.fail = True
    with caplog.at_level(logging.WARNING, logger="pipeline.metrics.lag"):
        monitor.refresh()
        monitor.refresh()
    assert _lag(registry, "identity", "events.canonical", 0) is None
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "identity" in warnings[0].getMessage()  # once per outage, not per reading
    reader.fail = False
    monitor.refresh()
    assert _lag(registry, "identity", "events.canonical", 0) == 8


def test_run_reads_until_stopped_then_closes_the_reader() -> None:
    status = StageStatus("ingest")
    status.started("g-ingest")
    status.assigned_to(frozenset({("events.web", 0)}))
    reader = FakeReader({("events.web", 0): 2}, {("events.web", 0): Watermarks(0, 3)})
    registry = CollectorRegistry()
    monitor = LagMonitor(registry, {"ingest": status}, lambda: reader, interval_s=0.01)
    thread = threading.Thread(target=monitor.run)
    thread.start()
    try:
        for _ in range(500):
            if _lag(registry, "ingest", "events.web", 0) is not None:
                break
            threading.Event().wait(0.01)
        assert _lag(registry, "ingest", "events.web", 0) == 1
    finally:
        monitor.stop()
        thread.join(5)
    assert not thread.is_alive()
    assert reader.closed.is_set()
