"""Confluent framing: magic byte 0, big-endian id, body untouched."""

from __future__ import annotations

import pytest

from pipeline.contracts import DecodeError, frame, unframe
from pipeline.contracts.wire import header


def test_frame_layout() -> None:
    assert frame(0x01020304, b"body") == b"\x00\x01\x02\x03\x04body"
    assert frame(12, memoryview(b"")) == b"\x00\x00\x00\x00\x0c"


def test_unframe_returns_id_and_body_view() -> None:
    schema_id, body = unframe(frame(2**31 - 1, b"\x02ab"))
    assert schema_id == 2**31 - 1
    assert isinstance(body, memoryview) and body.tobytes() == b"\x02ab"


def test_unframe_accepts_empty_body() -> None:
    assert unframe(b"\x00\x00\x00\x00\x07") == (7, memoryview(b""))


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        (b"\x01\x00\x00\x00\x01body", "bad_magic_byte"),
        (b"{", "bad_magic_byte"),
        (b"\x00", "truncated"),
        (b"\x00\x00\x00\x01", "truncated"),
    ],
)
def test_unframe_rejects_bad_headers(data: bytes, reason: str) -> None:
    with pytest.raises(DecodeError) as err:
        unframe(data)
    assert err.value.reason == reason


@pytest.mark.parametrize("schema_id", [-1, 2**31])
def test_header_rejects_ids_outside_java_int(schema_id: int) -> None:
    with pytest.raises(ValueError):
        header(schema_id)
