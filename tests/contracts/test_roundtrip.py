"""Every subject round-trips, byte-identical to fastavro and read back alike."""

from __future__ import annotations

import io
import random
from typing import Any

import fastavro
import pytest
from fastavro.utils import generate_many
from hypothesis import given
from hypothesis import strategies as st

from pipeline.contracts import AvroCodec, SchemaCatalogue
from pipeline.contracts.canonical import named_types
from pipeline.contracts.wire import frame, unframe
from tests.contracts.strategies import values

CATALOGUE = SchemaCatalogue.load()
CODEC = AvroCodec(CATALOGUE)  # module level: hypothesis re-runs the test body, not fixtures
SUBJECTS = sorted(CATALOGUE.subjects())
RECORDS = st.sampled_from(SUBJECTS).flatmap(
    lambda s: st.tuples(
        st.just(s), values(CATALOGUE.latest(s).schema, named_types(CATALOGUE.latest(s).schema))
    )
)


def fastavro_body(parsed: Any, record: dict[str, Any]) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, parsed, record)
    return out.getvalue()


@pytest.mark.parametrize("subject", SUBJECTS)
def test_generated_records_round_trip_like_fastavro(
    subject: str, catalogue: SchemaCatalogue, codec: AvroCodec
) -> None:
    latest = catalogue.latest(subject)
    random.seed(subject)  # generate_many draws from the global RNG
    for record in generate_many(latest.parsed, 100):
        framed = codec.encode(subject, record)
        schema_id, body = unframe(framed)
        assert schema_id == latest.schema_id
        assert bytes(body) == fastavro_body(latest.parsed, record)
        decoded = codec.decode(framed, subject)
        assert decoded == fastavro.schemaless_reader(io.BytesIO(body), latest.parsed)
        assert codec.encode(subject, decoded) == framed


@given(RECORDS)
def test_unicode_and_extreme_values_round_trip(subject_record: tuple[str, dict[str, object]]) -> None:
    subject, record = subject_record
    latest = CATALOGUE.latest(subject)
    framed = CODEC.encode(subject, record)
    assert framed == frame(latest.schema_id, fastavro_body(latest.parsed, record))
    assert CODEC.decode(framed, subject) == record


def test_timestamps_decode_as_epoch_millis(codec: AvroCodec) -> None:
    event = {
        "event_id": "e-1",
        "event_time": 1_700_000_000_123,
        "identifiers": {"anonymous_id": "a-1"},
        "type": "PAGE_VIEW",
    }
    decoded = codec.decode(codec.encode("omnipipe.events.WebEvent", event), "omnipipe.events.WebEvent")
    assert decoded["event_time"] == 1_700_000_000_123
    assert type(decoded["event_time"]) is int
    # omitted fields take their defaults; items gets a fresh list per record
    assert decoded["referrer"] is None and decoded["items"] == [] and decoded["identifiers"]["email"] is None
