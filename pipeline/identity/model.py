"""Plain-data vocabulary of the identity graph: identifier refs, link events, refusals, limits.

Everything here is immutable and free of I/O so the reference model, the
partitioned rules and the evaluation speak exactly the same language.

An identifier ref is ``kind:value`` with the ingest key prefixes
(``cust``, ``card``, ``email``, ``phone``, ``dev``, ``anon``), strongest first.
Kinds fall in two families, and the whole rule set rests on the split:

* **stable** kinds (cust, card, email, phone) name a person; they are grouped
  by union-find with merge protection and never move once the history that
  decides them is known;
* **roaming** kinds (dev, anon) name a device or browser, which several people
  may share; they never glue stable identifiers together, they *follow* the
  most recent stable identifier they were seen with.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, NamedTuple

from pipeline.ingest.identifiers import KEY_PREFIX
from pipeline.ingest.identifiers import KINDS as FIELD_KINDS

Ref = str
"""An identifier as ``kind:value``; a profile id is the ref of the group's strongest identifier."""

Incarnation = str
"""One continuous life of a profile id: ``root#gen`` of the cluster root that started it."""
INITIAL: Incarnation = ""
"""The incarnation every identifier's own profile starts with, before any root decides it."""

KINDS: tuple[str, ...] = tuple(KEY_PREFIX[field] for field in FIELD_KINDS)  # strongest first
RANK: dict[str, int] = {kind: i for i, kind in enumerate(KINDS)}
STABLE_KINDS = frozenset({"cust", "card", "email", "phone"})
ROAMING_KINDS = frozenset({"dev", "anon"})

#: Canonical event field -> kind prefix (e-mail and phone arrive hashed).
FIELD_KIND: dict[str, str] = {
    "customer_id": "cust",
    "loyalty_card": "card",
    "email_hash": "email",
    "phone_hash": "phone",
    "device_id": "dev",
    "anonymous_id": "anon",
}
#: Any spelling of a kind a configuration may use (prefix, canonical field, raw field) -> prefix.
KIND_ALIASES: dict[str, str] = {**{k: k for k in KINDS}, **FIELD_KIND, **KEY_PREFIX}


_FIRST_ROAMING = min(RANK[k] for k in ROAMING_KINDS)
_DEVICE = RANK["dev"]
assert all(RANK[k] < _FIRST_ROAMING for k in STABLE_KINDS), "stable kinds must rank before roaming ones"


def make_ref(kind: str, value: str) -> Ref:
    """``kind:value``; the kind is checked so a typo can never create a new family."""
    if kind not in RANK:
        raise ValueError(f"unknown identifier kind {kind!r}; expected one of {KINDS}")
    if not value:
        raise ValueError(f"empty {kind} value")
    return f"{kind}:{value}"


def kind_of(ref: Ref) -> str:
    kind = ref.partition(":")[0]
    if kind not in RANK:
        raise ValueError(f"not an identifier ref: {ref!r}")
    return kind


def strength(ref: Ref) -> tuple[int, str]:
    """Sort key, smallest = strongest: kind rank, then value (a total, arrival-free order)."""
    kind, _, value = ref.partition(":")
    return RANK[kind], value


def strongest(refs: Iterable[Ref]) -> Ref:
    return min(refs, key=strength)


def is_stable(ref: Ref) -> bool:
    return kind_of(ref) in STABLE_KINDS


class Stamp(NamedTuple):
    """When an event happened; ``event_id`` breaks ties so the order is total and replayable."""

    time: int
    event_id: str


@dataclass(frozen=True, slots=True)
class LinkEvent:
    """The identity-relevant part of a canonical event: at most one identifier per kind."""

    event_id: str
    event_time: int
    refs: tuple[Ref, ...]  # strongest first
    # derived once (the identity stage reads them several times per event)
    stable: tuple[Ref, ...] = field(init=False, repr=False, compare=False)
    roaming: tuple[Ref, ...] = field(init=False, repr=False, compare=False)
    device: Ref | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # hot: built once per event, so one pass over the refs does the checks and the split
        refs = self.refs
        if not refs:
            raise ValueError(f"event {self.event_id!r} carries no identifier")
        stable: list[Ref] = []
        roaming: list[Ref] = []
        device = None
        last = -1
        for ref in refs:
            rank = RANK.get(ref[:ref.find(":")])
            if rank is None:
                raise ValueError(f"not an identifier ref: {ref!r}")
            if rank <= last:  # not strongest first, or two of one kind: the slow path decides
                return self._sort_refs()
            last = rank
            if rank < _FIRST_ROAMING:
                stable.append(ref)
            else:
                roaming.append(ref)
                if rank == _DEVICE:
                    device = ref
        setattr_ = object.__setattr__
        setattr_(self, "stable", tuple(stable))
        setattr_(self, "roaming", tuple(roaming))
        setattr_(self, "device", device)

    def _sort_refs(self) -> None:
        kinds = [kind_of(r) for r in self.refs]
        if len(set(kinds)) != len(kinds):
            raise ValueError(f"event {self.event_id!r} carries two identifiers of one kind")
        object.__setattr__(self, "refs", tuple(sorted(self.refs, key=strength)))
        self.__post_init__()

    @property
    def stamp(self) -> Stamp:
        return Stamp(self.event_time, self.event_id)

    @property
    def key(self) -> Ref:
        """The strongest identifier: where the event enters the identity stage (ingest's key)."""
        return self.refs[0]

    @classmethod
    def from_canonical(cls, record: Mapping[str, Any]) -> LinkEvent:
        """From a canonical event (or any dict with its identifier fields); empty values are absent."""
        refs = tuple(make_ref(kind, str(record[f])) for f, kind in FIELD_KIND.items() if record.get(f))
        return cls(str(record["event_id"]), int(record["event_time"]), refs)


