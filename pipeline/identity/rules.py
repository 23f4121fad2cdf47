"""Pure, incremental handlers of the partitioned identity stage: one record + one message -> messages.

How an event flows (see ``messages.py`` for the keyspaces):

1. ``Observe`` reaches the identifier record of the event's strongest
   identifier. It answers at once with ``Resolved`` (the event, keyed by the
   profile that identifier resolves to now; memoised per event id, in a
   bounded window, so a redelivery resolves the same way), sends every roaming identifier on the
   event a ``Sighting``, and, when the event carries two or more stable
   identifiers, a link request: ``Append`` to the cluster root and ``Join`` to
   the other stable identifiers.
2. ``Join`` makes the other identifier's cluster ``Union`` with this one; the
   weaker root forwards to the stronger and sends a ``ClusterTransfer`` of its
   requests. Roots are found by following forwards.
3. A root re-decides its cluster (``decide.py``) whenever its requests change
   — a late request simply changes the input — and sends ``Assign`` to every
   member whose profile changed, and ``ProfileEnd`` for every profile
   incarnation that stopped being live.
4. A roaming identifier follows (``Follow``/``Unfollow``) the strongest stable
   identifier of its latest stable event (a cookie without one: its latest
   device); the target answers and later pushes a ``Resolution``. Every
   identifier announces itself to its profile's listing (``Member``/``Leave``).
5. Profile records fold ``Resolved`` events into the current incarnation; an
   ended incarnation forwards late events and ``Handover``s what it folded.

At-least-once discipline, for every handler:

* it updates only its own record, so any spread of keys over workers is valid;
* a duplicate or stale message changes nothing (versions: ``gen``, ``seq``,
  event stamps; first-write-wins facts: an incarnation's end, a transfer's
  source; set semantics for folded events and requests);
* what it sends is derived from the message and the record *after* the
  update; what must be confirmed (Assign, ProfileEnd, ClusterTransfer,
  Handover, Leave, Unfollow) also sits in an outbox until acknowledged. A
  message that changes the record sends what it created; one that changes
  nothing — a duplicate, a stale message, or the replay of a message whose
  output was lost in a crash (its update is already in the record) — sends
  the whole outbox again. So a lost output always comes back, and steady
  state costs no re-sends. ``tests/identity/test_handlers.py`` checks this
  for every delivery of generated runs: a second delivery leaves the record
  unchanged and re-sends at least what the first sent.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any, NamedTuple

from pipeline.identity.decide import decide
from pipeline.identity.messages import (
    Append,
    Assign,
    AssignAck,
    ClusterTransfer,
    ClusterTransferAck,
    EndAck,
    Follow,
    Handover,
    HandoverAck,
    Join,
    Leave,
    LeaveAck,
    Member,
    Message,
    Observe,
    ProfileEnd,
    Resolution,
    Resolved,
    Sighting,
    Unfollow,
    UnfollowAck,
    Union,
)
from pipeline.identity.model import (
    INITIAL,
    Incarnation,
    Limits,
    LinkRequest,
    MergeDecision,
    Ref,
    Stamp,
    strength,
)
from pipeline.identity.state import ClusterRecord, IdentifierRecord, MemberEntry, ProfileRecord, Record

Out = list[Message]


# =========================================================================== identifier records
def on_observe(rec: IdentifierRecord, msg: Observe, limits: Limits) -> Out:
    """Resolve the event where it enters, remembering the answer for its redeliveries.

    The memo keeps the ``limits.memo_window`` most recently *arrived* event
    ids (first deliveries; a redelivery neither adds nor refreshes one), so it
    is bounded whatever the identifier's traffic — a bot cookie's page views
    included. Redelivery window: a copy resolves exactly as the first delivery
    did if fewer than ``memo_window`` other events entered at this identifier
    in between. At-least-once redelivery replays what was not yet committed,
    so the window must exceed what one identifier takes between two commits
    (commit interval times its peak rate; the default, 4096, is generous). Arrival
    order, not event time, decides eviction on purpose: a redelivery is close
    to its first delivery in arrival, not in event time. Beyond the window a
    copy resolves to the identifier's profile *now*: the same place unless the
    resolution changed since, and no double count when the old profile
    incarnation ended into the new one (the handover is a set union); only a
    move to an unrelated profile (a shared device's next login) in between
    would fold the copy in both.
    """
    ev = msg.event
    memo = rec.memo
    given = memo.get(ev.event_id)
    if given is None:
        given = memo[ev.event_id] = (rec.profile, rec.incarnation)
        while len(memo) > limits.memo_window:
            del memo[next(iter(memo))]  # the earliest arrival (dicts keep insertion order)
    out: Out = [Resolved(given[0], ev.event_id, given[1], msg.payload)]
    stable = ev.stable
    stable_target = stable[0] if stable else None
    device = ev.device
    for ref in ev.roaming:
        device_target = device if ref != device else None
        if ref == rec.ref:
            out += _sight(rec, ev.stamp, stable_target, device_target, limits)
        else:
            out.append(Sighting(ref, ev.stamp, stable_target, device_target))
    if len(stable) >= 2:
        out.append(Append(rec.cluster, LinkRequest(frozenset(stable), ev.stamp)))
        out += [Join(ref, rec.cluster) for ref in stable[1:]]
    return out


def on_sighting(rec: IdentifierRecord, msg: Sighting, limits: Limits) -> Out:
    return _sight(rec, msg.stamp, msg.stable_target, msg.device_target, limits)


STORM_INCARNATION_TAG = "#storm"
"""A storm identifier's own profile, revived after it had ended into another: ``ref#storm`` (once only)."""


def _count_fanout(rec: IdentifierRecord, stamp: Stamp, target: Ref, limit: int) -> bool:
    """Keep the ``limit + 1`` earliest distinct stable targets; True when the record changed.

    Each target is kept at its earliest stamp, and a target whose earliest
    stamp is not among the ``limit + 1`` smallest is dropped (it can never get
    back in: the kept ones only move earlier). So the record is bounded, the
    result depends only on the set of sightings, and the storm stamp — when
    the (``limit`` + 1)-th distinct target first appeared — is the latest kept.
    """
    fanout = rec.fanout
    current = fanout.get(target)
    if current is not None and current <= stamp:
        return False
    if current is None and len(fanout) > limit and stamp > max(fanout.values()):
        return False
    fanout[target] = stamp
    if len(fanout) > limit + 1:
        del fanout[max(fanout, key=fanout.__getitem__)]
    if len(fanout) > limit:
        rec.storm = max((s, t) for t, s in fanout.items())
    return True


def _sight(rec: IdentifierRecord, stamp: Stamp, stable_target: Ref | None, device_target: Ref | None,
           limits: Limits) -> Out:
    """Last-writer-wins by event stamp, so the registers end the same whatever the arrival order."""
    limit = limits.roaming_fanout
    if limit is not None and stable_target is not None:
        was_storm = rec.storm is not None
        _count_fanout(rec, stamp, stable_target, limit)
        if rec.storm is not None:
            return _storm_sight(rec, rec.fanout.get(stable_target) == stamp, was_storm)
    elif rec.storm is not None:
        return _storm_sight(rec, False, True)
    if stable_target is not None and (rec.stable_seen is None or stamp > rec.stable_seen[0]):
        rec.stable_seen = (stamp, stable_target)
    if device_target is not None and (rec.device_seen is None or stamp > rec.device_seen[0]):
        rec.device_seen = (stamp, device_target)
    seen = rec.stable_seen or rec.device_seen
    target = seen[1] if seen else None
    if target != rec.target:
        rec.moves += 1
        if rec.target is not None:
            rec.pending_unfollow[rec.target] = _move_clock(rec)
        if target is not None:
            rec.pending_unfollow.pop(target, None)
        rec.target, rec.via = target, None
    out: Out = [Unfollow(t, rec.ref, c) for t, c in rec.pending_unfollow.items()]
    if rec.target is not None and rec.via != rec.target:
        out.append(Follow(rec.target, rec.ref, _move_clock(rec)))  # until the target's answer is in
    return out


def _move_clock(rec: IdentifierRecord) -> Stamp:
    """Orders one follower's Follow/Unfollow at a target: the follower's count of target moves.

    Not the event-time clock: a cookie can leave a target and come back to it
    while its latest stamp stays put (pinned by a later device sighting), and
    the Follow would then tie with the Unfollow before it and lose.
    """
    return Stamp(rec.moves, "")


def _storm_sight(rec: IdentifierRecord, defining: bool, was_storm: bool) -> Out:
    """A sighting of a storm identifier: it follows nobody and is its own profile (``reference.py``, rule 5).

    Cheap on purpose, since a storm is exactly the identifier seen most: no
    register moves, no Follow goes out, and a sighting that is not one of the
    ``limit + 1`` kept in ``fanout`` (``defining``) only re-sends the outbox
    (O(1) for a cookie; none in steady state). The sighting that made the
    storm, and any that moved a kept stamp since, are always kept ones, so
    their replays re-send the full announcement if its first copy was lost.
    """
    news: Out | None = None
    if not was_storm:
        if rec.target is not None:
            rec.moves += 1
            rec.pending_unfollow[rec.target] = _move_clock(rec)
        rec.target, rec.via = None, None
        # its own profile had ended into another (merged_into): start it again, under a new incarnation
        news = _resolve(rec, rec.ref, rec.ref + STORM_INCARNATION_TAG) if rec.merged_into is not None else []
    out: Out = [Unfollow(t, rec.ref, c) for t, c in rec.pending_unfollow.items()]
    if news is not None or defining:
        return out + _announce(rec, news)
    out += [Leave(p, rec.ref, seq) for p, seq in rec.pending_leave.items()]
    if rec.merged_into is not None:
        out.append(ProfileEnd(rec.ref, INITIAL, rec.merged_into[0], rec.merged_into[1], None))
    return out


def on_follow(rec: IdentifierRecord, msg: Follow, limits: Limits) -> Out:
    current = rec.followers.get(msg.follower)
    if current is None or msg.clock > current[0]:
        rec.followers[msg.follower] = (msg.clock, True)
    return [Resolution(msg.follower, rec.ref, rec.profile, rec.incarnation, rec.seq)]


def on_unfollow(rec: IdentifierRecord, msg: Unfollow, limits: Limits) -> Out:
    current = rec.followers.get(msg.follower)
    if current is None or msg.clock >= current[0]:
        rec.followers[msg.follower] = (msg.clock, False)
    return [UnfollowAck(msg.follower, rec.ref, msg.clock)]


def on_unfollow_ack(rec: IdentifierRecord, msg: UnfollowAck, limits: Limits) -> Out:
    pending = rec.pending_unfollow.get(msg.target)
    if pending is not None and pending <= msg.clock:
        del rec.pending_unfollow[msg.target]
    return []


def on_resolution(rec: IdentifierRecord, msg: Resolution, limits: Limits) -> Out:
    if msg.via == rec.target and (rec.via != msg.via or msg.seq > rec.via_seq):
        rec.via, rec.via_seq = msg.via, msg.seq
        return _announce(rec, _resolve(rec, msg.profile, msg.incarnation))
    return _announce(rec, None)


def on_join(rec: IdentifierRecord, msg: Join, limits: Limits) -> Out:
    return [Union(rec.cluster, msg.cluster)] if rec.cluster != msg.cluster else []


def on_assign(rec: IdentifierRecord, msg: Assign, limits: Limits) -> Out:
    news: list[Message] | None = None
    if msg.gen > rec.gen:
        rec.gen = msg.gen
        if msg.adopt:
            rec.cluster = msg.root  # path compression
        news = _resolve(rec, msg.profile, msg.incarnation)
    return [AssignAck(msg.root, rec.ref, msg.gen), *_announce(rec, news)]


def on_leave_ack(rec: IdentifierRecord, msg: LeaveAck, limits: Limits) -> Out:
    if rec.pending_leave.get(msg.profile, msg.seq + 1) <= msg.seq:
        del rec.pending_leave[msg.profile]
    return []


def _resolve(rec: IdentifierRecord, profile: Ref, incarnation: Incarnation) -> Out:
    """Take a new resolution; return the outbox-like messages only this change creates."""
    if (profile, incarnation) == (rec.profile, rec.incarnation):
        return []
    news: Out = []
    rec.seq += 1
    if profile != rec.profile:
        rec.pending_leave[rec.profile] = rec.seq
        rec.pending_leave.pop(profile, None)
        news.append(Leave(rec.profile, rec.ref, rec.seq))
    rec.profile, rec.incarnation = profile, incarnation
    if not rec.stable and rec.merged_into is None and profile != rec.ref:
        rec.merged_into = (profile, incarnation)  # a roaming head's own profile ends once, here
        news.append(ProfileEnd(rec.ref, INITIAL, profile, incarnation, None))
    return news


def _announce(rec: IdentifierRecord, news: Out | None) -> Out:
    """What others must know about this identifier's resolution, derived from state.

    ``news`` is what the message just changed (None: it changed nothing, so it
    may be a replay whose output was lost, and everything pending goes again).
    """
    out: Out = [Member(rec.profile, rec.ref, rec.seq, rec.clock)] if rec.seq else []
    out += [Resolution(f, rec.ref, rec.profile, rec.incarnation, rec.seq)
            for f, (_, active) in rec.followers.items() if active]
    if news is not None:
        return out + news
    out += [Leave(p, rec.ref, seq) for p, seq in rec.pending_leave.items()]
    if rec.merged_into is not None:
        out.append(ProfileEnd(rec.ref, INITIAL, rec.merged_into[0], rec.merged_into[1], None))
    return out


# =========================================================================== cluster records
def _outbox(rec: ClusterRecord) -> Out:
    out: Out = [*rec.assign_outbox.values(), *rec.end_outbox.values()]
    if rec.transfer is not None:
        out.append(rec.transfer)
    return out


def on_append(rec: ClusterRecord, msg: Append, limits: Limits) -> Out:
    if rec.forwarded_to is not None:
        return [replace(msg, cluster=rec.forwarded_to), *_outbox(rec)]
    request = msg.request
    current = rec.requests.get(request.refs)
    if current is None or request.stamp < current.stamp:
        rec.requests[request.refs] = request
        rec.members |= request.refs
        return _redecide(rec, limits, [_Side(rec.incarnations, set(rec.assigned), rec.members)], fresh=False)
    return _outbox(rec)


def on_union(rec: ClusterRecord, msg: Union, limits: Limits) -> Out:
    if rec.forwarded_to is not None:
        return [Union(rec.forwarded_to, msg.other), *_outbox(rec)]
    if msg.other == rec.ref:
        return _outbox(rec)
    if strength(rec.ref) < strength(msg.other):
        return [Union(msg.other, rec.ref), *_outbox(rec)]  # let the weaker side's root come to us
    rec.forwarded_to = msg.other
    rec.transfer = ClusterTransfer(
        msg.other, rec.ref, tuple(rec.requests.values()), frozenset(rec.members), rec.gen,
        tuple(rec.incarnations.items()), frozenset(rec.assigned), frozenset(rec.absorbed))
    rec.requests, rec.members, rec.incarnations, rec.assigned = {}, set(), {}, {}
    rec.assign_outbox, rec.refusals = {}, ()  # the new root re-assigns every member, at a higher gen
    return [rec.transfer]


def on_transfer(rec: ClusterRecord, msg: ClusterTransfer, limits: Limits) -> Out:
    if rec.forwarded_to is not None:
        return [replace(msg, cluster=rec.forwarded_to), *_outbox(rec)]
    if msg.source in rec.absorbed:
        return [ClusterTransferAck(msg.source, rec.ref), *_outbox(rec)]
    ours = _Side(dict(rec.incarnations), set(rec.assigned), set(rec.members))
    theirs = _Side(dict(msg.incarnations), set(msg.assigned), set(msg.members))
    rec.absorbed |= {msg.source, *msg.absorbed}
    for request in msg.requests:
        current = rec.requests.get(request.refs)
        if current is None or request.stamp < current.stamp:
            rec.requests[request.refs] = request
    rec.members |= msg.members
    rec.gen = max(rec.gen, msg.gen)
    return [ClusterTransferAck(msg.source, rec.ref), *_redecide(rec, limits, [ours, theirs], fresh=True)]


def on_transfer_ack(rec: ClusterRecord, msg: ClusterTransferAck, limits: Limits) -> Out:
    rec.transfer = None
    return []


def on_assign_ack(rec: ClusterRecord, msg: AssignAck, limits: Limits) -> Out:
    pending = rec.assign_outbox.get(msg.ref)
    if pending is not None and pending.gen <= msg.gen:
        del rec.assign_outbox[msg.ref]
    return []


def on_end_ack(rec: ClusterRecord, msg: EndAck, limits: Limits) -> Out:
    rec.end_outbox.pop((msg.profile, msg.incarnation), None)
    return []


class _Side(NamedTuple):
    """What one root knew before a merge (or the only root, when a request arrives)."""

    incarnations: dict[Ref, Incarnation]  # live profiles
    decided: set[Ref]  # members it has assigned (the others are still their own INITIAL profile)
    members: set[Ref]


def _redecide(rec: ClusterRecord, limits: Limits, sides: list[_Side], fresh: bool) -> Out:
    """Re-run the rules on the cluster's requests; queue Assigns and incarnation ends.

    A live profile keeps its incarnation when every side that knows it has it
    live in that same incarnation. A side that knows it dead may already have
    ended that incarnation into another profile (two roots deciding apart
    before their clusters meet), so the profile then starts a new incarnation:
    otherwise its members' events would keep following the other side's
    forward. Incarnation ids are unique (``root#gen``), so no two roots ever
    make different statements about the same one.
    """
    rec.gen += 1
    decision = decide(rec.requests.values(), rec.members, limits)
    rec.refusals = decision.refusals
    prior: dict[tuple[Ref, Incarnation], None] = {}
    claims: dict[Ref, set[Incarnation]] = {}
    dead: set[Ref] = set()
    for side in sides:
        for profile, inc in side.incarnations.items():
            prior[(profile, inc)] = None
            claims.setdefault(profile, set()).add(inc)
        for member in side.members - side.incarnations.keys():
            if member in side.decided:
                dead.add(member)
            else:
                prior[(member, INITIAL)] = None
                claims.setdefault(member, set()).add(INITIAL)
    fresh_inc = f"{rec.ref}#{rec.gen}"
    incarnations: dict[Ref, Incarnation] = {}
    for profile in decision.profiles:
        claim = claims.get(profile, set())
        incarnations[profile] = next(iter(claim)) if len(claim) == 1 and profile not in dead else fresh_inc
    out: Out = []
    for profile, inc in prior:
        if incarnations.get(profile) != inc:
            target = decision.profile[profile]
            end = rec.end_outbox[(profile, inc)] = ProfileEnd(profile, inc, target, incarnations[target],
                                                              rec.ref)
            out.append(end)
    rec.incarnations = incarnations
    assigned = {m: (p, incarnations[p]) for m, p in decision.profile.items()}
    adopted = rec.absorbed | {rec.ref}
    for member, (profile, inc) in assigned.items():
        if fresh or rec.assigned.get(member) != (profile, inc):
            assign = rec.assign_outbox[member] = Assign(member, rec.ref, profile, rec.gen, inc,
                                                        member in adopted)
            out.append(assign)
    rec.assigned = assigned
    return out


# =========================================================================== profile records
def on_resolved(rec: ProfileRecord, msg: Resolved, limits: Limits) -> Out:
    end = rec.ended.get(msg.incarnation)
    if end is not None:
        return [replace(msg, profile=end[0], incarnation=end[1])]
    rec.folded.setdefault(msg.incarnation, set()).add(msg.event_id)
    return []


def on_profile_end(rec: ProfileRecord, msg: ProfileEnd, limits: Limits) -> Out:
    if msg.incarnation not in rec.ended:  # first end wins: every copy of a late event follows it
        rec.ended[msg.incarnation] = (msg.target, msg.target_incarnation)
        if msg.target != rec.ref:
            rec.merges.append(MergeDecision(rec.ref, msg.incarnation, msg.target, msg.target_incarnation))
        folded = rec.folded.pop(msg.incarnation, None)
        if folded:
            rec.outbox.setdefault(msg.incarnation, set()).update(folded)
    out: Out = [EndAck(msg.reply_to, rec.ref, msg.incarnation)] if msg.reply_to is not None else []
    pending = rec.outbox.get(msg.incarnation)
    if pending:  # only this end created it: re-sent by this end's replays and duplicates alone
        target, target_inc = rec.ended[msg.incarnation]
        out.append(Handover(target, target_inc, rec.ref, msg.incarnation, frozenset(pending)))
    return out


def on_handover(rec: ProfileRecord, msg: Handover, limits: Limits) -> Out:
    end = rec.ended.get(msg.incarnation)
    if end is not None:
        return [replace(msg, profile=end[0], incarnation=end[1])]
    rec.folded.setdefault(msg.incarnation, set()).update(msg.events)
    return [HandoverAck(msg.source, msg.source_incarnation, msg.events)]


def on_handover_ack(rec: ProfileRecord, msg: HandoverAck, limits: Limits) -> Out:
    pending = rec.outbox.get(msg.source_incarnation)
    if pending is not None:
        pending -= msg.events
        if not pending:
            del rec.outbox[msg.source_incarnation]
    return []


def on_member(rec: ProfileRecord, msg: Member, limits: Limits) -> Out:
    current = rec.members.get(msg.ref)
    if current is None or msg.seq > current.seq:
        rec.members[msg.ref] = MemberEntry(msg.seq, True, msg.since)
    return []


def on_leave(rec: ProfileRecord, msg: Leave, limits: Limits) -> Out:
    current = rec.members.get(msg.ref)
    if current is None or msg.seq >= current.seq:
        rec.members[msg.ref] = MemberEntry(msg.seq, False, None)
    return [LeaveAck(msg.ref, rec.ref, msg.seq)]


# =========================================================================== dispatch
HANDLERS: dict[type, Callable[[Any, Any, Limits], Out]] = {
    Observe: on_observe, Sighting: on_sighting, Follow: on_follow, Unfollow: on_unfollow,
    UnfollowAck: on_unfollow_ack, Resolution: on_resolution, Join: on_join, Assign: on_assign,
    LeaveAck: on_leave_ack,
    Append: on_append, Union: on_union, ClusterTransfer: on_transfer, ClusterTransferAck: on_transfer_ack,
    AssignAck: on_assign_ack, EndAck: on_end_ack,
    Resolved: on_resolved, ProfileEnd: on_profile_end, Handover: on_handover, HandoverAck: on_handover_ack,
    Member: on_member, Leave: on_leave,
}


def handle(message: Message, record: Record, limits: Limits) -> Out:
    """Apply ``message`` to the record it is addressed to (``message.space``, ``message.key``)."""
    return HANDLERS[type(message)](record, message, limits)
