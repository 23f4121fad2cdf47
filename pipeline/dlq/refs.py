"""Which refs a dead letter is filed under: the record's identifiers as the identity stage names them.

An erasure forgets every ref of the erased person (``cust:C1``, ``email:<hmac>``,
``dev:...``); a dead letter filed under those refs is shredded with them. So
the refs are formed exactly as ingest and identity form them (the same
normalisation, the same keyed hash), one identifier at a time: a record
refused for one malformed identifier is still filed under all its valid
ones. A record with nothing attributable (not Avro, truncated, no
identifiers) goes to the day bucket ``unattributed:<yyyy-mm-dd>`` (UTC),
whose key shares are destroyed once the DLQ retention has passed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from pipeline.ingest.identifiers import KEY_PREFIX, KINDS, IdentifierError, PiiHasher, check_opaque

UNATTRIBUTED = "unattributed"


def identifier_refs(identifiers: Mapping[str, Any] | None, hasher: PiiHasher) -> tuple[str, ...]:
    """Every valid identifier of a raw record's ``identifiers``, strongest first; malformed ones skipped."""
    if not isinstance(identifiers, Mapping):
        return ()
    refs: list[str] = []
    for kind in KINDS:
        raw = identifiers.get(kind)
        if not raw or not isinstance(raw, str):
            continue
        try:
            if kind == "email":
                value = hasher.email(raw)
            elif kind == "phone":
                value = hasher.phone(raw)
            else:
                value = check_opaque(kind, raw)
        except IdentifierError:
            continue  # malformed: no erasure can name it, the other identifiers still can
        refs.append(f"{KEY_PREFIX[kind]}:{value}")
    return tuple(refs)


def unattributed_ref(now_ms: int) -> str:
    day = dt.datetime.fromtimestamp(now_ms / 1000, tz=dt.UTC).date().isoformat()
    return f"{UNATTRIBUTED}:{day}"


def is_unattributed(ref: str) -> bool:
    return ref.startswith(UNATTRIBUTED + ":")


def filing_refs(identifiers: Mapping[str, Any] | None, hasher: PiiHasher, now_ms: int) -> tuple[str, ...]:
    """The refs a dead letter is filed under: its identifiers, else today's unattributed bucket."""
    return identifier_refs(identifiers, hasher) or (unattributed_ref(now_ms),)
