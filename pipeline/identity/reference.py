"""The reference model: the identity rules as a plain single-process union-find.

This is the specification the streaming implementation is tested against, so
it favours obviousness over speed. The rules (DESIGN.md, "Identity model"):

1. Time, not arrival, decides. Events are applied in ``(event_time,
   event_id)`` order; a redelivered event (same ``event_id``) is a no-op. The
   result is therefore a function of the *set* of events, whatever order they
   arrived in — which is what lets a partitioned implementation that sees them
   in any order agree with this one.
2. Stable identifiers (cust, card, email, phone) are grouped by union-find.
   Each event with two or more of them is one link request, applied atomically
   in strength order: its strongest stable identifier is the *anchor*, and every
   other one tries to join the anchor's group. A join is refused (recorded,
   never applied) when

   * both groups hold a customer_id: ``<kind>_owned`` if the anchor is itself a
     customer_id (that card/e-mail/phone already belongs to another customer),
     else ``customer_conflict``;
   * the joined group would hold more identifiers of a stable kind than its
     limit: ``limit_exceeded``.

   So a card/e-mail/phone belongs to the first customer it was linked to (in
   event time), two customer_ids never meet, and a card used in store long
   before it is linked online simply joins the account when the link comes.
3. Roaming identifiers (dev, anon) never join groups. Each one *follows* the
   strongest stable identifier of the most recent event (in event time) that
   carried it together with any stable identifier — a login is the usual case.
   A cookie never seen with a stable identifier follows the device of the most
   recent event it shared with one; otherwise it is on its own. So a shared
   tablet belongs to whoever logged in on it last, and the family member who
   logged in before keeps everything already merged into their profile.
4. The profile id of a group is its strongest identifier; a roaming identifier
   takes the profile of what it follows (a device with no stable identifier is
   its own profile, with the cookies that follow it).
5. Storm guard (``Limits.roaming_fanout`` = n): a roaming identifier counts
   the *distinct* stable identifiers it was seen with (the strongest stable
   identifier of each event carrying it, the one it would follow), in event
   time. The event that brings the (n + 1)-th is refused once,
   ``roaming_fanout`` (``ref`` = the roaming identifier, ``anchor`` = that
   stable identifier, ``held_by`` = the roaming identifier itself), and from
   then on the identifier is a *storm identifier*: it follows nobody — not
   even its device — and is its own profile for good, with the cookies that
   follow it if it is a device. (Not "keeps its last owner": that would file
   a bot's traffic under whichever real customer happened to be last, and
   which sighting was last before the storm is not knowable from bounded
   state when sightings arrive out of order.) The rule only depends on the
   n + 1 earliest distinct stable identifiers, so the partitioned
   implementation decides it from a bounded record, in any arrival order,
   and the storm's further sightings cost it O(1) (O(n)) and no new state.

"Same grouping" means the same mapping identifier ref -> profile id for every
identifier ever seen, and the same set of refusals.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pipeline.identity.model import (
    OWNED_REASON,
    Limits,
    LinkEvent,
    Ref,
    Refusal,
    RefusalReason,
    Stamp,
    as_link_event,
    kind_of,
    strength,
)


@dataclass
class _Root:
    """What union-find keeps per group root."""

    head: Ref  # strongest identifier: the profile id
    customer: Ref | None
    counts: Counter[str]


class ReferenceModel:
    """Feed events in ``(event_time, event_id)`` order with :meth:`observe`; read the grouping.

    :func:`reference_grouping` sorts for you; ``observe`` refuses an event older
    than the last one applied, because applying it late would silently make the
    result depend on arrival order.
    """

    def __init__(self, limits: Limits | Mapping[str, int] | None = None) -> None:
        self.limits = Limits.of(limits)
        self._parent: dict[Ref, Ref] = {}
        self._roots: dict[Ref, _Root] = {}
        self._follows: dict[Ref, Ref] = {}  # roaming -> strongest stable of its latest stable event
        self._device: dict[Ref, Ref] = {}  # anon -> device of its latest event with one
        self._roaming: set[Ref] = set()
        self._fanout: dict[Ref, set[Ref]] = {}  # roaming -> distinct stable seen (at most n, rule 5)
        self._storm: set[Ref] = set()
        self._links: set[frozenset[Ref]] = set()
        self._seen: set[str] = set()
        self._last: Stamp | None = None
        self._refusals: list[Refusal] = []

    # ------------------------------------------------------------------ applying events
    def observe(self, event: LinkEvent | Mapping[str, Any]) -> None:
        ev = as_link_event(event)
        if ev.event_id in self._seen:
            return  # redelivery
        if self._last is not None and ev.stamp < self._last:
            raise ValueError(f"event {ev.event_id} is older than the last applied; sort first")
        self._seen.add(ev.event_id)
        self._last = ev.stamp
        stable = ev.stable
        for ref in stable:
            self._ensure(ref)
        if len(stable) >= 2 and frozenset(stable) not in self._links:
            self._links.add(frozenset(stable))
            for ref in stable[1:]:
                self._join(stable[0], ref, ev)
        device = ev.device
        for ref in ev.roaming:
            self._roaming.add(ref)
            if ref in self._storm or (stable and self._storm_hit(ref, stable[0], ev)):
                continue
            if stable:
                self._follows[ref] = stable[0]
            if device is not None and ref != device:
                self._device[ref] = device

    def _storm_hit(self, ref: Ref, target: Ref, ev: LinkEvent) -> bool:
        """Count ``target`` for roaming ``ref``; True when this sighting makes it a storm identifier."""
        limit = self.limits.roaming_fanout
        if limit is None:
            return False
        seen = self._fanout.setdefault(ref, set())
        seen.add(target)
        if len(seen) <= limit:
            return False
        del self._fanout[ref]
        self._storm.add(ref)
        self._follows.pop(ref, None)
        self._device.pop(ref, None)
        self._refuse(ev, ref, target, ref, RefusalReason.ROAMING_FANOUT, kind_of(ref))
        return True

    def _ensure(self, ref: Ref) -> None:
        if ref not in self._parent:
            self._parent[ref] = ref
            customer = ref if kind_of(ref) == "cust" else None
            self._roots[ref] = _Root(ref, customer, Counter({kind_of(ref): 1}))

    def _find(self, ref: Ref) -> Ref:
        parent = self._parent
        while parent[ref] != ref:
            parent[ref] = parent[parent[ref]]  # path halving
            ref = parent[ref]
        return ref

    def _join(self, anchor: Ref, ref: Ref, ev: LinkEvent) -> None:
        ra, rb = self._find(anchor), self._find(ref)
        if ra == rb:
            return
        a, b = self._roots[ra], self._roots[rb]
        if a.customer is not None and b.customer is not None:
            owned = kind_of(anchor) == "cust"
            reason = OWNED_REASON[kind_of(ref)] if owned else RefusalReason.CUSTOMER_CONFLICT
            self._refuse(ev, ref, anchor, b.head, reason, kind_of(ref))
            return
        over = self.limits.exceeded(a.counts, b.counts)
        if over is not None:
            self._refuse(ev, ref, anchor, b.head, RefusalReason.LIMIT_EXCEEDED, over)
            return
        self._parent[rb] = ra
        del self._roots[rb]
        a.head = min(a.head, b.head, key=strength)
        a.customer = a.customer or b.customer
        a.counts.update(b.counts)

    def _refuse(self, ev: LinkEvent, ref: Ref, anchor: Ref, held_by: Ref, reason: RefusalReason,
                kind: str) -> None:
        self._refusals.append(Refusal(ev.event_time, ev.event_id, ref, anchor, held_by, reason, kind))

    # ------------------------------------------------------------------ results
    def profile_of(self, ref: Ref) -> Ref:
        """The profile id ``ref`` resolves to now (its own ref if never linked)."""
        if ref in self._parent:
            return self._roots[self._find(ref)].head
        if ref in self._storm:
            return ref
        target = self._follows.get(ref) or self._device.get(ref)
        return self.profile_of(target) if target is not None else ref

    def grouping(self) -> dict[Ref, Ref]:
        """Every identifier seen -> its profile id."""
        return {ref: self.profile_of(ref) for ref in (*self._parent, *self._roaming)}

    def refusals(self) -> list[Refusal]:
        return sorted(self._refusals)

    def storms(self) -> frozenset[Ref]:
        """Roaming identifiers quarantined by the storm guard (rule 5)."""
        return frozenset(self._storm)


def reference_grouping(events: Iterable[LinkEvent | Mapping[str, Any]],
                       limits: Limits | Mapping[str, int] | None = None) -> ReferenceModel:
    """Apply ``events`` (any order, redeliveries allowed) in event-time order; return the model."""
    unique: dict[str, LinkEvent] = {}
    for event in events:
        ev = as_link_event(event)
        unique.setdefault(ev.event_id, ev)
    model = ReferenceModel(limits)
    for ev in sorted(unique.values(), key=lambda e: e.stamp):
        model.observe(ev)
    return model


def invert(grouping: Mapping[Ref, Ref]) -> dict[Ref, frozenset[Ref]]:
    """Profile id -> its identifiers."""
    members: dict[Ref, set[Ref]] = {}
    for ref, profile in grouping.items():
        members.setdefault(profile, set()).add(ref)
    return {p: frozenset(refs) for p, refs in members.items()}
