"""The records the partitioned identity stage keeps (one table per keyspace).

Mutable on purpose: a handler in ``rules.py`` updates the one record its
message is addressed to and returns the messages to send, which is exactly the
shape of a Faust agent writing a table row. No handler ever reads another
record, so any spread of keys over partitions and workers is valid.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from pipeline.identity.messages import Assign, ClusterTransfer, ProfileEnd, Space
from pipeline.identity.model import (
    INITIAL,
    ROAMING_KINDS,
    Incarnation,
    Limits,
    LinkRequest,
    MergeDecision,
    Ref,
    Refusal,
    RefusalReason,
    Stamp,
    is_stable,
    kind_of,
)


@dataclass
class IdentifierRecord:
    """identifier -> profile, plus what the identifier follows or is followed by.

    Stable identifiers learn their profile from their cluster root (``Assign``,
    ordered by ``gen``). Roaming ones keep two last-writer-wins registers (the
    strongest stable identifier and, for cookies, the device of their latest
    event carrying one) and cache the profile of what they follow
    (``Resolution``, ordered by the target's ``seq``).
    """

    ref: Ref
    profile: Ref = ""
    incarnation: Incarnation = INITIAL
    seq: int = 0  # bumped whenever (profile, incarnation) changes
    gen: int = 0  # stable: the cluster generation of the accepted Assign
    cluster: Ref = ""  # stable: pointer towards the cluster root
    stable_seen: tuple[Stamp, Ref] | None = None  # roaming: latest stable co-occurrence
    device_seen: tuple[Stamp, Ref] | None = None  # anon: latest device co-occurrence
    target: Ref | None = None  # roaming: what it follows now
    via: Ref | None = None  # roaming: the target whose resolution is cached (None: not yet confirmed)
    via_seq: int = -1
    merged_into: tuple[Ref, Incarnation] | None = None  # roaming: where its own profile's state went
    fanout: dict[Ref, Stamp] = field(default_factory=dict)  # roaming: n+1 earliest distinct stable seen
    storm: tuple[Stamp, Ref] | None = None  # roaming: when (and with what) it became a storm identifier
    followers: dict[Ref, tuple[Stamp, bool]] = field(default_factory=dict)  # -> (clock, active)
    # event_id -> resolution given; the Limits.memo_window latest arrivals, oldest first (rules.on_observe)
    memo: dict[str, tuple[Ref, Incarnation]] = field(default_factory=dict)
    pending_unfollow: dict[Ref, Stamp] = field(default_factory=dict)  # outbox
    pending_leave: dict[Ref, int] = field(default_factory=dict)  # outbox: profile -> seq
    moves: int = 0  # roaming: target changes so far; orders its Follow/Unfollow (rules._move_clock)

    def __post_init__(self) -> None:
        self.profile = self.profile or self.ref
        if is_stable(self.ref):
            self.cluster = self.cluster or self.ref

    @property
    def stable(self) -> bool:
        return bool(self.cluster)

    @property
    def storm_refusal(self) -> Refusal | None:
        """The one ``roaming_fanout`` refusal of a storm identifier (its stamp can only move earlier)."""
        if self.storm is None:
            return None
        stamp, anchor = self.storm
        return Refusal(stamp.time, stamp.event_id, self.ref, anchor, self.ref, RefusalReason.ROAMING_FANOUT,
                       kind_of(self.ref))

    @property
    def owner(self) -> Ref | None:
        """The customer this identifier belongs to, if any."""
        return self.profile if kind_of(self.profile) == "cust" else None

    @property
    def last_login(self) -> int | None:
        """Event time of the latest stable identifier seen with this roaming one."""
        return self.stable_seen[0].time if self.stable_seen else None

    @property
    def clock(self) -> Stamp | None:
        """Latest stamp of either register: orders Follow/Unfollow to the targets."""
        stamps = [seen[0] for seen in (self.stable_seen, self.device_seen) if seen is not None]
        return max(stamps) if stamps else None


@dataclass
class ClusterRecord:
    """A union-find node over partitions; the root keeps the cluster's link requests.

    A root only ever joins a *stronger* root, so forwarding chains are acyclic
    and the final root is the cluster's strongest identifier.
    """

    ref: Ref
    forwarded_to: Ref | None = None
    requests: dict[frozenset[Ref], LinkRequest] = field(default_factory=dict)
    members: set[Ref] = field(default_factory=set)
    gen: int = 0
    incarnations: dict[Ref, Incarnation] = field(default_factory=dict)  # live profile -> incarnation
    assigned: dict[Ref, tuple[Ref, Incarnation]] = field(default_factory=dict)  # member -> (profile, inc)
    refusals: tuple[Refusal, ...] = ()
    absorbed: set[Ref] = field(default_factory=set)  # roots whose transfer is already in
    assign_outbox: dict[Ref, Assign] = field(default_factory=dict)
    end_outbox: dict[tuple[Ref, Incarnation], ProfileEnd] = field(default_factory=dict)
    transfer: ClusterTransfer | None = None  # outbox of a root that joined another

    def __post_init__(self) -> None:
        if self.forwarded_to is None and not self.members:
            self.members.add(self.ref)

    @property
    def is_root(self) -> bool:
        return self.forwarded_to is None


class MemberEntry(NamedTuple):
    seq: int
    active: bool
    since: Stamp | None


@dataclass
class ProfileRecord:
    """A profile id's incarnations, where ended ones forward to, its folded events and members.

    An *incarnation* is one continuous life of a profile id. It starts when
    a root (or a roaming identifier) first resolves identifiers to it, and ends
    once, into exactly one stronger profile (or a newer incarnation of the same
    id): that single fact is what makes forwarding and the state handover safe
    under duplicates — every copy of an event follows the same path.
    """

    ref: Ref
    ended: dict[Incarnation, tuple[Ref, Incarnation]] = field(default_factory=dict)
    folded: dict[Incarnation, set[str]] = field(default_factory=dict)  # stand-in for profile state
    outbox: dict[Incarnation, set[str]] = field(default_factory=dict)  # ended -> unacked events
    members: dict[Ref, MemberEntry] = field(default_factory=dict)
    merges: list[MergeDecision] = field(default_factory=list)

    def identifiers(self) -> frozenset[Ref]:
        """Identifiers resolving here; the head counts until it says it left."""
        refs = {ref for ref, entry in self.members.items() if entry.active}
        if self.ref not in self.members:
            refs.add(self.ref)
        return frozenset(refs)

    @property
    def live(self) -> bool:
        return self.ref in self.identifiers()

    @property
    def forwarded_to(self) -> Ref | None:
        """Where the profile's most recently ended incarnation went, if the profile is no longer live."""
        if self.live or not self.ended:
            return None
        return next(reversed(self.ended.values()))[0]

    def listing(self, limits: Limits) -> dict[str, list[Ref]]:
        """Identifiers by kind; roaming kinds capped at their limit, most recently attached first."""
        by_kind: dict[str, list[Ref]] = {}
        for ref in self.identifiers():
            by_kind.setdefault(kind_of(ref), []).append(ref)
        for kind, refs in by_kind.items():
            refs.sort(key=self._recency, reverse=True)
            cap = limits.get(kind)
            if kind in ROAMING_KINDS and cap is not None:
                del refs[cap:]
        return by_kind

    def _recency(self, ref: Ref) -> tuple[Stamp, Ref]:
        entry = self.members.get(ref)
        return (entry.since if entry and entry.since else Stamp(0, "")), ref


Record = IdentifierRecord | ClusterRecord | ProfileRecord


def new_record(space: Space, key: Ref) -> Record:
    if space is Space.IDENT:
        return IdentifierRecord(key)
    if space is Space.CLUSTER:
        return ClusterRecord(key)
    return ProfileRecord(key)
