"""The web settings refuse an API reachable beyond loopback without a token."""

from __future__ import annotations

import pytest

from pipeline.errors import ConfigError
from pipeline.settings import load_settings

TOKEN = "a-token-of-32-characters-0123456"


@pytest.fixture(autouse=True)
def _clean(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OMNIPIPE_WEB_HOST", "OMNIPIPE_API_TOKENS", "OMNIPIPE_WEB_ADVERTISED_URL"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize("host", ["10.1.2.3", "0.0.0.0", "::", "worker-3.internal"])
def test_a_non_loopback_api_without_tokens_refuses_to_start(monkeypatch: pytest.MonkeyPatch,
                                                            host: str) -> None:
    monkeypatch.setenv("OMNIPIPE_WEB_HOST", host)
    monkeypatch.setenv("OMNIPIPE_WEB_ADVERTISED_URL", "http://worker-3.internal:6066")
    with pytest.raises(ConfigError, match="OMNIPIPE_API_TOKENS"):
        load_settings()


def test_a_non_loopback_api_with_a_token_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMNIPIPE_WEB_HOST", "10.1.2.3")
    monkeypatch.setenv("OMNIPIPE_API_TOKENS", f"{TOKEN}, {TOKEN[::-1]}")
    assert load_settings().api_token_values() == [TOKEN.encode(), TOKEN[::-1].encode()]


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.0.0.2"])
def test_loopback_needs_no_token(monkeypatch: pytest.MonkeyPatch, host: str) -> None:
    monkeypatch.setenv("OMNIPIPE_WEB_HOST", host)
    assert load_settings().api_token_values() == []


def test_a_short_token_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMNIPIPE_API_TOKENS", "short")
    with pytest.raises(ConfigError, match="at least 16"):
        load_settings()
