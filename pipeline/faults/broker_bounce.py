"""Scenario: kill -9 the broker that leads the most input partitions, under load, and restart it.

Two workers over the 3-broker Apache Kafka (replication factor 3,
``min.insync.replicas=2``, every producer ``acks=all``), the workload of
``workload.py``. Phase one publishes the consents and waits until every stage
has committed them. Phase two publishes the web events at a fixed rate; at
moments spread over the stream, the broker that leads the most partitions of
the ingest input topics (from the cluster's metadata at that moment) is killed
with SIGKILL; once the cluster has fenced it (each of those partitions has
another leader) it stays down a few seconds more and is restarted on its own
storage. The next bounce waits until every partition is back to its full
in-sync replica set, so that each kill takes one replica of three and no
acknowledged record can be on the killed broker alone. Then the ``crash``
checks: every acknowledged event on the canonical topic, 0 missing and 0
unexpected triggers, profiles equal the recomputation, every stage's lag back
to 0, and the records read again after the faults (re-ingested copies,
trigger repeats) are reported.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path

from confluent_kafka.admin import AdminClient

from pipeline.contracts.catalogue import SchemaCatalogue
from pipeline.contracts.codec import AvroCodec
from pipeline.faults.crash import GROUP, PARTITIONS, start_all, verify, wait_drained, workload_env
from pipeline.faults.lag import lags, stage_inputs
from pipeline.faults.scenario import Result
from pipeline.faults.substrate import fault_broker
from pipeline.faults.workers import WorkerProcess
from pipeline.faults.workload import DAY_MS, Workload, consents, web_events
from pipeline.simulate.publisher import PublishStats, publish
from pipeline.topology.catalogue import load_catalogue

Leaders = Mapping[tuple[str, int], int]  # (topic, partition) -> leader broker id (-1: none)


def most_leading(leaders: Leaders, brokers: Iterable[int]) -> tuple[int, int]:
    """(broker, partitions it leads): the broker leading the most of these partitions, ties to the lowest id.

    Partitions without a leader (-1) count for no one; ``brokers`` are the candidates (a broker that
    leads nothing can still be chosen when no one leads anything)."""
    counts = Counter(leader for leader in leaders.values() if leader >= 0)
    candidates = sorted(set(brokers))
    if not candidates:
        raise ValueError("no broker to choose from")
    best = min(candidates, key=lambda b: (-counts.get(b, 0), b))
    return best, counts.get(best, 0)


def partition_leaders(admin: AdminClient, topics: Iterable[str]) -> tuple[dict[tuple[str, int], int],
                                                                          list[int]]:
    """The leaders of every partition of ``topics`` and the brokers in the metadata, as the cluster says."""
    md = admin.list_topics(timeout=10)
    leaders = {(t, p): part.leader for t in topics for p, part in md.topics[t].partitions.items()}
    return leaders, sorted(md.brokers)


def wait_moved(admin: AdminClient, topics: list[str], victim: int, timeout: float) -> float | None:
    """Seconds until no partition of ``topics`` names ``victim`` as its leader (the cluster fenced it and
    elected others); None if it still leads one after ``timeout``."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            leaders, _brokers = partition_leaders(admin, topics)
            if victim not in leaders.values():
                return time.monotonic() - started
        except Exception:  # a metadata request during the election: ask again
            pass
        time.sleep(0.2)
    return None


def under_replicated(admin: AdminClient) -> int:
    """Partitions (every topic, internal ones included) whose in-sync set is smaller than their replicas."""
    md = admin.list_topics(timeout=10)
    return sum(1 for t in md.topics.values() for part in t.partitions.values()
               if len(part.isrs) < len(part.replicas))


