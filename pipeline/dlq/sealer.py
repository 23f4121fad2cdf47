"""What ingest puts in a dead letter instead of the raw bytes, and the key records to send with it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pipeline.dlq.crypto import KeyEncryptionKey, SourceCoordinates, seal
from pipeline.dlq.refs import filing_refs
from pipeline.dlq.vault import key_record
from pipeline.ingest.identifiers import PiiHasher


@dataclass(frozen=True, slots=True)
class VaultKey:
    """One record for ``dlq.keys``: keyed by ``ref`` (its partition), value ``payload``."""

    ref: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class SealedFields:
    """The dead letter's fields that replace the plaintext ``key`` and ``value``."""

    fields: dict[str, Any]  # key, value (both None), filed_under, sealed
    vault_keys: tuple[VaultKey, ...]


class DeadLetterSealer:
    """Seals rejected records under per-ref key shares (``crypto.py``); one per ingest processor."""

    def __init__(self, master_key: bytes, hasher: PiiHasher) -> None:
        self._kek = KeyEncryptionKey(master_key)
        self._hasher = hasher

    def seal(self, where: SourceCoordinates, identifiers: Mapping[str, Any] | None,
             key: bytes | None, value: bytes | None, now_ms: int) -> SealedFields:
        """``identifiers``: the record's raw identifiers if it decoded that far, else None."""
        refs = filing_refs(identifiers, self._hasher, now_ms)
        sealed = seal(self._kek, refs, where, key, value)
        return SealedFields(
            fields={"key": None, "value": None, "filed_under": list(refs),
                    "sealed": sealed.sealed.as_record()},
            vault_keys=tuple(VaultKey(s.ref, key_record(s, now_ms)) for s in sealed.shares),
        )
