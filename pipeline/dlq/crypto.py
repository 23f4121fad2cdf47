"""Envelope encryption of dead letters, and crypto-shredding (pure; no broker).

A dead letter's raw bytes (the rejected record's key and value) are sealed
with AES-256-GCM under a fresh random data key (DEK). The DEK is never
stored: it is the XOR of one random *share* per ref the dead letter is filed
under, and each share is kept in the key vault wrapped (AES-256-GCM) with a
key-encryption key (KEK) derived from ``OMNIPIPE_DLQ_KEY``. Reading a dead
letter needs every share; an erasure deletes the shares of the erased
person's refs, so destroying any one of them makes the dead letter
unreadable for good (even to someone holding the KEK and a copy of the
topic). With one ref (an unattributed day bucket) the single share is the
DEK itself.

The associated data binds a ciphertext to its dead letter (key id and source
coordinates), and a wrapped share to its key id and ref, so nothing can be
moved from one dead letter to another without failing authentication.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import msgpack
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

KEY_BYTES = 32  # AES-256
NONCE_BYTES = 12  # AES-GCM's standard nonce
_KEK_INFO = b"omnipipe-dlq-kek-v1"
_WRAP_VERSION = 1


class DeadLetterCryptoError(Exception):
    """A dead letter cannot be opened; ``str`` says why (never any of its bytes)."""


class KeyDestroyed(DeadLetterCryptoError):
    """A key share is gone: the person was erased, or the dead letter outlived the DLQ retention."""


class WrongKey(DeadLetterCryptoError):
    """A share was wrapped with another OMNIPIPE_DLQ_KEY (or was tampered with)."""


class Tampered(DeadLetterCryptoError):
    """The ciphertext or its coordinates were changed after sealing."""


@dataclass(frozen=True, slots=True)
class SourceCoordinates:
    """Where the rejected record was read; part of the associated data of its ciphertext."""

    topic: str
    partition: int
    offset: int

    def aad(self, key_id: str) -> bytes:
        return f"omnipipe-dlq-v1|{key_id}|{self.topic}|{self.partition}|{self.offset}".encode()


@dataclass(frozen=True, slots=True)
class Sealed:
    """What the dead letter carries (``omnipipe.dlq.SealedRecord``)."""

    key_id: str
    nonce: bytes
    ciphertext: bytes

    def as_record(self) -> dict[str, object]:
        return {"key_id": self.key_id, "nonce": self.nonce, "ciphertext": self.ciphertext}

    @classmethod
    def from_record(cls, record: Mapping[str, object]) -> Sealed:
        key_id, nonce, ciphertext = record["key_id"], record["nonce"], record["ciphertext"]
        if not (isinstance(key_id, str) and isinstance(nonce, bytes) and isinstance(ciphertext, bytes)):
            raise Tampered("the sealed record is malformed")
        return cls(key_id, nonce, ciphertext)


@dataclass(frozen=True, slots=True)
class KeyShare:
    """One ref's share of a dead letter's data key, wrapped for the vault."""

    ref: str
    key_id: str
    wrapped: bytes


@dataclass(frozen=True, slots=True)
class SealedDeadLetter:
    sealed: Sealed
    shares: tuple[KeyShare, ...]  # one per ref, in the order of ``refs``


@dataclass(frozen=True, slots=True)
class RawRecord:
    """The bytes a sealed dead letter gives back."""

    key: bytes | None
    value: bytes | None


class KeyEncryptionKey:
    """The KEK, derived (HKDF-SHA256) from ``Settings.dlq_master_key()``; wraps and unwraps shares."""

    def __init__(self, master_key: bytes) -> None:
        if len(master_key) < 16:
            raise ValueError("the DLQ master key must be at least 16 bytes (OMNIPIPE_DLQ_KEY)")
        kek = HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=_KEK_INFO).derive(master_key)
        self._aead = AESGCM(kek)
        #: names the KEK in every wrapped share, so a wrong OMNIPIPE_DLQ_KEY is told apart from tampering
        self.kek_id = hmac.new(kek, b"omnipipe-dlq-kek-id", hashlib.sha256).digest()[:4]

    def wrap(self, ref: str, key_id: str, share: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return (bytes([_WRAP_VERSION]) + self.kek_id + nonce
                + self._aead.encrypt(nonce, share, _share_aad(ref, key_id)))

    def unwrap(self, ref: str, key_id: str, wrapped: bytes) -> bytes:
        head = 1 + len(self.kek_id)
        if len(wrapped) < head + NONCE_BYTES or wrapped[0] != _WRAP_VERSION:
            raise Tampered(f"the key share of {key_id} is malformed")
        if wrapped[1:head] != self.kek_id:
            raise WrongKey(f"the key share of {key_id} was wrapped with another OMNIPIPE_DLQ_KEY")
        nonce, body = wrapped[head:head + NONCE_BYTES], wrapped[head + NONCE_BYTES:]
        try:
            share = self._aead.decrypt(nonce, body, _share_aad(ref, key_id))
        except InvalidTag:
            raise Tampered(f"the key share of {key_id} fails authentication") from None
        if len(share) != KEY_BYTES:
            raise Tampered(f"the key share of {key_id} has the wrong length")
        return share


def _share_aad(ref: str, key_id: str) -> bytes:
    return f"omnipipe-dlq-share-v1|{key_id}|{ref}".encode()


def _xor(parts: Sequence[bytes]) -> bytes:
    out = bytearray(KEY_BYTES)
    for part in parts:
        for i, b in enumerate(part):
            out[i] ^= b
    return bytes(out)


def new_key_id() -> str:
    return secrets.token_hex(16)


def seal(kek: KeyEncryptionKey, refs: Sequence[str], where: SourceCoordinates,
         key: bytes | None, value: bytes | None, key_id: str | None = None) -> SealedDeadLetter:
    """Encrypt a rejected record's bytes under a fresh data key split into one share per ref."""
    if not refs:
        raise ValueError("a sealed dead letter must be filed under at least one ref")
    if len(set(refs)) != len(refs):
        raise ValueError("refs must be distinct (two equal shares would cancel out)")
    key_id = key_id or new_key_id()
    shares = [os.urandom(KEY_BYTES) for _ in refs]
    dek = _xor(shares)
    nonce = os.urandom(NONCE_BYTES)
    plaintext = msgpack.packb([key, value], use_bin_type=True)
    ciphertext = AESGCM(dek).encrypt(nonce, plaintext, where.aad(key_id))
    return SealedDeadLetter(
        Sealed(key_id, nonce, ciphertext),
        tuple(KeyShare(ref, key_id, kek.wrap(ref, key_id, share))
              for ref, share in zip(refs, shares, strict=True)),
    )


