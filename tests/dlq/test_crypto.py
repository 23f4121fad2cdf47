"""Sealing, opening and shredding dead letters (AES-256-GCM, per-ref key shares)."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.dlq.crypto import (
    KeyDestroyed,
    KeyEncryptionKey,
    RawRecord,
    SealedDeadLetter,
    SourceCoordinates,
    Tampered,
    WrongKey,
    open_sealed,
    seal,
)

KEK = KeyEncryptionKey(b"dlq-master-key-for-tests-0123456789")
WHERE = SourceCoordinates("events.web", 3, 77)
REFS = ("cust:C1", "email:0123456789abcdef0123456789abcdef", "anon:cookie-1")
VALUE = b"\x00\x00\x00\x00\x0a ann@example.com +447700900123"


def shares_of(sealed_dl: SealedDeadLetter) -> dict[str, bytes]:
    return {s.ref: s.wrapped for s in sealed_dl.shares}


def test_round_trip_gives_back_key_and_value() -> None:
    dl = seal(KEK, REFS, WHERE, b"key-1", VALUE)
    assert [s.ref for s in dl.shares] == list(REFS) and {s.key_id for s in dl.shares} == {dl.sealed.key_id}
    assert open_sealed(KEK, dl.sealed, REFS, WHERE, shares_of(dl)) == RawRecord(b"key-1", VALUE)


def test_nothing_of_the_plaintext_is_in_what_is_stored() -> None:
    dl = seal(KEK, REFS, WHERE, b"ann@example.com", VALUE)
    stored = dl.sealed.ciphertext + dl.sealed.nonce + b"".join(s.wrapped for s in dl.shares)
    for needle in (b"ann@example.com", b"+447700900123", b"447700900123"):
        assert needle not in stored


def test_every_dead_letter_gets_its_own_key_and_nonce() -> None:
    a, b = seal(KEK, REFS, WHERE, None, VALUE), seal(KEK, REFS, WHERE, None, VALUE)
    assert a.sealed.key_id != b.sealed.key_id and a.sealed.nonce != b.sealed.nonce
    assert a.sealed.ciphertext != b.sealed.ciphertext
    with pytest.raises(Tampered):  # b's shares do not open a (another key id, another data key)
        open_sealed(KEK, a.sealed, REFS, WHERE, shares_of(b))


@pytest.mark.parametrize("erased", REFS)
def test_destroying_any_one_share_makes_it_unreadable(erased: str) -> None:
    dl = seal(KEK, REFS, WHERE, None, VALUE)
    left = {ref: w for ref, w in shares_of(dl).items() if ref != erased}
    with pytest.raises(KeyDestroyed, match="1 of 3 key shares are destroyed"):
        open_sealed(KEK, dl.sealed, REFS, WHERE, left)


def test_the_other_shares_cannot_rebuild_the_key() -> None:
    """Even someone with the KEK and the remaining shares gets nothing: substituting a share fails."""
    dl = seal(KEK, REFS, WHERE, None, VALUE)
    shares = shares_of(dl)
    shares[REFS[0]] = KEK.wrap(REFS[0], dl.sealed.key_id, bytes(32))  # a guessed share
    with pytest.raises(Tampered, match="sealed record fails authentication"):
        open_sealed(KEK, dl.sealed, REFS, WHERE, shares)


def test_wrong_master_key_is_told_apart() -> None:
    dl = seal(KEK, REFS, WHERE, None, VALUE)
    other = KeyEncryptionKey(b"another-dlq-master-key-0123456789")
    with pytest.raises(WrongKey, match="another OMNIPIPE_DLQ_KEY"):
        open_sealed(other, dl.sealed, REFS, WHERE, shares_of(dl))


def test_tampered_ciphertext_fails() -> None:
    dl = seal(KEK, REFS, WHERE, None, VALUE)
    flipped = bytearray(dl.sealed.ciphertext)
    flipped[5] ^= 1
    bad = dataclasses.replace(dl.sealed, ciphertext=bytes(flipped))
    with pytest.raises(Tampered, match="sealed record fails authentication"):
        open_sealed(KEK, bad, REFS, WHERE, shares_of(dl))


def test_ciphertext_is_bound_to_its_source_coordinates() -> None:
    dl = seal(KEK, REFS, WHERE, None, VALUE)
    with pytest.raises(Tampered):
        open_sealed(KEK, dl.sealed, REFS, SourceCoordinates("events.web", 3, 78), shares_of(dl))


def test_a_share_is_bound_to_its_ref() -> None:
    dl = seal(KEK, REFS, WHERE, None, VALUE)
    shares = shares_of(dl)
    shares[REFS[0]], shares[REFS[1]] = shares[REFS[1]], shares[REFS[0]]
    with pytest.raises(Tampered, match="key share"):
        open_sealed(KEK, dl.sealed, REFS, WHERE, shares)


def test_tampered_share_fails() -> None:
    dl = seal(KEK, REFS, WHERE, None, VALUE)
    shares = shares_of(dl)
    shares[REFS[2]] = shares[REFS[2]][:-1] + bytes([shares[REFS[2]][-1] ^ 1])
    with pytest.raises(Tampered, match="key share"):
        open_sealed(KEK, dl.sealed, REFS, WHERE, shares)


def test_refs_are_required_and_distinct() -> None:
    with pytest.raises(ValueError, match="at least one ref"):
        seal(KEK, (), WHERE, None, VALUE)
    with pytest.raises(ValueError, match="distinct"):
        seal(KEK, ("cust:C1", "cust:C1"), WHERE, None, VALUE)


def test_master_key_must_be_long_enough() -> None:
    with pytest.raises(ValueError, match="OMNIPIPE_DLQ_KEY"):
        KeyEncryptionKey(b"short")


@given(key=st.none() | st.binary(max_size=64), value=st.none() | st.binary(max_size=2000),
       n_refs=st.integers(1, 6))
def test_any_bytes_round_trip(key: bytes | None, value: bytes | None, n_refs: int) -> None:
    refs = tuple(f"cust:C{i}" for i in range(n_refs))
    dl = seal(KEK, refs, WHERE, key, value)
    assert open_sealed(KEK, dl.sealed, refs, WHERE, shares_of(dl)) == RawRecord(key, value)
