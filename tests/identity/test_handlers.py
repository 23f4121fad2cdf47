"""The partitioned handlers one message at a time: replay safety, merges, forwarding, handover."""

from __future__ import annotations

import pickle
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.identity.messages import (
    Append,
    Assign,
    AssignAck,
    ClusterTransfer,
    Follow,
    Handover,
    HandoverAck,
    Join,
    Leave,
    LeaveAck,
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
from pipeline.identity.model import INITIAL, Limits, LinkEvent, LinkRequest, Stamp
from pipeline.identity.rules import handle
from pipeline.identity.simulation import Faults, PartitionedSimulation
from pipeline.identity.state import ClusterRecord, IdentifierRecord, ProfileRecord, Record

from .histories import LIMITS, histories

NO_LIMITS = Limits()


def replaying(msg: Message, rec: Record, limits: Limits) -> list[Message]:
    """Deliver twice: the second delivery must change nothing and re-send all the first sent."""
    out = handle(msg, rec, limits)
    after = pickle.loads(pickle.dumps(rec))
    again = handle(msg, rec, limits)
    assert rec == after, f"{type(msg).__name__} is not idempotent"
    lost = set(out) - set(again)
    assert not lost, f"a replayed {type(msg).__name__} would not re-send {lost}"
    return out


@settings(max_examples=60, deadline=None)
@given(history=histories, limits=LIMITS, partitions=st.integers(1, 6), seed=st.integers(0, 2**32 - 1))
def test_every_delivery_is_replay_safe(history: list[dict[str, object]], limits: dict[str, int] | None,
                                       partitions: int, seed: int) -> None:
    order = list(history)
    random.Random(seed).shuffle(order)
    sim = PartitionedSimulation(partitions, limits=limits, seed=seed, handler=replaying)
    sim.run(order)
    assert sim.pending() == 0


# ---------------------------------------------------------------------------- identifier records
def test_observe_answers_from_a_memo_and_fans_out_link_requests() -> None:
    rec = IdentifierRecord("cust:A")
    event = LinkEvent("e1", 5, ("cust:A", "card:K", "email:m", "anon:x"))
    out = handle(Observe(event), rec, NO_LIMITS)
    request = LinkRequest(frozenset({"cust:A", "card:K", "email:m"}), Stamp(5, "e1"))
    assert set(out) == {Resolved("cust:A", "e1", INITIAL), Sighting("anon:x", Stamp(5, "e1"), "cust:A", None),
                        Append("cust:A", request), Join("card:K", "cust:A"), Join("email:m", "cust:A")}
    rec.profile, rec.incarnation = "cust:Z", "cust:Z#9"  # resolution changed since
    assert Resolved("cust:A", "e1", INITIAL) in handle(Observe(event), rec, NO_LIMITS)


def test_roaming_registers_are_last_writer_wins_by_event_stamp() -> None:
    late_first = Sighting("dev:d", Stamp(30, "b"), "cust:B", None)
    early_second = Sighting("dev:d", Stamp(10, "a"), "cust:A", None)
    rec = IdentifierRecord("dev:d")
    # Follow/Unfollow carry the follower's count of target moves (one move so far), not event time
    assert handle(late_first, rec, NO_LIMITS) == [Follow("cust:B", "dev:d", Stamp(1, ""))]
    assert handle(early_second, rec, NO_LIMITS) == [Follow("cust:B", "dev:d", Stamp(1, ""))]
    assert rec.target == "cust:B" and rec.last_login == 30


def test_moving_to_a_new_target_unfollows_the_old_one_until_acknowledged() -> None:
    rec = IdentifierRecord("dev:d")
    handle(Sighting("dev:d", Stamp(10, "a"), "cust:A", None), rec, NO_LIMITS)
    handle(Resolution("dev:d", "cust:A", "cust:A", INITIAL, 0), rec, NO_LIMITS)
    out = handle(Sighting("dev:d", Stamp(20, "b"), "cust:B", None), rec, NO_LIMITS)
    assert Unfollow("cust:A", "dev:d", Stamp(2, "")) in out and rec.via is None
    target = IdentifierRecord("cust:A")
    handle(Follow("cust:A", "dev:d", Stamp(1, "")), target, NO_LIMITS)
    ack = handle(Unfollow("cust:A", "dev:d", Stamp(2, "")), target, NO_LIMITS)
    assert target.followers["dev:d"] == (Stamp(2, ""), False)
    handle(Follow("cust:A", "dev:d", Stamp(1, "")), target, NO_LIMITS)  # late duplicate
    assert target.followers["dev:d"][1] is False
    handle(ack[0], rec, NO_LIMITS)
    assert rec.pending_unfollow == {}


def test_resolution_from_anything_but_the_current_target_is_ignored() -> None:
    rec = IdentifierRecord("anon:x", target="cust:B")
    handle(Resolution("anon:x", "cust:A", "cust:A", INITIAL, 5), rec, NO_LIMITS)
    assert rec.profile == "anon:x"
    out = handle(Resolution("anon:x", "cust:B", "cust:B", "cust:B#2", 1), rec, NO_LIMITS)
    assert rec.profile == "cust:B" and rec.owner == "cust:B"
    assert ProfileEnd("anon:x", INITIAL, "cust:B", "cust:B#2", None) in out  # its own profile ended once
    assert Leave("anon:x", "anon:x", 1) in out


def test_assign_is_ordered_by_generation_and_only_adopted_members_repoint() -> None:
    rec = IdentifierRecord("email:m")
    handle(Assign("email:m", "cust:A", "cust:A", 3, "cust:A#3", False), rec, NO_LIMITS)
    assert (rec.profile, rec.cluster) == ("cust:A", "email:m")  # known only from a request: keep pointer
    out = handle(Assign("email:m", "cust:B", "cust:B", 2, "cust:B#2", True), rec, NO_LIMITS)
    assert rec.profile == "cust:A" and out[0] == AssignAck("cust:B", "email:m", 2)
    handle(Assign("email:m", "cust:A", "cust:A", 5, "cust:A#3", True), rec, NO_LIMITS)
    assert rec.cluster == "cust:A"
    assert handle(Join("email:m", "cust:A"), rec, NO_LIMITS) == []
    assert handle(Join("email:m", "card:K"), rec, NO_LIMITS) == [Union("cust:A", "card:K")]


# ---------------------------------------------------------------------------- cluster records
def test_union_makes_the_weaker_root_forward_and_transfer_to_the_stronger() -> None:
    strong, weak = ClusterRecord("cust:A"), ClusterRecord("card:K")
    assert handle(Union("cust:A", "card:K"), strong, NO_LIMITS) == [Union("card:K", "cust:A")]
    request = LinkRequest(frozenset({"card:K", "phone:p"}), Stamp(1, "e1"))
    handle(Append("card:K", request), weak, NO_LIMITS)
    out = handle(Union("card:K", "cust:A"), weak, NO_LIMITS)
    assert weak.forwarded_to == "cust:A" and len(out) == 1 and isinstance(out[0], ClusterTransfer)
    assert handle(Append("card:K", request), weak, NO_LIMITS)[0] == Append("cust:A", request)
    transfer_gen = weak.transfer.gen if weak.transfer else -1
    out = handle(out[0], strong, NO_LIMITS)
    assert strong.members == {"cust:A", "card:K", "phone:p"} and strong.gen > transfer_gen
    assigns = {m.ref: m for m in out if isinstance(m, Assign)}
    assert assigns["card:K"].profile == "card:K" and assigns["card:K"].adopt
    assert not assigns["phone:p"].adopt  # its own cluster record has not joined yet


def test_a_root_re_decides_when_an_earlier_request_arrives_late() -> None:
    root = ClusterRecord("cust:A")
    later = LinkRequest(frozenset({"cust:A", "card:K"}), Stamp(20, "e2"))
    earlier = LinkRequest(frozenset({"cust:B", "card:K"}), Stamp(10, "e1"))
    handle(Append("cust:A", later), root, NO_LIMITS)
    assert root.assigned["card:K"][0] == "cust:A"
    out = handle(Append("cust:A", earlier), root, NO_LIMITS)
    assert root.assigned["card:K"][0] == "cust:B"
    assert [r.reason.value for r in root.refusals] == ["card_owned"]
    assert any(isinstance(m, Assign) and m.ref == "card:K" and m.profile == "cust:B" for m in out)
    for assign in list(root.assign_outbox.values()):
        handle(AssignAck("cust:A", assign.ref, assign.gen), root, NO_LIMITS)
    assert root.assign_outbox == {}


# ---------------------------------------------------------------------------- profile records
def test_an_ended_incarnation_hands_over_its_events_and_forwards_late_ones() -> None:
    rec = ProfileRecord("card:K")
    handle(Resolved("card:K", "e1", INITIAL), rec, NO_LIMITS)
    out = handle(ProfileEnd("card:K", INITIAL, "cust:A", "cust:A#1", "cust:A"), rec, NO_LIMITS)
    handover = Handover("cust:A", "cust:A#1", "card:K", INITIAL, frozenset({"e1"}))
    assert handover in out and rec.folded == {}
    assert handle(Resolved("card:K", "e2", INITIAL), rec, NO_LIMITS) == [Resolved("cust:A", "e2", "cust:A#1")]
    handle(ProfileEnd("card:K", INITIAL, "cust:B", "cust:B#1", None), rec, NO_LIMITS)
    assert rec.ended[INITIAL] == ("cust:A", "cust:A#1")  # the first end is the only one
    target = ProfileRecord("cust:A")
    assert handle(handover, target, NO_LIMITS) == [HandoverAck("card:K", INITIAL, frozenset({"e1"}))]
    handle(HandoverAck("card:K", INITIAL, frozenset({"e1"})), rec, NO_LIMITS)
    assert rec.outbox == {} and target.folded == {"cust:A#1": {"e1"}}
    assert rec.forwarded_to is None  # its head has not said it left yet
    handle(Leave("card:K", "card:K", 1), rec, NO_LIMITS)
    assert rec.forwarded_to == "cust:A" and [m.target for m in rec.merges] == ["cust:A"]


def test_a_profile_lists_its_members_and_its_head_until_it_leaves() -> None:
    from pipeline.identity.messages import Member

    rec = ProfileRecord("cust:A")
    handle(Member("cust:A", "anon:x", 1, Stamp(5, "a")), rec, NO_LIMITS)
    handle(Member("cust:A", "anon:y", 1, Stamp(9, "b")), rec, NO_LIMITS)
    assert rec.identifiers() == {"cust:A", "anon:x", "anon:y"} and rec.live
    assert rec.listing(Limits({"anon": 1})) == {"cust": ["cust:A"], "anon": ["anon:y"]}
    handle(Leave("cust:A", "anon:x", 2), rec, NO_LIMITS)
    handle(Member("cust:A", "anon:x", 1, Stamp(5, "a")), rec, NO_LIMITS)  # late duplicate
    assert rec.identifiers() == {"cust:A", "anon:y"}


def test_the_simulator_without_faults_folds_history_where_it_happened() -> None:
    sim = PartitionedSimulation(3, faults=Faults.none())
    steps = [{"event_id": "e1", "event_time": 1, "customer_id": "A", "device_id": "tab"},
             {"event_id": "e2", "event_time": 2, "device_id": "tab"},
             {"event_id": "e3", "event_time": 3, "customer_id": "B", "device_id": "tab"},
             {"event_id": "e4", "event_time": 4, "device_id": "tab"}]
    for step in steps:
        sim.run([step])
    where = {e: places[0][0] for e, places in sim.folded().items()}
    assert where == {"e1": "cust:A", "e2": "cust:A", "e3": "cust:B", "e4": "cust:B"}


def test_a_storm_identifier_stops_following_and_its_sightings_cost_no_state() -> None:
    limits = Limits(roaming_fanout=2)
    rec = IdentifierRecord("anon:bot")
    handle(Sighting("anon:bot", Stamp(1, "a"), "cust:A", None), rec, limits)
    handle(Resolution("anon:bot", "cust:A", "cust:A", "cust:A#1", 1), rec, limits)
    assert rec.profile == "cust:A" and rec.merged_into == ("cust:A", "cust:A#1")
    handle(Sighting("anon:bot", Stamp(2, "b"), "cust:B", None), rec, limits)
    out = handle(Sighting("anon:bot", Stamp(3, "c"), "cust:C", None), rec, limits)  # third distinct: storm
    assert rec.storm == (Stamp(3, "c"), "cust:C") and rec.target is None
    assert (rec.profile, rec.incarnation) == ("anon:bot", "anon:bot#storm")  # its own profile, revived once
    # moves: A, then B, then nobody (the storm): Unfollow(A) at move 2, Unfollow(B) at move 3
    assert Unfollow("cust:B", "anon:bot", Stamp(3, "")) in out and Leave("cust:A", "anon:bot", 2) in out
    assert Unfollow("cust:A", "anon:bot", Stamp(2, "")) in out
    assert not any(isinstance(m, Follow) for m in out)
    for old, move in (("cust:A", 2), ("cust:B", 3)):
        handle(UnfollowAck("anon:bot", old, Stamp(move, "")), rec, limits)
    handle(LeaveAck("anon:bot", "cust:A", 2), rec, limits)
    before = pickle.dumps(rec)
    for i in range(4, 200):  # the storm goes on: nothing to send, nothing to keep
        assert handle(Sighting("anon:bot", Stamp(i, f"s{i}"), f"cust:X{i}", None), rec, limits) == [
            ProfileEnd("anon:bot", INITIAL, "cust:A", "cust:A#1", None)]
    assert pickle.dumps(rec) == before and len(rec.fanout) == 3
    handle(Sighting("anon:bot", Stamp(0, "z"), "cust:Z", None), rec, limits)  # a late, earlier login
    assert rec.storm == (Stamp(2, "b"), "cust:B") and set(rec.fanout) == {"cust:Z", "cust:A", "cust:B"}
    assert rec.storm_refusal is not None and rec.storm_refusal.event_id == "b"


def test_a_storm_identifier_that_never_resolved_elsewhere_keeps_its_first_incarnation() -> None:
    rec = IdentifierRecord("dev:kiosk")
    limits = Limits(roaming_fanout=1)
    handle(Sighting("dev:kiosk", Stamp(5, "b"), "cust:B", None), rec, limits)
    out = handle(Sighting("dev:kiosk", Stamp(4, "a"), "cust:A", None), rec, limits)
    assert rec.storm == (Stamp(5, "b"), "cust:B") and (rec.profile, rec.incarnation) == ("dev:kiosk", INITIAL)
    assert out == [Unfollow("cust:B", "dev:kiosk", Stamp(2, ""))]  # its second move: to nobody
    handle(Resolution("dev:kiosk", "cust:B", "cust:B", INITIAL, 3), rec, limits)  # a late answer: ignored
    assert rec.profile == "dev:kiosk"


def test_the_observe_memo_is_a_bounded_window_of_the_latest_arrivals() -> None:
    limits = Limits(memo_window=3)
    rec = IdentifierRecord("anon:x")
    for i in range(10):
        handle(Observe(LinkEvent(f"e{i}", 100 - i, ("anon:x",))), rec, limits)
        if i == 7:
            rec.profile, rec.incarnation = "cust:A", "cust:A#1"  # resolution changes after e7
    assert list(rec.memo) == ["e7", "e8", "e9"]
    again = handle(Observe(LinkEvent("e7", 93, ("anon:x",))), rec, limits)  # within the window
    assert again[0] == Resolved("anon:x", "e7", INITIAL) and list(rec.memo) == ["e7", "e8", "e9"]
    late = handle(Observe(LinkEvent("e2", 98, ("anon:x",))), rec, limits)  # beyond it: resolves as now
    assert late[0] == Resolved("cust:A", "e2", "cust:A#1") and list(rec.memo) == ["e8", "e9", "e2"]

