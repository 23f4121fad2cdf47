"""Deterministic malformed records for dead-letter testing.

One function per reason code; each takes a :class:`BadContext` and returns
the raw record value. The encoder is injected (``encode(subject, record)``
producing Confluent-framed Avro), so this module does not depend on the
codec implementation, and the schema id of a subject is read back from a
frame it produced.

Reason codes match ``pipeline.ingest.reasons.Reason``; ingest must dead-letter
each record with exactly that code.
"""

from __future__ import annotations

import copy
import json
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.simulate.journeys import DAY_MS, sample_record

Encode = Callable[[str, dict[str, Any]], bytes]

NOT_AVRO = "not_avro"
BAD_MAGIC_BYTE = "bad_magic_byte"
UNKNOWN_SCHEMA_ID = "unknown_schema_id"
TRUNCATED = "truncated"
EMPTY = "empty"
MISSING_IDENTIFIERS = "missing_identifiers"
FUTURE_EVENT_TIME = "future_event_time"
OVERSIZE = "oversize"
REASONS: tuple[str, ...] = (NOT_AVRO, BAD_MAGIC_BYTE, UNKNOWN_SCHEMA_ID, TRUNCATED, EMPTY,
                            MISSING_IDENTIFIERS, FUTURE_EVENT_TIME, OVERSIZE)

#: Ingest's default record limit (``IngestRules.max_record_bytes``).
MAX_RECORD_BYTES = 256 * 1024
UNKNOWN_ID = 999_999
FUTURE_SKEW_MS = 30 * DAY_MS
_HEADER = 5  # magic byte + 4-byte schema id

# Which string field of each subject can carry a huge value (all are ["null", "string"]).
_BIG_FIELD = {"web": "url", "app": "query", "pos": "receipt_id", "callcenter": "outcome",
              "email": "url", "push": "url", "sms": "url", "privacy": "source"}


@dataclass(frozen=True)
class BadContext:
    """Everything a maker needs: how to encode, and a valid record to spoil."""

    encode: Encode
    subject: str
    topic_key: str
    record: Mapping[str, Any]  # a valid record for ``subject``
    now_ms: int  # the run's "now": max(wall clock, end of simulated time)
    seq: int  # number of this bad record in the run


@dataclass(frozen=True, slots=True)
class BadRecord:
    seq: int
    reason: str
    topic_key: str
    key: bytes | None
    value: bytes


def _zigzag(n: int) -> bytes:
    """Avro long encoding (zigzag varint)."""
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while z & ~0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def _avro_string(s: str) -> bytes:
    raw = s.encode()
    return _zigzag(len(raw)) + raw


def schema_id_of(ctx: BadContext) -> int:
    """The registered id of ``ctx.subject``, read from a frame the encoder produced."""
    framed = ctx.encode(ctx.subject, dict(ctx.record))
    if len(framed) < _HEADER or framed[0] != 0:
        raise ValueError("encode() must return Confluent-framed Avro (magic byte 0 + 4-byte id)")
    return int(struct.unpack(">I", framed[1:5])[0])


def not_avro(ctx: BadContext) -> bytes:
    """Valid frame header and schema id, undecodable body.

    Every channel and control subject starts with ``event_id`` (string),
    ``event_time`` (long) and ``identifiers`` (a record whose first field is a
    ``["null", "string"]`` union). The body gives those two first fields, then
    union index 7 where only 0 and 1 exist, then JSON text: no Avro reader can
    get past the bad union index.
    """
    body = (_avro_string(f"garbage-{ctx.seq}") + _zigzag(ctx.now_ms) + _zigzag(7)
            + json.dumps({"oops": "this is json, not avro", "seq": ctx.seq}).encode())
    return b"\x00" + struct.pack(">I", schema_id_of(ctx)) + body


def bad_magic_byte(ctx: BadContext) -> bytes:
    """A JSON document where the Avro frame should be (first byte ``{``, not 0)."""
    doc = {"event_id": f"json-{ctx.seq}", "event_time": ctx.now_ms, "note": "producer sent JSON"}
    return json.dumps(doc).encode()


