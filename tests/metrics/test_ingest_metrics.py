from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from pipeline.ingest.reasons import ALL_REASONS
from pipeline.metrics.ingest import IngestMetrics
from pipeline.metrics.scrape import parse
from pipeline.topology.catalogue import CHANNELS


def test_batch_counts_land_in_bounded_series() -> None:
    registry = CollectorRegistry()
    m = IngestMetrics(registry, CHANNELS)
    m.add_batch({"web": 10, "control": 2}, {"web": 9, "control": 2}, {"not_avro": 1})
    m.decode_seconds.observe(1e-5)
    scraped = parse(generate_latest(registry).decode())
    assert scraped.value("omnipipe_ingest_events_in_total", channel="web") == 10
    assert scraped.value("omnipipe_ingest_events_accepted_total", channel="control") == 2
    assert scraped.value("omnipipe_dlq_records_total", reason="not_avro") == 1
    assert scraped.value("omnipipe_ingest_decode_seconds_count") == 1
    # every label value exists from the start (dashboards see zeros, not gaps) and nothing else can
    assert set(scraped.by_label("omnipipe_dlq_records_total", "reason")) == set(ALL_REASONS)
    assert len(scraped.by_label("omnipipe_ingest_events_in_total", "channel")) == len(CHANNELS) + 1


def test_unknown_labels_are_refused_not_created() -> None:
    m = IngestMetrics(CollectorRegistry(), CHANNELS)
    with pytest.raises(KeyError):
        m.add_batch({}, {}, {"some-new-reason": 1})


def test_names_follow_prometheus_conventions() -> None:
    registry = CollectorRegistry()
    IngestMetrics(registry, CHANNELS)
    for family in parse(generate_latest(registry).decode()).types.items():
        name, kind = family
        assert name.startswith("omnipipe_")
        if kind == "histogram":
            assert name.endswith("_seconds")