def wait_in_sync(admin: AdminClient, timeout: float) -> float | None:
    """Seconds until no partition is under-replicated (None: still some after ``timeout``)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            if under_replicated(admin) == 0:
                return time.monotonic() - started
        except Exception:  # a metadata request during a leader change: ask again
            pass
        time.sleep(0.5)
    return None


def run_broker_bounce(out: Path, *, customers: int, events: int, bounces: int, rate: float, seed: int,
                      down_s: tuple[float, float] = (1.0, 5.0), restart_s: float = 240.0) -> Result:
    res = Result("broker-bounce")
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    catalogue = load_catalogue().with_partitions(PARTITIONS)
    codec = AvroCodec(SchemaCatalogue.load(), max_record_size=4 * 1024 * 1024)
    work = Workload(customers, events, seed, end_ms=int(time.time() * 1000) - DAY_MS)
    inputs = [t.name for t in catalogue.ingest_sources]
    with fault_broker(out) as broker:
        if broker.cluster is None:
            raise RuntimeError("broker-bounce needs the Apache Kafka cluster (--broker kafka)")
        cluster = broker.cluster
        client = broker.client
        broker.ensure_topics(catalogue)
        admin = AdminClient({**client, "log_level": 0})
        env = workload_env(broker.bootstrap_servers)
        workers = [WorkerProcess(f"bounce-w{i}", env, out / f"state-w{i}", out) for i in (1, 2)]
        bounced: list[str] = []
        not_in_sync = not_moved = after_load = 0
        try:
            start_all(workers)
            phase1 = consents(work)
            stats1 = publish(phase1, encode=codec.encode, bootstrap_servers=broker.bootstrap_servers,
                             catalogue=catalogue)
            wait_drained(client, catalogue, workers, timeout=600)
            stream = web_events(work)
            published: list[PublishStats] = []

            def producer() -> None:
                published.append(publish(stream, encode=codec.encode, catalogue=catalogue, rate=rate,
                                         bootstrap_servers=broker.bootstrap_servers))

            thread = threading.Thread(target=producer, name="faults-producer", daemon=True)
            t0 = time.monotonic()
            thread.start()
            spacing = len(stream) / rate / (bounces + 1)
            for i in range(bounces):
                due = t0 + (i + 1) * spacing * rng.uniform(0.8, 1.2)
                time.sleep(max(0.0, due - time.monotonic()))
                for w in workers:
                    w.check_alive()
                leaders, brokers = partition_leaders(admin, inputs)
                victim, led = most_leading(leaders, brokers)
                at = time.monotonic() - t0
                if not thread.is_alive():
                    after_load += 1
                cluster.kill(victim)
                moved = wait_moved(admin, inputs, victim, timeout=120)  # its partitions led by others
                if moved is None:
                    not_moved += 1
                time.sleep(rng.uniform(*down_s))  # and down a little longer
                cluster.restart(victim, timeout_s=restart_s)
                back = time.monotonic() - t0
                in_sync = wait_in_sync(admin, timeout=180)
                if in_sync is None:
                    not_in_sync += 1
                bounced.append(f"broker {victim} (led {led} of {len(leaders)}) at {at:.1f}s, its leaderships "
                               + (f"moved {moved:.1f}s later" if moved is not None else "NOT moved in 120s")
                               + f", restarted {back - at:.1f}s after the kill, in sync "
                               + (f"{in_sync:.1f}s after" if in_sync is not None else "NOT within 180s"))
            thread.join()
            drain = wait_drained(client, catalogue, workers, timeout=900)
            behind = {k: v for k, v in lags(client, stage_inputs(catalogue, GROUP)).items() if v}
            res.figures["run"] = (f"{len(phase1):,} consents, then {len(stream):,} web events over "
                                  f"{customers:,} customers at {rate:,.0f}/s; drained {drain:.0f}s after the "
                                  f"last publish")
            res.figures["bounces"] = "; ".join(bounced)
        finally:
            for w in workers:
                w.stop()
        stats2 = published[0] if published else PublishStats()
        errors = stats1.delivery_errors + stats2.delivery_errors + stats1.unflushed + stats2.unflushed
        res.figures["publisher"] = (f"{stats1.events + stats2.events:,} sent with acks=all, "
                                    f"{errors:,} not acknowledged")
        res.check(f"every published record acknowledged by the cluster (not: {errors})", errors == 0)
        res.check(f"{bounces} kill -9 of the leading broker, each restarted", len(bounced) == bounces)
        res.check(f"every kill under load: while the web events were being published (not: {after_load})",
                  not after_load)
        res.check(f"each time, the killed broker's input partitions got other leaders (not: {not_moved})",
                  not not_moved)
        res.check(f"every partition back in full sync after each restart (not: {not_in_sync})",
                  not not_in_sync)
        res.check(f"every partition of every stage at lag 0 ({len(behind)} behind)", not behind)
        seen = verify(res, client, catalogue, codec, published=len(phase1) + len(stream))
        res.figures["records read again after the faults"] = (
            f"{seen.copies - len(seen.events):,} canonical events ingested twice; "
            f"{seen.repeats:,} trigger repeats")
    return res.finish()
