"""One next-best-action decision over plain data: eligibility -> scoring -> contact policy -> one trigger.

``decide`` is pure: the profile, what asks for a decision (an ``Occasion``),
the decision time, the catalogue and the models in, a ``Decision`` out. The
``Decider`` records it on the profile (so caps, cooldowns, cancellation and
attribution see it) and builds the trigger record for the senders.

Order, for every action the occasion triggers whose eligibility rules hold
and every channel it allows:

1. the channel must be reachable (an e-mail, phone or push-enabled device is
   known) and consented for marketing -- else ``no_reachable_channel`` /
   ``no_consent``;
2. score = propensity(action, channel, features) x value - channel cost; a
   score <= 0 is ``low_score``;
3. best score first: the action's cooldown (``cooldown``), the occasion's
   age against the action's expiry (``stale``), quiet hours in the
   customer's zone move ``send_after`` to the next allowed time and block if
   that is past ``expires_at`` (``quiet_hours``), then the per-channel and
   overall day/week caps (``cap``); the first candidate that passes wins;
4. a customer in the holdout group gets the decision recorded, never sent
   (``holdout``).

When nothing passes, the decision's reason is what blocked the best
candidate (or, with no candidate, no reachable channel before no consent).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline.nba.catalogue import Action, ActionCatalogue
from pipeline.nba.features import FEATURES
from pipeline.nba.model import ModelSet
from pipeline.nba.policy import HOLDOUT, cap_blocked, in_holdout, last_decided, next_allowed
from pipeline.profile.state import Contact, ProfileState
from pipeline.profile.views import consented, reachability

# Decision outcomes
TRIGGERED = "triggered"
SUPPRESSED = "suppressed"
NOT_ELIGIBLE = "not_eligible"
DUPLICATE = "duplicate"  # this occasion was decided before (a redelivery): nothing new

# Suppression reasons (bounded: the metrics' label values)
NO_REACHABLE = "no_reachable_channel"
NO_CONSENT = "no_consent"
LOW_SCORE = "low_score"
COOLDOWN = "cooldown"
STALE = "stale"
QUIET_HOURS = "quiet_hours"
CAP = "cap"
HOLDOUT_REASON = "holdout"
REASONS = (NO_REACHABLE, NO_CONSENT, LOW_SCORE, COOLDOWN, STALE, QUIET_HOURS, CAP, HOLDOUT_REASON)

_RECIPIENT_KIND = {"EMAIL": "email", "SMS": "phone", "PUSH": "dev"}
_PURPOSE = "marketing"


@dataclass(frozen=True, slots=True)
class Occasion:
    """What asks for a decision: an event (after it was folded), a due timer, or a feed record."""

    kind: str  # "event", "timer", "feed"
    source_id: str  # event id; "<profile>@<basis>" for a timer; the feed record's id
    at: int  # event time, due time or feed time
    basis: int  # the state time the occasion derives from (cancellation compares purchases to it)
    actions: tuple[Action, ...]
    detail: Mapping[str, Any] = field(default_factory=dict)  # the event, or the feed record


@dataclass(frozen=True, slots=True)
class Candidate:
    action: Action
    channel: str
    propensity: float
    score: float
    cost: float
    rules: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Decision:
    outcome: str
    reason: str | None = None
    candidate: Candidate | None = None
    key: str = ""
    send_after: int = 0
    expires_at: int = 0
    deferred: bool = False  # quiet hours moved send_after


def trigger_key(action: str, occasion: Occasion) -> str:
    """Deterministic per (action, occasion): a redelivered event or a re-fired timer gives the same key.

    ``action:`` first: the senders' reports carry the key back, and the
    profile reads the action from it (``profile/fold.py``).
    """
    digest = hashlib.blake2b(f"{action}|{occasion.kind}|{occasion.source_id}".encode(), digest_size=12)
    return f"{action}:{digest.hexdigest()}"


class LazyFeatures(dict[str, Any]):
    """The profile's features, each computed on first use: most decisions stop at a failed rule."""

    def __init__(self, state: ProfileState, now: int) -> None:
        super().__init__()
        self._state = state
        self._now = now

    def __missing__(self, name: str) -> Any:
        value = self[name] = FEATURES[name](self._state, self._now)
        return value

    def get(self, name: str, default: Any = None) -> Any:  # type: ignore[override]
        return self[name] if name in FEATURES else default


