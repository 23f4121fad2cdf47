"""Shared test configuration: hypothesis profile and the session broker fixtures."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

from pipeline.broker.embedded import EmbeddedBroker
from pipeline.broker.kafka_process import KafkaCluster
from pipeline.errors import BrokerStartError

# CI machines are noisy 2-core boxes: no per-example deadline, fixed example counts.
settings.register_profile(
    "ci", deadline=None, max_examples=200, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaCluster]:
    """One embedded Apache Kafka broker for the whole session (tests use unique topics/groups).

    It is the broker the pipeline's users run, so it is never silently replaced: where it cannot
    run (no Java 17, jars not fetched by ``make install``) every test using it fails with the reason.
    """
    root = tmp_path_factory.mktemp("kafka")
    try:
        cluster = KafkaCluster(storage_dir=root, log_dir=root / "logs").start()
    except BrokerStartError as exc:
        pytest.fail(f"the session's Apache Kafka broker: {exc}", pytrace=False)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def tansu_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    """One embedded Tansu broker (the zero-Java fallback) for the tests about Tansu itself."""
    log = tmp_path_factory.mktemp("tansu") / "tansu.log"
    with EmbeddedBroker(log_path=log) as b:
        yield b
