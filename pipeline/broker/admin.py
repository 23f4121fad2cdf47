"""Create the declared topics idempotently at start."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from pipeline.errors import OmnipipeError
from pipeline.topology.catalogue import TopicCatalogue

log = logging.getLogger(__name__)


class TopicSetupError(OmnipipeError):
    """Topics could not be created or do not match the catalogue."""


def ensure_topics(
    client_config: Mapping[str, Any], catalogue: TopicCatalogue, timeout_s: float = 30.0
) -> dict[str, str]:
    """Create missing topics; existing ones are left as they are.

    Returns topic name -> "created" | "exists". A topic that exists with fewer
    partitions than declared is reported, not silently changed: repartitioning
    moves keys and must be a deliberate operation.
    """
    admin = AdminClient(dict(client_config))
    deadline = time.monotonic() + timeout_s
    metadata = admin.list_topics(timeout=timeout_s)
    existing = metadata.topics
    result: dict[str, str] = {}
    new: list[NewTopic] = []
    for spec in catalogue:
        if spec.name in existing and existing[spec.name].error is None:
            have = len(existing[spec.name].partitions)
            if have < spec.partitions:
                log.warning(
                    "topic %s has %d partitions, catalogue declares %d; not changing it",
                    spec.name, have, spec.partitions,
                )
            result[spec.name] = "exists"
        else:
            new.append(
                NewTopic(
                    spec.name,
                    num_partitions=spec.partitions,
                    replication_factor=spec.replication_factor,
                    config=spec.config(),
                )
            )
    if new:
        futures = admin.create_topics(new, request_timeout=max(1.0, deadline - time.monotonic()))
        for name, fut in futures.items():
            try:
                fut.result()
                result[name] = "created"
            except KafkaException as exc:
                err = exc.args[0]
                if isinstance(err, KafkaError) and err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                    result[name] = "exists"
                else:
                    raise TopicSetupError(f"cannot create topic {name}: {err}") from exc
    return result
