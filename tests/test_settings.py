from __future__ import annotations

import pytest

from pipeline.errors import ConfigError
from pipeline.settings import load_settings


def test_embedded_default_needs_no_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    s = load_settings()
    assert s.embedded
    assert len(s.hash_key()) >= 16


def test_external_cluster_without_hash_key_fails_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "kafka:9092")
    monkeypatch.delenv("OMNIPIPE_PII_HASH_KEY", raising=False)
    with pytest.raises(ConfigError, match="OMNIPIPE_PII_HASH_KEY"):
        load_settings()


def test_sasl_needs_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "kafka:9092")
    monkeypatch.setenv("OMNIPIPE_PII_HASH_KEY", "x" * 32)
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    with pytest.raises(ConfigError, match="KAFKA_SASL_USERNAME"):
        load_settings()
    monkeypatch.setenv("KAFKA_SASL_USERNAME", "svc")
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", "secret-pw")
    s = load_settings()
    assert "secret-pw" not in repr(s)  # SecretStr keeps it out of logs
    from pipeline.broker.client_config import librdkafka_config

    conf = librdkafka_config(s)
    assert conf["sasl.mechanism"] == "SCRAM-SHA-512" and conf["sasl.password"] == "secret-pw"


def test_bad_values_name_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMNIPIPE_WEB_PORT", "not-a-port")
    with pytest.raises(ConfigError, match="OMNIPIPE_WEB_PORT"):
        load_settings()


def test_settings_are_frozen() -> None:
    s = load_settings()
    with pytest.raises(Exception):  # noqa: B017 - pydantic's frozen error type
        s.group_id = "x"  # type: ignore[misc]


def test_listening_everywhere_needs_an_advertised_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMNIPIPE_WEB_HOST", "0.0.0.0")
    with pytest.raises(ConfigError, match="OMNIPIPE_WEB_ADVERTISED_URL"):
        load_settings()
    monkeypatch.setenv("OMNIPIPE_WEB_ADVERTISED_URL", "http://worker-3.internal:6066/")
    monkeypatch.setenv("OMNIPIPE_API_TOKENS", "t" * 32)
    assert load_settings().advertised_url == "http://worker-3.internal:6066"
    monkeypatch.delenv("OMNIPIPE_WEB_HOST")
    monkeypatch.delenv("OMNIPIPE_WEB_ADVERTISED_URL")
    monkeypatch.delenv("OMNIPIPE_API_TOKENS")
    monkeypatch.setenv("OMNIPIPE_WEB_PORT", "7001")
    assert load_settings().advertised_url == "http://127.0.0.1:7001"
