"""Faust agents of the dead-letter topic: the summary counts and the key vault.

Low volume by design (only bad records land here), so plain Faust streams are
the right tool: changelogged state, recovery and rebalancing come for free.
``GET /dlq`` answers with this worker's share of the counts; the vault
(``register_dlq_vault``) keeps the key shares sealed dead letters need.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import faust
from faust.types import TableT
from faust.web import Request, Response, View
from prometheus_client import CollectorRegistry

from pipeline.broker.partitioner import PartitionMap
from pipeline.contracts.codec import AvroCodec
from pipeline.contracts.errors import DecodeError
from pipeline.dlq import vault
from pipeline.dlq.summary import summarise, summary_key
from pipeline.dlq.vault import VaultRecordError, decode_record, sweep_record
from pipeline.errors import TopologyError
from pipeline.metrics.dlq import DlqVaultMetrics
from pipeline.topology.catalogue import TopicCatalogue

log = logging.getLogger(__name__)


def register_dlq_summary(app: faust.App, catalogue: TopicCatalogue, codec: AvroCodec) -> TableT:
    dlq = catalogue["dlq"]
    changelog = catalogue["dlq_summary_changelog"]
    topic = app.topic(dlq.name, key_type=bytes, value_type=bytes,
                      key_serializer="raw", value_serializer="raw", partitions=dlq.partitions)
    table = app.Table(
        "dlq-summary",
        default=int,
        partitions=changelog.partitions,
        changelog_topic=app.topic(changelog.name, partitions=changelog.partitions, compacting=True,
                                  key_serializer="json", value_serializer="json"),
    )

    async def count_dead_letters(stream: Any) -> None:
        async for event in stream.events():
            try:
                record = codec.decode(event.value, dlq.subject)  # type: ignore[arg-type]
            except DecodeError as exc:
                # A dead letter about a dead letter would loop; count and move on.
                log.warning("undecodable record on %s: %s", dlq.name, exc.reason)
                record = {"source_topic": "unknown", "reason": f"dlq_{exc.reason}"}
            table[summary_key(event.message.partition, record)] += 1

    app.agent(topic, name="omnipipe.dlq-summary")(count_dead_letters)

    class DlqView(View):
        async def get(self, request: Request) -> Response:
            return self.json(summarise((str(k), int(v)) for k, v in table.items()))

    app.page("/dlq")(DlqView)
    return table


#: How often each worker asks every vault partition to drop the shares the DLQ retention outlived.
SWEEP_INTERVAL_S = 3600.0


def register_dlq_vault(app: faust.App, catalogue: TopicCatalogue, registry: CollectorRegistry,
                       sweep_interval_s: float = SWEEP_INTERVAL_S) -> TableT:
    """The DLQ key vault: a Faust agent over ``dlq.keys`` keeping one table row per key share.

    Rows live on the partition of their ref (``dlq.keys`` is keyed by ref), so an
    erasure, sent on the same partition after the shares it must destroy, finds
    them all there; deleting a row writes a tombstone to the compacted changelog.
    """
    keys = catalogue["dlq_keys"]
    changelog = catalogue["dlq_vault_changelog"]
    if keys.partitions != changelog.partitions:
        raise TopologyError(f"{keys.name} and {changelog.name} must have the same number of partitions")
    retention_ms = catalogue["dlq"].retention_ms
    metrics = DlqVaultMetrics(registry)
    partition_of = PartitionMap(keys.partitions)
    topic = app.topic(keys.name, key_type=bytes, value_type=bytes,
                      key_serializer="raw", value_serializer="raw", partitions=keys.partitions)
    table = app.Table(
        "dlq-vault",
        key_type=bytes, value_type=bytes,  # bytes: Faust's "raw" serializer, rows as vault.py writes them
        partitions=changelog.partitions,
        changelog_topic=app.topic(changelog.name, partitions=changelog.partitions, compacting=True,
                                  key_serializer="raw", value_serializer="raw"),
    )

    async def keep_vault(stream: Any) -> None:
        async for event in stream.events():
            try:
                record = decode_record(event.value)
            except VaultRecordError:
                metrics.bad_records.inc()
                log.warning("skipped a record on %s that is not a key, erase or sweep record", keys.name)
                continue
            partition: int = event.message.partition

            def owns(ref: str, p: int = partition) -> bool:
                return partition_of(ref) == p

            metrics.add(vault.apply(table, record, owns=owns))

    app.agent(topic, name="omnipipe.dlq-vault")(keep_vault)

    if retention_ms > 0:
        async def sweep() -> None:
            before = int(time.time() * 1000) - retention_ms
            for p in range(keys.partitions):
                await topic.send(value=sweep_record(before), partition=p)

        app.timer(sweep_interval_s, name="omnipipe.dlq-vault-sweep")(sweep)
    return table
