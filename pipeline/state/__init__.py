"""Stage state on disk: per-partition RocksDB tables restored from their changelogs."""
