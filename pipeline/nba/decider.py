"""Called by the profile engine after a fold, a due timer or a feed record: decisions, withdrawals, outcomes.

Pure over plain data like ``decide``: it mutates the profile it is given
(recorded contacts and their outcomes, as ``fold_event`` does) and returns
the records to emit; the engine puts them in its outbox, so they leave
exactly once with the state that produced them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pipeline.nba.catalogue import ActionCatalogue
from pipeline.nba.decide import (
    HOLDOUT_REASON,
    TRIGGERED,
    NbaCounts,
    Occasion,
    cancel_record,
    decide,
    record,
    trigger_record,
)
from pipeline.nba.model import ModelHolder
from pipeline.nba.policy import (
    CANCELLED,
    CLICKED,
    CONVERTED,
    DELIVERED,
    FAILED,
    HOLDOUT,
    OPENED,
    UNSUBSCRIBED,
)
from pipeline.profile.state import Contact, ProfileState
from pipeline.profile.views import consented

OUTBOUND = frozenset({"EMAIL", "PUSH", "SMS"})
PURCHASES = frozenset({"purchase", "store_purchase"})
#: sender report (event type after the channel prefix) -> (contact flag, outcome label)
REPORTS: dict[str, tuple[int, str]] = {
    "delivered": (DELIVERED, "delivered"), "opened": (OPENED, "opened"), "clicked": (CLICKED, "clicked"),
    "reply": (CLICKED, "clicked"), "unsubscribed": (UNSUBSCRIBED, "unsubscribed"),
    "stop": (UNSUBSCRIBED, "unsubscribed"), "bounced": (FAILED, "failed"), "failed": (FAILED, "failed"),
}
OUTCOMES = ("delivered", "opened", "clicked", "unsubscribed", "failed")
GROUPS = ("treated", "holdout")


@dataclass(frozen=True, slots=True)
class Emitted:
    channel: str
    record: dict[str, Any]  # an omnipipe.triggers.Trigger value
    kind: str  # "event", "timer", "feed" or "cancel"


def _group(contact: Contact) -> str:
    return "holdout" if contact[6] & HOLDOUT else "treated"


class Decider:
    def __init__(self, catalogue: ActionCatalogue, models: ModelHolder, contacts_cap: int) -> None:
        self.catalogue = catalogue
        self.models = models
        self.contacts_cap = contacts_cap
        self._templates = {a.name: a.template for a in catalogue.actions.values()}
        self.feeds = frozenset(a.trigger.name for a in catalogue.actions.values() if a.trigger.kind == "feed")

    def feed_window_ms(self, feed: str) -> int:
        """How recent a view must be for a feed record to concern the viewer (the widest of its actions)."""
        return max((a.trigger.within_ms or 0 for a in self.catalogue.for_feed(feed)), default=0)

    # ------------------------------------------------------------------ occasions
    def after_event(self, profile: str, state: ProfileState, ev: Mapping[str, Any], clock: int,
                    counts: NbaCounts) -> list[Emitted]:
        """The event is already folded into ``state``."""
        out: list[Emitted] = []
        kind: str = ev["type"]
        t: int = ev["event_time"]
        channel = ev.get("channel")
        if channel in OUTBOUND and state.contacts:
            self._report(state, ev, kind[len(channel) + 1:], counts)
            if kind[len(channel) + 1:] in ("unsubscribed", "stop"):
                out += self._withdraw(profile, state, t, clock, counts, channel=channel,
                                      why=f"{channel} opt-out at {t}")
        if kind in PURCHASES and state.contacts:
            self._convert(state, t, counts)
        if kind == "consent_change" and ev.get("consent_granted") is False and state.contacts and (
                ev.get("consent_purpose") or "marketing") == "marketing":
            out += self._withdraw(profile, state, t, clock, counts, channel=ev.get("consent_channel"),
                                  why=f"consent withdrawn at {t}")
        if kind in self.catalogue.cancelling_events and state.contacts:
            out += self._withdraw(profile, state, t, clock, counts, cancel_on=frozenset({kind}),
                                  why=f"{kind} at {t}")
        actions = self.catalogue.for_event(kind)
        if actions:
            out += self._decide(profile, state, Occasion("event", str(ev["event_id"]), t, t, actions, ev),
                                clock, counts)
        return out

    def after_merge(self, profile: str, state: ProfileState, clock: int, counts: NbaCounts) -> list[Emitted]:
        """The merged state may make pending triggers wrong: a consent one side withdrew, or a
        purchase one side made after the other's cart or view the trigger was about."""
        if not state.contacts:
            return []
        t = state.last_seen or 0
        out: list[Emitted] = []
        for channel in sorted({c[4] for c in state.contacts.values()}):
            if not consented(state, channel):
                out += self._withdraw(profile, state, t, clock, counts, channel=channel, cause="merge",
                                      why=f"merged profile has no {channel} consent")
        bought = state.last_purchase_at
        if bought is not None and self.catalogue.cancelling_events & PURCHASES:
            out += self._withdraw(profile, state, bought, clock, counts, cancel_on=PURCHASES, cause="merge",
                                  why=f"merged profile purchased at {bought}")
        return out

    def on_erasure(self, profile: str, state: ProfileState, t: int, clock: int, counts: NbaCounts,
                   unsent: frozenset[str] | set[str] = frozenset()) -> list[Emitted]:
        """Every trigger sent and not yet expired is withdrawn: nothing goes to an erased person after the
        request. ``unsent``: keys of triggers that never left (dropped by the engine): nothing to withdraw."""
        for key in unsent:
            c = state.contacts.get(key)
            if c is not None:
                state.contacts[key] = (*c[:6], c[6] | CANCELLED)
                counts.cancellations[(c[5], "erasure")] += 1
        return self._withdraw(profile, state, t, clock, counts, cause="erasure", why="erasure request")

    def on_timer(self, profile: str, state: ProfileState, action: str, due: int, basis: int, clock: int,
                 counts: NbaCounts) -> list[Emitted]:
        counts.timers_fired += 1
        occasion = Occasion("timer", f"{profile}@{basis}", due, basis, (self.catalogue.actions[action],))
        return self._decide(profile, state, occasion, clock, counts)

    def on_feed(self, profile: str, state: ProfileState, feed: str, feed_record: Mapping[str, Any],
                clock: int, counts: NbaCounts) -> list[Emitted]:
        actions = tuple(self.catalogue.for_feed(feed))
        at = int(feed_record["at"])
        occasion = Occasion("feed", f"{feed_record['id']}|{profile}", at, at, actions, feed_record)
        return self._decide(profile, state, occasion, clock, counts) if actions else []

    def _decide(self, profile: str, state: ProfileState, occasion: Occasion, clock: int,
                counts: NbaCounts) -> list[Emitted]:
        now = max(occasion.at, clock)
        d = decide(profile, state, occasion, now, self.catalogue, self.models.current)
        counts.decisions[d.outcome] += 1
        if d.reason is not None:
            counts.suppressions[d.reason] += 1
        if d.outcome != TRIGGERED and d.reason != HOLDOUT_REASON:
            return []
        c = d.candidate
        assert c is not None
        record(state, d, occasion, now, self.contacts_cap)
        counts.recorded[(c.action.name, c.channel, "holdout" if d.reason else "treated")] += 1
        if d.reason == HOLDOUT_REASON:
            return []
        counts.triggers[(c.action.name, c.channel)] += 1
        if d.deferred:
            counts.deferred[c.channel] += 1
        return [Emitted(c.channel, trigger_record(profile, state, d, occasion, now), occasion.kind)]

    # ------------------------------------------------------------------ outcomes and withdrawals
    def _report(self, state: ProfileState, ev: Mapping[str, Any], report: str, counts: NbaCounts) -> None:
        key = ev.get("trigger_key")
        found = REPORTS.get(report)
        if not key or found is None:
            return
        contact = state.contacts.get(str(key))
        flag, label = found
        if contact is None or contact[6] & flag:
            return  # not ours (or aged out), or this outcome is already counted
        state.contacts[str(key)] = (*contact[:6], contact[6] | flag)
        counts.outcomes[(contact[5], contact[4], label)] += 1

    def _convert(self, state: ProfileState, t: int, counts: NbaCounts) -> None:
        """Last touch: the latest trigger (or holdout decision) whose send time lies within the window
        before the purchase; both groups are timed from ``send_after`` so their windows match."""
        window = self.catalogue.policy.attribution_window_ms
        best: tuple[int, str] | None = None
        for key, c in state.contacts.items():
            if c[6] & (CANCELLED | CONVERTED):
                continue
            start = c[1]
            if start <= t < start + window and (best is None or (start, key) > best):
                best = (start, key)
        if best is None:
            return
        c = state.contacts[best[1]]
        state.contacts[best[1]] = (*c[:6], c[6] | CONVERTED)
        counts.conversions[(c[5], c[4], _group(c))] += 1

    def _withdraw(self, profile: str, state: ProfileState, t: int, clock: int, counts: NbaCounts, *,
                  channel: str | None = None, cancel_on: frozenset[str] | None = None, cause: str = "opt_out",
                  why: str) -> list[Emitted]:
        """Cancellation records for triggers sent but not expired that ``t``'s event makes wrong."""
        out: list[Emitted] = []
        actions = self.catalogue.actions
        for key, c in sorted(state.contacts.items()):
            _created, _send_after, expires, basis, ch, action, flags = c
            if flags & (CANCELLED | HOLDOUT) or t >= expires:
                continue
            if channel is not None and ch != channel:
                continue
            if cancel_on is not None:
                a = actions.get(action)
                if a is None or cancel_on.isdisjoint(a.cancel_on) or basis > t:
                    continue  # a newer occurrence (a cart started after this purchase) stays
            state.contacts[key] = (*c[:6], flags | CANCELLED)
            counts.cancellations[(action, cause if cancel_on is None or len(cancel_on) > 1
                                  else next(iter(cancel_on)))] += 1
            cancel = cancel_record(profile, state, key, c, why, max(t, clock),
                                   self._templates.get(action, ""), identify=cause != "erasure")
            out.append(Emitted(ch, cancel, "cancel"))
        return out
