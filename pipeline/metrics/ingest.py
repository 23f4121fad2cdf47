"""Ingest metrics: events in per channel, dead letters per reason, decode latency,
and whether ingest is waiting for the schema registry.

Labels are closed sets (the catalogue's channels, the reason enum), so the
series count is fixed. Counters are bumped once per batch, not per record:
the hot loop counts in plain dicts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from pipeline.ingest.reasons import ALL_REASONS
from pipeline.metrics.offset_gaps import offset_gaps_counter

CONTROL = "control"


class IngestMetrics:
    def __init__(self, registry: CollectorRegistry, channels: Iterable[str]) -> None:
        labels = [c.lower() for c in channels] + [CONTROL]
        self.events_in = Counter(
            "omnipipe_ingest_events_in_total",
            "Records consumed by ingest, per source channel (control = control.privacy).",
            ["channel"], registry=registry,
        )
        self.events_accepted = Counter(
            "omnipipe_ingest_events_accepted_total",
            "Records accepted and published as canonical events, per source channel.",
            ["channel"], registry=registry,
        )
        self.dlq = Counter(
            "omnipipe_dlq_records_total",
            "Records sent to the dead-letter topic, per reason code.",
            ["reason"], registry=registry,
        )
        self.decode_seconds = Histogram(
            "omnipipe_ingest_decode_seconds",
            "Time to decode, validate and normalise one record (sampled 1 in 16).",
            registry=registry,
            buckets=(2e-6, 5e-6, 1e-5, 2e-5, 5e-5, 1e-4, 2.5e-4, 1e-3, 5e-3),
        )
        self.batch_seconds = Histogram(
            "omnipipe_ingest_batch_seconds",
            "Time to process one consumed batch, produce included.",
            registry=registry,
            buckets=(1e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1, 2.5),
        )
        self.delivery_failures = Counter(
            "omnipipe_ingest_delivery_failures_total",
            "Produced records the broker did not acknowledge (the worker stops and replays).",
            registry=registry,
        )
        self.commits = Counter(
            "omnipipe_ingest_commits_total",
            "Offset commits after all outputs of the processed records were acknowledged.",
            registry=registry,
        )
        self.offset_gaps = offset_gaps_counter("ingest", registry)
        self.commit_failures = Counter(
            "omnipipe_ingest_commit_failures_total",
            "Offset commits the group refused (e.g. during a rebalance); those records are re-read.",
            registry=registry,
        )
        self.registry_unavailable = Gauge(
            "omnipipe_ingest_registry_unavailable",
            "1 while ingest holds records because the schema registry does not answer "
            "(it retries with backoff and never dead-letters them), else 0.",
            registry=registry,
        )
        self.registry_retries = Counter(
            "omnipipe_ingest_registry_retries_total",
            "Retries of a held record while the schema registry did not answer.",
            registry=registry,
        )
        self._in = {c: self.events_in.labels(c) for c in labels}
        self._ok = {c: self.events_accepted.labels(c) for c in labels}
        self._dlq = {r: self.dlq.labels(r) for r in ALL_REASONS}

    def add_batch(
        self,
        consumed: Mapping[str, int],
        accepted: Mapping[str, int],
        dead: Mapping[str, int],
    ) -> None:
        for channel, n in consumed.items():
            self._in[channel].inc(n)
        for channel, n in accepted.items():
            self._ok[channel].inc(n)
        for reason, n in dead.items():
            self._dlq[reason].inc(n)
