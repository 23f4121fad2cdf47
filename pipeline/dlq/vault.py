"""The DLQ key vault: wrapped key shares by ref, and the records that change it (pure).

Topic ``dlq.keys`` (keyed by ref, so every record about one ref is on one
partition, in order) carries msgpack arrays:

- ``["key", ref, key_id, wrapped_share, created_at_ms]``: ingest, one per
  ref of each dead letter, acknowledged before the rejected record's offset
  is committed;
- ``["erase", ref, at_ms]``: the identity stage, for every ref of an erased
  person: every share of the ref is deleted;
- ``["sweep", before_ms]``: a worker timer, sent to every partition: shares
  created before ``before_ms`` (the DLQ retention ago) are deleted, their
  dead letters are gone from ``events.dlq`` anyway.

The vault itself is a Faust table (``agent.py``) with one row per share:
key ``ref \\x00 key_id``, value msgpack ``[wrapped_share, created_at_ms]``;
a deleted row is a tombstone on its compacted changelog. ``apply`` is the
one implementation of the rules, over any mutable mapping (the Faust table,
or a dict when a reader rebuilds the vault).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, MutableMapping
from dataclasses import dataclass

import msgpack

from pipeline.dlq.crypto import KeyShare

_SEP = b"\x00"


class VaultRecordError(ValueError):
    """A ``dlq.keys`` record or vault row that is not one of ours."""


@dataclass(frozen=True, slots=True)
class KeyRecord:
    ref: str
    key_id: str
    wrapped: bytes
    created_at: int


@dataclass(frozen=True, slots=True)
class EraseRecord:
    ref: str
    at: int


@dataclass(frozen=True, slots=True)
class SweepRecord:
    before: int


VaultRecord = KeyRecord | EraseRecord | SweepRecord


@dataclass(frozen=True, slots=True)
class VaultRow:
    wrapped: bytes
    created_at: int


@dataclass(frozen=True, slots=True)
class RowKey:
    ref: str
    key_id: str


@dataclass(frozen=True, slots=True)
class Applied:
    """What ``apply`` did: rows written and deleted (for metrics)."""

    stored: int = 0
    erased: int = 0
    expired: int = 0


# -- dlq.keys records -----------------------------------------------------------

def key_record(share: KeyShare, created_at: int) -> bytes:
    return msgpack.packb(["key", share.ref, share.key_id, share.wrapped, created_at],  # type: ignore[no-any-return]
                         use_bin_type=True)


def erase_record(ref: str, at: int) -> bytes:
    """The identity stage sends this, keyed by ``ref``, for every ref of an erased person."""
    return msgpack.packb(["erase", ref, at], use_bin_type=True)  # type: ignore[no-any-return]


def sweep_record(before: int) -> bytes:
    return msgpack.packb(["sweep", before], use_bin_type=True)  # type: ignore[no-any-return]


def decode_record(data: bytes | None) -> VaultRecord:
    try:
        doc = msgpack.unpackb(data, raw=False) if data else None
    except (ValueError, msgpack.UnpackException):
        doc = None
    if isinstance(doc, list) and doc:
        kind, args = doc[0], doc[1:]
        if kind == "key" and len(args) == 4 and _types(args, (str, str, bytes, int)):
            return KeyRecord(*args)
        if kind == "erase" and len(args) == 2 and _types(args, (str, int)):
            return EraseRecord(*args)
        if kind == "sweep" and len(args) == 1 and _types(args, (int,)):
            return SweepRecord(*args)
    raise VaultRecordError("not a dlq.keys record (key, erase or sweep)")


def _types(args: list[object], types: tuple[type, ...]) -> bool:
    return all(isinstance(a, t) and not isinstance(a, bool) for a, t in zip(args, types, strict=True))


# -- vault rows -----------------------------------------------------------------

def row_key(ref: str, key_id: str) -> bytes:
    return ref.encode() + _SEP + key_id.encode()


def split_row_key(key: bytes) -> RowKey:
    ref, sep, key_id = key.rpartition(_SEP)
    if not sep or not ref or not key_id:
        raise VaultRecordError("not a vault row key")
    return RowKey(ref.decode(), key_id.decode())


def encode_row(row: VaultRow) -> bytes:
    return msgpack.packb([row.wrapped, row.created_at], use_bin_type=True)  # type: ignore[no-any-return]


def decode_row(value: bytes) -> VaultRow:
    try:
        wrapped, created_at = msgpack.unpackb(value, raw=False)
    except (ValueError, TypeError, msgpack.UnpackException):
        raise VaultRecordError("not a vault row") from None
    if not isinstance(wrapped, bytes) or not isinstance(created_at, int):
        raise VaultRecordError("not a vault row")
    return VaultRow(wrapped, created_at)


def apply(rows: MutableMapping[bytes, bytes], record: VaultRecord,
          owns: Callable[[str], bool] = lambda _ref: True) -> Applied:
    """Apply one ``dlq.keys`` record to the vault.

    ``owns(ref)`` tells a sweep which rows are this record's partition's to
    delete (a Faust table may only change rows of the event's partition).
    An erase deletes the rows of its ref only: they live on its partition.
    """
    if isinstance(record, KeyRecord):
        rows[row_key(record.ref, record.key_id)] = encode_row(VaultRow(record.wrapped, record.created_at))
        return Applied(stored=1)
    if isinstance(record, EraseRecord):
        prefix = record.ref.encode() + _SEP
        doomed = [k for k in list(rows.keys()) if k.startswith(prefix)]
        for k in doomed:
            del rows[k]
        return Applied(erased=len(doomed))
    expired = [k for k, v in list(rows.items()) if _expired(k, v, record.before, owns)]
    for k in expired:
        del rows[k]
    return Applied(expired=len(expired))


def _expired(key: bytes, value: bytes, before: int, owns: Callable[[str], bool]) -> bool:
    try:
        ref = split_row_key(key).ref
        created_at = decode_row(value).created_at
    except VaultRecordError:
        return False  # not ours: never delete what we cannot read
    return created_at < before and owns(ref)


@dataclass
class VaultView:
    """The vault as read from its changelog (latest value per row; tombstones delete)."""

    rows: dict[bytes, bytes]

    @classmethod
    def from_changelog(cls, records: Iterable[tuple[bytes | None, bytes | None]]) -> VaultView:
        rows: dict[bytes, bytes] = {}
        for key, value in records:
            if key is None:
                continue
            if value is None:
                rows.pop(key, None)
            else:
                rows[key] = value
        return cls(rows)

    def shares(self, refs: Iterable[str], key_id: str) -> Mapping[str, bytes]:
        """``ref -> wrapped share`` of the refs whose share of ``key_id`` still exists."""
        found: dict[str, bytes] = {}
        for ref in refs:
            value = self.rows.get(row_key(ref, key_id))
            if value is not None:
                found[ref] = decode_row(value).wrapped
        return found
