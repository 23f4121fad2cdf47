"""Deterministic malformed records for dead-letter testing.

One function per reason code; each takes a :class:`BadContext` and returns
the raw record value. The encoder is injected (``encode(subject, record)``
producing Confluent-framed Avro), so this module does not depend on the
codec implementation, and the schema id of a subject is read back from a
frame it produced.

Reason codes match ``pipeline.ingest.reasons.Reason``; ingest must dead-letter
each record with exactly that code. :data:`REASONS` holds every reason a
producer's data can cause (all of ``Reason`` but ``unknown_topic`` and
``internal_error``, which say something about ingest, not the record). Most
can be made for any ingest topic; :data:`ONLY_ON` lists those that cannot
(``invalid_amount`` needs a schema with amounts, ``invalid_control`` the
privacy control topic), and :func:`assignment` only pairs a reason with a
topic it can be made for.
"""

from __future__ import annotations

import copy
import functools
import json
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pipeline.simulate.journeys import APP, DAY_MS, POS, PRIVACY, TOPIC_KEYS, WEB, run_tag, sample_record
from pipeline.topology.catalogue import load_catalogue

Encode = Callable[[str, dict[str, Any]], bytes]

NOT_AVRO = "not_avro"
BAD_MAGIC_BYTE = "bad_magic_byte"
UNKNOWN_SCHEMA_ID = "unknown_schema_id"
TRUNCATED = "truncated"
EMPTY = "empty"
MISSING_IDENTIFIERS = "missing_identifiers"
FUTURE_EVENT_TIME = "future_event_time"
OVERSIZE = "oversize"
SCHEMA_MISMATCH = "schema_mismatch"
INVALID_IDENTIFIER = "invalid_identifier"
STALE_EVENT_TIME = "stale_event_time"
INVALID_AMOUNT = "invalid_amount"
INVALID_CONTROL = "invalid_control"
REASONS: tuple[str, ...] = (NOT_AVRO, BAD_MAGIC_BYTE, UNKNOWN_SCHEMA_ID, TRUNCATED, EMPTY,
                            MISSING_IDENTIFIERS, FUTURE_EVENT_TIME, OVERSIZE, SCHEMA_MISMATCH,
                            INVALID_IDENTIFIER, STALE_EVENT_TIME, INVALID_AMOUNT, INVALID_CONTROL)

#: Ingest's default record limit (``IngestRules.max_record_bytes``).
MAX_RECORD_BYTES = 256 * 1024
#: Ingest's default oldest acceptable event (``IngestRules.max_event_age_ms``).
MAX_EVENT_AGE_MS = 400 * DAY_MS
UNKNOWN_ID = 999_999
FUTURE_SKEW_MS = 30 * DAY_MS
#: How far past ingest's age limit a stale record is, so a late consumer still finds it stale.
STALE_MARGIN_MS = 30 * DAY_MS
_HEADER = 5  # magic byte + 4-byte schema id

#: The purchase type of each topic whose schema carries an order amount.
_PURCHASE_TYPE = {WEB: "PURCHASE", APP: "PURCHASE", POS: "STORE_PURCHASE"}

#: Reasons that can only be made for some topics; every other reason applies to every
#: ingest topic. Ingest reports a refused field as ``invalid_amount`` on a channel topic
#: and as ``invalid_control`` on the privacy topic, so each needs its own kind of topic.
ONLY_ON: Mapping[str, frozenset[str]] = {
    INVALID_AMOUNT: frozenset(_PURCHASE_TYPE),
    INVALID_CONTROL: frozenset({PRIVACY}),
}

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
    seed: int = 0  # the run's seed, for records built from scratch
    #: topic key -> subject of every ingest topic (``schema_mismatch`` writes another one's)
    subjects: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class BadContact:
    """The raw e-mail and phone every bad record built from a valid one carries (no person's)."""

    email: str
    phone: str


