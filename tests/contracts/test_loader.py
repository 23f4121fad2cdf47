"""Sources expand into one self-contained, deterministic text per subject."""

from __future__ import annotations

import json
from pathlib import Path

import fastavro
import pytest

from pipeline.contracts.canonical import canonicalize, dumps
from pipeline.contracts.catalogue import DEFAULT_ROOT
from pipeline.contracts.loader import load_sources
from pipeline.errors import SchemaError

SOURCES = load_sources(DEFAULT_ROOT / "src")


def test_subjects_are_record_full_names() -> None:
    assert list(SOURCES) == sorted(SOURCES)
    assert "omnipipe.events.WebEvent" in SOURCES and len(SOURCES) == 14  # 14: omnipipe.catalogue.StockChange


@pytest.mark.parametrize("subject", sorted(SOURCES))
def test_expanded_form_stands_alone_and_is_stable(subject: str) -> None:
    source = SOURCES[subject]
    fastavro.parse_schema(json.loads(source.canonical_json), named_schemas={})
    assert dumps(canonicalize(json.loads(source.canonical_json))) == source.canonical_json


def test_shared_types_are_defined_once_then_referenced() -> None:
    """Defining LineItem twice (as fastavro's expand_schema does) breaks Java registries."""
    text = SOURCES["omnipipe.events.WebEvent"].canonical_json
    assert text.count('"name":"omnipipe.common.LineItem"') == 1
    assert '"items":"omnipipe.common.LineItem"' in text
    assert '"logicalType":"timestamp-millis"' in text  # kept in the contract, stripped for decoding


def test_key_order_and_whitespace_do_not_matter() -> None:
    a = {"type": "record", "name": "R", "namespace": "n", "fields": [{"type": "int", "name": "x"}]}
    b = {"fields": [{"name": "x", "type": {"type": "int"}}], "name": "n.R", "type": "record"}
    assert (
        dumps(canonicalize(a))
        == dumps(canonicalize(b))
        == ('{"type":"record","name":"n.R","fields":[{"name":"x","type":"int"}]}')
    )


def test_unknown_reference_and_duplicate_subject_are_errors(tmp_path: Path) -> None:
    (tmp_path / "common").mkdir()
    bad = {"type": "record", "name": "x.R", "fields": [{"name": "a", "type": "x.Missing"}]}
    (tmp_path / "r.avsc").write_text(json.dumps(bad))
    with pytest.raises(SchemaError, match="unknown type"):
        load_sources(tmp_path)
    ok = {"type": "record", "name": "x.R", "fields": [{"name": "a", "type": "int"}]}
    (tmp_path / "r.avsc").write_text(json.dumps(ok))
    (tmp_path / "r2.avsc").write_text(json.dumps(ok))
    with pytest.raises(SchemaError, match="also defined"):
        load_sources(tmp_path)


def test_invalid_defaults_are_caught_by_fastavro(tmp_path: Path) -> None:
    (tmp_path / "common").mkdir()
    bad = {"type": "record", "name": "x.R", "fields": [{"name": "a", "type": "int", "default": "one"}]}
    (tmp_path / "r.avsc").write_text(json.dumps(bad))
    with pytest.raises(SchemaError, match="invalid Avro schema"):
        load_sources(tmp_path)
