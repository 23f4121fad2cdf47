"""Next-best-action metrics: decisions, triggers, suppressions, outcomes, conversions, latency.

Label sets are closed: actions and channels come from the validated action
catalogue, reasons and outcomes from ``nba/decide.py`` and ``nba/decider.py``.
Conversion per action and channel is exposed for the treated customers and,
beside it, for the holdout group (``group``), so uplift reads straight off:
conversions / decisions recorded, treated minus holdout.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from pipeline.nba.catalogue import ActionCatalogue
from pipeline.nba.decide import DUPLICATE, NOT_ELIGIBLE, REASONS, SUPPRESSED, TRIGGERED, NbaCounts
from pipeline.nba.decider import GROUPS, OUTCOMES

OCCASIONS = ("event", "timer", "feed")


class NbaMetrics:
    def __init__(self, registry: CollectorRegistry, catalogue: ActionCatalogue) -> None:
        self.decisions = Counter(
            "omnipipe_nba_decisions_total",
            "Next-best-action decisions, per outcome (triggered, suppressed, not_eligible, duplicate).",
            ["outcome"], registry=registry)
        self.triggers = Counter(
            "omnipipe_nba_triggers_total", "Triggers emitted to the senders, per action and channel.",
            ["action", "channel"], registry=registry)
        self.suppressions = Counter(
            "omnipipe_nba_suppressions_total",
            "Decisions that sent nothing, per reason: no_reachable_channel, no_consent, low_score, cooldown, "
            "stale, quiet_hours (no allowed time before expiry), cap, holdout.",
            ["reason"], registry=registry)
        self.deferred = Counter(
            "omnipipe_nba_quiet_hours_deferred_total",
            "Triggers whose send_after quiet hours moved to the next allowed local time.", ["channel"],
            registry=registry)
        self.cancellations = Counter(
            "omnipipe_nba_cancellations_total",
            "Triggers withdrawn before expiry (a cancellation record), per action and cause.",
            ["action", "cause"], registry=registry)
        self.outcomes = Counter(
            "omnipipe_nba_outcomes_total",
            "Sender reports linked back to their trigger (each counted once per trigger).",
            ["action", "channel", "outcome"], registry=registry)
        self.recorded = Counter(
            "omnipipe_nba_decisions_recorded_total",
            "Decisions recorded per group: treated (a trigger went out) or holdout (recorded, never sent).",
            ["action", "channel", "group"], registry=registry)
        self.conversions = Counter(
            "omnipipe_nba_conversions_total",
            "Purchases within the attribution window after a recorded decision (last touch), per group.",
            ["action", "channel", "group"], registry=registry)
        self.timers_fired = Counter(
            "omnipipe_nba_timers_fired_total", "Timer conditions found due and decided.", registry=registry)
        self.feed_records = Counter(
            "omnipipe_nba_feed_records_total", "Catalogue feed records applied.", registry=registry)
        self.latency = Histogram(
            "omnipipe_nba_event_to_trigger_seconds",
            "From the occasion (event time, timer due time, feed time) to the trigger's emission.",
            ["occasion"], registry=registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
        self.model_updates = Counter(
            "omnipipe_nba_model_updates_total",
            "Propensity model documents received, per result (accepted and swapped in, or rejected).",
            ["result"], registry=registry)
        self.model_swapped = Gauge(
            "omnipipe_nba_model_swapped_timestamp_seconds",
            "When the models in use were last replaced (0: the priors from the catalogue).",
            registry=registry)
        for outcome in (TRIGGERED, SUPPRESSED, NOT_ELIGIBLE, DUPLICATE):
            self.decisions.labels(outcome)
        for reason in REASONS:
            self.suppressions.labels(reason)
        for result in ("accepted", "rejected"):
            self.model_updates.labels(result)
        for action in catalogue.actions.values():
            for channel in action.channels:
                self.triggers.labels(action.name, channel)
                for group in GROUPS:
                    self.recorded.labels(action.name, channel, group)
                    self.conversions.labels(action.name, channel, group)
                for outcome in OUTCOMES:
                    self.outcomes.labels(action.name, channel, outcome)
        for occasion in OCCASIONS:
            self.latency.labels(occasion)

    def add(self, counts: NbaCounts) -> None:
        for outcome, n in counts.decisions.items():
            self.decisions.labels(outcome).inc(n)
        for (action, channel), n in counts.triggers.items():
            self.triggers.labels(action, channel).inc(n)
        for reason, n in counts.suppressions.items():
            self.suppressions.labels(reason).inc(n)
        for channel, n in counts.deferred.items():
            self.deferred.labels(channel).inc(n)
        for (action, cause), n in counts.cancellations.items():
            self.cancellations.labels(action, cause).inc(n)
        for (action, channel, outcome), n in counts.outcomes.items():
            self.outcomes.labels(action, channel, outcome).inc(n)
        for key, n in counts.recorded.items():
            self.recorded.labels(*key).inc(n)
        for key, n in counts.conversions.items():
            self.conversions.labels(*key).inc(n)
        self.timers_fired.inc(counts.timers_fired)