def decide(profile: str, state: ProfileState, occasion: Occasion, now: int, catalogue: ActionCatalogue,
           models: ModelSet) -> Decision:
    """See the module docstring; ``now`` is the decision time (never before the occasion)."""
    policy = catalogue.policy
    if any(trigger_key(a.name, occasion) in state.contacts for a in occasion.actions):
        return Decision(DUPLICATE)
    feats = LazyFeatures(state, now)
    eligible = [a for a in occasion.actions if all(rule.holds(feats) for rule in a.eligibility)]
    if not eligible:
        return Decision(NOT_ELIGIBLE)
    reach = reachability(state)
    candidates: list[Candidate] = []
    reachable = False
    for action in eligible:
        rules = tuple(str(r) for r in action.eligibility)
        for channel in action.channels:
            if not reach[channel.lower()]:
                continue
            reachable = True
            if not consented(state, channel, _PURPOSE):
                continue
            p = models.get(action.name, channel).predict(feats)
            cost = policy.channel_cost[channel]
            candidates.append(Candidate(action, channel, p, p * action.value - cost, cost, rules))
    if not candidates:
        return Decision(SUPPRESSED, NO_CONSENT if reachable else NO_REACHABLE)
    candidates.sort(key=lambda c: (-c.score, c.action.name, c.channel))
    if candidates[0].score <= 0:
        return Decision(SUPPRESSED, LOW_SCORE, candidates[0])
    tz = state.registers.get("timezone")
    tz_name = str(tz[1]) if tz else None
    first_block: str | None = None
    contacts = state.contacts.values()
    holdout = in_holdout(profile, policy)
    for c in candidates:
        if c.score <= 0:
            break
        action = c.action
        key = trigger_key(action.name, occasion)
        last = last_decided(contacts, state.last_trigger, action.name)
        expires = occasion.at + action.expiry_ms
        block = None
        send_after = now
        if last is not None and now - last < action.cooldown_ms:
            block = COOLDOWN
        elif now >= expires:
            block = STALE
        else:
            if c.channel in policy.quiet_channels:
                send_after = next_allowed(now, tz_name, policy)
            if send_after >= expires:
                block = QUIET_HOURS
            elif cap_blocked(contacts, c.channel, send_after, policy, holdout):
                block = CAP
        if block is None:
            if holdout:
                return Decision(SUPPRESSED, HOLDOUT_REASON, c, key, send_after, expires, send_after > now)
            return Decision(TRIGGERED, None, c, key, send_after, expires, send_after > now)
        first_block = first_block or block
    return Decision(SUPPRESSED, first_block, candidates[0])


# ------------------------------------------------------------------------------ recording and records
def record(state: ProfileState, decision: Decision, occasion: Occasion, now: int, cap: int) -> None:
    """Write a triggered or holdout decision into the profile (caps, cooldown, attribution read it)."""
    c = decision.candidate
    assert c is not None
    flags = HOLDOUT if decision.outcome == SUPPRESSED else 0
    contact: Contact = (now, decision.send_after, decision.expires_at, occasion.basis, c.channel,
                        c.action.name, flags)
    state.contacts[decision.key] = contact
    if len(state.contacts) > cap:
        kept = sorted(state.contacts.items(), key=lambda kv: (kv[1][0], kv[0]), reverse=True)[:cap]
        state.contacts = dict(kept)
    if not flags:
        slot = f"{c.action.name}/{c.channel}"
        if now > state.last_trigger.get(slot, -1):
            state.last_trigger[slot] = now


def customer_id(profile: str, state: ProfileState) -> str | None:
    if profile.startswith("cust:"):
        return profile[5:]
    ids = [(t, ref) for ref, t in state.identifiers.items() if ref.startswith("cust:")]
    return max(ids)[1][5:] if ids else None


def recipient(state: ProfileState, channel: str) -> str:
    """The newest identifier of the channel's kind: a hash (e-mail, phone) or a device id, never raw PII."""
    kind = _RECIPIENT_KIND[channel] + ":"
    refs = [(t, ref) for ref, t in state.identifiers.items() if ref.startswith(kind)]
    return max(refs)[1] if refs else ""