def bad_contact(seed: int, seq: int) -> BadContact:
    """Valid, so ingest can attribute the record; ``+999`` is no country's code, so nobody's number."""
    return BadContact(f"bad.{run_tag(seed)}.{seq}@example.net", f"+999{seq:09d}")


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
    """A JSON document where the Avro frame should be (first byte ``{``, not 0), with a raw e-mail."""
    doc = {"event_id": f"json-{ctx.seq}", "event_time": ctx.now_ms, "note": "producer sent JSON",
           "identifiers": ctx.record["identifiers"]}
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


def schema_mismatch(ctx: BadContext) -> bytes:
    """A well-formed record of another ingest topic's subject, sent to this topic.

    Its schema id is registered, but for a schema (another record name) that
    cannot be read as this topic's subject: a producer using the wrong
    serializer. Which other topic it comes from rotates with ``seq``.
    """
    others = [k for k, subject in ctx.subjects.items() if subject != ctx.subject]
    if not others:
        raise ValueError("schema_mismatch needs the subjects of other ingest topics")
    other = others[ctx.seq % len(others)]
    record = sample_record(other, ctx.seed, ctx.seq, int(ctx.record["event_time"]))
    value = ctx.encode(ctx.subjects[other], record)
    if value[1:_HEADER] == struct.pack(">I", schema_id_of(ctx)):
        raise ValueError(f"{ctx.subjects[other]} and {ctx.subject} share a schema id")
    return value


#: (identifier kind, a value ingest's format checks refuse); which one rotates with ``seq``.
_BAD_IDENTIFIERS = (
    ("email", "no-at-sign.example.com"),  # not an e-mail address
    ("phone", "call me maybe"),  # not 7 to 15 digits
    ("customer_id", "cust 0042"),  # opaque ids cannot contain spaces
    ("device_id", "d" * 129),  # nor be longer than 128 characters
)


def invalid_identifier(ctx: BadContext) -> bytes:
    """A valid record with one identifier of an impossible format; the others are fine."""
    rec = copy.deepcopy(dict(ctx.record))
    kind, value = _BAD_IDENTIFIERS[ctx.seq % len(_BAD_IDENTIFIERS)]
    rec["identifiers"][kind] = value
    return ctx.encode(ctx.subject, rec)


def stale_event_time(ctx: BadContext) -> bytes:
    """A valid record stamped 430 days before the run's "now" (30 past ingest's limit)."""
    rec = copy.deepcopy(dict(ctx.record))
    rec["event_time"] = ctx.now_ms - MAX_EVENT_AGE_MS - STALE_MARGIN_MS
    return ctx.encode(ctx.subject, rec)


def invalid_amount(ctx: BadContext) -> bytes:
    """A purchase whose amount no later stage can apply: negative, NaN or infinite (by ``seq``).

    Only for topics with amounts (:data:`ONLY_ON`); the negative one is a
    refund sent as a purchase.
    """
    purchase = _PURCHASE_TYPE.get(ctx.topic_key)
    if purchase is None:
        raise ValueError(f"topic {ctx.topic_key!r} has no amount; invalid_amount needs one of "
                         f"{sorted(_PURCHASE_TYPE)}")
    rec = copy.deepcopy(dict(ctx.record))
    items = rec.get("items") or ([rec["product"]] if rec.get("product") else [])
    total = sum(it["quantity"] * it["unit_price"] for it in items) or 10.0
    rec.update(type=purchase, items=items, amount=(-total, float("nan"), float("inf"))[ctx.seq % 3],
               currency=rec.get("currency") or "GBP")
    if ctx.topic_key != POS:
        rec["order_id"] = f"bad-order-{ctx.seq}"
    return ctx.encode(ctx.subject, rec)


def invalid_control(ctx: BadContext) -> bytes:
    """A consent change that does not say which channel, or whether it is granted (by ``seq``)."""
    if ctx.topic_key != PRIVACY:
        raise ValueError(f"invalid_control is a privacy control record, not one for {ctx.topic_key!r}")
    rec = copy.deepcopy(dict(ctx.record))
    rec["type"] = "CONSENT_CHANGE"
    rec["consent_channel" if ctx.seq % 2 == 0 else "granted"] = None
    return ctx.encode(ctx.subject, rec)


