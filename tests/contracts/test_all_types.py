"""The compiled encoder/decoder against fastavro on every Avro type and rule.

The subjects use a handful of types; this schema uses all of them, including
a recursive record, so the codec is correct for the next schema change too.
"""

from __future__ import annotations

import io
import math
from typing import Any

import fastavro
import pytest
from hypothesis import given

from pipeline.contracts import AvroCodec, DecodeError, EncodeError
from pipeline.contracts.canonical import canonicalize, named_types
from pipeline.contracts.decoder import compile_decoder
from pipeline.contracts.encoder import compile_encoder
from pipeline.contracts.resolver import make_registered
from tests.contracts.strategies import values
from tests.contracts.test_decode_errors import Schemas

ALL = canonicalize(
    {
        "type": "record",
        "name": "Sink",
        "namespace": "t",
        "fields": [
            {"name": "b", "type": "boolean"},
            {"name": "i", "type": "int"},
            {"name": "l", "type": "long"},
            {"name": "f", "type": "float"},
            {"name": "d", "type": "double"},
            {"name": "s", "type": "string"},
            {"name": "by", "type": "bytes"},
            {"name": "fx", "type": {"type": "fixed", "name": "Fx", "size": 4}},
            {"name": "e", "type": {"type": "enum", "name": "E", "symbols": ["A", "B", "C"]}},
            {"name": "arr", "type": {"type": "array", "items": "long"}},
            {"name": "m", "type": {"type": "map", "values": ["null", "string"]}},
            {"name": "u", "type": ["null", "int", "string", "Fx", "E"]},
            {
                "name": "deep",
                "type": {
                    "type": "array",
                    "items": {"type": "map", "values": {"type": "array", "items": "E"}},
                },
            },
            {
                "name": "tree",
                "type": [
                    "null",
                    {
                        "type": "record",
                        "name": "Node",
                        "fields": [
                            {"name": "v", "type": "int"},
                            {"name": "kids", "type": {"type": "array", "items": "Node"}},
                        ],
                    },
                ],
            },
            {"name": "nothing", "type": "null"},
        ],
    }
)
PARSED = make_registered(1, "t.Sink", 1, ALL).parsed
ENCODE = compile_encoder(ALL)
DECODE = compile_decoder(ALL, ALL, max_size=1 << 20)


def fastavro_bytes(record: dict[str, Any]) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, PARSED, record)
    return out.getvalue()


def same(a: Any, b: Any) -> bool:
    """Equality where 32-bit floats are compared after rounding through float32."""
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(map(same, a, b))
    return bool(a == b)


@given(values(ALL, named_types(ALL)))
def test_every_type_encodes_like_fastavro_and_decodes_like_it(record: dict[str, Any]) -> None:
    out = bytearray()
    ENCODE(record, out)
    assert bytes(out) == fastavro_bytes(record)
    decoded, end = DECODE(bytes(out), 0, len(out))
    assert end == len(out)
    assert same(decoded, fastavro.schemaless_reader(io.BytesIO(out), PARSED))


def test_negative_block_counts_with_byte_sizes_are_read() -> None:
    """Writers may prefix a block with -count and its byte size (for skipping)."""
    schema = canonicalize({"type": "array", "items": "int"})
    decode = compile_decoder(schema, schema, max_size=100)
    # block of -2 items, 2 bytes: [1, 2]; block of 1 item: [3]; end
    data = b"\x03\x04\x02\x04\x02\x06\x00"
    assert decode(data, 0, len(data)) == ([1, 2, 3], len(data))


WRITER = canonicalize(
    {
        "type": "record",
        "name": "t.W",
        "fields": [
            {"name": "i", "type": "int"},
            {"name": "f", "type": "float"},
            {"name": "s", "type": "string"},
            {"name": "raw", "type": "bytes"},
            {"name": "e", "type": {"type": "enum", "name": "t.E", "symbols": ["A", "B", "C"]}},
            {"name": "gone", "type": {"type": "array", "items": {"type": "map", "values": "string"}}},
            {"name": "old", "type": "long"},
            {"name": "u", "type": ["null", "int"]},
            {"name": "plain", "type": "int"},
        ],
    }
)
READER = canonicalize(
    {
        "type": "record",
        "name": "t.R",
        "aliases": ["t.W"],
        "fields": [
            {"name": "plain", "type": ["null", "long"]},
            {"name": "i", "type": "double"},
            {"name": "f", "type": "double"},
            {"name": "s", "type": "bytes"},
            {"name": "raw", "type": "string"},
            {"name": "e", "type": {"type": "enum", "name": "t.E", "symbols": ["B", "A"], "default": "A"}},
            {"name": "new", "type": "long", "aliases": ["old"]},
            {"name": "u", "type": ["null", "long", "string"]},
            {"name": "added", "type": {"type": "map", "values": "int"}, "default": {"k": 1}},
            {"name": "opt", "type": ["null", "string"], "default": None},
        ],
    }
)


