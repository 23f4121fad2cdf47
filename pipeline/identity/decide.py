"""The stable-identifier rules applied to one cluster's link requests: who is grouped with whom.

A *cluster* is a connected component of stable identifiers over every link
request ever seen, refused or not. No rule looks outside the groups of the
identifiers on one request, and those are always inside one cluster, so
deciding a cluster from its own requests gives exactly what the global
reference model decides for those identifiers. The partitioned implementation
keeps each cluster's requests at one root record and re-runs this function
when a request arrives, late or not: that is how it stays independent of
arrival order without ever undoing a union.

Written separately from ``reference.py`` (explicit member lists instead of a
parent forest) on purpose: the property tests then compare two codings of the
rules, not one coding with itself.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from pipeline.identity.model import (
    OWNED_REASON,
    Limits,
    LinkRequest,
    Ref,
    Refusal,
    RefusalReason,
    kind_of,
    strength,
    strongest,
)


@dataclass
class _Group:
    members: list[Ref]
    customer: Ref | None
    counts: Counter[str] = field(default_factory=Counter)


@dataclass(frozen=True)
class ClusterDecision:
    """Every member's profile id, and the requests (partly) refused."""

    profile: dict[Ref, Ref]
    refusals: tuple[Refusal, ...]

    @property
    def profiles(self) -> frozenset[Ref]:
        return frozenset(self.profile.values())


def decide(requests: Iterable[LinkRequest], members: Iterable[Ref], limits: Limits) -> ClusterDecision:
    """Apply ``requests`` in stamp order to singleton groups of ``members``."""
    group_of: dict[Ref, _Group] = {}

    def group(ref: Ref) -> _Group:
        g = group_of.get(ref)
        if g is None:
            g = group_of[ref] = _Group([ref], ref if kind_of(ref) == "cust" else None,
                                       Counter({kind_of(ref): 1}))
        return g

    for ref in members:
        group(ref)
    refusals: list[Refusal] = []
    for request in sorted(requests, key=lambda r: r.stamp):
        anchor, *others = sorted(request.refs, key=strength)
        for ref in others:
            ga, gb = group(anchor), group(ref)
            if ga is gb:
                continue
            reason: RefusalReason | None = None
            fault = kind_of(ref)
            if ga.customer and gb.customer:
                reason = (OWNED_REASON[fault] if kind_of(anchor) == "cust"
                          else RefusalReason.CUSTOMER_CONFLICT)
            else:
                over = limits.exceeded(ga.counts, gb.counts)
                if over is not None:
                    reason, fault = RefusalReason.LIMIT_EXCEEDED, over
            if reason is not None:
                refusals.append(Refusal(request.stamp.time, request.stamp.event_id, ref, anchor,
                                        strongest(gb.members), reason, fault))
                continue
            small, big = (ga, gb) if len(ga.members) < len(gb.members) else (gb, ga)
            for m in small.members:
                group_of[m] = big
            big.members.extend(small.members)
            big.customer = big.customer or small.customer
            big.counts.update(small.counts)
    heads = {id(g): strongest(g.members) for g in group_of.values()}
    return ClusterDecision({ref: heads[id(g)] for ref, g in group_of.items()}, tuple(sorted(refusals)))
