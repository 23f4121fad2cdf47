"""Identifier refs, link events from canonical records, limits."""

from __future__ import annotations

import pytest

from pipeline.identity.model import Limits, LinkEvent, kind_of, make_ref, strength, strongest


def test_kinds_order_strongest_first_then_by_value() -> None:
    refs = ["anon:a", "dev:z", "phone:1", "email:x", "card:9", "cust:b", "cust:a"]
    expected = ["cust:a", "cust:b", "card:9", "email:x", "phone:1", "dev:z", "anon:a"]
    assert sorted(refs, key=strength) == expected
    assert strongest(["dev:b", "dev:a", "anon:0"]) == "dev:a"


def test_refs_are_checked() -> None:
    assert make_ref("card", "123") == "card:123" and kind_of("card:123") == "card"
    with pytest.raises(ValueError):
        make_ref("loyalty", "1")
    with pytest.raises(ValueError):
        make_ref("card", "")
    with pytest.raises(ValueError):
        kind_of("nokind")


def test_link_event_from_a_canonical_record() -> None:
    record = {"event_id": "e1", "event_time": 7, "key": "cust:C1", "customer_id": "C1", "loyalty_card": None,
              "email_hash": "ab12", "phone_hash": "", "device_id": "d1", "anonymous_id": None, "sku": "x"}
    ev = LinkEvent.from_canonical(record)
    assert ev.refs == ("cust:C1", "email:ab12", "dev:d1")
    assert ev.key == "cust:C1" and ev.stable == ("cust:C1", "email:ab12") and ev.roaming == ("dev:d1",)
    assert ev.device == "dev:d1" and ev.stamp == (7, "e1")


def test_link_event_needs_identifiers_one_per_kind() -> None:
    with pytest.raises(ValueError, match="no identifier"):
        LinkEvent.from_canonical({"event_id": "e", "event_time": 1})
    with pytest.raises(ValueError, match="two identifiers"):
        LinkEvent("e", 1, ("card:1", "card:2"))
    assert LinkEvent("e", 1, ("anon:x", "cust:A")).refs == ("cust:A", "anon:x")


def test_limits_accept_any_spelling_of_a_kind() -> None:
    limits = Limits({"loyalty_card": 2, "email_hash": 1, "phone": 3, "anon": 5})
    assert limits.per_kind == {"card": 2, "email": 1, "phone": 3, "anon": 5}
    assert Limits.of(None).per_kind == {} and Limits.of(limits) is limits
    assert limits.exceeded({"card": 1}, {"card": 1, "email": 1}) is None
    assert limits.exceeded({"card": 2, "email": 1}, {"card": 1, "email": 1}) == "card"
    assert limits.exceeded({"anon": 5}, {"anon": 5}) is None  # roaming limits never refuse links
    with pytest.raises(ValueError):
        Limits({"cookie": 1})
    with pytest.raises(ValueError):
        Limits({"card": 0})


def test_the_storm_guard_is_configured_with_the_limits() -> None:
    limits = Limits.of({"card": 2, "roaming_fanout": 50})
    assert limits.per_kind == {"card": 2} and limits.roaming_fanout == 50
    assert Limits.of(None).roaming_fanout is None
    with pytest.raises(ValueError):
        Limits.of({"roaming_fanout": 0})
    assert Limits.of({"memo_window": 8}).memo_window == 8 and Limits().memo_window == 4096
    with pytest.raises(ValueError):
        Limits(memo_window=0)
