"""Stages built from settings: Tansu's workarounds on Tansu only, short group timeouts on a local broker."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from pipeline.app import build_identity, build_ingest, build_profile
from pipeline.contracts.catalogue import SchemaCatalogue
from pipeline.contracts.codec import AvroCodec
from pipeline.settings import Settings, load_settings
from pipeline.topology.catalogue import load_catalogue

CODEC = AvroCodec(SchemaCatalogue.load())


def _settings(tmp: Path, monkeypatch: pytest.MonkeyPatch, **env: str) -> Settings:
    for name in ("KAFKA_BOOTSTRAP_SERVERS", "OMNIPIPE_BROKER_QUIRKS", "OMNIPIPE_LOCAL_BROKER",
                 "SCHEMA_REGISTRY_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OMNIPIPE_DATA_DIR", str(tmp / "state"))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return load_settings()


def _stages(settings: Settings) -> list:
    cat = load_catalogue().with_partitions(2)
    return [build(settings, cat, CODEC, CollectorRegistry())
            for build in (build_ingest, build_identity, build_profile)]


def test_on_embedded_kafka_no_tansu_workaround_is_installed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _settings(tmp_path, monkeypatch).with_bootstrap("127.0.0.1:9", tmp_path / "kafka")
    for stage in _stages(settings):
        assert stage.config.tansu is False
        assert stage._gaps.enabled is False  # the offset-gap guard passes batches through
        # short group timeouts as on any local broker; Kafka answers a fetch as soon as data arrives
        assert stage.config.consumer_overrides == {"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000}


def test_on_tansu_each_workaround_is_installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _settings(tmp_path, monkeypatch).with_bootstrap("127.0.0.1:9", tmp_path / "t", tansu=True)
    for stage in _stages(settings):
        assert stage.config.tansu is True
        assert stage._gaps.enabled is True
        assert stage.config.consumer_overrides["fetch.wait.max.ms"] == 10
        assert stage.config.consumer_overrides["session.timeout.ms"] == 6000


def test_a_configured_cluster_gets_librdkafka_s_defaults(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _settings(tmp_path, monkeypatch, KAFKA_BOOTSTRAP_SERVERS="kafka-1:9092",
                         OMNIPIPE_PII_HASH_KEY="k" * 32)
    for stage in _stages(settings):
        assert stage.config.tansu is False and stage._gaps.enabled is False
        assert stage.config.consumer_overrides == {}