def unknown_schema_id(ctx: BadContext) -> bytes:
    """Magic byte 0, schema id 999999 (never registered), a plausible body."""
    framed = ctx.encode(ctx.subject, dict(ctx.record))
    return b"\x00" + struct.pack(">I", UNKNOWN_ID) + framed[_HEADER:]


def truncated(ctx: BadContext) -> bytes:
    """A valid frame cut inside the ``event_time`` varint, so the body cannot be read.

    Cutting a string field short would not do: a reader returns the short
    string without complaint when it is the last field. A varint cut before
    its final byte always runs out of input.
    """
    framed = ctx.encode(ctx.subject, dict(ctx.record))
    id_len = len(_avro_string(str(ctx.record["event_id"])))
    time_len = len(_zigzag(int(ctx.record["event_time"])))
    if time_len < 2:
        raise ValueError("event_time must be a real epoch-millis value")
    cut = _HEADER + id_len + 1 + ctx.seq % (time_len - 1)
    return framed[:cut]


def empty(ctx: BadContext) -> bytes:
    """No bytes at all (what a buggy producer sends for a failed serialisation)."""
    return b""


def missing_identifiers(ctx: BadContext) -> bytes:
    """A valid record whose identifiers are all null: nobody to attribute it to."""
    rec = copy.deepcopy(dict(ctx.record))
    rec["identifiers"] = {k: None for k in rec["identifiers"]}
    return ctx.encode(ctx.subject, rec)


def future_event_time(ctx: BadContext) -> bytes:
    """A valid record stamped 30 days after the run's "now" (a producer clock gone wrong)."""
    rec = copy.deepcopy(dict(ctx.record))
    rec["event_time"] = ctx.now_ms + FUTURE_SKEW_MS
    return ctx.encode(ctx.subject, rec)


def oversize(ctx: BadContext) -> bytes:
    """A valid record over the 256 KiB limit (a runaway query string or note)."""
    rec = copy.deepcopy(dict(ctx.record))
    field = _BIG_FIELD.get(ctx.topic_key, "url")
    if field not in rec:
        raise ValueError(f"no field to inflate for topic {ctx.topic_key!r}")
    filler = ("q=" + "x" * 63 + "&") * (MAX_RECORD_BYTES // 64 + 512)
    rec[field] = f"https://shop.example.com/search?{filler}"
    value = ctx.encode(ctx.subject, rec)
    assert len(value) > MAX_RECORD_BYTES
    return value


MAKERS: dict[str, Callable[[BadContext], bytes]] = {
    NOT_AVRO: not_avro,
    BAD_MAGIC_BYTE: bad_magic_byte,
    UNKNOWN_SCHEMA_ID: unknown_schema_id,
    TRUNCATED: truncated,
    EMPTY: empty,
    MISSING_IDENTIFIERS: missing_identifiers,
    FUTURE_EVENT_TIME: future_event_time,
    OVERSIZE: oversize,
}


def assignment(seq: int, topic_keys: Sequence[str], reasons: Sequence[str] = REASONS) -> tuple[str, str]:
    """(reason, topic_key) of the ``seq``-th bad record.

    Walks every (reason, topic) pair once per ``len(reasons) * len(topics)``
    records, reasons changing fastest, so even a short run covers every reason
    and, soon after, every topic.
    """
    if not topic_keys or not reasons:
        raise ValueError("need at least one topic and one reason")
    n_r, n_t = len(reasons), len(topic_keys)
    combo = seq % (n_r * n_t)
    r, block = combo % n_r, combo // n_r
    return reasons[r], topic_keys[(block + r) % n_t]


def make_bad(seq: int, reason: str, topic_key: str, subject: str, encode: Encode, *,
             seed: int, now_ms: int, event_time: int) -> BadRecord:
    """The ``seq``-th bad record of a run (deterministic in all arguments)."""
    maker = MAKERS.get(reason)
    if maker is None:
        raise ValueError(f"unknown bad-record reason {reason!r}; expected one of {REASONS}")
    base = sample_record(topic_key, seed, seq, event_time)
    ctx = BadContext(encode=encode, subject=subject, topic_key=topic_key, record=base,
                     now_ms=now_ms, seq=seq)
    return BadRecord(seq=seq, reason=reason, topic_key=topic_key, key=None, value=maker(ctx))
