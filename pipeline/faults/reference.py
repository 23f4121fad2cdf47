"""What a clean, single pass over the input must produce: the pure fold and decider, no engine.

Each profile's canonical events in their sequence order, folded and decided
as of each event's own time (``OMNIPIPE_NBA_CLOCK=occasion``). The workers
run the same rules through their engine, outbox, changelog and commits, with
crashes, redeliveries and rebalances in between; what must come out is this.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline.faults.workload import sequence_of
from pipeline.nba.catalogue import ActionCatalogue
from pipeline.nba.decide import NbaCounts
from pipeline.nba.decider import Decider
from pipeline.nba.model import ModelHolder, priors
from pipeline.profile.fold import REJECTED, Outcome, fold_event
from pipeline.profile.limits import ProfileLimits
from pipeline.profile.state import ProfileState


@dataclass
class Expected:
    states: dict[str, ProfileState] = field(default_factory=dict)
    triggers: dict[str, dict[str, Any]] = field(default_factory=dict)  # idempotency key -> record
    counts: NbaCounts = field(default_factory=NbaCounts)
    events: int = 0


def profile_of(event: Mapping[str, Any]) -> str:
    return f"cust:{event['customer_id']}"


def recompute(events: Iterable[Mapping[str, Any]], catalogue: ActionCatalogue,
              limits: ProfileLimits) -> Expected:
    """``events``: canonical events, each once (a redelivered copy is the same event id)."""
    by_profile: dict[str, dict[str, Mapping[str, Any]]] = defaultdict(dict)
    for ev in events:
        by_profile[profile_of(ev)][str(ev["event_id"])] = ev
    decider = Decider(catalogue, ModelHolder(priors(catalogue)), limits.caps.contacts)
    out = Expected()
    for profile, evs in sorted(by_profile.items()):
        state = ProfileState()
        for _id, ev in sorted(evs.items(), key=lambda kv: sequence_of(kv[0])[1]):
            out.events += 1
            outcome = fold_event(state, ev, limits)
            if outcome in REJECTED or outcome is Outcome.DUPLICATE:
                continue  # applied with an anomaly (a cart line absent) still decides
            for e in decider.after_event(profile, state, ev, 0, out.counts):
                out.triggers[e.record["idempotency_key"]] = e.record
        out.states[profile] = state
    return out
