from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.ingest.identifiers import (
    IdentifierError,
    PiiHasher,
    ResolvedIdentifiers,
    normalise_email,
    normalise_phone,
    resolve_identifiers,
)

KEY = b"k" * 32


def test_email_normalisation_makes_channels_agree() -> None:
    h = PiiHasher(KEY)
    assert h.email("  Jane.Doe@Example.COM ") == h.email("jane.doe@example.com")


def test_phone_normalisation_accepts_common_spellings() -> None:
    assert normalise_phone("+44 (0)20-7946.0958".replace("(0)", "")) == "+442079460958"
    assert normalise_phone("0044 20 7946 0958") == "+442079460958"


@pytest.mark.parametrize("bad", ["no-at-sign", "a@b", "@example.com", "a b@example.com", "x@.com"])
def test_impossible_emails_are_refused(bad: str) -> None:
    with pytest.raises(IdentifierError) as err:
        normalise_email(bad)
    assert err.value.kind == "email"
    assert bad not in str(err.value)  # the value never reaches logs or dead letters


@pytest.mark.parametrize("bad", ["123", "phone", "+1234567890123456789", "12a4567890"])
def test_impossible_phones_are_refused(bad: str) -> None:
    with pytest.raises(IdentifierError):
        normalise_phone(bad)


def test_hash_is_keyed_and_kind_separated() -> None:
    a, b = PiiHasher(KEY), PiiHasher(b"other-key-other-key")
    assert a.hash("email", "x@example.com") != b.hash("email", "x@example.com")
    assert a.hash("email", "+4412345678") != a.hash("phone", "+4412345678")
    assert len(a.email("x@example.com")) == 32


def test_short_key_is_refused() -> None:
    with pytest.raises(ValueError):
        PiiHasher(b"short")


def test_strongest_identifier_wins_the_key() -> None:
    h = PiiHasher(KEY)
    ids = resolve_identifiers(
        {"anonymous_id": "a1", "device_id": "d1", "email": "x@example.com", "loyalty_card": "C9"}, h
    )
    assert ids.strongest_key() == "card:C9"
    assert ids.email_hash == h.email("x@example.com")
    only_anon = resolve_identifiers({"anonymous_id": "a1", "customer_id": ""}, h)
    assert only_anon.strongest_key() == "anon:a1"
    assert ResolvedIdentifiers().strongest_key() is None


def test_opaque_identifiers_reject_spaces_and_control_chars() -> None:
    with pytest.raises(IdentifierError) as err:
        resolve_identifiers({"customer_id": "has space"}, PiiHasher(KEY))
    assert err.value.kind == "customer_id"


@given(st.dictionaries(
    st.sampled_from(["customer_id", "loyalty_card", "email", "phone", "device_id", "anonymous_id"]),
    st.one_of(st.none(), st.text(max_size=300)),
))
def test_any_identifier_input_either_resolves_or_names_the_kind(raw: dict[str, str | None]) -> None:
    try:
        ids = resolve_identifiers(raw, PiiHasher(KEY))
    except IdentifierError as exc:
        assert exc.kind in raw
    else:
        for kind in ("email", "phone"):
            value = raw.get(kind)
            if value:
                assert value not in repr(ids)
