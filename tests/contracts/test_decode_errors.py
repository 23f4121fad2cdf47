"""Each kind of bad value maps to its stable reason code.

Byte-level cases use a small hand-made schema covering every check; the
header and subject cases use the real catalogue (ids 1..12).
"""

from __future__ import annotations

import io
from typing import Any

import fastavro
import pytest

from pipeline.contracts import AvroCodec, DecodeError, RegisteredSchema, SchemaCatalogue, UnknownSchemaId
from pipeline.contracts.canonical import canonicalize
from pipeline.contracts.resolver import make_registered
from pipeline.contracts.wire import frame

WEB = "omnipipe.events.WebEvent"
SMALL = canonicalize(
    {
        "type": "record",
        "name": "t.Small",
        "fields": [
            {"name": "flag", "type": "boolean"},
            {"name": "count", "type": "int"},
            {"name": "kind", "type": {"type": "enum", "name": "K", "symbols": ["A", "B"]}},
            {"name": "text", "type": ["null", "string"]},
            {"name": "tags", "type": {"type": "array", "items": "null"}},
        ],
    }
)


class Schemas:
    """A resolver over a few hand-made schemas: ids 1.., one version each."""

    def __init__(self, *schemas: dict[str, Any]) -> None:
        self.by_subject = {s["name"]: make_registered(i, s["name"], 1, s) for i, s in enumerate(schemas, 1)}

    def by_id(self, schema_id: int) -> RegisteredSchema:
        for registered in self.by_subject.values():
            if registered.schema_id == schema_id:
                return registered
        raise UnknownSchemaId(schema_id)

    def latest(self, subject: str) -> RegisteredSchema:
        return self.by_subject[subject]


SMALL_CODEC = AvroCodec(Schemas(SMALL), max_record_size=1000)


def small(body: bytes) -> bytes:
    return frame(1, body)


def reason(codec: AvroCodec, data: Any, subject: str = "t.Small") -> str:
    with pytest.raises(DecodeError) as err:
        codec.decode(data, subject)
    return err.value.reason


def test_valid_small_record() -> None:
    # flag=1, count=-1 (zig-zag 1), kind=B, text="hé", tags=[null, null]
    body = b"\x01\x01\x02\x02\x06h\xc3\xa9\x04\x00"
    assert SMALL_CODEC.decode(small(body), "t.Small") == {
        "flag": True,
        "count": -1,
        "kind": "B",
        "text": "hé",
        "tags": [None, None],
    }
    assert SMALL_CODEC.encode("t.Small", SMALL_CODEC.decode(small(body), "t.Small")) == small(body)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"\x02\x00\x00\x00\x00", "not_avro"),  # boolean byte 2
        (b"\x00\x80\x80\x80\x80\x10\x00\x00\x00", "not_avro"),  # int beyond 32 bits
        (b"\x00" + b"\x80" * 11 + b"\x00\x00\x00\x00", "not_avro"),  # varint longer than 10 bytes
        (b"\x00\x00\x04\x00\x00", "not_avro"),  # enum index 2 of 2 symbols
        (b"\x00\x00\x01\x00\x00", "not_avro"),  # enum index -1 (fastavro wraps it to "B")
        (b"\x00\x00\x00\x04\x00", "not_avro"),  # union index 2 of 2 branches
        (b"\x00\x00\x00\x03\x00", "not_avro"),  # union index -2 (fastavro wraps it to null)
        (b"\x00\x00\x00\x02\x05ab\x00", "not_avro"),  # string length -3
        (b"\x00\x00\x00\x02\x04\xff\xfe\x00", "not_avro"),  # invalid UTF-8
        (b"\x00\x00\x00\x02\xfe\xff\xff\xff\x0fab\x00", "not_avro"),  # absurd length 2**31-1
        (b"\x00\x00\x00\x00\xfe\xff\xff\xff\xff\x01", "not_avro"),  # absurd count of zero-size items
        (b"\x00\x00\x00\x00\x00\x00", "not_avro"),  # trailing byte
        (b"\x00\x00\x00\x02\x0aab", "truncated"),  # string of 5, 2 bytes left
        (b"\x00\x00\x00", "truncated"),  # ends before the union
        (b"\x00\x80", "truncated"),  # ends inside a varint
        (b"", "truncated"),  # header only
    ],
)
def test_malformed_bodies(body: bytes, expected: str) -> None:
    assert reason(SMALL_CODEC, small(body)) == expected


def test_fastavro_really_accepts_what_we_reject() -> None:
    """Why the codec does not use fastavro's reader: negative indices wrap."""
    parsed = make_registered(1, "t.Small", 1, SMALL).parsed
    record: Any = fastavro.schemaless_reader(io.BytesIO(b"\x00\x00\x01\x03\x00"), parsed)
    assert record["kind"] == "B" and record["text"] is None


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", "empty"),
        (None, "empty"),
        (b"\x07\x00\x00\x00\x01", "bad_magic_byte"),
        (b'{"json": true}', "bad_magic_byte"),
        (b"\x00\x00", "truncated"),
        (b"\x00\x00\x00\x03\xe7\x00", "unknown_schema_id"),
        ("text", "not_avro"),
    ],
)
def test_header_failures(codec: AvroCodec, data: Any, expected: str) -> None:
    assert reason(codec, data, WEB) == expected


def test_oversize(codec: AvroCodec) -> None:
    limited = AvroCodec(SchemaCatalogue.load(), max_record_size=64)
    value = codec.encode(WEB, {"event_id": "x" * 100, "event_time": 0, "identifiers": {}, "type": "LOGIN"})
    assert reason(limited, value, WEB) == "oversize"


def test_schema_mismatch_for_an_unrelated_subject(codec: AvroCodec) -> None:
    trigger_id = SchemaCatalogue.load().latest("omnipipe.triggers.Trigger").schema_id
    with pytest.raises(DecodeError) as err:
        codec.decode(frame(trigger_id, b"\x00" * 40), WEB)
    assert err.value.reason == "schema_mismatch"
    assert err.value.schema_id == trigger_id
    assert "omnipipe.triggers.Trigger" in err.value.detail


def test_same_fields_under_another_record_name_do_not_resolve(codec: AvroCodec) -> None:
    push = {"event_id": "p", "event_time": 5, "identifiers": {}, "type": "SENT"}
    with pytest.raises(DecodeError) as err:
        codec.decode(codec.encode("omnipipe.events.PushEvent", push), "omnipipe.events.SmsEvent")
    assert err.value.reason == "schema_mismatch"


def test_other_subject_that_resolves_is_read() -> None:
    """A reader that lists the writer's name as an alias reads its data."""
    renamed = canonicalize({**SMALL, "name": "t.Renamed", "aliases": ["t.Small"]})
    codec = AvroCodec(Schemas(SMALL, renamed))
    record = {"flag": False, "count": 3, "kind": "A", "text": None, "tags": []}
    assert codec.decode(codec.encode("t.Small", record), "t.Renamed") == record


def test_decode_error_carries_the_schema_id(codec: AvroCodec) -> None:
    with pytest.raises(DecodeError) as err:
        codec.decode(frame(12, b"\x02"), WEB)
    assert (err.value.reason, err.value.schema_id, err.value.retryable) == ("truncated", 12, False)


def test_accepts_bytearray_and_memoryview(codec: AvroCodec) -> None:
    value = codec.encode(WEB, {"event_id": "e", "event_time": 0, "identifiers": {}, "type": "LOGIN"})
    assert (
        codec.decode(bytearray(value), WEB)
        == codec.decode(memoryview(value), WEB)
        == codec.decode(value, WEB)
    )
