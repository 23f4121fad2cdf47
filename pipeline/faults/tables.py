"""The profile table as the changelog holds it: what any new worker would rebuild."""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer

from pipeline.broker.reader import iter_topic
from pipeline.profile.engine import PROFILE_PREFIX, decode_record
from pipeline.profile.state import ProfileState
from pipeline.state.changelog import read_done_commits, restore_partitions
from pipeline.state.partition_store import PartitionStore


def _partitions(client: Mapping[str, Any], topic: str) -> list[int]:
    c = Consumer({**client, "group.id": "omnipipe-faults-md"})
    try:
        return sorted(c.list_topics(topic, timeout=10).topics[topic].partitions)
    finally:
        c.close()


def rebuilt_keys(client: Mapping[str, Any], changelog: str, commits: str) -> set[bytes]:
    """Every key a table rebuilt from ``changelog`` holds (incomplete commits skipped, tombstones applied)."""
    with tempfile.TemporaryDirectory(prefix="omnipipe-faults-table-") as tmp:
        store = PartitionStore(Path(tmp))
        try:
            parts = _partitions(client, changelog)
            restore_partitions(store, client, changelog, parts, done=read_done_commits(client, commits))
            return {key for p in parts for key, _value in store.items(p)}
        finally:
            store.close()


def last_words(client: Mapping[str, Any], changelog: str) -> dict[bytes, bytes | None]:
    """Each key's latest record on the changelog as written (the broker may not have compacted it)."""
    out: dict[bytes, bytes | None] = {}
    for r in iter_topic(client, changelog, idle_s=1.0, timeout_s=600):
        if r.key is not None:
            out[r.key] = r.value
    return out


def profile_table(client: Mapping[str, Any], changelog: str, commits: str) -> dict[str, ProfileState]:
    """Every live profile's state, rebuilt on an empty store from the changelog (incomplete commits
    skipped), as a new worker would."""
    with tempfile.TemporaryDirectory(prefix="omnipipe-faults-table-") as tmp:
        store = PartitionStore(Path(tmp))
        try:
            parts = _partitions(client, changelog)
            restore_partitions(store, client, changelog, parts, done=read_done_commits(client, commits))
            out: dict[str, ProfileState] = {}
            for p in parts:
                for key, value in store.items(p, PROFILE_PREFIX):
                    rec = decode_record(value)
                    if rec.state is not None:
                        out[key[len(PROFILE_PREFIX):].decode()] = rec.state
            return out
        finally:
            store.close()


def local_digest(stage_dir: Path, prefixes: tuple[bytes, ...]) -> tuple[str, int]:
    """SHA-256 over a stage's local records under ``prefixes`` (every partition, key order), and how many.

    The stage's own bookkeeping (changelog offset marker, meta, outbox) is left out: it says how far a
    database got, not what the table holds.
    """
    store = PartitionStore(stage_dir)
    h = hashlib.sha256()
    n = 0
    try:
        for part in sorted(stage_dir.glob("partition-*"), key=lambda d: int(d.name.split("-")[1])):
            p = int(part.name.split("-")[1])
            for prefix in prefixes:
                for key, value in store.items(p, prefix):
                    h.update(b"%d|%d|%b|%d|%b" % (p, len(key), key, len(value), value))
                    n += 1
    finally:
        store.close()
    return h.hexdigest(), n
