"""When each timer condition of a profile falls due: a pure function of the state.

The profile engine keeps a per-partition index by due time
(``t/<due>/<profile>|<action>``) and rewrites a profile's entries only when
the profile changed, so finding what is due is a range read of the index up
to now, never a scan of the profiles.

Each due time comes with its *basis*: the state time the condition derives
from (the cart's last change, the last view, the last event, the last
purchase). The basis names the occurrence (a new cart is a new occurrence),
goes into the trigger's idempotency key, and decides which triggers a later
purchase withdraws.
"""

from __future__ import annotations

import itertools
from typing import NamedTuple

from pipeline.nba.catalogue import ActionCatalogue
from pipeline.profile.state import ProfileState
from pipeline.profile.views import typical_interval_ms


class Due(NamedTuple):
    """A timer occurrence that has fallen due (sorts by due time, then action)."""

    due: int
    action: str
    basis: int


def _basis(state: ProfileState, timer: str) -> int | None:
    if timer == "cart_idle":
        if not state.cart or state.cart_changed_at is None:
            return None
        if state.last_purchase_at is not None and state.last_purchase_at >= state.cart_changed_at:
            return None  # bought since the cart last changed: what is left is not an abandoned cart
        return state.cart_changed_at
    if timer == "browse_idle":
        if state.cart or not state.products:
            return None
        viewed = max(t for t, _c in state.products.values())
        if state.last_purchase_at is not None and state.last_purchase_at >= viewed:
            return None
        return viewed
    if timer == "silence":
        return state.last_seen
    if timer == "replenishment_due":
        return state.last_purchase_at
    raise ValueError(f"unknown timer {timer}")


def due_times(state: ProfileState, catalogue: ActionCatalogue) -> dict[str, tuple[int, int]]:
    """action -> (due, basis) for every timer action whose condition is pending on this profile."""
    out: dict[str, tuple[int, int]] = {}
    for action in catalogue.timer_actions:
        trig = action.trigger
        basis = _basis(state, trig.name)
        if basis is None:
            continue
        if trig.after_ms is not None:
            out[action.name] = (basis + trig.after_ms, basis)
        else:
            interval = typical_interval_ms(state)
            if interval:
                out[action.name] = (basis + int(interval * (trig.factor or 1.0)), basis)
    return out


def due_by(state: ProfileState, catalogue: ActionCatalogue, upto: int) -> list[Due]:
    """The timer occurrences pending on this profile that are due at or before ``upto``, in due order.

    The same due times as ``due_times``, but cheap when nothing is due (the
    common case: it runs before every event is folded): a timer whose basis
    plus its delay, or plus the shortest purchase gap, lies after ``upto`` is
    not looked at further.
    """
    out: list[Due] = []
    gaps: list[int] | None = None
    for action in catalogue.timer_actions:
        trig = action.trigger
        basis = _basis(state, trig.name)
        if basis is None or basis > upto:
            continue
        if trig.after_ms is not None:
            if basis + trig.after_ms <= upto:
                out.append(Due(basis + trig.after_ms, action.name, basis))
            continue
        if gaps is None:
            times = sorted(state.purchase_times)
            gaps = [b - a for a, b in itertools.pairwise(times) if b > a]
        factor = trig.factor or 1.0
        if not gaps or basis + int(min(gaps) * factor) > upto:  # the median gap is no shorter
            continue
        interval = typical_interval_ms(state)
        if interval and basis + int(interval * factor) <= upto:
            out.append(Due(basis + int(interval * factor), action.name, basis))
    out.sort()
    return out
