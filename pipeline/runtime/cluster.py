"""Choose the cluster: the configured one, or an embedded broker we own."""

from __future__ import annotations

import contextlib
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

from pipeline.broker import kafka_process
from pipeline.broker.admin import FIRST_CONTACT_S, ensure_topics
from pipeline.broker.client_config import librdkafka_config
from pipeline.broker.embedded import EmbeddedBroker
from pipeline.broker.kafka_process import KafkaCluster
from pipeline.errors import BrokerStartError, BrokerUnreachable
from pipeline.settings import Settings
from pipeline.topology.catalogue import TopicCatalogue, load_catalogue

log = logging.getLogger(__name__)


def load_topology(settings: Settings) -> TopicCatalogue:
    catalogue = load_catalogue(settings.topology_path)
    if settings.topic_partitions:
        catalogue = catalogue.with_partitions(settings.topic_partitions)
    return catalogue


KAFKA, TANSU = "kafka", "tansu"


def choose_embedded(settings: Settings) -> tuple[str, str | None]:
    """Which embedded broker to start, and why Apache Kafka is not the one (None: it is, or forced).

    ``OMNIPIPE_EMBEDDED_BROKER=auto`` takes Apache Kafka wherever it can run here, else Tansu;
    ``kafka`` insists on it (a BrokerStartError naming the cause when it cannot); ``tansu`` forces Tansu.
    """
    if settings.embedded_broker == TANSU:
        return TANSU, None
    reason = kafka_process.unavailable_reason()
    if reason is None:
        return KAFKA, None
    if settings.embedded_broker == KAFKA:
        raise BrokerStartError(f"cannot start the embedded Apache Kafka (OMNIPIPE_EMBEDDED_BROKER=kafka): "
                               f"{reason}")
    return TANSU, reason


@contextlib.contextmanager
def cluster(settings: Settings, log_dir: Path | None = None) -> Iterator[Settings]:
    """Yield settings with bootstrap servers resolved; stop what we started.

    Without KAFKA_BOOTSTRAP_SERVERS this starts the embedded broker ``choose_embedded`` picks; only
    Tansu's settings carry ``broker_quirks="tansu"`` (its workarounds).
    """
    if not settings.embedded:
        yield settings
        return
    kind, why_not_kafka = choose_embedded(settings)
    if kind == KAFKA:
        embedded = settings.data_dir / "embedded"
        with KafkaCluster(storage_dir=embedded, log_dir=log_dir) as kafka:
            log.info("embedded broker: Apache Kafka %s on %s (KRaft, storage in %s)",
                     kafka_process.KAFKA_VERSION, kafka.bootstrap_servers, kafka.root)
            with _state(settings, kafka.bootstrap_servers, kafka.first_port, tansu=False) as resolved:
                yield resolved
        return
    if why_not_kafka is not None:
        log.warning("embedded broker: Tansu (Apache Kafka unavailable: %s)", why_not_kafka)
    log_path = (log_dir or settings.data_dir) / "tansu.log"
    with EmbeddedBroker(log_path=log_path) as broker:
        log.info("embedded broker: Tansu on %s (memory storage)", broker.bootstrap_servers)
        with _state(settings, broker.bootstrap_servers, broker.port, tansu=True) as resolved:
            yield resolved


@contextlib.contextmanager
def _state(settings: Settings, servers: str, port: int, *, tansu: bool) -> Iterator[Settings]:
    """The settings for a broker we started, with a state directory of its own, removed after."""
    state = settings.data_dir / "embedded" / f"broker-{port}"
    try:
        yield settings.with_bootstrap(servers, state, tansu=tansu)
    finally:
        shutil.rmtree(state, ignore_errors=True)


def prepare_topics(settings: Settings, catalogue: TopicCatalogue) -> dict[str, str]:
    """The first contact with the cluster: create the declared topics.

    An unreachable configured cluster ends within seconds in one BrokerUnreachable
    naming the address and KAFKA_BOOTSTRAP_SERVERS.
    """
    try:
        # the embedded broker answered already; a configured one gets FIRST_CONTACT_S to answer
        result = ensure_topics(librdkafka_config(settings), catalogue,
                               first_contact_s=None if settings.local_broker else FIRST_CONTACT_S)
    except BrokerUnreachable as exc:
        if settings.local_broker:  # the embedded broker we started: no variable to fix
            raise
        raise exc.naming("KAFKA_BOOTSTRAP_SERVERS") from exc
    created = sorted(n for n, s in result.items() if s == "created")
    if created:
        log.info("created topics: %s", ", ".join(created))
    return result
