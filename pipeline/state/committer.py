"""One stage run's changelog commits: tagged records, completion mark, then RocksDB.

Shared by the identity and profile loops. A worker killed between the
changelog records and the mark leaves part of a commit on the changelog;
restores skip it (``changelog.restore_partitions``). The delivery callback
also learns each partition's last changelog offset, which RocksDB stores with
the records.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable

from confluent_kafka import KafkaError, Message, Producer

from pipeline.broker.delivery import DeliveryFailed, produce
from pipeline.state.changelog import commit_header
from pipeline.state.partition_store import PartitionStore

log = logging.getLogger(__name__)

Items = dict[int, list[tuple[bytes, bytes | None]]]


class ChangelogCommitter:
    def __init__(self, store: PartitionStore, changelog_topic: str, commits_topic: str,
                 on_failure: Callable[[], None]) -> None:
        self.store = store
        self.changelog_topic = changelog_topic
        self.commits_topic = commits_topic
        self._on_failure = on_failure
        self.failures = 0
        self.changelog_offsets: dict[int, int] = {}
        self.writer = uuid.uuid4().hex[:16]  # this run of the stage, in changelog headers
        self.seq = 0  # commits of this run

    def on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        """The producer's delivery callback."""
        if err is not None:
            self.failures += 1
            self._on_failure()
            log.error("delivery failed on %s: %s", msg.topic(), err)
        elif msg.topic() == self.changelog_topic:
            p: int = msg.partition()  # type: ignore[assignment]
            off: int = msg.offset()  # type: ignore[assignment]
            if off > self.changelog_offsets.get(p, -1):
                self.changelog_offsets[p] = off

    def flush(self, producer: Producer, what: str) -> None:
        remaining = producer.flush(60)
        if remaining or self.failures:
            raise DeliveryFailed(f"{what}: {self.failures} records failed, {remaining} unacknowledged; "
                                 "not committing, the stage stops and replays")

    def persist(self, producer: Producer, by_partition: Items) -> int:
        """Changelog (tagged with this commit), then the commit's completion mark, then RocksDB.

        Returns the records written.
        """
        if not by_partition:
            return 0
        self.seq += 1
        headers = commit_header(self.writer, self.seq)
        n = 0
        for p, items in by_partition.items():
            for key, value in items:
                produce(producer, self.changelog_topic, value, key, p, headers)
                n += 1
        self.flush(producer, "changelog")
        produce(producer, self.commits_topic, str(self.seq).encode(), self.writer.encode())
        self.flush(producer, "commit mark")
        for p, items in by_partition.items():
            self.store.write(p, items, self.changelog_offsets[p])
        return n