def open_sealed(kek: KeyEncryptionKey, sealed: Sealed, refs: Sequence[str], where: SourceCoordinates,
                wrapped_shares: Mapping[str, bytes]) -> RawRecord:
    """The rejected record's bytes, given the wrapped share of every ref (``ref -> wrapped``).

    Raises KeyDestroyed when a share is missing (erased or expired), WrongKey
    or Tampered when authentication fails.
    """
    if not refs:
        raise Tampered("the dead letter is filed under no ref")
    missing = [ref for ref in refs if ref not in wrapped_shares]
    if missing:
        raise KeyDestroyed(f"{len(missing)} of {len(refs)} key shares are destroyed (erased or expired)")
    dek = _xor([kek.unwrap(ref, sealed.key_id, wrapped_shares[ref]) for ref in refs])
    try:
        plaintext = AESGCM(dek).decrypt(sealed.nonce, sealed.ciphertext, where.aad(sealed.key_id))
    except InvalidTag:
        raise Tampered("the sealed record fails authentication") from None
    try:
        key, value = msgpack.unpackb(plaintext, raw=False)
    except (ValueError, msgpack.UnpackException):  # pragma: no cover - authenticated, so ours
        raise Tampered("the sealed record is not [key, value]") from None
    return RawRecord(key, value)
