"""Raw consume -> produce passthroughs: the ceilings the pipeline is measured against."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from typing import Any

from confluent_kafka import Consumer, Producer


async def _aiokafka_passthrough(
    bootstrap: str, topics: Sequence[str], out_topic: str, expected: int, group: str
) -> float:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    consumer = AIOKafkaConsumer(
        *topics, bootstrap_servers=bootstrap, group_id=group, auto_offset_reset="earliest",
        enable_auto_commit=False, max_poll_records=5000,
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_batch_size=1 << 20)
    await consumer.start()
    await producer.start()
    try:
        seen = 0
        started: float | None = None
        while seen < expected:
            batches = await consumer.getmany(timeout_ms=1000)
            if started is None and batches:
                started = time.perf_counter()
            for records in batches.values():
                for rec in records:
                    await producer.send(out_topic, rec.value, key=rec.key)
                seen += len(records)
        await producer.flush()
        await consumer.commit()
        assert started is not None
        return seen / (time.perf_counter() - started)
    finally:
        await consumer.stop()
        await producer.stop()


def aiokafka_passthrough(
    bootstrap: str, topics: Sequence[str], out_topic: str, expected: int, group: str
) -> float:
    """Events/s of the plainest asyncio passthrough: the issue's reference baseline."""
    return asyncio.run(_aiokafka_passthrough(bootstrap, topics, out_topic, expected, group))


def librdkafka_passthrough(
    client: Mapping[str, Any], topics: Sequence[str], out_topic: str, expected: int, group: str
) -> float:
    """Events/s of a librdkafka batch passthrough: the ceiling for ingest's own client."""
    consumer = Consumer({**client, "group.id": group, "auto.offset.reset": "earliest",
                         "enable.auto.commit": False})
    producer = Producer({**client, "linger.ms": 5, "batch.num.messages": 10000,
                         "queue.buffering.max.messages": 500000})
    consumer.subscribe(list(topics))
    seen = 0
    started: float | None = None
    try:
        while seen < expected:
            batch = consumer.consume(num_messages=2000, timeout=0.5)
            if batch and started is None:
                started = time.perf_counter()
            for msg in batch:
                if msg.error():
                    continue
                while True:
                    try:
                        producer.produce(out_topic, msg.value(), msg.key())
                        break
                    except BufferError:
                        producer.poll(0.05)
                seen += 1
            producer.poll(0)
        producer.flush(60)
        consumer.commit(asynchronous=False)
        assert started is not None
        return seen / (time.perf_counter() - started)
    finally:
        consumer.close()


def faust_agent(bootstrap: str, topics: Sequence[str], expected: int, mode: str, out_topic: str) -> float:
    """Events/s of a plain Faust agent (``consume`` or ``send``), in a subprocess."""
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.bench.faust_baseline", bootstrap, ",".join(topics),
         str(expected), mode, out_topic],
        capture_output=True, text=True, timeout=1800,
    )
    # Faust's terminal spinner may prefix the line with escape codes
    for line in proc.stdout.splitlines():
        if "RATE " in line:
            return float(line.split("RATE ", 1)[1].split()[0])
    raise RuntimeError(
        f"Faust baseline exited with {proc.returncode}: {proc.stdout[-1000:]} {proc.stderr[-2000:]}"
    )