MAKERS: dict[str, Callable[[BadContext], bytes]] = {
    NOT_AVRO: not_avro,
    BAD_MAGIC_BYTE: bad_magic_byte,
    UNKNOWN_SCHEMA_ID: unknown_schema_id,
    TRUNCATED: truncated,
    EMPTY: empty,
    MISSING_IDENTIFIERS: missing_identifiers,
    FUTURE_EVENT_TIME: future_event_time,
    OVERSIZE: oversize,
    SCHEMA_MISMATCH: schema_mismatch,
    INVALID_IDENTIFIER: invalid_identifier,
    STALE_EVENT_TIME: stale_event_time,
    INVALID_AMOUNT: invalid_amount,
    INVALID_CONTROL: invalid_control,
}


def can_make(reason: str, topic_key: str) -> bool:
    """Whether a ``reason`` record can be made for ``topic_key`` (see :data:`ONLY_ON`)."""
    only = ONLY_ON.get(reason)
    return only is None or topic_key in only


def topics_for(reason: str, topic_keys: Sequence[str] = TOPIC_KEYS) -> tuple[str, ...]:
    """The topics of ``topic_keys`` a ``reason`` record can be made for, in their order."""
    return tuple(t for t in topic_keys if can_make(reason, t))


def assignment(seq: int, topic_keys: Sequence[str], reasons: Sequence[str] = REASONS) -> tuple[str, str]:
    """(reason, topic_key) of the ``seq``-th bad record.

    Only pairs a reason with a topic it can be made for (:func:`can_make`);
    a reason none of ``topic_keys`` allows is left out (ValueError if that
    leaves nothing). Every ``len(reasons) * len(topic_keys)`` records (counting
    only the reasons kept) each reason comes equally often, reasons changing
    fastest, and each reason visits every topic it allows, so even a short run
    covers every reason and, soon after, every (reason, topic) pair. When every
    reason allows every topic, each pair comes exactly once per cycle.
    """
    if not topic_keys or not reasons:
        raise ValueError("need at least one topic and one reason")
    usable = [(r, allowed) for r in reasons if (allowed := topics_for(r, topic_keys))]
    if not usable:
        raise ValueError(f"none of the reasons {list(reasons)} can be made for topics {list(topic_keys)}")
    n_r, n_t = len(usable), len(topic_keys)
    combo = seq % (n_r * n_t)
    r, block = combo % n_r, combo // n_r
    reason, allowed = usable[r]
    return reason, allowed[(block + r) % len(allowed)]


@functools.cache
def _catalogue_subjects() -> Mapping[str, str]:
    return {spec.key: spec.avro_subject for spec in load_catalogue().ingest_sources}


def make_bad(seq: int, reason: str, topic_key: str, subject: str, encode: Encode, *,
             seed: int, now_ms: int, event_time: int,
             subjects: Mapping[str, str] | None = None) -> BadRecord:
    """The ``seq``-th bad record of a run (deterministic in all arguments).

    ``subjects`` maps every ingest topic key to its subject (default: the
    topic catalogue's); ``schema_mismatch`` writes another topic's subject.
    """
    maker = MAKERS.get(reason)
    if maker is None:
        raise ValueError(f"unknown bad-record reason {reason!r}; expected one of {REASONS}")
    if not can_make(reason, topic_key):
        raise ValueError(f"a {reason} record cannot be made for topic {topic_key!r}; "
                         f"only for {sorted(ONLY_ON[reason])}")
    base = sample_record(topic_key, seed, seq, event_time)
    contact = bad_contact(seed, seq)  # raw PII in dead letters: ingest must never keep it in plaintext
    base["identifiers"] = {**base["identifiers"], "email": contact.email, "phone": contact.phone}
    ctx = BadContext(encode=encode, subject=subject, topic_key=topic_key, record=base,
                     now_ms=now_ms, seq=seq, seed=seed,
                     subjects=_catalogue_subjects() if subjects is None else subjects)
    return BadRecord(seq=seq, reason=reason, topic_key=topic_key, key=None, value=maker(ctx))
