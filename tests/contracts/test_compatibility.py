"""Backward-transitive compatibility of the frozen registry, and the checker itself."""

from __future__ import annotations

import io
import random
from typing import Any

import fastavro
import pytest
from fastavro.utils import generate_many

from pipeline.contracts import AvroCodec, SchemaCatalogue
from pipeline.contracts.compatibility import resolution_problems
from pipeline.contracts.wire import frame

CATALOGUE = SchemaCatalogue.load()
SUBJECTS = CATALOGUE.subjects()
PAIRS = [
    (subject, older.version, newer.version)
    for subject in SUBJECTS
    for i, older in enumerate(CATALOGUE.versions(subject))
    for newer in CATALOGUE.versions(subject)[i:]
]


def test_the_registry_has_an_evolution_to_check() -> None:
    web = CATALOGUE.versions("omnipipe.events.WebEvent")
    assert [(s.schema_id, s.version) for s in web] == [(10, 1), (12, 2)]
    assert [f["name"] for f in web[1].schema["fields"]][-1] == "referrer"
    assert "referrer" not in {f["name"] for f in web[0].schema["fields"]}


@pytest.mark.parametrize(("subject", "older", "newer"), PAIRS)
def test_every_newer_reader_resolves_every_older_writer(subject: str, older: int, newer: int) -> None:
    versions = {s.version: s for s in CATALOGUE.versions(subject)}
    assert resolution_problems(versions[older].schema, versions[newer].schema) == []


@pytest.mark.parametrize("subject", SUBJECTS)
def test_latest_reader_reads_data_of_every_version(subject: str, codec: AvroCodec) -> None:
    latest = CATALOGUE.latest(subject)
    for writer in CATALOGUE.versions(subject):
        random.seed(f"{subject}/{writer.version}")
        for record in generate_many(writer.parsed, 50):
            out = io.BytesIO()
            fastavro.schemaless_writer(out, writer.parsed, record)
            decoded = codec.decode(frame(writer.schema_id, out.getvalue()), subject)
            expected = fastavro.schemaless_reader(io.BytesIO(out.getvalue()), writer.parsed, latest.parsed)
            assert decoded == expected
            assert decoded.keys() == {f["name"] for f in latest.schema["fields"]}


def test_web_event_v1_data_gets_the_v2_default(codec: AvroCodec) -> None:
    v1 = CATALOGUE.by_id(10)
    record = {"event_id": "e", "event_time": 1, "identifiers": {}, "type": "SEARCH", "query": "shoes"}
    out = io.BytesIO()
    fastavro.schemaless_writer(out, v1.parsed, record)
    decoded = codec.decode(frame(10, out.getvalue()), "omnipipe.events.WebEvent")
    assert decoded["referrer"] is None and decoded["query"] == "shoes"


# -- the checker on hand-made pairs -----------------------------------------
def rec(*fields: dict[str, Any], name: str = "t.R") -> dict[str, Any]:
    return {"type": "record", "name": name, "fields": list(fields)}


ENUM = {"type": "enum", "name": "t.E", "symbols": ["A", "B", "C"]}


@pytest.mark.parametrize(
    ("writer", "reader"),
    [
        (rec({"name": "a", "type": "int"}), rec({"name": "a", "type": "long"})),
        (rec({"name": "a", "type": "int"}), rec({"name": "a", "type": "double"})),
        (rec({"name": "a", "type": "float"}), rec({"name": "a", "type": "double"})),
        (rec({"name": "a", "type": "string"}), rec({"name": "a", "type": "bytes"})),
        (rec({"name": "a", "type": "int"}), rec({"name": "a", "type": ["null", "long"]})),
        (rec({"name": "a", "type": ["null", "int"]}), rec({"name": "a", "type": ["null", "int", "string"]})),
        (
            rec({"name": "a", "type": "int"}),
            rec({"name": "a", "type": "int"}, {"name": "b", "type": "int", "default": 0}),
        ),
        (
            rec({"name": "a", "type": "int"}, {"name": "gone", "type": "string"}),
            rec({"name": "a", "type": "int"}),
        ),
        (rec({"name": "old", "type": "int"}), rec({"name": "new", "type": "int", "aliases": ["old"]})),
        (
            rec({"name": "e", "type": ENUM}),
            rec({"name": "e", "type": {**ENUM, "symbols": ["A", "B"], "default": "A"}}),
        ),
        (
            rec({"name": "m", "type": {"type": "map", "values": "int"}}),
            rec({"name": "m", "type": {"type": "map", "values": "long"}}),
        ),
    ],
)
def test_compatible_changes(writer: dict[str, Any], reader: dict[str, Any]) -> None:
    assert resolution_problems(writer, reader) == []


@pytest.mark.parametrize(
    ("writer", "reader", "needle"),
    [
        (rec({"name": "a", "type": "long"}), rec({"name": "a", "type": "int"}), "cannot be read as int"),
        (rec({"name": "a", "type": "int"}), rec({"name": "b", "type": "int"}), "has no default"),
        (rec({"name": "a", "type": ["null", "string"]}), rec({"name": "a", "type": "string"}), "<null>"),
        (rec({"name": "a", "type": "int"}), rec({"name": "a", "type": ["null", "string"]}), "no branch"),
        (
            rec({"name": "e", "type": ENUM}),
            rec({"name": "e", "type": {**ENUM, "symbols": ["A"]}}),
            "lacks symbols",
        ),
        (rec({"name": "a", "type": "int"}), rec({"name": "a", "type": "int"}, name="t.Other"), "record t.R"),
        (
            rec({"name": "f", "type": {"type": "fixed", "name": "t.F", "size": 4}}),
            rec({"name": "f", "type": {"type": "fixed", "name": "t.F", "size": 8}}),
            "fixed size",
        ),
    ],
)
def test_incompatible_changes(writer: dict[str, Any], reader: dict[str, Any], needle: str) -> None:
    problems = resolution_problems(writer, reader)
    assert problems and needle in problems[0]


def test_recursive_types_terminate() -> None:
    node = rec({"name": "v", "type": "int"}, {"name": "next", "type": ["null", "t.R"], "default": None})
    assert resolution_problems(node, node) == []
