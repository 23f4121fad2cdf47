"""Profile records as versioned msgpack arrays: compact, schema'd by position, never pickle.

A record is one profile id's entry in the profile table: its live state (if
any) and where its ended incarnations went (so late events follow a merge).
Field order is the wire format: append new fields at the end and bump
``VERSION`` only for a change old readers cannot skip.
"""

from __future__ import annotations

import struct
from typing import Any

import msgpack

from pipeline.errors import OmnipipeError
from pipeline.profile.state import ProfileState

VERSION = 1


class ProfileCodecError(OmnipipeError):
    """A stored profile record cannot be read (corrupt, or written by a newer version)."""


_MEMO_ENTRY = struct.Struct(">QI")  # event id digest, ingest time - base (ms)


def _pack_memo(memo: dict[int, int]) -> list[Any]:
    """12 bytes an entry (not ~18 as a msgpack map): the memo is the largest part of a small profile."""
    if not memo:
        return [0, b""]
    base = min(memo.values())
    if max(memo.values()) - base >= 2**32:  # entries over more than ~49 days apart: keep them as a map
        return [-1, memo]
    return [base, b"".join(_MEMO_ENTRY.pack(d, t - base) for d, t in memo.items())]


def _unpack_memo(packed: list[Any]) -> dict[int, int]:
    base, blob = packed
    if base == -1:
        return dict(blob)
    return {d: base + t for d, t in _MEMO_ENTRY.iter_unpack(blob)}


def state_fields(s: ProfileState) -> list[Any]:
    return [
        s.events, s.first_seen, s.last_seen, s.identified_at, s.identifiers, s.channels, s.products,
        s.categories, s.cart, s.cart_changed_at, s.orders_online, s.orders_store, s.revenue,
        s.last_purchase_at, s.purchase_categories, s.purchase_times, s.returns, s.returned, s.registers,
        s.consent, s.last_trigger, _pack_memo(s.memo), s.merged_from, s.contacts,
    ]


def state_from_fields(f: list[Any]) -> ProfileState:
    return ProfileState(
        events=f[0], first_seen=f[1], last_seen=f[2], identified_at=f[3], identifiers=f[4],
        channels=f[5], products={k: (v[0], v[1]) for k, v in f[6].items()}, categories=f[7],
        cart={k: (v[0], v[1], v[2], v[3]) for k, v in f[8].items()}, cart_changed_at=f[9],
        orders_online=f[10], orders_store=f[11], revenue=f[12], last_purchase_at=f[13],
        purchase_categories=f[14], purchase_times=f[15], returns=f[16], returned=f[17],
        registers={k: (v[0], v[1]) for k, v in f[18].items()},
        consent={k: (v[0], v[1]) for k, v in f[19].items()}, last_trigger=f[20], memo=_unpack_memo(f[21]),
        merged_from=f[22],
        contacts={k: tuple(v) for k, v in f[23].items()} if len(f) > 23 else {},  # type: ignore[misc]
    )


def encode_state(state: ProfileState) -> bytes:
    return msgpack.packb([VERSION, state_fields(state)], use_bin_type=True)  # type: ignore[no-any-return]


def decode_state(data: bytes) -> ProfileState:
    _version, fields = _unpack(data)
    return state_from_fields(fields)


def _unpack(data: bytes) -> tuple[int, Any]:
    try:
        version, body = msgpack.unpackb(data, raw=False, strict_map_key=False)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise ProfileCodecError(f"undecodable profile record: {exc}") from exc
    if version != VERSION:
        raise ProfileCodecError(f"profile record version {version}; this worker reads {VERSION}")
    return version, body


def pack(value: Any) -> bytes:
    """A versioned msgpack value (the engine's records and messages)."""
    return msgpack.packb([VERSION, value], use_bin_type=True)  # type: ignore[no-any-return]


def unpack(data: bytes) -> Any:
    try:
        return _unpack(data)[1]
    except (IndexError, KeyError) as exc:
        raise ProfileCodecError(f"malformed profile record: {exc}") from exc
