"""The identity tables on disk: ``PartitionStore`` plus the identity codec (records by keyspace)."""

from __future__ import annotations

from pipeline.identity.codec import decode_record, state_key
from pipeline.identity.messages import Space
from pipeline.identity.model import Ref
from pipeline.identity.state import Record
from pipeline.state.changelog import Restored, commit_header, read_done_commits, restore_partitions
from pipeline.state.partition_store import PartitionStore

__all__ = ["Restored", "RocksRecordStore", "commit_header", "read_done_commits", "restore_partitions"]


def _prefix(space: Space) -> bytes:
    return state_key(space, "x")[:-1]


class RocksRecordStore(PartitionStore):
    """Implements ``engine.RecordSource`` over per-partition RocksDB databases."""

    def load(self, partition: int, space: Space, ref: Ref) -> Record | None:
        data = self.db(partition).get(state_key(space, ref))
        return decode_record(data) if data is not None else None

    def count_space(self, partition: int, space: Space) -> int:
        return self.count(partition, _prefix(space))
