"""Faust agent over ``events.dlq``: counts dead letters into a RocksDB table.

Low volume by design (only bad records land here), so a plain Faust stream is
the right tool: changelogged state, recovery and rebalancing come for free.
``GET /dlq`` answers with this worker's share of the counts.
"""

from __future__ import annotations

import logging
from typing import Any

import faust
from faust.types import TableT
from faust.web import Request, Response, View

from pipeline.contracts.codec import AvroCodec
from pipeline.contracts.errors import DecodeError
from pipeline.dlq.summary import summarise, summary_key
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
