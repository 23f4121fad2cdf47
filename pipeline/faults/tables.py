"""The profile table as the changelog holds it: what any new worker would rebuild."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer

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
