"""The partitioned rules agree with the reference model on every generated history.

Histories come in shuffled arrival orders, over 1 to 8 partitions, with
duplicated deliveries and crashes that lose output and replay input. "Agree"
means: the same identifier -> profile id mapping, the same refusals, every
event folded into exactly one profile incarnation, every profile listing its
identifiers, and nothing left waiting for an acknowledgement.
"""

from __future__ import annotations

import random
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.identity.reference import invert, reference_grouping
from pipeline.identity.simulation import Faults, PartitionedSimulation

from .histories import LIMITS, histories, journey_histories, random_histories

History = list[dict[str, Any]]
FAULTS = st.sampled_from([Faults(), Faults.none(), Faults(duplicate=0.3, crash=0.1, commit=0.2, inject=0.6)])


def check_against_reference(history: History, limits: dict[str, int] | None, partitions: int,
                            seed: int, faults: Faults) -> None:
    order = list(history)
    random.Random(seed).shuffle(order)
    reference = reference_grouping(history, limits)
    sim = PartitionedSimulation(partitions, limits=limits, seed=seed, faults=faults)
    sim.run(order)

    grouping = reference.grouping()
    assert sim.grouping() == grouping
    assert sim.refusals() == reference.refusals()
    assert sim.pending() == 0

    folded = sim.folded()
    assert folded.keys() == {e["event_id"] for e in history}, "an event was lost"
    assert all(len(places) == 1 for places in folded.values()), "an event was counted twice"
    members = invert(grouping)
    for profile in sim.profiles():
        assert profile.identifiers() == members.get(profile.ref, frozenset()) or (
            profile.ref not in members and profile.forwarded_to is not None), profile.ref
    for rec in sim.identifiers():
        assert rec.stable or rec.target is None or rec.via == rec.target, f"{rec.ref} never heard back"


@settings(max_examples=200, deadline=None)
@given(history=histories, limits=LIMITS, partitions=st.integers(1, 8), seed=st.integers(0, 2**32 - 1),
       faults=FAULTS)
def test_partitioned_rules_agree_with_the_reference(history: History, limits: dict[str, int] | None,
                                                    partitions: int, seed: int, faults: Faults) -> None:
    check_against_reference(history, limits, partitions, seed, faults)


@settings(max_examples=40, deadline=None)
@given(history=st.one_of(random_histories(max_events=60), journey_histories(max_people=8)),
       limits=LIMITS, partitions=st.integers(2, 8), seed=st.integers(0, 2**32 - 1))
def test_agreement_holds_on_longer_histories(history: History, limits: dict[str, int] | None,
                                             partitions: int, seed: int) -> None:
    check_against_reference(history, limits, partitions, seed, Faults())


@settings(max_examples=100, deadline=None)
@given(history=histories, limits=LIMITS, seed=st.integers(0, 2**32 - 1))
def test_reference_depends_on_event_time_not_arrival(history: History, limits: dict[str, int] | None,
                                                     seed: int) -> None:
    shuffled = list(history)
    random.Random(seed).shuffle(shuffled)
    a, b = reference_grouping(history, limits), reference_grouping(shuffled, limits)
    assert a.grouping() == b.grouping() and a.refusals() == b.refusals()


@settings(max_examples=100, deadline=None)
@given(history=histories, limits=LIMITS)
def test_reference_guarantees(history: History, limits: dict[str, int] | None) -> None:
    """Merge protection holds in every outcome, whatever the history."""
    model = reference_grouping(history, limits)
    members = invert(model.grouping())
    for profile, refs in members.items():
        assert profile == min(refs, key=lambda r: (["cust", "card", "email", "phone", "dev", "anon"]
                                                    .index(r.split(":")[0]), r.split(":", 1)[1]))
        assert sum(r.startswith("cust:") for r in refs) <= 1, "two customers merged"
        for kind, limit in (limits or {}).items():
            prefix = {"loyalty_card": "card"}.get(kind, kind)
            if prefix in ("card", "email", "phone"):
                assert sum(r.startswith(prefix + ":") for r in refs) <= limit


@settings(max_examples=15, deadline=None)
@given(history=histories, limits=LIMITS, seed=st.integers(0, 2**32 - 1))
def test_a_small_memo_window_still_agrees_when_redeliveries_stay_inside_it(
        history: History, limits: dict[str, int] | None, seed: int) -> None:
    check_against_reference(history, {**(limits or {}), "memo_window": 64}, 3, seed, Faults())
