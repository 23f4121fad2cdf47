"""Profile stage metrics: table size and bytes, folds, merges folded, consent changes, erasures.

Label sets are closed: fold outcomes (``fold.Outcome`` minus ``applied``) and
dead-letter reasons (``Reason`` plus the profile's rejections). Counters are
bumped once per batch from the engine's plain-int ``Counts``.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from pipeline.ingest.reasons import Reason
from pipeline.metrics.offset_gaps import offset_gaps_counter
from pipeline.profile.engine import Counts
from pipeline.profile.fold import Outcome

OUTCOMES = tuple(o.value for o in Outcome if o is not Outcome.APPLIED)
DEAD_LETTER_REASONS = tuple(sorted({r.value for r in Reason} | {Outcome.INVALID_AMOUNT.value,
                                                                Outcome.INVALID_CONTROL.value}))


class ProfileMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.profiles = Gauge(
            "omnipipe_profile_profiles",
            "Live customer profiles in the partitions this worker owns.", registry=registry)
        self.profile_bytes = Gauge(
            "omnipipe_profile_stored_bytes",
            "Bytes of profile records (keys and values, before RocksDB compression) in the owned partitions.",
            registry=registry)
        self.record_bytes = Histogram(
            "omnipipe_profile_record_bytes",
            "Size of each profile record written (key and value).", registry=registry,
            buckets=(64, 128, 256, 512, 1024, 1536, 2048, 4096, 8192))
        self.folds = Counter(
            "omnipipe_profile_folds_total",
            "Events folded into a profile (rate() gives folds per second).", registry=registry)
        self.merges_folded = Counter(
            "omnipipe_profile_merges_folded_total",
            "Merged-away profiles whose state was folded into their target profile.", registry=registry)
        self.forwarded = Counter(
            "omnipipe_profile_forwarded_total",
            "Events or states that reached a merged profile and followed it to its successor.",
            registry=registry)
        self.consent_changes = Counter(
            "omnipipe_profile_consent_changes_total",
            "Consent changes applied to a profile.", registry=registry)
        self.erasures = Counter(
            "omnipipe_profile_erasures_completed_total",
            "Erasure requests carried out (profile deleted, tombstones written, completion published).",
            registry=registry)
        self.outcomes = Counter(
            "omnipipe_profile_fold_anomalies_total",
            "Events not applied as they came, per outcome: duplicate (dropped), cart_item_absent and "
            "cart_item_missing (applied, cart unchanged), invalid_amount and invalid_control "
            "(dead-lettered).",
            ["outcome"], registry=registry)
        self.dead_letters = Counter(
            "omnipipe_profile_dead_letters_total",
            "Records the profile stage sent to the dead-letter topic, per reason.", ["reason"],
            registry=registry)
        self.replays_skipped = Counter(
            "omnipipe_profile_replays_skipped_total",
            "Input records skipped because the stored state already holds them (a replay after a restart).",
            registry=registry)
        self.duplicate_messages = Counter(
            "omnipipe_profile_duplicate_messages_total",
            "Profile messages received again (re-sent after a restart) and dropped.", registry=registry)
        self.messages = Counter(
            "omnipipe_profile_messages_sent_total",
            "Outbox entries sent after their commit, per destination.", ["dest"], registry=registry)
        self.changelog_records = Counter(
            "omnipipe_profile_changelog_records_total",
            "Records written to the profile changelog (tombstones included).", registry=registry)
        self.commits = Counter(
            "omnipipe_profile_commits_total", "Profile stage commits.", registry=registry)
        self.offset_gaps = offset_gaps_counter("profile", registry)
        self.commit_failures = Counter(
            "omnipipe_profile_commit_failures_total",
            "Input offset commits the broker refused (the inputs are skipped on re-read).", registry=registry)
        self.delivery_failures = Counter(
            "omnipipe_profile_delivery_failures_total",
            "Records the broker did not acknowledge; the stage stops rather than skip.", registry=registry)
        self.batch_seconds = Histogram(
            "omnipipe_profile_batch_seconds",
            "Time to decode and fold one consumed batch.", registry=registry,
            buckets=(1e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1, 2.5))
        self.commit_seconds = Histogram(
            "omnipipe_profile_commit_seconds",
            "Time to persist one commit (changelog, mark, RocksDB) and send its outbox.", registry=registry,
            buckets=(5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1, 2.5, 5))
        self.restore_seconds = Histogram(
            "omnipipe_profile_restore_seconds",
            "Time to restore newly assigned partitions from RocksDB and the changelog.", registry=registry,
            buckets=(0.01, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120))
        for outcome in OUTCOMES:
            self.outcomes.labels(outcome)
        for reason in DEAD_LETTER_REASONS:
            self.dead_letters.labels(reason)
        for dest in ("messages", "erasures", "dlq"):
            self.messages.labels(dest)

    def add(self, counts: Counts) -> None:
        self.folds.inc(counts.folds)
        self.merges_folded.inc(counts.merges_folded)
        self.forwarded.inc(counts.forwarded)
        self.consent_changes.inc(counts.consent_changes)
        self.replays_skipped.inc(counts.skipped_replays)
        self.duplicate_messages.inc(counts.duplicate_messages)
        for outcome, n in counts.outcomes.items():
            self.outcomes.labels(str(outcome)).inc(n)
        for reason, n in counts.dead_letters.items():
            known = reason if reason in DEAD_LETTER_REASONS else Reason.INTERNAL_ERROR.value
            self.dead_letters.labels(known).inc(n)
