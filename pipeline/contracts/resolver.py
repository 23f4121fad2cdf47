"""What a schema source (local catalogue or Schema Registry) hands the codec."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Protocol

import fastavro

from pipeline.contracts.canonical import Schema, canonicalize, dumps, strip_logical_types
from pipeline.errors import SchemaError


@dataclass(frozen=True)
class RegisteredSchema:
    """One registered version of a subject, parsed once.

    ``parsed`` is fastavro's parse of the schema with logical types stripped
    (timestamps are int epoch millis; the binary encoding is the same), for
    code that calls fastavro directly. ``canonical_json`` is the
    self-contained text that is registered and fingerprinted.
    """

    schema_id: int
    subject: str
    version: int
    parsed: Any = field(compare=False, repr=False)
    canonical_json: str = field(repr=False)

    @property
    def schema(self) -> Schema:
        """The canonical schema as JSON values (a new copy on each call)."""
        return json.loads(self.canonical_json)

    @property
    def fingerprint(self) -> str:
        """SHA-256 of ``canonical_json``: detects any edit of a frozen snapshot."""
        return fingerprint(self.canonical_json)


class SchemaResolver(Protocol):
    """Where the codec finds writer schemas by id and reader schemas by subject."""

    def by_id(self, schema_id: int) -> RegisteredSchema:
        """The schema registered under ``schema_id``; raises UnknownSchemaId."""
        ...

    def latest(self, subject: str) -> RegisteredSchema:
        """The newest version of ``subject``; raises UnknownSubject."""
        ...


def fingerprint(canonical_json: str) -> str:
    return hashlib.sha256(canonical_json.encode("utf-8")).hexdigest()


def make_registered(schema_id: int, subject: str, version: int, schema: Schema | str) -> RegisteredSchema:
    """Canonicalize and parse a self-contained schema (JSON text or values)."""
    try:
        value = json.loads(schema) if isinstance(schema, str) else schema
        canonical = canonicalize(value)
        parsed = fastavro.parse_schema(strip_logical_types(canonical), named_schemas={})
    except SchemaError:
        raise
    except Exception as exc:  # fastavro and json raise many types for a bad schema
        raise SchemaError(f"schema id {schema_id} ({subject} v{version}) is invalid: {exc}") from exc
    return RegisteredSchema(schema_id, subject, version, parsed, dumps(canonical))
