"""Identity stage metrics: links, merges, refusals, forwarding, messages, table size.

Label sets are closed: merge kinds (``MERGE_KINDS``), refusal reasons (``RefusalReason``), message types
(``messages.Message``), keyspaces (``Space``), routes (local/remote), dead-letter
reasons (``Reason``). Counters are bumped once per batch from the engine's
plain-int ``Counts``.
"""

from __future__ import annotations

from typing import get_args

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from pipeline.identity.engine import MERGE_KINDS, Counts
from pipeline.identity.messages import Message, Space
from pipeline.identity.model import RefusalReason
from pipeline.ingest.reasons import Reason
from pipeline.metrics.offset_gaps import offset_gaps_counter


class IdentityMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.events = Counter(
            "omnipipe_identity_events_total",
            "Canonical events that entered the identity stage.", registry=registry)
        self.resolved = Counter(
            "omnipipe_identity_resolved_events_total",
            "Events folded into a live profile and published keyed by profile id (redeliveries included).",
            registry=registry)
        self.links = Counter(
            "omnipipe_identity_links_total",
            "Link requests (events with two or more stable identifiers) newly recorded at a cluster root.",
            registry=registry)
        self.merges = Counter(
            "omnipipe_identity_merges_total",
            "Profile incarnations merged into a stronger profile, by what ended: absorbed=profile (it had "
            "events of its own, handed over) or identifier (it arrived with a stronger identifier, e.g. a "
            "new e-mail with its customer id; nothing moved).", ["absorbed"], registry=registry)
        self.refusals = Counter(
            "omnipipe_identity_refused_links_total",
            "Links refused by the merge protection or the storm guard, per reason.",
            ["reason"], registry=registry)
        self.forwarding_hops = Counter(
            "omnipipe_identity_forwarding_hops_total",
            "Events that reached a merged (ended) profile and were forwarded to its successor.",
            registry=registry)
        self.messages = Counter(
            "omnipipe_identity_messages_total",
            "Identity messages delivered, per type and route (local: in memory; remote: via the broker).",
            ["type", "route"], registry=registry)
        self.records = Gauge(
            "omnipipe_identity_records",
            "Identity table size on this worker: records per keyspace (ident = identifier -> profile).",
            ["space"], registry=registry)
        self.forgotten = Counter(
            "omnipipe_identity_forgotten_identifiers_total",
            "Identifiers whose records were deleted on an erasure request (tombstones on the changelog).",
            registry=registry)
        self.erased_events_dropped = Counter(
            "omnipipe_identity_erased_events_dropped_total",
            "Events no newer than an erasure of their key identifier (a replayed past), dropped.",
            registry=registry)
        self.dead_letters = Counter(
            "omnipipe_identity_dead_letters_total",
            "Records the identity stage could not use, sent to the dead-letter topic, per reason.",
            ["reason"], registry=registry)
        self.batch_seconds = Histogram(
            "omnipipe_identity_batch_seconds",
            "Time to run one consumed batch through the identity rules.", registry=registry,
            buckets=(1e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1, 2.5))
        self.commit_seconds = Histogram(
            "omnipipe_identity_commit_seconds",
            "Time to publish outputs, persist changed records (changelog + RocksDB) and commit offsets.",
            registry=registry, buckets=(1e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1, 2.5, 5))
        self.restore_seconds = Histogram(
            "omnipipe_identity_restore_seconds",
            "Time to bring newly assigned partitions' records up to date from their changelog.",
            registry=registry, buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 120))
        self.changelog_records = Counter(
            "omnipipe_identity_changelog_records_total",
            "Changed identity records written to the changelog (one per record per commit).",
            registry=registry)
        self.delivery_failures = Counter(
            "omnipipe_identity_delivery_failures_total",
            "Produced records the broker did not acknowledge (the worker stops and replays).",
            registry=registry)
        self.commits = Counter(
            "omnipipe_identity_commits_total",
            "Offset commits after every output, record and message was acknowledged.", registry=registry)
        self.offset_gaps = offset_gaps_counter("identity", registry)
        self.commit_failures = Counter(
            "omnipipe_identity_commit_failures_total",
            "Offset commits refused (e.g. by a rebalance): the records are re-read, never lost.",
            registry=registry)
        for space in Space:
            self.records.labels(space.value)
        for absorbed in MERGE_KINDS:
            self.merges.labels(absorbed)
        for reason in RefusalReason:
            self.refusals.labels(reason.value)
        for dead in Reason:
            self.dead_letters.labels(dead.value)
        for message in get_args(Message):
            for route in ("local", "remote"):
                self.messages.labels(message.__name__, route)

    def add(self, counts: Counts) -> None:
        self.events.inc(counts.events)
        self.resolved.inc(counts.resolved)
        self.links.inc(counts.links)
        for absorbed, n in counts.merged.items():
            self.merges.labels(absorbed).inc(n)
        self.forwarding_hops.inc(counts.forwarded)
        for reason, n in counts.refusals.items():
            self.refusals.labels(reason).inc(n)
        for name, n in counts.local.items():
            self.messages.labels(name, "local").inc(n)
        for name, n in counts.remote.items():
            self.messages.labels(name, "remote").inc(n)
