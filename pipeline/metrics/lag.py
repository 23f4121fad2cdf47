"""Consumer lag per stage and partition: the high watermark minus the stage group's committed offset.

``omnipipe_consumer_lag_records{stage, topic, partition}`` covers only the partitions this
worker's stage loops own now (``StageStatus.assigned``), so a sum over all workers counts each
partition once. A monitor thread reads the offsets every ``interval_s`` with short broker
timeouts; a scrape never waits on the broker: it serves the last reading, filtered by the
current assignment (a partition revoked since then drops out at once).

``partition_lags`` is the pure computation; ``KafkaOffsetReader`` does the reads: the committed
offsets from a consumer carrying the stage's ``group.id`` that never subscribes (so it never
joins the group), the watermarks from ListOffsets, corrected on the embedded Tansu broker by a
fetch's high watermark (``pipeline/broker/watermarks.py``: its ListOffsets "latest" stops short).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from confluent_kafka import Consumer, TopicPartition
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from pipeline.broker.watermarks import fetched_highwaters
from pipeline.runtime.status import StageStatus

log = logging.getLogger(__name__)

NAME = "omnipipe_consumer_lag_records"
HELP = ("Records of the partitions this worker owns not yet committed by the stage's consumer group "
        "(high watermark - committed offset), per stage, topic and partition.")
LABELS = ("stage", "topic", "partition")


@dataclass(frozen=True)
class Watermarks:
    """The first offset a partition still holds and the offset its next record will get."""

    low: int
    high: int


@dataclass(frozen=True)
class PartitionLag:
    stage: str
    topic: str
    partition: int
    records: int


def partition_lags(
    stage: str,
    owned: Iterable[tuple[str, int]],
    committed: Mapping[tuple[str, int], int | None],
    watermarks: Mapping[tuple[str, int], Watermarks],
) -> list[PartitionLag]:
    """Lag of every owned partition whose watermarks are known, sorted by topic and partition.

    A partition the group has no commit on (``None`` or a negative librdkafka sentinel) is read
    from its start (every stage sets ``auto.offset.reset=earliest``), as is one whose commit fell
    below the retention start: its lag is every record the broker holds. A commit at or past
    the high watermark is no lag.
    """
    out: list[PartitionLag] = []
    for topic, partition in sorted(owned):
        marks = watermarks.get((topic, partition))
        if marks is None:
            continue
        done = committed.get((topic, partition))
        position = marks.low if done is None or done < 0 else max(done, marks.low)
        out.append(PartitionLag(stage, topic, partition, max(0, marks.high - position)))
    return out


class OffsetReader(Protocol):
    """The broker reads the monitor needs (tests pass a fake one for the unit cases)."""

    def committed(self, group_id: str, partitions: Collection[tuple[str, int]]
                  ) -> dict[tuple[str, int], int | None]: ...

    def watermarks(self, partitions: Collection[tuple[str, int]]) -> dict[tuple[str, int], Watermarks]: ...

    def close(self) -> None: ...


class KafkaOffsetReader:
    """Committed offsets and watermarks from librdkafka, every call bounded by ``timeout_s``."""

    def __init__(self, client: Mapping[str, Any], *, tansu: bool, timeout_s: float = 2.0) -> None:
        self._client = dict(client)
        self._tansu = tansu
        self._timeout_s = timeout_s
        self._groups: dict[str, Consumer] = {}
        self._probe: Consumer | None = None

    def _consumer(self, group_id: str) -> Consumer:
        # never subscribed: a consumer only joins its group on subscribe(), so the stage's
        # assignment is untouched; committed() is a plain OffsetFetch for the group
        if group_id not in self._groups:
            self._groups[group_id] = Consumer({**self._client, "group.id": group_id,
                                               "enable.auto.commit": False})
        return self._groups[group_id]

    def committed(self, group_id: str, partitions: Collection[tuple[str, int]]
                  ) -> dict[tuple[str, int], int | None]:
        if not partitions:
            return {}
        tps = [TopicPartition(t, p) for t, p in partitions]
        answer = self._consumer(group_id).committed(tps, timeout=self._timeout_s)
        return {(tp.topic, tp.partition): (tp.offset if tp.error is None and tp.offset >= 0 else None)
                for tp in answer}

    def watermarks(self, partitions: Collection[tuple[str, int]]) -> dict[tuple[str, int], Watermarks]:
        if not partitions:
            return {}
        if self._probe is None:
            self._probe = Consumer({**self._client, "group.id": "omnipipe-lag-probe",
                                    "enable.auto.commit": False})
        listed: dict[tuple[str, int], tuple[int, int]] = {}
        for topic, partition in partitions:
            low, high = self._probe.get_watermark_offsets(TopicPartition(topic, partition),
                                                          timeout=self._timeout_s)
            listed[(topic, partition)] = (low, high)
        highs = {tp: high for tp, (_low, high) in listed.items()}
        if self._tansu:  # ListOffsets "latest" is short on Tansu: take the end from a fetch
            highs = fetched_highwaters(self._client, highs, timeout_s=self._timeout_s)
        return {tp: Watermarks(low=max(0, low), high=highs[tp]) for tp, (low, _high) in listed.items()}

    def close(self) -> None:
        for consumer in [*self._groups.values(), *([self._probe] if self._probe else [])]:
            consumer.close()
        self._groups.clear()
        self._probe = None


class LagMonitor(Collector):
    """Reads the lag of every stage of this worker in its own thread; serves it to the registry.

    ``run``/``stop`` follow ``StageService``'s loop protocol, so the monitor starts and stops
    with the worker like the stage loops do. The reader is made on the monitor's thread, so
    nothing connects before the worker starts.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        stages: Mapping[str, StageStatus],
        reader: Callable[[], OffsetReader],
        interval_s: float = 10.0,
    ) -> None:
        self._stages = dict(stages)
        self._make_reader = reader
        self._reader: OffsetReader | None = None
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._failing: set[str] = set()
        #: stage -> the last reading; replaced whole, so a scrape reads it without a lock
        self._lags: dict[str, list[PartitionLag]] = {}
        registry.register(self)

    def refresh(self) -> None:
        """Read every running stage's lag once (a failing read drops that stage's series)."""
        if self._reader is None:
            self._reader = self._make_reader()
        for stage, status in self._stages.items():
            if self._stop.is_set():
                return
            owned, group_id = status.assigned, status.group_id
            if not status.running or not group_id or not owned:
                self._lags = {**self._lags, stage: []}
                continue
            try:
                lags = partition_lags(stage, owned, self._reader.committed(group_id, owned),
                                      self._reader.watermarks(owned))
            except Exception as exc:  # a broker timeout: no figure rather than a stale one
                self._lags = {**self._lags, stage: []}
                if stage not in self._failing:
                    log.warning("consumer lag of the %s stage unknown (group %s): %s", stage, group_id, exc)
                    self._failing.add(stage)
                continue
            if stage in self._failing:
                log.info("consumer lag of the %s stage readable again", stage)
                self._failing.discard(stage)
            self._lags = {**self._lags, stage: lags}

    def run(self) -> None:
        try:
            while not self._stop.is_set():
                self.refresh()
                self._stop.wait(self._interval_s)
        finally:
            if self._reader is not None:
                self._reader.close()
                self._reader = None

    def stop(self) -> None:
        self._stop.set()

    def describe(self) -> Iterable[Metric]:
        return [GaugeMetricFamily(NAME, HELP, labels=LABELS)]

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(NAME, HELP, labels=LABELS)
        lags = self._lags
        for stage, status in self._stages.items():
            owned = status.assigned
            for lag in lags.get(stage, ()):
                if (lag.topic, lag.partition) in owned:
                    family.add_metric([stage, lag.topic, str(lag.partition)], lag.records)
        yield family


def lag_monitor(registry: CollectorRegistry, stages: Mapping[str, StageStatus], client: Mapping[str, Any],
                *, tansu: bool, interval_s: float = 10.0) -> LagMonitor:
    """The worker's monitor: reads ``client``'s broker (``tansu``: it is Tansu, whose ListOffsets is short;
    otherwise the broker's own watermarks are trusted)."""
    return LagMonitor(registry, stages, lambda: KafkaOffsetReader(client, tansu=tansu), interval_s)
