"""Changelog commits and restores shared by the stateful stages.

A stage writes each commit's changed records to its compacted changelog,
tagged with the commit (header ``omnipipe.commit``), then a completion mark
on its commits topic, then RocksDB. Restores skip records of commits that
never got their mark (a worker killed while writing).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaError, TopicPartition

from pipeline.broker.reader import iter_topic
from pipeline.broker.watermarks import fetched_highwaters
from pipeline.state.partition_store import PartitionStore

log = logging.getLogger(__name__)


COMMIT_HEADER = "omnipipe.commit"
"""Changelog record header: ``<writer>:<seq>``, the worker run and commit that wrote it."""


def commit_header(writer: str, seq: int) -> list[tuple[str, str | bytes | None]]:
    return [(COMMIT_HEADER, f"{writer}:{seq}".encode())]


def read_done_commits(client: Mapping[str, Any], topic: str) -> dict[str, int]:
    """Each worker run's last complete commit (``identity.commits``: writer -> seq)."""
    done: dict[str, int] = {}
    for record in iter_topic(client, topic, idle_s=0.1):
        if record.key is not None and record.value is not None:
            writer, seq = record.key.decode(), int(record.value)
            done[writer] = max(done.get(writer, -1), seq)
    return done


def _complete(headers: Any, done: Mapping[str, int]) -> bool:
    """Whether a changelog record belongs to a commit that completed (records without a header: yes)."""
    for name, value in headers or ():
        if name == COMMIT_HEADER and isinstance(value, bytes):
            writer, _, seq = value.decode().rpartition(":")
            return int(seq) <= done.get(writer, -1)
    return True


@dataclass
class Restored:
    applied: dict[int, int]  # partition -> records applied
    undone: dict[int, set[bytes]]  # partition -> keys whose latest record belongs to an incomplete commit


def restore_partitions(
    store: PartitionStore,
    client: Mapping[str, Any],
    topic: str,
    partitions: Iterable[int],
    *,
    done: Mapping[str, int] | None = None,
    tansu: bool = False,
    batch_records: int = 20_000,
    timeout_s: float = 600.0,
    clock: Callable[[], float] = time.monotonic,
) -> Restored:
    """Apply each partition's changelog tail after its stored offset.

    With ``done`` (``read_done_commits``), records of a commit that never
    completed are skipped: a worker killed while writing a commit's records
    left some of them on the changelog and not others, and nothing it sent
    depended on them (messages leave only after the commit is done). The
    keys whose latest record was skipped are returned, for the caller to
    write their current value again (so compaction cannot keep the skipped
    record as the key's last word).

    One consumer reads all of them at once and stops at each partition's end
    as the fetch reports it (partition EOF), which is right on the embedded
    Tansu too. The check that local state is not ahead of the changelog takes
    the changelog's end from ListOffsets, and with ``tansu`` from a fetch (its
    ListOffsets is short: see ``pipeline/broker/watermarks.py``).
    A database that claims more than the changelog holds belongs to another
    history (a new cluster, a recreated topic) and is rebuilt from scratch.
    """
    starts = {p: store.changelog_offset(p) + 1 for p in partitions}
    if not starts:
        return Restored({}, {})
    claimed = {(topic, p): start for p, start in starts.items() if start > 0}
    if claimed:
        ends = _changelog_ends(client, topic, [p for _, p in claimed], tansu=tansu)
        for (_, stale), start in claimed.items():
            if ends[stale] < start:
                log.warning("%s[%d] ends at %d but local state reflects offset %d: a different "
                            "history; rebuilding the partition from the changelog",
                            topic, stale, ends[stale], start - 1)
                store.wipe(stale)
                starts[stale] = 0
    consumer = Consumer({
        **client,
        "group.id": f"omnipipe-restore-{topic}",  # never joins: partitions are assigned by hand
        "enable.auto.commit": False,
        "enable.partition.eof": True,
        "fetch.max.bytes": 52_428_800,
    })
    applied = dict.fromkeys(starts, 0)
    undone: dict[int, set[bytes]] = {p: set() for p in starts}
    pending: dict[int, list[tuple[bytes, bytes | None]]] = {p: [] for p in starts}
    last = {p: start - 1 for p, start in starts.items()}
    marked = dict(last)
    waiting = set(starts)
    try:
        consumer.assign([TopicPartition(topic, p, start) for p, start in starts.items()])
        deadline = clock() + timeout_s
        while waiting:
            if clock() > deadline:
                raise TimeoutError(f"restoring {topic} partitions {sorted(waiting)} did not reach their end "
                                   f"in {timeout_s}s")
            for msg in consumer.consume(num_messages=5000, timeout=0.2):
                p: int = msg.partition()  # type: ignore[assignment]
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        waiting.discard(p)
                        continue
                    raise RuntimeError(f"restoring {topic}[{p}]: {err}")
                key = msg.key()
                last[p] = msg.offset()  # type: ignore[assignment]
                if key is None:
                    continue
                if done is not None and not _complete(msg.headers(), done):
                    undone[p].add(key)
                    continue
                undone[p].discard(key)
                pending[p].append((key, msg.value()))
            for p, items in pending.items():
                if (items or last[p] > marked[p]) and (p not in waiting or len(items) >= batch_records):
                    store.write(p, items, last[p])
                    marked[p] = last[p]
                    applied[p] += len(items)
                    pending[p] = []
        return Restored(applied, {p: keys for p, keys in undone.items() if keys})
    finally:
        consumer.close()


def _changelog_ends(client: Mapping[str, Any], topic: str, partitions: list[int], *,
                    tansu: bool) -> dict[int, int]:
    consumer = Consumer({**client, "group.id": f"omnipipe-restore-{topic}", "enable.auto.commit": False})
    try:
        listed = {(topic, p): consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                  for p in partitions}
    finally:
        consumer.close()
    if tansu:
        listed = fetched_highwaters(client, listed)
    return {p: end for (_, p), end in listed.items()}
