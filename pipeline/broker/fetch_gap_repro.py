"""Minimal reproduction: a tailing consumer on the embedded Tansu broker can be served offsets past a hole.

Several producers write to a few partitions while one consumer tails them and
notes every jump in offsets. Afterwards a second consumer reads everything from
the start. On Tansu (memory storage) the tail occasionally jumps (e.g. from
4949 to 5002) while the re-read holds every record: the records existed, the
fetch went past them before they were visible. Real Kafka never does this for
non-transactional, uncompacted topics. ``offset_gaps.OffsetGapGuard`` is the
pipeline's defence.

    python -m pipeline.broker.fetch_gap_repro [--producers 3] [--records 50000] [--rounds 10] [--guard]

With ``--guard`` the tail reads through the guard: every jump is re-read and
nothing is skipped.
"""

from __future__ import annotations

import argparse
import multiprocessing
import time
import uuid
from dataclasses import dataclass

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from pipeline.broker.embedded import EmbeddedBroker
from pipeline.broker.offset_gaps import REFETCH, OffsetGapGuard


@dataclass(frozen=True)
class Round:
    produced: int
    tailed: int
    jumps: list[tuple[int, int, int]]  # (partition, last offset delivered, next offset delivered)
    reread: int
    refetches: int


def _produce(bootstrap: str, topic: str, writer: int, records: int) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 2, "acks": "all"})
    for n in range(records):
        while True:
            try:
                producer.produce(topic, f"{writer}-{n}".encode(), key=str(n % 97).encode())
                break
            except BufferError:
                producer.poll(0.01)
        if n % 200 == 0:
            producer.poll(0)
            time.sleep(0.002)  # a steady stream, not one burst
    producer.flush(30)


def run_round(bootstrap: str, producers: int, records: int, partitions: int, guarded: bool) -> Round:
    topic = f"fetch-gap-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, partitions, 1)])[topic].result()
    time.sleep(1)
    tail = Consumer({"bootstrap.servers": bootstrap, "group.id": f"tail-{topic}",
                     "enable.auto.commit": False, "fetch.wait.max.ms": 10, "log_level": 3})
    tail.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    writers = [multiprocessing.Process(target=_produce, args=(bootstrap, topic, i, records))
               for i in range(producers)]
    for w in writers:
        w.start()
    total = producers * records
    counted: list[str] = []
    guard = OffsetGapGuard(counted.append) if guarded else None
    last: dict[int, int] = {}
    jumps: list[tuple[int, int, int]] = []
    tailed = 0
    deadline = time.monotonic() + 300
    while tailed < total and time.monotonic() < deadline:
        batch = tail.consume(1000, 0.05)
        for msg in guard.filter(tail, batch) if guard is not None else batch:
            if msg.error() is not None:
                continue
            p, offset = msg.partition(), msg.offset()
            assert p is not None and offset is not None
            if p in last and offset != last[p] + 1:
                jumps.append((p, last[p], offset))
            last[p] = offset
            tailed += 1
        if all(not w.is_alive() for w in writers) and time.monotonic() > deadline - 280:
            deadline = min(deadline, time.monotonic() + 20)
    for w in writers:
        w.join(timeout=60)
        if w.is_alive():  # a producer the broker stopped answering: the round still reports what it saw
            w.terminate()
    tail.close()
    reader = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reread-{topic}",
                       "enable.auto.commit": False, "log_level": 3})
    reader.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    reread = 0
    until = time.monotonic() + 30
    while reread < total and time.monotonic() < until:
        reread += sum(1 for m in reader.consume(5000, 0.2) if m.error() is None)
    reader.close()
    return Round(total, tailed, jumps, reread, counted.count(REFETCH))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--producers", type=int, default=3)
    parser.add_argument("--records", type=int, default=50_000, help="per producer")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--guard", action="store_true", help="tail through OffsetGapGuard")
    args = parser.parse_args(argv)
    seen = 0
    refetched = 0
    for i in range(args.rounds):
        with EmbeddedBroker() as broker:  # a fresh broker a round, as the scenarios have
            r = run_round(broker.bootstrap_servers, args.producers, args.records, args.partitions, args.guard)
        skipped = r.produced - r.tailed
        seen += bool(r.jumps)
        refetched += r.refetches
        print(f"round {i + 1}: produced {r.produced:,}, tail got {r.tailed:,} ({skipped:,} skipped), "
              f"jumps {r.jumps[:5]}, guard re-reads {r.refetches}, re-read from the start {r.reread:,}",
              flush=True)
    print(f"rounds with a jump the tail kept: {seen} of {args.rounds}; guard re-reads: {refetched}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
