"""Whatever the bytes, decode returns a valid record or raises DecodeError.

Anything decode accepts must also re-encode: the decoder never invents a
value its own schema would refuse.
"""

from __future__ import annotations

import random

from fastavro.utils import generate_many
from hypothesis import given
from hypothesis import strategies as st

from pipeline.contracts import AvroCodec, DecodeError, SchemaCatalogue
from pipeline.contracts.encoder import compile_encoder

CATALOGUE = SchemaCatalogue.load()
CODEC = AvroCodec(CATALOGUE)
SUBJECTS = CATALOGUE.subjects()
IDS = [s.schema_id for s in CATALOGUE]
RECORD_REASONS = {"empty", "bad_magic_byte", "truncated", "unknown_schema_id", "schema_mismatch", "not_avro"}


def _valid_values() -> list[tuple[str, bytes]]:
    random.seed(7)
    out = []
    for subject in SUBJECTS:
        for version in CATALOGUE.versions(subject):
            for record in generate_many(version.parsed, 5):
                body = bytearray(b"\x00" + version.schema_id.to_bytes(4, "big"))
                compile_encoder(version.schema)(record, body)
                out.append((subject, bytes(body)))
    return out


VALID = _valid_values()


def check(data: bytes, subject: str) -> None:
    try:
        record = CODEC.decode(data, subject)
    except DecodeError as exc:
        assert exc.reason in RECORD_REASONS, exc
        return
    assert isinstance(record, dict)
    CODEC.encode(subject, record)  # a decoded record is always a valid record


@given(st.binary(max_size=400), st.sampled_from(SUBJECTS))
def test_random_bytes(data: bytes, subject: str) -> None:
    check(data, subject)


@given(st.sampled_from(IDS), st.binary(max_size=400), st.sampled_from(SUBJECTS))
def test_garbage_after_a_valid_header(schema_id: int, body: bytes, subject: str) -> None:
    check(b"\x00" + schema_id.to_bytes(4, "big") + body, subject)


@given(st.sampled_from(VALID), st.data())
def test_truncated_valid_records(valid: tuple[str, bytes], data: st.DataObject) -> None:
    subject, value = valid
    cut = data.draw(st.integers(0, len(value) - 1))
    try:
        CODEC.decode(value[:cut], subject)
    except DecodeError as exc:
        assert exc.reason in {"empty", "truncated", "not_avro"}, exc
    # a shorter prefix can only be valid by accident (e.g. a null where a union started)


@given(st.sampled_from(VALID), st.data())
def test_bit_flips_and_splices(valid: tuple[str, bytes], data: st.DataObject) -> None:
    subject, value = valid
    mutated = bytearray(value)
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(mutated) - 1))
        mutated[position] ^= 1 << data.draw(st.integers(0, 7))
    if data.draw(st.booleans()):
        position = data.draw(st.integers(0, len(mutated)))
        mutated[position:position] = data.draw(st.binary(min_size=1, max_size=8))
    check(bytes(mutated), data.draw(st.sampled_from([subject, *SUBJECTS])))
