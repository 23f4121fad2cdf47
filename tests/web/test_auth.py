"""Bearer tokens: several accepted at once, compared in constant time with every one of them."""

from __future__ import annotations

import pytest

import pipeline.web.auth as auth
from pipeline.web.auth import AuthResult, BearerTokens, presented_token

OLD, NEW = b"old-token-0123456789abcdef", b"new-token-0123456789abcdef"


def test_without_tokens_the_api_is_open() -> None:
    tokens = BearerTokens([])
    assert not tokens.required
    assert tokens.check(None) is AuthResult.OPEN


def test_every_configured_token_is_accepted_during_a_rotation() -> None:
    tokens = BearerTokens([OLD, NEW])
    assert tokens.required
    assert tokens.check(f"Bearer {OLD.decode()}") is AuthResult.ACCEPTED
    assert tokens.check(f"bearer {NEW.decode()}") is AuthResult.ACCEPTED  # the scheme is case-insensitive


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer   ", f"Basic {OLD.decode()}", OLD.decode()])
def test_a_request_without_bearer_credentials_is_missing_them(header: str | None) -> None:
    assert BearerTokens([OLD]).check(header) is AuthResult.MISSING


@pytest.mark.parametrize("token", ["old-token-0123456789abcdeX", "old-token", "old-token-0123456789abcdef0",
                                   "\udcff"])
def test_any_other_token_is_invalid(token: str) -> None:
    assert BearerTokens([OLD, NEW]).check(f"Bearer {token}") is AuthResult.INVALID


def test_presented_token_strips_the_scheme_and_spaces() -> None:
    assert presented_token(f"  Bearer   {OLD.decode()}  ") == OLD
    assert presented_token("Token abc") is None


def test_the_presented_token_is_compared_with_every_token_even_after_a_match(
        monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = auth.hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", counting)
    assert BearerTokens([OLD, NEW]).check(f"Bearer {OLD.decode()}") is AuthResult.ACCEPTED
    assert calls == [(OLD, OLD), (OLD, NEW)]


def test_an_empty_token_is_refused_at_start() -> None:
    with pytest.raises(ValueError, match="empty"):
        BearerTokens([b""])
