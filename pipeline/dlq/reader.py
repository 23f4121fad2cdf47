"""Reading dead letters back: what an operator sees, and the raw record to fix and replay.

``open_dead_letter`` is pure (a dead letter, the KEK and a view of the
vault); ``read_vault`` and ``iter_dead_letters`` read the topics. The vault
is read from its compacted changelog, so this works whether or not a worker
is running.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pipeline.broker.reader import iter_topic
from pipeline.contracts.codec import AvroCodec
from pipeline.contracts.errors import DecodeError
from pipeline.dlq.crypto import (
    DeadLetterCryptoError,
    KeyDestroyed,
    KeyEncryptionKey,
    RawRecord,
    Sealed,
    SourceCoordinates,
    open_sealed,
)
from pipeline.dlq.vault import VaultView


class Readability(StrEnum):
    DECRYPTED = "decrypted"
    ERASED = "erased"  # a key share is destroyed: the person was erased, or the retention passed
    UNREADABLE = "unreadable"  # another OMNIPIPE_DLQ_KEY, or tampered with
    PLAINTEXT = "plaintext"  # written before v2, or by a later stage (internal, hashed identifiers)
    EMPTY = "empty"  # nothing was kept (the record was empty, or the dead letter failed to encode)


@dataclass(frozen=True, slots=True)
class OpenedDeadLetter:
    readability: Readability
    record: RawRecord | None
    why: str = ""


@dataclass(frozen=True, slots=True)
class StoredDeadLetter:
    partition: int
    offset: int
    dead_letter: dict[str, Any]


def open_dead_letter(dead_letter: Mapping[str, Any], kek: KeyEncryptionKey,
                     vault: VaultView) -> OpenedDeadLetter:
    """The dead letter's raw key and value if every key share of its refs still exists."""
    sealed_record = dead_letter.get("sealed")
    if sealed_record is None:
        key, value = dead_letter.get("key"), dead_letter.get("value")
        if key is None and value is None:
            return OpenedDeadLetter(Readability.EMPTY, None)
        return OpenedDeadLetter(Readability.PLAINTEXT, RawRecord(key, value))
    refs = list(dead_letter.get("filed_under") or [])
    where = SourceCoordinates(dead_letter["source_topic"], dead_letter["source_partition"],
                              dead_letter["source_offset"])
    try:
        sealed = Sealed.from_record(sealed_record)
        raw = open_sealed(kek, sealed, refs, where, vault.shares(refs, sealed.key_id))
    except KeyDestroyed as exc:
        return OpenedDeadLetter(Readability.ERASED, None, str(exc))
    except DeadLetterCryptoError as exc:
        return OpenedDeadLetter(Readability.UNREADABLE, None, str(exc))
    return OpenedDeadLetter(Readability.DECRYPTED, raw)


def read_vault(client: Mapping[str, Any], changelog_topic: str) -> VaultView:
    return VaultView.from_changelog((r.key, r.value) for r in iter_topic(client, changelog_topic, idle_s=1.0))


def iter_dead_letters(client: Mapping[str, Any], topic: str, codec: AvroCodec, subject: str,
                      partition: int | None = None, offset: int | None = None) -> Iterator[StoredDeadLetter]:
    """Dead letters of ``topic`` (optionally one partition, one offset), decoded."""
    for r in iter_topic(client, topic, idle_s=1.0):
        if partition is not None and r.partition != partition:
            continue
        if offset is not None and r.offset != offset:
            continue
        try:
            dead_letter = codec.decode(r.value or b"", subject)
        except DecodeError as exc:
            dead_letter = {"reason": f"dlq_{exc.reason}", "detail": "the dead letter itself does not decode"}
        yield StoredDeadLetter(r.partition, r.offset, dead_letter)


def describe(stored: StoredDeadLetter, opened: OpenedDeadLetter | None) -> dict[str, Any]:
    """One JSON-ready line for an operator; raw bytes only when decrypted (base64)."""
    dl = stored.dead_letter
    out: dict[str, Any] = {
        "dlq_partition": stored.partition, "dlq_offset": stored.offset,
        **{k: dl.get(k) for k in ("source_topic", "source_partition", "source_offset", "source_timestamp",
                                  "reason", "detail", "stage", "schema_id", "dead_lettered_at")},
        "filed_under": list(dl.get("filed_under") or []),
    }
    if opened is not None:
        out["record"] = opened.readability.value
        if opened.why:
            out["why"] = opened.why
        if opened.record is not None:
            out["key_base64"] = _b64(opened.record.key)
            out["value_base64"] = _b64(opened.record.value)
    return out


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode()
