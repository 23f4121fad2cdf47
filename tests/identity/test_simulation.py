"""The in-memory partitioned simulator itself: routing, faults, determinism."""

from __future__ import annotations

from collections import Counter

import pytest

from pipeline.identity.messages import Space
from pipeline.identity.simulation import Faults, PartitionedSimulation, partition_of
from pipeline.identity.state import IdentifierRecord, ProfileRecord

EVENTS = [
    {"event_id": f"e{i}", "event_time": i, "customer_id": f"C{i % 5}", "loyalty_card": f"K{i % 7}",
     "anonymous_id": f"x{i % 3}"}
    for i in range(40)
]


def test_partitioning_is_stable_spread_and_different_per_keyspace() -> None:
    keys = [f"cust:C{i}" for i in range(400)]
    spread = Counter(partition_of(Space.IDENT, k, 8) for k in keys)
    assert len(spread) == 8 and min(spread.values()) > 20
    assert [partition_of(Space.IDENT, k, 8) for k in keys] == [partition_of(Space.IDENT, k, 8) for k in keys]
    assert sum(partition_of(Space.IDENT, k, 8) != partition_of(Space.PROFILE, k, 8) for k in keys) > 300


def test_same_seed_same_run_and_faults_really_happen() -> None:
    faults = Faults(duplicate=0.3, crash=0.1)
    a = PartitionedSimulation(4, seed=3, faults=faults)
    b = PartitionedSimulation(4, seed=3, faults=faults)
    assert a.run(EVENTS) == b.run(EVENTS)
    assert a.stats.crashes > 0 and a.stats.lost_outputs > 0 and a.stats.duplicated > 0
    clean = PartitionedSimulation(4, seed=3, faults=Faults.none())
    clean.run(EVENTS)
    assert clean.stats.crashes == clean.stats.duplicated == 0
    assert a.grouping() == clean.grouping()


def test_runs_continue_from_the_tables() -> None:
    sim = PartitionedSimulation(3, seed=1)
    sim.run(EVENTS[:20])
    sim.run(EVENTS[20:])
    whole = PartitionedSimulation(5, seed=2)
    whole.run(EVENTS[::-1])
    assert sim.grouping() == whole.grouping()


def test_identifier_and_profile_records_are_inspectable() -> None:
    sim = PartitionedSimulation(2, faults=Faults.none())
    sim.run([{"event_id": "e1", "event_time": 1, "customer_id": "A", "device_id": "d"}])
    dev = sim.record(Space.IDENT, "dev:d")
    assert isinstance(dev, IdentifierRecord) and dev.owner == "cust:A" and dev.last_login == 1
    profile = sim.record(Space.PROFILE, "cust:A")
    assert isinstance(profile, ProfileRecord) and profile.identifiers() == {"cust:A", "dev:d"}


def test_a_run_that_never_settles_is_reported() -> None:
    with pytest.raises(RuntimeError, match="quiescence"):
        PartitionedSimulation(2, max_steps=10).run(EVENTS)
    with pytest.raises(ValueError):
        PartitionedSimulation(0)
