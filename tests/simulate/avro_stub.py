"""A small stand-in for the project's AvroCodec, built on fastavro (tests only).

Parses the common types first (Channel, LineItem, Identifiers), then every
subject, with ``logicalType`` stripped as the runtime schemas are, and frames
bodies the Confluent way: ``b"\\x00" + 4-byte big-endian schema id + body``.
"""

from __future__ import annotations

import io
import json
import struct
from pathlib import Path
from typing import Any

import fastavro

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas" / "src"
COMMON = ("omnipipe.common.Channel", "omnipipe.common.LineItem", "omnipipe.common.Identifiers")


class DecodeError(ValueError):
    pass


def _strip_logical(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _strip_logical(v) for k, v in node.items() if k != "logicalType"}
    if isinstance(node, list):
        return [_strip_logical(v) for v in node]
    return node


class StubCodec:
    """Subjects get ids 1..N in sorted order; encode/decode like the real codec's contract."""

    def __init__(self, schema_dir: Path = SCHEMA_DIR) -> None:
        named: dict[str, Any] = {}
        for name in COMMON:
            raw = json.loads((schema_dir / "common" / f"{name}.avsc").read_text())
            fastavro.parse_schema(_strip_logical(raw), named_schemas=named)
        subjects: dict[str, Any] = {}
        for path in sorted(schema_dir.glob("*.avsc")):
            raw = _strip_logical(json.loads(path.read_text()))
            subject = f"{raw['namespace']}.{raw['name']}"
            subjects[subject] = fastavro.parse_schema(raw, named_schemas=named)
        self.schemas = subjects
        self.ids = {s: i for i, s in enumerate(sorted(subjects), start=1)}
        self.by_id = {i: s for s, i in self.ids.items()}

    def encode(self, subject: str, record: dict[str, Any]) -> bytes:
        buf = io.BytesIO()
        buf.write(b"\x00" + struct.pack(">I", self.ids[subject]))
        fastavro.schemaless_writer(buf, self.schemas[subject], record)
        return buf.getvalue()

    def decode(self, data: bytes, subject: str | None = None) -> dict[str, Any]:
        if len(data) < 5:
            raise DecodeError("shorter than a frame header")
        if data[0] != 0:
            raise DecodeError("bad magic byte")
        schema_id = struct.unpack(">I", data[1:5])[0]
        if schema_id not in self.by_id:
            raise DecodeError(f"unknown schema id {schema_id}")
        writer = self.schemas[self.by_id[schema_id]]
        buf = io.BytesIO(data[5:])
        try:
            record = fastavro.schemaless_reader(buf, writer, None)
        except Exception as exc:  # fastavro raises many types
            raise DecodeError(f"undecodable body: {type(exc).__name__}") from exc
        if buf.tell() != len(data) - 5:
            raise DecodeError("trailing bytes after the record")
        assert isinstance(record, dict)
        return record
