"""A stage's table on disk: one RocksDB per owned partition, kept in step with its changelog.

The changelog topic is the source of truth (it moves with the partition to
whichever worker owns it next); RocksDB is this worker's materialisation of
it. Each write batch stores, atomically with the records, the changelog
offset it reflects, so a worker that gets a partition back (or restarts)
replays only the changelog tail it has not seen; an empty directory replays
everything. Keys and values are opaque bytes here; each stage has its codec.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from rocksdict import BlockBasedOptions, Cache, Options, Rdict, WriteBatch, WriteBufferManager

OFFSET_KEY = b"\xff/changelog-offset"  # sorts after every record key (they start below 0xff)


#: One memory budget for every RocksDB database of the process (two stages x every owned partition):
#: memtables are flushed when together they pass MEMTABLE_BUDGET, and one block cache is shared. With
#: RocksDB's defaults each database may hold two 64 MiB memtables of its own, so memory grew with the
#: number of partitions a worker owned (seen in ``make faults``' poison scenario).
MEMTABLE_BUDGET = 64 << 20
MEMTABLE_SIZE = 16 << 20
BLOCK_CACHE = 64 << 20
_shared: tuple[Cache, WriteBufferManager] | None = None


def _options() -> Options:
    global _shared
    if _shared is None:
        _shared = (Cache(BLOCK_CACHE), WriteBufferManager(MEMTABLE_BUDGET, False))
    cache, memtables = _shared
    opts = Options(raw_mode=True)
    opts.set_write_buffer_manager(memtables)
    opts.set_write_buffer_size(MEMTABLE_SIZE)
    table = BlockBasedOptions()
    table.set_block_cache(cache)
    opts.set_block_based_table_factory(table)
    return opts


class PartitionStore:
    """Raw per-partition RocksDB databases with their changelog offset."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self._dbs: dict[int, Rdict] = {}

    def db(self, partition: int) -> Rdict:
        db = self._dbs.get(partition)
        if db is None:
            path = str(self.root / f"partition-{partition}")
            db = self._dbs[partition] = Rdict(path, _options())
        return db

    def raw(self, partition: int, key: bytes) -> bytes | None:
        value = self.db(partition).get(key)
        return value if value is None else bytes(value)

    def changelog_offset(self, partition: int) -> int:
        """The last changelog offset this database reflects (-1: none)."""
        data = self.db(partition).get(OFFSET_KEY)
        return int(data) if data is not None else -1

    def write(self, partition: int, items: Iterable[tuple[bytes, bytes | None]],
              changelog_offset: int) -> None:
        batch = WriteBatch(raw_mode=True)
        for key, value in items:
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
        batch.put(OFFSET_KEY, str(changelog_offset).encode())
        self.db(partition).write(batch)

    def items(self, partition: int, prefix: bytes = b"", start: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        """Records (never the offset marker) under ``prefix``, in key order, from ``start`` on."""
        it = self.db(partition).iter()
        try:
            it.seek(max(prefix, start))
            while it.valid():
                key = bytes(it.key())
                if not key.startswith(prefix) or key == OFFSET_KEY:
                    break
                yield key, bytes(it.value())
                it.next()
        finally:
            del it

    def count(self, partition: int, prefix: bytes) -> int:
        return sum(1 for _ in self.items(partition, prefix))

    def wipe(self, partition: int) -> None:
        """Forget a partition whose changelog no longer holds what this database reflects."""
        db = self._dbs.pop(partition, None)
        if db is not None:
            db.close()
        Rdict.destroy(str(self.root / f"partition-{partition}"))

    def close(self) -> None:
        for db in self._dbs.values():
            db.close()
        self._dbs.clear()