def as_link_event(event: LinkEvent | Mapping[str, Any]) -> LinkEvent:
    return event if isinstance(event, LinkEvent) else LinkEvent.from_canonical(event)


@dataclass(frozen=True, slots=True)
class LinkRequest:
    """The stable identifiers one event puts together, with the earliest stamp they were seen at.

    A repeated set adds nothing (groups only grow and every refusal condition
    only gets stronger with time), so one request per distinct set is kept:
    the earliest, which is the one the time-ordered rules act on.
    """

    refs: frozenset[Ref]
    stamp: Stamp


class RefusalReason(StrEnum):
    """Why a link was not applied (closed set: dashboards and the audit topic rely on it)."""

    CUSTOMER_CONFLICT = "customer_conflict"  # would merge two different customer_ids
    CARD_OWNED = "card_owned"  # the card already belongs to another customer
    EMAIL_OWNED = "email_owned"
    PHONE_OWNED = "phone_owned"
    LIMIT_EXCEEDED = "limit_exceeded"  # the profile would hold too many identifiers of one kind
    ROAMING_FANOUT = "roaming_fanout"  # a device/cookie seen with too many stable identifiers: quarantined


OWNED_REASON: dict[str, RefusalReason] = {
    "card": RefusalReason.CARD_OWNED,
    "email": RefusalReason.EMAIL_OWNED,
    "phone": RefusalReason.PHONE_OWNED,
}


@dataclass(frozen=True, slots=True, order=True)
class Refusal:
    """A link that was refused: counted, published for review, never applied.

    ``ref`` could not join ``anchor`` (the event's strongest identifier);
    ``held_by`` is the profile ``ref`` stays with; ``kind`` is the kind at fault.
    """

    event_time: int
    event_id: str
    ref: Ref
    anchor: Ref
    held_by: Ref
    reason: RefusalReason
    kind: str


@dataclass(frozen=True, slots=True)
class MergeDecision:
    """Profile ``source`` (one incarnation of it) was folded into ``target``; its id forwards there."""

    source: Ref
    source_incarnation: Incarnation
    target: Ref
    target_incarnation: Incarnation


DEFAULT_MEMO_WINDOW = 4096
"""Events remembered per entry identifier for redelivery (``Limits.memo_window``)."""


@dataclass(frozen=True)
class Limits:
    """Most identifiers of a kind one profile may hold (absent kind = unlimited).

    For stable kinds a link that would exceed the limit is refused
    (``limit_exceeded``): a profile with fifty loyalty cards is a shop
    counter or a staff account, and merging through it would be a false
    merge. For roaming kinds the limit only caps the profile's identifier
    listing (most recent first): a person with many cookies is still one
    person, and detaching cookies would only lose their events.

    ``roaming_fanout`` is the storm guard: the most *distinct* stable
    identifiers one roaming identifier (device or cookie) may be seen with
    (counted as the strongest stable identifier of each event carrying it, so
    refs, not people: leave headroom for one person's customer_id, e-mail and
    card). The sighting that brings the (``roaming_fanout`` + 1)-th one, in
    event time, makes it a *storm identifier* (a bot cookie, a kiosk):
    reported once (``roaming_fanout``) and from then on following nobody (see
    ``reference.py``). None = unguarded. In a mapping it is the key
    ``"roaming_fanout"`` next to the per-kind limits.

    ``memo_window`` bounds the per-event memo at the identifier where events
    enter (``IdentifierRecord.memo``): see ``rules.on_observe`` for the
    redelivery window it gives. Key ``"memo_window"`` in a mapping.
    """

    per_kind: Mapping[str, int] = field(default_factory=dict)
    roaming_fanout: int | None = None
    memo_window: int = DEFAULT_MEMO_WINDOW

    def __post_init__(self) -> None:
        normalised: dict[str, int] = {}
        for name, limit in self.per_kind.items():
            kind = KIND_ALIASES.get(name)
            if kind is None:
                raise ValueError(f"unknown identifier kind {name!r} in limits")
            if int(limit) < 1:
                raise ValueError(f"limit for {kind} must be at least 1, got {limit}")
            normalised[kind] = int(limit)
        object.__setattr__(self, "per_kind", normalised)
        if self.roaming_fanout is not None:
            if int(self.roaming_fanout) < 1:
                raise ValueError(f"roaming_fanout must be at least 1, got {self.roaming_fanout}")
            object.__setattr__(self, "roaming_fanout", int(self.roaming_fanout))
        if int(self.memo_window) < 1:
            raise ValueError(f"memo_window must be at least 1, got {self.memo_window}")
        object.__setattr__(self, "memo_window", int(self.memo_window))

    @classmethod
    def of(cls, limits: Limits | Mapping[str, int] | None) -> Limits:
        if isinstance(limits, Limits):
            return limits
        per_kind = dict(limits or {})
        return cls(per_kind, per_kind.pop("roaming_fanout", None),
                   per_kind.pop("memo_window", DEFAULT_MEMO_WINDOW))

    def get(self, kind: str) -> int | None:
        return self.per_kind.get(kind)

    def exceeded(self, a: Mapping[str, int], b: Mapping[str, int]) -> str | None:
        """The strongest stable kind whose count in groups ``a`` + ``b`` would pass its limit."""
        for kind in KINDS:
            limit = self.per_kind.get(kind)
            if limit is not None and kind in STABLE_KINDS and a.get(kind, 0) + b.get(kind, 0) > limit:
                return kind
        return None
