"""Choosing the broker to kill in ``broker-bounce`` (pipeline/faults/broker_bounce.py)."""

from __future__ import annotations

import pytest

from pipeline.faults.broker_bounce import most_leading


def test_the_broker_leading_the_most_input_partitions_is_chosen() -> None:
    leaders = {("web", 0): 2, ("web", 1): 2, ("web", 2): 1, ("app", 0): 3, ("app", 1): 2, ("app", 2): 1}
    assert most_leading(leaders, [1, 2, 3]) == (2, 3)


def test_a_tie_goes_to_the_lowest_broker_id_whatever_the_order() -> None:
    leaders = {("web", 0): 3, ("web", 1): 1, ("web", 2): 3, ("web", 3): 1}
    assert most_leading(leaders, [3, 2, 1]) == (1, 2)
    assert most_leading(dict(reversed(list(leaders.items()))), [1, 2, 3]) == (1, 2)


def test_a_partition_without_a_leader_counts_for_no_broker() -> None:
    """After a kill, partitions whose leader is not elected yet report -1: they must not outvote."""
    leaders = {("web", 0): -1, ("web", 1): -1, ("web", 2): -1, ("web", 3): 3}
    assert most_leading(leaders, [1, 2, 3]) == (3, 1)


def test_only_brokers_in_the_metadata_are_candidates() -> None:
    """A leader id of a broker not in the cluster's broker list (stale metadata) is not chosen."""
    leaders = {("web", 0): 4, ("web", 1): 4, ("web", 2): 2}
    assert most_leading(leaders, [1, 2, 3]) == (2, 1)
    with pytest.raises(ValueError):
        most_leading(leaders, [])