def _content(action: Action, state: ProfileState,
             occasion: Occasion) -> tuple[list[dict[str, Any]], str | None]:
    trig = action.trigger
    if trig.name == "cart_idle":
        return [{"sku": sku, "category": cat or None, "quantity": q, "unit_price": p / 100}
                for sku, (q, p, cat, _t) in sorted(state.cart.items())], None
    if trig.name == "browse_idle":
        viewed = sorted(state.products.items(), key=lambda kv: (-kv[1][0], kv[0]))[:3]
        return [{"sku": sku, "category": cat or None, "quantity": 1, "unit_price": 0.0}
                for sku, (_t, cat) in viewed], None
    if trig.kind == "feed":
        sku = str(occasion.detail.get("sku", ""))
        category = occasion.detail.get("category")
        return [{"sku": sku, "category": category, "quantity": 1, "unit_price": 0.0}], None
    if "near_store" in trig.events:
        store = occasion.detail.get("store_id")
        return [], f"store:{store}" if store else None
    if "store_purchase" in trig.events and state.purchase_categories:
        top = max(state.purchase_categories.items(), key=lambda kv: (kv[1], kv[0]))[0]
        return [], f"category:{top}"
    return [], None


def trigger_record(profile: str, state: ProfileState, decision: Decision, occasion: Occasion,
                   now: int) -> dict[str, Any]:
    """An ``omnipipe.triggers.Trigger`` value with its explanation."""
    c = decision.candidate
    assert c is not None
    action = c.action
    items, offer = _content(action, state, occasion)
    trig = action.trigger
    why = [f"trigger {trig.kind} {trig.name}", *c.rules, f"reachable and consented on {c.channel}"]
    if decision.deferred:
        why.append("quiet hours: send_after moved to the next allowed local time")
    return {
        "idempotency_key": decision.key,
        "profile_id": profile,
        "customer_id": customer_id(profile, state),
        "channel": c.channel,
        "recipient_ref": recipient(state, c.channel),
        "action": action.name,
        "template_id": action.template,
        "items": items,
        "offer": offer,
        "score": c.score,
        "reasons": why,
        "score_parts": {"propensity": c.propensity, "value": action.value, "channel_cost": c.cost},
        "created_at": now,
        "send_after": decision.send_after,
        "expires_at": decision.expires_at,
        "source_event_time": occasion.at,
        "cancels": None,
    }


def cancel_record(profile: str, state: ProfileState, key: str, contact: Contact, why: str,
                  now: int, template: str, identify: bool = True) -> dict[str, Any]:
    """Withdraws a trigger not yet sent: its own key, ``cancels`` naming the withdrawn one.

    ``identify=False`` (an erasure) leaves out the customer id and recipient: the sender finds the
    pending trigger by ``cancels`` and is not handed the erased person's identifiers again.
    """
    created, _send_after, expires, _basis, channel, action, _flags = contact
    return {
        "idempotency_key": f"{key}:cancel", "profile_id": profile,
        "customer_id": customer_id(profile, state) if identify else None,
        "channel": channel, "recipient_ref": recipient(state, channel) if identify else "", "action": action,
        "template_id": template, "items": [], "offer": None, "score": 0.0, "reasons": [why],
        "score_parts": {}, "created_at": now, "send_after": now, "expires_at": max(expires, now),
        "source_event_time": created, "cancels": key,
    }


@dataclass
class NbaCounts:
    """What decisions did in one batch; the runner adds them to the metrics."""

    decisions: Counter[str] = field(default_factory=Counter)  # outcome
    triggers: Counter[tuple[str, str]] = field(default_factory=Counter)  # action, channel
    suppressions: Counter[str] = field(default_factory=Counter)  # reason
    deferred: Counter[str] = field(default_factory=Counter)  # channel: send_after moved by quiet hours
    cancellations: Counter[tuple[str, str]] = field(default_factory=Counter)  # action, why
    outcomes: Counter[tuple[str, str, str]] = field(default_factory=Counter)  # action, channel, outcome
    conversions: Counter[tuple[str, str, str]] = field(default_factory=Counter)  # action, channel, group
    recorded: Counter[tuple[str, str, str]] = field(default_factory=Counter)  # action, channel, group
    timers_fired: int = 0
