"""The hand-written prefix reader agrees with the full Avro decode on every record, or refuses it."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.contracts.catalogue import SchemaCatalogue
from pipeline.contracts.codec import AvroCodec
from pipeline.contracts.errors import DecodeError
from pipeline.identity.link_reader import fast_header, read_link_event
from pipeline.identity.model import LinkEvent
from pipeline.ingest.identifiers import PiiHasher
from pipeline.ingest.processor import Accepted, IngestProcessor, IngestRules, SourceTopic
from pipeline.simulate.journeys import JourneyConfig, iter_events
from pipeline.topology.catalogue import load_catalogue

SUBJECT = "omnipipe.canonical.CanonicalEvent"
CODEC = AvroCodec(SchemaCatalogue.load())


def _canonical_records(n: int) -> list[bytes]:
    """Real canonical bytes: simulated channel events through the real ingest processor."""
    cat = load_catalogue()
    sources = {t.name: SourceTopic(t.name, t.avro_subject, t.channel) for t in cat.ingest_sources}
    by_key = {t.key: t.name for t in cat.ingest_sources}
    proc = IngestProcessor(sources, CODEC, PiiHasher(b"k" * 32), IngestRules(max_event_age_ms=10**13))
    out = []
    cfg = JourneyConfig(customers=200, seed=3)
    for ev in itertools.islice(iter_events(cfg), n):
        topic = by_key[ev.topic_key]
        value = CODEC.encode(sources[topic].subject, ev.record)
        result = proc.process(topic, 0, 0, None, None, value, ev.event_time + 1000)
        if isinstance(result, Accepted):
            out.append(CODEC.encode(SUBJECT, result.event))
    return out


RECORDS = _canonical_records(600)


def test_the_shipped_canonical_schema_is_readable_by_the_prefix_reader() -> None:
    assert fast_header(CODEC, SUBJECT) == RECORDS[0][:5]


def test_prefix_reader_equals_the_full_decode() -> None:
    assert len(RECORDS) > 500
    for data in RECORDS:
        full = LinkEvent.from_canonical(CODEC.decode(data, SUBJECT))
        fast = read_link_event(data)
        assert (fast, fast.stable, fast.roaming) == (full, full.stable, full.roaming)
        assert fast.device == full.device


@settings(max_examples=300, deadline=None)
@given(index=st.integers(0, len(RECORDS) - 1), cut=st.integers(5, 400))
def test_truncated_records_are_refused_with_a_reason(index: int, cut: int) -> None:
    data = RECORDS[index]
    if cut >= len(data):
        return
    try:
        event = read_link_event(data[:cut])
    except DecodeError as exc:
        assert exc.reason in ("truncated", "not_avro")
    except ValueError:
        pass  # no usable identifier survived the cut
    else:  # the cut fell after the identifier fields: same answer as the whole record
        assert event == read_link_event(data)


@settings(max_examples=300, deadline=None)
@given(body=st.binary(max_size=200))
def test_garbage_never_raises_anything_else(body: bytes) -> None:
    with pytest.raises((DecodeError, ValueError)):
        event = read_link_event(RECORDS[0][:5] + body)
        assert event.refs  # parsed by chance: a well-formed prefix is a fine answer
        raise ValueError("parsed")
