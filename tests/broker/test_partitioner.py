"""partition_for (confluent_kafka.murmur2) == the Java partitioner == where murmur2_random sends a key."""

from __future__ import annotations

import random
import uuid
from typing import Any

import pytest
from aiokafka.partitioner import murmur2 as aiokafka_murmur2
from confluent_kafka import KafkaError, Message, Producer
from confluent_kafka.admin import AdminClient, NewTopic
from hypothesis import given
from hypothesis import strategies as st

from pipeline.broker.kafka_process import KafkaCluster
from pipeline.broker.partitioner import PartitionMap, partition_for

# org.apache.kafka.common.utils.UtilsTest#testMurmur2 (Java client)
JAVA_VECTORS = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


def _signed(u: int) -> int:
    return u - (1 << 32) if u & 0x80000000 else u


# librdkafka src/rdmurmur2.c unittest_murmur2 (checked there against the Java client);
# covers every tail length (0..3) and the empty key.
_UNALIGNED = b"PreAmbleWillBeRemoved,ThePrePartThatIs"
LIBRDKAFKA_VECTORS = {
    b"kafka": _signed(0xD067CF64),
    b"giberish123456789": _signed(0x8F552B0C),
    b"1234": _signed(0x9FC97B14),
    b"234": _signed(0xE7C009CA),
    b"34": _signed(0x873930DA),
    b"4": _signed(0x5A4B5CA1),
    _UNALIGNED: _signed(0x78424F1C),
    _UNALIGNED[1:]: _signed(0x4A62B377),
    _UNALIGNED[2:]: _signed(0xE0E4E09E),
    _UNALIGNED[3:]: _signed(0x62B8B43F),
    b"": _signed(0x106E08D9),
}


#: partition counts to read the hash through; the last keeps all 31 bits the partitioner uses
COUNTS = (1, 2, 3, 8, 12, 64, 1000, 2**31 - 1)


@pytest.mark.parametrize(("data", "expected"), [*JAVA_VECTORS.items(), *LIBRDKAFKA_VECTORS.items()])
def test_known_vectors(data: bytes, expected: int) -> None:
    """The Java producer's partition: ``Utils.toPositive(Utils.murmur2(key)) % numPartitions``."""
    for n in COUNTS:
        assert partition_for(data, n) == (expected & 0x7FFFFFFF) % n


@given(st.binary(max_size=200))
def test_matches_aiokafka_port_of_the_java_client(data: bytes) -> None:
    expected = aiokafka_murmur2(data)
    for n in COUNTS:
        assert partition_for(data, n) == (expected & 0x7FFFFFFF) % n


def test_bytes_like_keys_hash_as_their_bytes() -> None:
    key = b"email:0123456789abcdef0123456789abcdef"
    assert partition_for(bytearray(key), 12) == partition_for(memoryview(key), 12) == partition_for(key, 12)


def test_empty_key_has_a_fixed_partition() -> None:
    assert partition_for(b"", 8) == 0x106E08D9 % 8 == 1


def test_partitions_must_be_positive() -> None:
    with pytest.raises(ValueError):
        partition_for(b"k", 0)
    with pytest.raises(ValueError):
        PartitionMap(0)
    with pytest.raises(ValueError):
        PartitionMap(8, maxsize=0)


def test_partition_map_caches_and_stays_bounded() -> None:
    pmap = PartitionMap(8, maxsize=4)
    refs = [f"email:{i:032x}" for i in range(10)]
    assert [pmap(r) for r in refs] == [partition_for(r.encode(), 8) for r in refs]
    assert pmap("cust:C1") == pmap("cust:C1") == partition_for(b"cust:C1", 8)
    hits, misses, maxsize, size = pmap.cache_info()
    assert (hits, misses, maxsize, size) == (1, 11, 4, 4)
    pmap.clear()
    assert pmap.cache_info()[3] == 0
    assert pmap("cust:\u00e9") == partition_for("cust:\u00e9".encode(), 8)  # UTF-8, as ingest keys


@pytest.mark.broker
def test_librdkafka_murmur2_random_sends_every_key_where_partition_for_says(
    broker: KafkaCluster,
) -> None:
    topic = f"part-{uuid.uuid4().hex[:8]}"
    conf: dict[str, Any] = {"bootstrap.servers": broker.bootstrap_servers}
    admin = AdminClient(conf)  # kept referenced until the topic exists
    admin.create_topics([NewTopic(topic, 8, 1)])[topic].result(10)
    rng = random.Random(20240611)
    keys = [rng.randbytes(rng.randrange(1, 80)) for _ in range(480)]
    keys += [f"email:{rng.getrandbits(128):032x}".encode() for _ in range(20)]
    keys += [b""] * 40  # empty (not null) keys are hashed, not randomised
    delivered: list[tuple[bytes, int | None]] = []  # (key as produced, partition)
    null_key_partitions: list[int | None] = []
    errors: list[KafkaError] = []

    def on_delivery(err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            errors.append(err)
        elif msg.value() == b"null-key":
            null_key_partitions.append(msg.partition())
        else:
            delivered.append((keys[int(msg.value() or b"-1")], msg.partition()))

    producer = Producer({**conf, "partitioner": "murmur2_random", "linger.ms": 5, "acks": "all",
                         # null keys: a random partition per message, not sticky batches
                         "sticky.partitioning.linger.ms": 0, "on_delivery": on_delivery})
    for i, key in enumerate(keys):
        producer.produce(topic, str(i).encode(), key)
    for _ in range(40):
        producer.produce(topic, b"null-key", None)
    assert producer.flush(30) == 0
    assert not errors
    assert sorted(delivered) == sorted(zip(keys, (partition_for(k, 8) for k in keys), strict=True))
    assert len({p for _, p in delivered}) == 8  # the keys really were spread
    assert {p for k, p in delivered if k == b""} == {partition_for(b"", 8)} == {1}
    # the contrast that proves b"" was not sent as a null key: null keys land anywhere
    assert len(null_key_partitions) == 40 and len(set(null_key_partitions)) > 1
