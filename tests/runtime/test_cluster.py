"""Which embedded broker starts: Apache Kafka wherever it can run, Tansu with one line saying why not."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from pipeline.errors import BrokerStartError
from pipeline.runtime.cluster import KAFKA, TANSU, choose_embedded, cluster
from pipeline.settings import Settings, load_settings

NO_JAVA = "no java on PATH (Java 17+ is needed for Apache Kafka)"


def _settings(tmp: Path, monkeypatch: pytest.MonkeyPatch, choice: str) -> Settings:
    for name in ("KAFKA_BOOTSTRAP_SERVERS", "OMNIPIPE_BROKER_QUIRKS", "OMNIPIPE_LOCAL_BROKER"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OMNIPIPE_EMBEDDED_BROKER", choice)
    monkeypatch.setenv("OMNIPIPE_DATA_DIR", str(tmp / "state"))
    return load_settings()


def _reason(monkeypatch: pytest.MonkeyPatch, reason: str | None) -> list[int]:
    calls: list[int] = []

    def unavailable() -> str | None:
        calls.append(1)
        return reason

    monkeypatch.setattr("pipeline.broker.kafka_process.unavailable_reason", unavailable)
    return calls


def test_auto_takes_kafka_where_it_can_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _reason(monkeypatch, None)
    assert choose_embedded(_settings(tmp_path, monkeypatch, "auto")) == (KAFKA, None)


def test_auto_falls_back_to_tansu_with_the_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _reason(monkeypatch, NO_JAVA)
    assert choose_embedded(_settings(tmp_path, monkeypatch, "auto")) == (TANSU, NO_JAVA)


def test_forced_kafka_that_cannot_run_is_one_error_naming_the_cause(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _reason(monkeypatch, NO_JAVA)
    with pytest.raises(BrokerStartError) as exc:
        choose_embedded(_settings(tmp_path, monkeypatch, "kafka"))
    message = str(exc.value)
    assert "\n" not in message and NO_JAVA in message and "OMNIPIPE_EMBEDDED_BROKER=kafka" in message
    assert exc.value.exit_code == 4


def test_forced_tansu_does_not_look_for_java(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _reason(monkeypatch, None)
    assert choose_embedded(_settings(tmp_path, monkeypatch, "tansu")) == (TANSU, None)
    assert calls == []


def test_a_configured_cluster_starts_nothing_and_keeps_its_quirks(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _reason(monkeypatch, None)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9")
    monkeypatch.setenv("OMNIPIPE_PII_HASH_KEY", "k" * 32)
    settings = load_settings()
    with cluster(settings) as resolved:
        assert resolved is settings and not resolved.tansu
    assert calls == []


@pytest.mark.broker
def test_without_java_auto_starts_tansu_says_why_once_and_turns_its_workarounds_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    settings = _settings(tmp_path, monkeypatch, "auto")
    (tmp_path / "bin").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    with caplog.at_level(logging.INFO, logger="pipeline.runtime.cluster"), cluster(settings) as resolved:
        assert resolved.tansu and resolved.broker_quirks == "tansu" and resolved.local_broker
        md = AdminClient({"bootstrap.servers": resolved.kafka_bootstrap_servers}).list_topics(timeout=10)
        assert md.brokers
    why = [r.getMessage() for r in caplog.records if "unavailable" in r.getMessage()]
    assert why == [f"embedded broker: Tansu (Apache Kafka unavailable: {NO_JAVA})"]


@pytest.mark.broker
def test_auto_starts_apache_kafka_with_no_tansu_workaround(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    settings = _settings(tmp_path, monkeypatch, "auto")
    with caplog.at_level(logging.INFO, logger="pipeline.runtime.cluster"), cluster(settings) as resolved:
        assert not resolved.tansu and resolved.broker_quirks == "none" and resolved.local_broker
        md = AdminClient({"bootstrap.servers": resolved.kafka_bootstrap_servers}).list_topics(timeout=10)
        assert len(md.brokers) == 1
        storage = list((tmp_path / "state" / "embedded").glob("omnipipe-kafka-*"))
        assert len(storage) == 1  # a fresh directory under the data dir
    lines = [r.getMessage() for r in caplog.records]
    assert any(line.startswith("embedded broker: Apache Kafka 4.") for line in lines), lines
    assert not any("Tansu" in line for line in lines)
    assert not storage[0].exists()  # removed with the broker
