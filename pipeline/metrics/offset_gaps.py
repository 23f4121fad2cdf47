"""The one input-offset-gap counter every consuming stage exports, named after its stage."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

from pipeline.broker.offset_gaps import OUTCOMES


def offset_gaps_counter(stage: str, registry: CollectorRegistry) -> Counter:
    counter = Counter(
        f"omnipipe_{stage}_offset_gaps_total",
        "Fetches that jumped over input offsets: refetch = read again from the first missing one, "
        "accepted = still absent after every re-read (pipeline/broker/offset_gaps.py).",
        ["outcome"], registry=registry)
    for outcome in OUTCOMES:
        counter.labels(outcome)
    return counter
