"""Choose the cluster: the configured one, or an embedded broker we own."""

from __future__ import annotations

import contextlib
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

from pipeline.broker.admin import FIRST_CONTACT_S, ensure_topics
from pipeline.broker.client_config import librdkafka_config
from pipeline.broker.embedded import EmbeddedBroker
from pipeline.errors import BrokerUnreachable
from pipeline.settings import Settings
from pipeline.topology.catalogue import TopicCatalogue, load_catalogue

log = logging.getLogger(__name__)


def load_topology(settings: Settings) -> TopicCatalogue:
    catalogue = load_catalogue(settings.topology_path)
    if settings.topic_partitions:
        catalogue = catalogue.with_partitions(settings.topic_partitions)
    return catalogue


@contextlib.contextmanager
def cluster(settings: Settings, log_dir: Path | None = None) -> Iterator[Settings]:
    """Yield settings with bootstrap servers resolved; stop what we started."""
    if not settings.embedded:
        yield settings
        return
    log_path = (log_dir or settings.data_dir) / "tansu.log"
    with EmbeddedBroker(log_path=log_path) as broker:
        log.info("embedded Tansu broker on %s (memory storage)", broker.bootstrap_servers)
        state = settings.data_dir / "embedded" / f"broker-{broker.port}"
        try:
            yield settings.with_bootstrap(broker.bootstrap_servers, state)
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
