"""Messages between identity partitions (each would be a record on a compacted or plain topic).

Three keyspaces, each partitioned by its own key, so nothing assumes that an
identifier, its cluster and its profile share a partition:

* ``IDENT``   identifier records, keyed by identifier ref (where events enter);
* ``CLUSTER`` cluster records, keyed by the ref of a stable identifier: a
  union-find over partitions whose root holds the cluster's link requests;
* ``PROFILE`` profile records, keyed by profile id: incarnations, forwarding,
  folded events, identifier listing.

Messages are never mutated after construction (treat them as frozen; they
are not declared frozen only because a frozen dataclass's ``__init__`` costs
twice as much, and the stage builds ~6 of them per event).

Every message is safe to deliver twice or late: it either carries a version
the receiver compares (``gen``, ``seq``, ``clock``), names a fact that can only
be recorded once (an incarnation's end, a transfer's source), or is an
acknowledgement that clears an outbox entry the sender keeps re-sending until
it arrives. Names follow the issue's vocabulary: link request (``Append`` +
``Join``), merge (``Union``), state transfer (``ClusterTransfer``,
``Handover``), forward (any message a forwarded record passes on).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import ClassVar

from pipeline.identity.model import Incarnation, LinkEvent, LinkRequest, Ref, Stamp


class Space(StrEnum):
    IDENT = "ident"
    CLUSTER = "cluster"
    PROFILE = "profile"


@dataclass(slots=True, unsafe_hash=True)  # not frozen: frozen __init__ costs 2x, ~6 per event
class _Msg:
    space: ClassVar[Space]

    @property
    def key(self) -> Ref:
        raise NotImplementedError


# --------------------------------------------------------------------------- to identifier records
@dataclass(slots=True, unsafe_hash=True)
class _ToIdent(_Msg):
    space: ClassVar[Space] = Space.IDENT
    ref: Ref

    @property
    def key(self) -> Ref:
        return self.ref


@dataclass(slots=True, unsafe_hash=True)
class Observe(_Msg):
    """An input event, at the partition of its strongest identifier (ingest's key)."""

    space: ClassVar[Space] = Space.IDENT
    event: LinkEvent
    payload: bytes = field(default=b"", compare=False)  # the canonical record, carried to the output

    @property
    def key(self) -> Ref:
        return self.event.key


@dataclass(slots=True, unsafe_hash=True)
class Sighting(_ToIdent):
    """A roaming identifier was seen with these (stronger) identifiers at ``stamp``."""

    stamp: Stamp
    stable_target: Ref | None
    device_target: Ref | None


@dataclass(slots=True, unsafe_hash=True)
class Join(_ToIdent):
    """Link request, part 2: ``ref`` shares a request with a member of ``cluster``."""

    cluster: Ref


@dataclass(slots=True, unsafe_hash=True)
class Assign(_ToIdent):
    """A cluster root's decision for one member (re-sent until acknowledged).

    ``adopt``: the member's own cluster record has joined this root, so the
    member may point at it directly. A member the root only knows from a
    request must keep its pointer, or its ``Join`` would skip a needed ``Union``.
    """

    root: Ref
    profile: Ref
    gen: int
    incarnation: Incarnation
    adopt: bool


@dataclass(slots=True, unsafe_hash=True)
class Follow(_ToIdent):
    """``follower`` (roaming) now follows ``ref``; reply with a Resolution."""

    follower: Ref
    clock: Stamp


@dataclass(slots=True, unsafe_hash=True)
class Unfollow(_ToIdent):
    follower: Ref
    clock: Stamp


@dataclass(slots=True, unsafe_hash=True)
class UnfollowAck(_ToIdent):
    target: Ref
    clock: Stamp


@dataclass(slots=True, unsafe_hash=True)
class Resolution(_ToIdent):
    """``via`` (what ``ref`` follows) now resolves to this profile incarnation; ``seq`` orders them."""

    via: Ref
    profile: Ref
    incarnation: Incarnation
    seq: int


@dataclass(slots=True, unsafe_hash=True)
class LeaveAck(_ToIdent):
    profile: Ref
    seq: int


# --------------------------------------------------------------------------- to cluster records
@dataclass(slots=True, unsafe_hash=True)
class _ToCluster(_Msg):
    space: ClassVar[Space] = Space.CLUSTER
    cluster: Ref

    @property
    def key(self) -> Ref:
        return self.cluster


@dataclass(slots=True, unsafe_hash=True)
class Append(_ToCluster):
    """Link request, part 1: store ``request`` at the root of ``cluster`` and re-decide."""

    request: LinkRequest


@dataclass(slots=True, unsafe_hash=True)
class Union(_ToCluster):
    """Merge: the clusters of ``cluster`` and ``other`` are one; the weaker root joins the stronger."""

    other: Ref


@dataclass(slots=True, unsafe_hash=True)
class ClusterTransfer(_ToCluster):
    """State transfer: a root that joined another hands over everything it decided from."""

    source: Ref
    requests: tuple[LinkRequest, ...]
    members: frozenset[Ref]
    gen: int
    incarnations: tuple[tuple[Ref, Incarnation], ...]
    assigned: frozenset[Ref]
    absorbed: frozenset[Ref]


@dataclass(slots=True, unsafe_hash=True)
class ClusterTransferAck(_ToCluster):
    target: Ref


@dataclass(slots=True, unsafe_hash=True)
class AssignAck(_ToCluster):
    ref: Ref
    gen: int


@dataclass(slots=True, unsafe_hash=True)
class EndAck(_ToCluster):
    profile: Ref
    incarnation: Incarnation


# --------------------------------------------------------------------------- to profile records
@dataclass(slots=True, unsafe_hash=True)
class _ToProfile(_Msg):
    space: ClassVar[Space] = Space.PROFILE
    profile: Ref

    @property
    def key(self) -> Ref:
        return self.profile


@dataclass(slots=True, unsafe_hash=True)
class Resolved(_ToProfile):
    """An event resolved to this profile incarnation: the profile stage's input, keyed by profile id."""

    event_id: str
    incarnation: Incarnation
    payload: bytes = field(default=b"", compare=False)  # the canonical record; forwarded with the event


@dataclass(slots=True, unsafe_hash=True)
class ProfileEnd(_ToProfile):
    """Incarnation ``incarnation`` of ``profile`` ended: its state and late events go to the target.

    ``reply_to`` names the cluster root to acknowledge (None: the sender re-sends it from state).
    """

    incarnation: Incarnation
    target: Ref
    target_incarnation: Incarnation
    reply_to: Ref | None


@dataclass(slots=True, unsafe_hash=True)
class Handover(_ToProfile):
    """State transfer between profiles: events folded into an ended incarnation of ``source``."""

    incarnation: Incarnation
    source: Ref
    source_incarnation: Incarnation
    events: frozenset[str]


@dataclass(slots=True, unsafe_hash=True)
class HandoverAck(_ToProfile):
    source_incarnation: Incarnation
    events: frozenset[str]


@dataclass(slots=True, unsafe_hash=True)
class Member(_ToProfile):
    """``ref`` resolves to this profile (its ``seq``-th resolution); ``since`` orders the listing."""

    ref: Ref
    seq: int
    since: Stamp | None


@dataclass(slots=True, unsafe_hash=True)
class Leave(_ToProfile):
    ref: Ref
    seq: int


Message = (Observe | Sighting | Join | Assign | Follow | Unfollow | UnfollowAck | Resolution | LeaveAck
           | Append | Union | ClusterTransfer | ClusterTransferAck | AssignAck | EndAck
           | Resolved | ProfileEnd | Handover | HandoverAck | Member | Leave)
