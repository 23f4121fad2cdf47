"""Which partition a key lands on: librdkafka's ``murmur2_random``, without asking a broker.

Ingest produces with ``partitioner: murmur2_random`` (the Java client's
default partitioner), and the identity stage must know, without asking a
broker, whether the partition of an identifier is owned locally. The answer
comes from ``confluent_kafka.murmur2(key, partitions)`` (in confluent-kafka
2.16.1, the pinned version), librdkafka's own Java-compatible MurmurHash2 (seed ``0x9747b28c``):
``(murmur2(key) & 0x7fffffff) % partitions``, the same function the producer
partitions with. tests/broker/test_partitioner.py checks it against the Java
client's test vectors, aiokafka's port of the Java code, and the partitions a
real producer's records land on.

Null and empty keys: librdkafka only picks a random partition when the key
*pointer* is NULL (``if (!key)``), not when it is empty. confluent-kafka
passes ``key=None`` as NULL and ``key=b""`` as a zero-length key, so ``b""``
is hashed like any other key (murmur2(b"") = 0x106e08d9, partition 1 of 8),
exactly as the Java producer hashes an empty ``byte[]``. ``None`` has no
fixed partition, hence :func:`partition_for` takes only bytes. (Unlike
``consistent_random``, librdkafka's default, which randomises empty keys too.)

Cost (CPython 3.11, the 2-core dev box; BENCHMARKS.md, "Partitioner"):
``confluent_kafka.murmur2`` takes ~0.12-0.16 us a call whatever the key
length, the pure-Python port this module had before 2.5 us for a 38-byte
key and 1.0 us for a 7-byte one. A :class:`PartitionMap` hit (LRU) is
still a little cheaper than a miss (no ``encode``, no call into C).
"""

from __future__ import annotations

from functools import lru_cache

from confluent_kafka import murmur2 as _murmur2

__all__ = ["PartitionMap", "partition_for"]


def partition_for(key: bytes, partitions: int) -> int:
    """The partition librdkafka ``murmur2_random`` (and the Java producer) sends ``key`` to.

    ``key`` must be bytes (``b""`` included, which is hashed); a ``None`` key
    is spread at random by the producer and has no partition. ``partitions``
    is at most 2**31 - 1, as in Kafka.
    """
    if partitions < 1:
        raise ValueError(f"partitions must be at least 1, got {partitions}")
    return _murmur2(bytes(key), partitions)


class PartitionMap:
    """``ref -> partition`` for one partition count, with a bounded LRU cache.

    The identity stage asks for the same hot identifiers over and over
    (every event, every message of a merge); a hit skips the ``encode`` and
    the call into librdkafka. Refs are encoded UTF-8, as ingest encodes its
    keys (``key.encode()``).
    """

    __slots__ = ("_lookup", "maxsize", "partitions")

    def __init__(self, partitions: int, maxsize: int = 65536) -> None:
        if partitions < 1:
            raise ValueError(f"partitions must be at least 1, got {partitions}")
        if maxsize < 1:
            raise ValueError(f"maxsize must be at least 1, got {maxsize}")
        self.partitions = partitions
        self.maxsize = maxsize

        def compute(ref: str) -> int:
            return _murmur2(ref.encode(), partitions)

        self._lookup = lru_cache(maxsize=maxsize)(compute)

    def __call__(self, ref: str) -> int:
        return self._lookup(ref)

    def cache_info(self) -> tuple[int, int, int | None, int]:
        """(hits, misses, maxsize, currsize), for metrics and tests."""
        info = self._lookup.cache_info()
        return info.hits, info.misses, info.maxsize, info.currsize

    def clear(self) -> None:
        self._lookup.cache_clear()
