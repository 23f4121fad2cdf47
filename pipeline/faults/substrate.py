"""The broker the scenarios run on: 3-broker Apache Kafka (default) or the embedded Tansu.

``omnipipe faults --broker kafka|tansu`` picks it once for the whole suite
(``use``); every scenario opens its own fresh one with ``fault_broker(out)``,
creates its topics with ``broker.replication_factor`` (3 on Kafka, where the
brokers hold ``min.insync.replicas=2`` and every producer uses ``acks=all``) and
starts workers with ``broker.worker_env()``: the bootstrap servers, the short
group timeouts of a broker on this machine, and the broker's quirks (``none`` on
Apache Kafka, ``tansu`` on Tansu), so each workaround runs only where its broker
needs it.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.broker.admin import ensure_topics
from pipeline.topology.catalogue import TopicCatalogue

BROKERS = ("kafka", "tansu")
#: brokers in the Apache Kafka fault cluster: replication factor 3, min.insync.replicas 2
KAFKA_BROKERS = 3

_current = {"broker": "kafka"}


def use(broker: str) -> None:
    """Choose the substrate for every scenario of this run."""
    if broker not in BROKERS:
        raise ValueError(f"unknown broker {broker!r}; known: {BROKERS}")
    _current["broker"] = broker


def current() -> str:
    return _current["broker"]


def quirks(broker: str | None = None) -> str:
    """``OMNIPIPE_BROKER_QUIRKS`` for workers on this substrate."""
    return "tansu" if (broker or current()) == "tansu" else "none"


def unavailable_reason(broker: str | None = None) -> str | None:
    """Why the substrate cannot run here, in one line (None: it can)."""
    if (broker or current()) == "kafka":
        from pipeline.broker.kafka_process import unavailable_reason as kafka_reason

        reason = kafka_reason()
        return f"Apache Kafka cannot run here: {reason} (or use --broker tansu)" if reason else None
    from pipeline.broker.embedded import resolve_tansu_binary
    from pipeline.errors import BrokerStartError

    try:
        resolve_tansu_binary()
    except BrokerStartError as exc:  # the launcher's own one-line reason
        return f"Tansu cannot run here: {exc}"
    return None


@dataclass
class FaultBroker:
    """One scenario's broker: where it is, how to create topics on it, and (Kafka) its nodes."""

    kind: str
    bootstrap_servers: str
    replication_factor: int
    cluster: Any = None  # KafkaCluster on Kafka: kill / restart its nodes

    @property
    def client(self) -> dict[str, Any]:
        return {"bootstrap.servers": self.bootstrap_servers}

    def ensure_topics(self, catalogue: TopicCatalogue) -> dict[str, str]:
        return ensure_topics(self.client, catalogue, replication_factor=self.replication_factor)

    def worker_env_extra(self) -> dict[str, str]:
        return {"OMNIPIPE_BROKER_QUIRKS": quirks(self.kind), "OMNIPIPE_LOCAL_BROKER": "1"}


@contextlib.contextmanager
def fault_broker(out: Path, broker: str | None = None) -> Iterator[FaultBroker]:
    """A fresh broker for one scenario; its logs are kept in ``out``."""
    kind = broker or current()
    out.mkdir(parents=True, exist_ok=True)
    if kind == "tansu":
        from pipeline.broker.embedded import EmbeddedBroker

        with EmbeddedBroker(log_path=out / "tansu.log") as tansu:
            yield FaultBroker("tansu", tansu.bootstrap_servers, 1)
        return
    from pipeline.broker.kafka_process import KafkaCluster

    cluster = KafkaCluster(brokers=KAFKA_BROKERS, storage_dir=out, log_level="INFO")
    with cluster:
        nodes = list(cluster.nodes)
        try:
            yield FaultBroker("kafka", cluster.bootstrap_servers, cluster.replication_factor, cluster)
        finally:
            for node in nodes:  # the cluster removes its storage on stop: keep each broker's log
                for name in ("server.log", "stdout.log"):
                    with contextlib.suppress(OSError):
                        shutil.copyfile(node.directory / name, out / f"kafka-{node.node_id}-{name}")
