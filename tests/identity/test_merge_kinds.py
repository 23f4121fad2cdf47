"""omnipipe_identity_merges_total tells a profile with a history merging from an identifier joining."""

from __future__ import annotations

from collections import Counter
from typing import Any

from prometheus_client import CollectorRegistry

from pipeline.identity.engine import Counts
from pipeline.metrics.identity import IdentityMetrics

from .test_engine import BROWSE, LOGIN, DictSource, crc_partitioner, engine_owning, observe


def _merged(events: list[dict[str, Any]], partitions: int = 2, crc: bool = False) -> Counter[str]:
    """Run the events one at a time on a lone worker to quiescence; the merges it counted, by kind."""
    source = DictSource()
    engine = (engine_owning(list(range(partitions)), source, partition_of=crc_partitioner(partitions)) if crc
              else engine_owning([0, 1], source))
    merged: Counter[str] = Counter()
    for event in events:
        out = engine.process([observe(event)])
        merged += out.counts.merged
        while out.remote:
            source.persist(engine)
            out = engine.process([m for _, m in out.remote])
            merged += out.counts.merged
    return merged


def test_a_cookie_that_logs_in_on_its_first_event_is_an_identifier_joining() -> None:
    assert _merged([LOGIN]) == Counter({"identifier": 1})


def test_a_cookie_with_earlier_browsing_that_logs_in_is_a_profile_merging() -> None:
    assert _merged([BROWSE, LOGIN]) == Counter({"profile": 1})


def test_a_new_card_with_its_customer_is_an_identifier_joining_and_a_known_card_a_profile() -> None:
    new_card = {"event_id": "e1", "event_time": 1, "customer_id": "C1", "loyalty_card": "K"}
    assert _merged([new_card], partitions=4, crc=True) == Counter({"identifier": 1})
    store = {"event_id": "s1", "event_time": 1, "loyalty_card": "K2"}  # a store purchase: card only
    register = {"event_id": "r1", "event_time": 2, "customer_id": "C2", "loyalty_card": "K2"}
    assert _merged([store, register], partitions=4, crc=True) == Counter({"profile": 1})


def test_the_metric_carries_the_kind_as_a_bounded_label() -> None:
    registry = CollectorRegistry()
    metrics = IdentityMetrics(registry)
    metrics.add(Counts(merges=3, merged=Counter({"identifier": 2, "profile": 1})))
    assert registry.get_sample_value("omnipipe_identity_merges_total", {"absorbed": "identifier"}) == 2
    assert registry.get_sample_value("omnipipe_identity_merges_total", {"absorbed": "profile"}) == 1
    labels = {s.labels["absorbed"] for m in registry.collect() if m.name == "omnipipe_identity_merges"
              for s in m.samples if s.name == "omnipipe_identity_merges_total"}
    assert labels == {"identifier", "profile"}
