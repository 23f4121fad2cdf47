"""Confluent wire format: magic byte 0, 4-byte big-endian schema id, Avro body.

Every Kafka value Omnipipe writes or reads is framed this way, so Confluent
serializers, Connect and ksqlDB interoperate with it unchanged.
"""

from __future__ import annotations

import struct

from pipeline.contracts.errors import DecodeError

MAGIC_BYTE = 0
HEADER_SIZE = 5
MAX_SCHEMA_ID = 2**31 - 1  # the registry's ids are Java ints
_HEADER = struct.Struct(">bI")


def header(schema_id: int) -> bytes:
    """The 5-byte prefix for ``schema_id`` (the codec builds it once per id)."""
    if not 0 <= schema_id <= MAX_SCHEMA_ID:
        raise ValueError(f"schema id {schema_id} is outside 0..{MAX_SCHEMA_ID}")
    return _HEADER.pack(MAGIC_BYTE, schema_id)


def frame(schema_id: int, body: bytes | bytearray | memoryview) -> bytes:
    """``body`` prefixed with the wire header for ``schema_id``."""
    return header(schema_id) + bytes(body)


def check_header(data: bytes | bytearray | memoryview) -> int:
    """The schema id of a framed value; DecodeError (empty, bad_magic_byte, truncated)."""
    if not data:
        raise DecodeError("empty", "record value has 0 bytes")
    if data[0] != MAGIC_BYTE:
        raise DecodeError(
            "bad_magic_byte", f"first byte is {data[0]:#04x}, expected 0x00 (not Confluent-framed)"
        )
    if len(data) < HEADER_SIZE:
        raise DecodeError("truncated", f"{len(data)} bytes is shorter than the {HEADER_SIZE}-byte header")
    return int.from_bytes(data[1:HEADER_SIZE], "big")


def unframe(data: bytes | bytearray | memoryview) -> tuple[int, memoryview]:
    """Split a framed value into (schema id, body) without copying the body."""
    schema_id = check_header(data)
    return schema_id, memoryview(data)[HEADER_SIZE:]
