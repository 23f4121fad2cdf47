"""Messages between identity partitions (each would be a record on a compacted or plain topic).

Three keyspaces, each partitioned by its own key, so nothing assumes that an
identifier, its cluster and its profile share a partition:

* ``IDENT``   identifier records, keyed by identifier ref (where events enter);
* ``CLUSTER`` cluster records, keyed by the ref of a stable identifier: a
  union-find over partitions whose root holds the cluster's link requests;
* ``PROFILE`` profile records, keyed by profile id: incarnations, forwarding,
  folded events, identifier listing.

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


@dataclass(frozen=True, slots=True)
class _Msg:
    space: ClassVar[Space]

    @property
    def key(self) -> Ref:
        raise NotImplementedError


# --------------------------------------------------------------------------- to identifier records
@dataclass(frozen=True, slots=True)
class _ToIdent(_Msg):
    space: ClassVar[Space] = Space.IDENT
    ref: Ref

    @property
    def key(self) -> Ref:
        return self.ref


@dataclass(frozen=True, slots=True)
class Observe(_Msg):
    """An input event, at the partition of its strongest identifier (ingest's key)."""

    space: ClassVar[Space] = Space.IDENT
    event: LinkEvent
    payload: bytes = field(default=b"", compare=False)  # the canonical record, carried to the output

    @property
    def key(self) -> Ref:
        return self.event.key


@dataclass(frozen=True, slots=True)
class Sighting(_ToIdent):
    """A roaming identifier was seen with these (stronger) identifiers at ``stamp``."""

    stamp: Stamp
    stable_target: Ref | None
    device_target: Ref | None


@dataclass(frozen=True, slots=True)
class Join(_ToIdent):
    """Link request, part 2: ``ref`` shares a request with a member of ``cluster``."""

    cluster: Ref


@dataclass(frozen=True, slots=True)
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


@dataclass(frozen=True, slots=True)
class Follow(_ToIdent):
    """``follower`` (roaming) now follows ``ref``; reply with a Resolution."""

    follower: Ref
    clock: Stamp


@dataclass(frozen=True, slots=True)
class Unfollow(_ToIdent):
    follower: Ref
    clock: Stamp


@dataclass(frozen=True, slots=True)
class UnfollowAck(_ToIdent):
    target: Ref
    clock: Stamp


@dataclass(frozen=True, slots=True)
class Resolution(_ToIdent):
    """``via`` (what ``ref`` follows) now resolves to this profile incarnation; ``seq`` orders them."""

    via: Ref
    profile: Ref
    incarnation: Incarnation
    seq: int


@dataclass(frozen=True, slots=True)
class LeaveAck(_ToIdent):
    profile: Ref
    seq: int


# --------------------------------------------------------------------------- to cluster records
@dataclass(frozen=True, slots=True)
class _ToCluster(_Msg):
    space: ClassVar[Space] = Space.CLUSTER
    cluster: Ref

    @property
    def key(self) -> Ref:
        return self.cluster


@dataclass(frozen=True, slots=True)
class Append(_ToCluster):
    """Link request, part 1: store ``request`` at the root of ``cluster`` and re-decide."""

    request: LinkRequest


@dataclass(frozen=True, slots=True)
class Union(_ToCluster):
    """Merge: the clusters of ``cluster`` and ``other`` are one; the weaker root joins the stronger."""

    other: Ref


@dataclass(frozen=True, slots=True)
class ClusterTransfer(_ToCluster):
    """State transfer: a root that joined another hands over everything it decided from."""

    source: Ref
    requests: tuple[LinkRequest, ...]
    members: frozenset[Ref]
    gen: int
    incarnations: tuple[tuple[Ref, Incarnation], ...]
    assigned: frozenset[Ref]
    absorbed: frozenset[Ref]


@dataclass(frozen=True, slots=True)
class ClusterTransferAck(_ToCluster):
    target: Ref


@dataclass(frozen=True, slots=True)
class AssignAck(_ToCluster):
    ref: Ref
    gen: int


@dataclass(frozen=True, slots=True)
class EndAck(_ToCluster):
    profile: Ref
    incarnation: Incarnation


# --------------------------------------------------------------------------- to profile records
@dataclass(frozen=True, slots=True)
class _ToProfile(_Msg):
    space: ClassVar[Space] = Space.PROFILE
    profile: Ref

    @property
    def key(self) -> Ref:
        return self.profile


@dataclass(frozen=True, slots=True)
class Resolved(_ToProfile):
    """An event resolved to this profile incarnation: the profile stage's input, keyed by profile id."""

    event_id: str
    incarnation: Incarnation
    payload: bytes = field(default=b"", compare=False)  # the canonical record; forwarded with the event


@dataclass(frozen=True, slots=True)
class ProfileEnd(_ToProfile):
    """Incarnation ``incarnation`` of ``profile`` ended: its state and late events go to the target.

    ``reply_to`` names the cluster root to acknowledge (None: the sender re-sends it from state).
    """

    incarnation: Incarnation
    target: Ref
    target_incarnation: Incarnation
    reply_to: Ref | None


@dataclass(frozen=True, slots=True)
class Handover(_ToProfile):
    """State transfer between profiles: events folded into an ended incarnation of ``source``."""

    incarnation: Incarnation
    source: Ref
    source_incarnation: Incarnation
    events: frozenset[str]


@dataclass(frozen=True, slots=True)
class HandoverAck(_ToProfile):
    source_incarnation: Incarnation
    events: frozenset[str]


@dataclass(frozen=True, slots=True)
class Member(_ToProfile):
    """``ref`` resolves to this profile (its ``seq``-th resolution); ``since`` orders the listing."""

    ref: Ref
    seq: int
    since: Stamp | None


@dataclass(frozen=True, slots=True)
class Leave(_ToProfile):
    ref: Ref
    seq: int


Message = (Observe | Sighting | Join | Assign | Follow | Unfollow | UnfollowAck | Resolution | LeaveAck
           | Append | Union | ClusterTransfer | ClusterTransferAck | AssignAck | EndAck
           | Resolved | ProfileEnd | Handover | HandoverAck | Member | Leave)
