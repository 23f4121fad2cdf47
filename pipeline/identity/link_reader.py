"""Read only what identity needs from a canonical event: its id, time and identifiers.

The identity stage touches every event several times but needs 8 of the
canonical record's 36 fields, and those come first in the schema. Decoding
that prefix by hand costs a fraction of the full compiled decode. It only
applies to records written with the schema it was written for (the header
ingest writes); anything else goes through the full ``AvroCodec.decode``,
so a new canonical version is always read correctly, just more slowly.
"""

from __future__ import annotations

from typing import Any

from pipeline.contracts.codec import AvroCodec
from pipeline.contracts.errors import DecodeError
from pipeline.identity.model import LinkEvent

#: Canonical fields 7-12, in schema order, and the identifier kind each one holds.
_ID_KINDS = ("cust", "card", "email", "phone", "dev", "anon")
#: The canonical fields this reader was written against (checked once at start-up).
PREFIX_FIELDS = ("event_id", "event_time", "ingest_time", "channel", "type", "key", "customer_id",
                 "loyalty_card", "email_hash", "phone_hash", "device_id", "anonymous_id")


def _long(data: bytes, pos: int) -> tuple[int, int]:
    b = data[pos]
    pos += 1
    n = b & 0x7F
    shift = 7
    while b & 0x80:
        b = data[pos]
        pos += 1
        n |= (b & 0x7F) << shift
        shift += 7
    return (n >> 1) ^ -(n & 1), pos


def _string(data: bytes, pos: int) -> tuple[str, int]:
    size, pos = _long(data, pos)
    end = pos + size
    if size < 0:
        raise ValueError(f"negative string length {size}")
    if end > len(data):
        raise IndexError("string past the end")
    return data[pos:end].decode(), end


def read_link_event(data: bytes) -> LinkEvent:
    """``LinkEvent`` from a framed canonical record whose header the caller already checked.

    Raises DecodeError(truncated / not_avro) on a corrupt body and ValueError
    (from LinkEvent) when the identifiers are unusable.
    """
    try:
        pos = 5
        event_id, pos = _string(data, pos)
        event_time, pos = _long(data, pos)
        _ingest_time, pos = _long(data, pos)
        branch, pos = _long(data, pos)
        if branch == 1:
            _channel, pos = _long(data, pos)
        elif branch != 0:
            raise ValueError(f"channel union branch {branch}")
        _type, pos = _string(data, pos)
        _key, pos = _string(data, pos)
        refs = []
        for kind in _ID_KINDS:
            branch, pos = _long(data, pos)
            if branch == 1:
                value, pos = _string(data, pos)
                if value:
                    refs.append(f"{kind}:{value}")
            elif branch != 0:
                raise ValueError(f"{kind} union branch {branch}")
    except IndexError:
        raise DecodeError("truncated", "canonical record ends inside its identifier fields") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise DecodeError("not_avro", f"canonical record prefix: {exc}") from None
    return LinkEvent(event_id, event_time, tuple(refs))


_EXPECTED_TYPES: tuple[Any, ...] = ("string", {"type": "long", "logicalType": "timestamp-millis"},
                                    {"type": "long", "logicalType": "timestamp-millis"}, None, "string",
                                    "string", *(["null", "string"],) * 6)


def fast_header(codec: AvroCodec, subject: str) -> bytes | None:
    """The header of records this reader understands, or None if the canonical schema moved on."""
    fields = codec.writer_schema(subject).get("fields", [])[: len(PREFIX_FIELDS)]
    if tuple(f.get("name") for f in fields) != PREFIX_FIELDS:
        return None
    for f, expected in zip(fields, _EXPECTED_TYPES, strict=True):
        if expected is None:  # the channel: a nullable enum
            t = f["type"]
            if not (isinstance(t, list) and len(t) == 2 and t[0] == "null"):
                return None
        elif f["type"] != expected:
            return None
    return codec.writer_header(subject)
