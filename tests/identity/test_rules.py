"""Each identity rule and refusal reason, checked on every implementation.

Every scenario runs on the reference model and on the partitioned rules (one
clean partition, and five partitions with duplicates and crashes), and is fed
in reverse arrival order: event time, not arrival, must decide.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

import pytest

from pipeline.identity.model import Refusal, RefusalReason
from pipeline.identity.reference import ReferenceModel, reference_grouping
from pipeline.identity.simulation import Faults, PartitionedSimulation

Result = tuple[dict[str, str], list[Refusal]]
Engine = Callable[[list[dict[str, Any]], Mapping[str, int] | None], Result]


class Scenario(Protocol):
    """An engine fed in reverse arrival order; limits optional."""

    def __call__(self, events: list[dict[str, Any]], limits: Mapping[str, int] | None = None) -> Result: ...


def _reference(events: list[dict[str, Any]], limits: Mapping[str, int] | None) -> Result:
    model = reference_grouping(events, limits)
    return model.grouping(), model.refusals()


def _partitioned(partitions: int, faults: Faults) -> Engine:
    def run(events: list[dict[str, Any]], limits: Mapping[str, int] | None) -> Result:
        sim = PartitionedSimulation(partitions, limits=limits, seed=7, faults=faults)
        sim.run(events)
        return sim.grouping(), sim.refusals()
    return run


ENGINES: dict[str, Engine] = {
    "reference": _reference,
    "partitioned": _partitioned(1, Faults.none()),
    "partitioned-faulty": _partitioned(5, Faults(duplicate=0.3, crash=0.1)),
}


@pytest.fixture(params=sorted(ENGINES))
def engine(request: pytest.FixtureRequest) -> Scenario:
    def reversed_arrival(events: list[dict[str, Any]], limits: Mapping[str, int] | None = None) -> Result:
        return ENGINES[request.param](events[::-1], limits)
    return reversed_arrival


def ev(n: int, t: int, **ids: str) -> dict[str, Any]:
    return {"event_id": f"e{n}", "event_time": t, **ids}


def test_every_pair_on_an_event_links_and_the_strongest_names_the_profile(engine: Scenario) -> None:
    grouping, refusals = engine([ev(1, 1, customer_id="A", email_hash="m", phone_hash="p", anonymous_id="x")])
    assert grouping == dict.fromkeys(["cust:A", "email:m", "phone:p", "anon:x"], "cust:A")
    assert refusals == []


def test_customerless_group_is_named_after_its_strongest_identifier(engine: Scenario) -> None:
    grouping, _ = engine([ev(1, 1, loyalty_card="K2", phone_hash="p"),
                          ev(2, 2, loyalty_card="K1", phone_hash="p")])
    assert set(grouping.values()) == {"card:K1"}


def test_card_used_in_store_long_before_it_is_linked_joins_the_account(engine: Scenario) -> None:
    events = [ev(1, 1, loyalty_card="K"), ev(2, 5, loyalty_card="K", phone_hash="p"),
              ev(3, 90, customer_id="A", loyalty_card="K")]
    grouping, _ = engine(events)
    assert grouping == {"card:K": "cust:A", "phone:p": "cust:A", "cust:A": "cust:A"}


@pytest.mark.parametrize("field,kind,reason", [
    ("loyalty_card", "card", RefusalReason.CARD_OWNED),
    ("email_hash", "email", RefusalReason.EMAIL_OWNED),
    ("phone_hash", "phone", RefusalReason.PHONE_OWNED),
])
def test_an_owned_identifier_stays_with_the_customer_who_linked_it_first(
        engine: Scenario, field: str, kind: str, reason: RefusalReason) -> None:
    grouping, refusals = engine([ev(1, 10, customer_id="A", **{field: "v"}),
                                 ev(2, 20, customer_id="B", **{field: "v"})])
    assert grouping[f"{kind}:v"] == "cust:A" and grouping["cust:B"] == "cust:B"
    assert refusals == [Refusal(20, "e2", f"{kind}:v", "cust:B", "cust:A", reason, kind)]


def test_two_customers_never_merge_through_their_identifiers(engine: Scenario) -> None:
    events = [ev(1, 1, customer_id="A", loyalty_card="K"), ev(2, 2, customer_id="B", email_hash="m"),
              ev(3, 3, loyalty_card="K", email_hash="m", phone_hash="p")]
    grouping, refusals = engine(events)
    assert grouping["cust:A"] != grouping["cust:B"]
    assert grouping["phone:p"] == "cust:A"  # the strongest identifier on the event decides
    assert refusals == [Refusal(3, "e3", "email:m", "card:K", "cust:B", RefusalReason.CUSTOMER_CONFLICT,
                                "email")]


def test_ownership_through_a_customerless_link_is_still_ownership(engine: Scenario) -> None:
    events = [ev(1, 1, loyalty_card="K", email_hash="m"), ev(2, 2, customer_id="A", loyalty_card="K"),
              ev(3, 3, customer_id="B", email_hash="m")]
    grouping, refusals = engine(events)
    assert grouping["email:m"] == "cust:A"
    assert [r.reason for r in refusals] == [RefusalReason.EMAIL_OWNED]


def test_limit_keeps_the_earliest_links_and_refuses_the_rest(engine: Scenario) -> None:
    events = [ev(1, 5, customer_id="A", loyalty_card="K1"), ev(2, 6, customer_id="A", loyalty_card="K2"),
              ev(3, 7, loyalty_card="K3", phone_hash="p"), ev(4, 8, customer_id="A", phone_hash="p")]
    grouping, refusals = engine(events, {"card": 2})
    assert grouping["card:K1"] == grouping["card:K2"] == "cust:A"
    assert grouping["phone:p"] == grouping["card:K3"] == "card:K3"  # joining would make three cards
    assert refusals == [Refusal(8, "e4", "phone:p", "cust:A", "card:K3", RefusalReason.LIMIT_EXCEEDED,
                                "card")]


def test_limits_on_roaming_kinds_cap_listings_but_never_split(engine: Scenario) -> None:
    grouping, refusals = engine([ev(1, 1, customer_id="A", anonymous_id="x"),
                                 ev(2, 2, customer_id="A", anonymous_id="y")], {"anon": 1})
    assert grouping["anon:x"] == grouping["anon:y"] == "cust:A" and refusals == []


def test_a_shared_device_follows_the_most_recent_login(engine: Scenario) -> None:
    events = [ev(1, 10, customer_id="A", device_id="tab", anonymous_id="x"), ev(2, 20, device_id="tab"),
              ev(3, 30, customer_id="B", device_id="tab"), ev(4, 40, device_id="tab")]
    grouping, refusals = engine(events)
    assert grouping["dev:tab"] == "cust:B"
    assert grouping["anon:x"] == "cust:A" and grouping["cust:A"] == "cust:A"  # never glued to B
    assert refusals == []


def test_a_late_older_login_does_not_take_the_device_back(engine: Scenario) -> None:
    # arrival is reversed: B's login (t=30) arrives first, A's (t=10) after it
    grouping, _ = engine([ev(1, 10, customer_id="A", device_id="tab"),
                          ev(2, 30, customer_id="B", device_id="tab")])
    assert grouping["dev:tab"] == "cust:B"


def test_roaming_identifiers_never_carry_stable_ones_between_groups(engine: Scenario) -> None:
    grouping, _ = engine([ev(1, 1, loyalty_card="K", device_id="d"),
                          ev(2, 2, customer_id="A", device_id="d")])
    assert grouping == {"card:K": "card:K", "dev:d": "cust:A", "cust:A": "cust:A"}


def test_a_cookie_without_stable_identifiers_follows_its_device(engine: Scenario) -> None:
    grouping, _ = engine([ev(1, 1, device_id="d", anonymous_id="x"), ev(2, 2, anonymous_id="y")])
    assert grouping == {"dev:d": "dev:d", "anon:x": "dev:d", "anon:y": "anon:y"}
    grouping, _ = engine([ev(1, 1, device_id="d", anonymous_id="x"),
                          ev(2, 2, customer_id="A", device_id="d")])
    assert grouping["anon:x"] == "cust:A"


def test_a_stable_sighting_beats_a_later_device_for_a_cookie(engine: Scenario) -> None:
    grouping, _ = engine([ev(1, 1, customer_id="A", anonymous_id="x"),
                          ev(2, 2, device_id="d", anonymous_id="x")])
    assert grouping["anon:x"] == "cust:A"


def test_redelivered_events_are_no_ops(engine: Scenario) -> None:
    events = [ev(1, 10, customer_id="A", loyalty_card="K"), ev(2, 20, customer_id="B", loyalty_card="K")]
    once = engine(events)
    assert engine(events + events + events[:1]) == once


def test_reference_refuses_to_apply_an_older_event_late() -> None:
    model = ReferenceModel()
    model.observe(ev(2, 20, customer_id="A"))
    model.observe(ev(2, 20, customer_id="A"))  # a redelivery is fine
    with pytest.raises(ValueError, match="older"):
        model.observe(ev(1, 10, customer_id="B"))


def test_reference_ties_in_event_time_are_broken_by_event_id() -> None:
    a_first = [ev(1, 10, customer_id="A", loyalty_card="K"), ev(2, 10, customer_id="B", loyalty_card="K")]
    assert reference_grouping(a_first).profile_of("card:K") == "cust:A"
    assert reference_grouping(a_first[::-1]).profile_of("card:K") == "cust:A"


# ---------------------------------------------------------------------------- storm guard (roaming_fanout)
def test_a_bot_cookie_shared_by_many_customers_is_reported_once_and_becomes_its_own_profile(
        engine: Scenario) -> None:
    events = [ev(i, 10 * i, customer_id=f"C{i}", anonymous_id="bot") for i in range(1, 7)]
    events += [ev(7, 15, customer_id="C1", anonymous_id="bot"), ev(8, 80, anonymous_id="bot")]
    grouping, refusals = engine(events, {"roaming_fanout": 3})
    assert grouping["anon:bot"] == "anon:bot"  # follows nobody, not even the last login
    assert all(grouping[f"cust:C{i}"] == f"cust:C{i}" for i in range(1, 7))
    assert [(r.event_id, r.ref, r.anchor, r.held_by, r.reason, r.kind) for r in refusals] == [
        ("e4", "anon:bot", "cust:C4", "anon:bot", RefusalReason.ROAMING_FANOUT, "anon")]


def test_the_storm_is_decided_in_event_time_so_a_late_early_login_moves_it(engine: Scenario) -> None:
    events = [ev(1, 10, customer_id="A", device_id="kiosk"), ev(2, 20, customer_id="B", device_id="kiosk"),
              ev(3, 30, email_hash="m", device_id="kiosk"), ev(4, 5, customer_id="D", device_id="kiosk")]
    _, refusals = engine(events, {"roaming_fanout": 2})
    assert [(r.event_id, r.anchor) for r in refusals] == [("e2", "cust:B")]  # D(5), A(10), B(20) is third


def test_repeat_logins_of_one_person_are_no_storm(engine: Scenario) -> None:
    events = [ev(i, i, customer_id="A", device_id="phone") for i in range(1, 6)]
    events.append(ev(6, 6, email_hash="m", device_id="phone"))
    grouping, refusals = engine(events, {"roaming_fanout": 2})
    assert grouping["dev:phone"] == "email:m" and refusals == []


def test_cookies_of_a_storm_device_stay_with_the_device(engine: Scenario) -> None:
    events = [ev(1, 1, device_id="kiosk", anonymous_id="x"), ev(2, 2, customer_id="A", device_id="kiosk"),
              ev(3, 3, customer_id="B", device_id="kiosk"), ev(4, 4, device_id="kiosk", anonymous_id="y")]
    grouping, refusals = engine(events, {"roaming_fanout": 1})
    assert grouping["dev:kiosk"] == grouping["anon:x"] == grouping["anon:y"] == "dev:kiosk"
    assert grouping["cust:A"] == "cust:A" and [r.reason for r in refusals] == [RefusalReason.ROAMING_FANOUT]