@given(values(WRITER, named_types(WRITER)))
def test_resolution_matches_fastavro(record: dict[str, Any]) -> None:
    if not record["raw"].isascii():  # bytes -> string promotion needs UTF-8 bytes
        record["raw"] = record["raw"].hex().encode()
    writer = make_registered(1, "t.W", 1, WRITER).parsed
    reader = make_registered(2, "t.R", 1, READER).parsed
    out = bytearray()
    compile_encoder(WRITER)(record, out)
    ours, _ = compile_decoder(WRITER, READER, max_size=1 << 20)(bytes(out), 0, len(out))
    theirs = fastavro.schemaless_reader(io.BytesIO(out), writer, reader)
    assert same(ours, theirs)
    assert ours["e"] in ("A", "B") and ours["added"] == {"k": 1} and ours["opt"] is None


def test_resolved_defaults_are_fresh_per_record() -> None:
    codec = AvroCodec(Schemas(WRITER, READER))
    record = {"i": 1, "f": 1.0, "s": "", "raw": b"", "e": "C", "gone": [], "old": 1, "u": None, "plain": 1}
    value = codec.encode("t.W", record)
    first = codec.decode(value, "t.R")
    first["added"]["k"] = 99
    assert codec.decode(value, "t.R")["added"] == {"k": 1}
    assert first["e"] == "A"  # C is unknown to the reader: its default


@pytest.mark.parametrize(
    ("change", "path"),
    [
        ({"b": 1}, "b"),
        ({"i": True}, "i"),
        ({"i": 2**31}, "i"),
        ({"l": 1.5}, "l"),
        ({"f": "1"}, "f"),
        ({"s": b"x"}, "s"),
        ({"by": "x"}, "by"),
        ({"fx": b"123"}, "fx"),
        ({"e": "Z"}, "e"),
        ({"arr": [1, "2"]}, "arr[]"),
        ({"m": {"k": 3}}, "m{}"),
        ({"u": 1.5}, "u"),
        ({"tree": {"v": 1, "kids": [{"v": "x", "kids": []}]}}, "v"),
        ({"nothing": 0}, "nothing"),
        ({"unknown": 1}, ""),
    ],
)
def test_encode_errors_name_the_field(change: dict[str, Any], path: str) -> None:
    codec = AvroCodec(Schemas(ALL))
    record = {
        "b": True, "i": 1, "l": 2, "f": 0.5, "d": 0.25, "s": "s", "by": b"", "fx": b"1234", "e": "A",
        "arr": [], "m": {}, "u": None, "deep": [], "tree": None, "nothing": None,
    }  # fmt: skip
    codec.encode("t.Sink", record)
    with pytest.raises(EncodeError) as err:
        codec.encode("t.Sink", {**record, **change})
    assert err.value.path == path and err.value.subject == "t.Sink"


def test_encode_reports_missing_required_fields_and_oversize() -> None:
    codec = AvroCodec(Schemas(ALL), max_record_size=32)
    with pytest.raises(EncodeError, match="required field is missing") as err:
        codec.encode("t.Sink", {"b": True})
    assert err.value.path == "i"
    big = {"b": True, "i": 1, "l": 2, "f": 0.5, "d": 0.25, "s": "s" * 40, "by": b"", "fx": b"1234", "e": "A"}
    with pytest.raises(EncodeError, match="max record size"):
        codec.encode(
            "t.Sink", {**big, "arr": [], "m": {}, "u": None, "deep": [], "tree": None, "nothing": None}
        )


def test_deep_recursion_is_not_avro_not_a_crash() -> None:
    codec = AvroCodec(Schemas(ALL))
    record = {
        "b": True, "i": 1, "l": 2, "f": 0.5, "d": 0.25, "s": "s", "by": b"", "fx": b"1234", "e": "A",
        "arr": [], "m": {}, "u": None, "deep": [], "tree": None, "nothing": None,
    }  # fmt: skip
    prefix = codec.encode("t.Sink", record)[:-1]  # everything before tree (null: 1 byte; nothing: 0)

    def chain(depth: int) -> bytes:
        """tree = Node(v=0, kids=[Node(v=0, kids=[... kids=[]])]), depth nodes deep."""
        return b"\x02" + b"\x00\x02" * (depth - 1) + b"\x00\x00" + b"\x00" * (depth - 1)

    shallow = codec.decode(prefix + chain(3), "t.Sink")["tree"]
    assert shallow == {"v": 0, "kids": [{"v": 0, "kids": [{"v": 0, "kids": []}]}]}
    with pytest.raises(DecodeError) as err:
        codec.decode(prefix + chain(5000), "t.Sink")
    assert err.value.reason == "not_avro" and "deeply" in err.value.detail
