"""Read ``schemas/src``: shared types first, then one schema per subject.

fastavro parses every source (so its validation of names, defaults and
symbols applies), and :mod:`canonical` turns each subject into the
self-contained text that is snapshotted, fingerprinted and registered.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fastavro

from pipeline.contracts.canonical import Schema, canonicalize, collect_definitions, dumps
from pipeline.errors import SchemaError

COMMON_DIR = "common"


@dataclass(frozen=True)
class SourceSchema:
    """One subject as written in ``schemas/src``, expanded."""

    subject: str
    path: Path
    schema: Schema  # canonical (expanded) JSON value
    canonical_json: str


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SchemaError(f"{path}: cannot read schema: {exc}") from exc


def load_common(src_dir: Path) -> dict[str, tuple[Schema, str]]:
    """Shared named types, validated in dependency order by fastavro."""
    raws = {p: read_json(p) for p in sorted((src_dir / COMMON_DIR).glob("*.avsc"))}
    known: dict[str, tuple[Schema, str]] = {}
    for raw in raws.values():
        known.update(collect_definitions(raw))
    for path, raw in raws.items():
        _fastavro_check(path, canonicalize(raw, known))
    return known


def build_source(path: Path, raw: Schema, known: dict[str, tuple[Schema, str]]) -> SourceSchema:
    """Validate one subject schema and expand it against the shared types."""
    if not isinstance(raw, dict) or raw.get("type") != "record":
        raise SchemaError(f"{path}: a subject schema must be a record")
    try:
        schema = canonicalize(raw, known)
    except SchemaError as exc:
        raise SchemaError(f"{path}: {exc}") from exc
    _fastavro_check(path, schema)
    return SourceSchema(subject=schema["name"], path=path, schema=schema, canonical_json=dumps(schema))


def load_sources(src_dir: Path) -> dict[str, SourceSchema]:
    """Subject -> source schema for every ``*.avsc`` directly under ``src_dir``."""
    known = load_common(src_dir)
    sources: dict[str, SourceSchema] = {}
    for path in sorted(src_dir.glob("*.avsc")):
        source = build_source(path, read_json(path), known)
        if source.subject in sources:
            raise SchemaError(
                f"{path}: subject {source.subject} also defined in {sources[source.subject].path}"
            )
        sources[source.subject] = source
    if not sources:
        raise SchemaError(f"{src_dir}: no subject schemas found")
    return dict(sorted(sources.items()))


def _fastavro_check(path: Path, schema: Schema) -> None:
    """The expanded form must stand alone: parse it with no shared names."""
    try:
        fastavro.parse_schema(schema, named_schemas={}, _write_hint=False)
    except Exception as exc:  # fastavro raises SchemaParseException, ValueError, KeyError...
        raise SchemaError(f"{path}: invalid Avro schema: {exc}") from exc
