"""Which broker round trips an event waits for (``pipeline/identity/settle.py``)."""

from __future__ import annotations

from pipeline.identity.messages import Assign, AssignAck, Resolution
from pipeline.identity.model import INITIAL, LinkEvent
from pipeline.identity.settle import RoundTrips, event_refs, returned_refs, round_trip_refs
from pipeline.identity.state import IdentifierRecord, Record

EMAIL, CUST, COOKIE = "email:h1", "cust:C1", "anon:A1"


def peek_of(records: dict[str, Record]):  # type: ignore[no-untyped-def]
    return lambda _space, ref: records.get(ref)


def assign(ref: str, profile: str) -> Assign:
    return Assign(ref, root=CUST, profile=profile, gen=1, incarnation=INITIAL, adopt=True)


def test_an_assign_that_moves_an_identifier_is_waited_for_and_a_repeat_is_not() -> None:
    moved = IdentifierRecord(EMAIL, profile=EMAIL)
    assert round_trip_refs(assign(EMAIL, CUST), peek_of({EMAIL: moved})) == {EMAIL}
    there = IdentifierRecord(EMAIL, profile=CUST)
    assert round_trip_refs(assign(EMAIL, CUST), peek_of({EMAIL: there})) == frozenset()
    assert round_trip_refs(assign(EMAIL, CUST), peek_of({})) == {EMAIL}  # not even known here yet


def test_a_resolution_for_a_follower_is_waited_for_and_acks_are_not() -> None:
    follow = Resolution(COOKIE, via=CUST, profile=CUST, incarnation=INITIAL, seq=1)
    assert round_trip_refs(follow, peek_of({COOKIE: IdentifierRecord(COOKIE, profile=COOKIE)})) == {COOKIE}
    ack = AssignAck(CUST, ref=EMAIL, gen=1)
    assert round_trip_refs(ack, peek_of({})) == frozenset() and returned_refs(ack) == frozenset()
    assert returned_refs(follow) == {COOKIE}


def test_round_trips_count_per_identifier_until_each_is_back() -> None:
    trips = RoundTrips()
    assert not trips
    trips.sent([EMAIL])
    trips.sent([EMAIL, COOKIE])
    assert trips.blocking([EMAIL, CUST]) == {EMAIL}
    trips.back([EMAIL])
    assert trips.blocking([EMAIL]) == {EMAIL}  # one of two still under way
    trips.back([EMAIL, CUST])  # CUST was never counted here (another run's message): nothing
    assert trips.blocking([EMAIL, CUST, COOKIE]) == {COOKIE}
    trips.give_up([COOKIE])
    assert not trips


def test_an_event_waits_by_all_of_its_identifiers() -> None:
    event = LinkEvent.from_canonical({"event_id": "e1", "event_time": 1, "customer_id": "C1",
                                      "email_hash": "h1", "anonymous_id": "A1"})
    refs = event_refs(event)
    assert refs == frozenset(event.refs) and len(refs) >= 2
    trips = RoundTrips()
    trips.sent([event.refs[-1]])  # its weakest identifier is being moved: the event waits for it
    assert trips.blocking(refs) == {event.refs[-1]}
