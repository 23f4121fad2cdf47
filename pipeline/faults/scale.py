"""Scenario 4: workers join and leave mid-stream; nothing is lost and every partition drains.

Part one, membership changes: the workload of ``workload.py`` at a fixed
rate; one worker at the start, a second joins at a quarter of the stream, a
third at half, the second leaves (SIGTERM) at three quarters. Afterwards
every stage's lag is 0 on every partition, and the output equals the
recomputation (``crash.verify``: no trigger missing, none extra, profiles
equal).

Part two, throughput by worker count, in one run: 1, 2 and 3 workers in
turn, each count with its own consumer groups and its own copy of every
topic. Once its workers have joined and the group has settled, the same
input is published at once; throughput is the slope of the profile stage's
committed position between 20% and 80% of it. Ratios are against one worker.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import yaml

from pipeline.broker.admin import ensure_topics
from pipeline.contracts.catalogue import SchemaCatalogue
from pipeline.contracts.codec import AvroCodec
from pipeline.faults.crash import GROUP, PARTITIONS, start_all, verify, wait_drained, workload_env
from pipeline.faults.lag import committed_sum, lags, stage_inputs
from pipeline.faults.scenario import Result
from pipeline.faults.substrate import fault_broker
from pipeline.faults.workers import WorkerProcess
from pipeline.faults.workload import DAY_MS, Workload, consents, web_events
from pipeline.simulate.publisher import publish
from pipeline.topology.catalogue import DEFAULT_PATH, TopicCatalogue, load_catalogue


def private_topology(out: Path, prefix: str) -> Path:
    """The shipped topics, every one renamed ``<prefix>.<name>``."""
    doc = yaml.safe_load(DEFAULT_PATH.read_text())
    for spec in doc["topics"].values():
        spec["name"] = f"{prefix}.{spec['name']}"
    path = out / f"topics-{prefix}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def membership(res: Result, out: Path, servers: str, client: dict[str, Any], catalogue: TopicCatalogue,
               codec: AvroCodec, work: Workload, rate: float) -> None:
    phase1, stream = consents(work), web_events(work)
    env = workload_env(servers)
    workers = [WorkerProcess(f"scale-w{i}", env, out / f"state-w{i}", out) for i in (1, 2, 3)]
    steps: list[str] = []
    try:
        workers[0].start()
        workers[0].wait_up()
        publish(phase1, encode=codec.encode, bootstrap_servers=servers, catalogue=catalogue)
        wait_drained(client, catalogue, workers[:1], timeout=600)
        thread = threading.Thread(target=publish, args=(stream,), kwargs={
            "encode": codec.encode, "bootstrap_servers": servers, "catalogue": catalogue, "rate": rate},
            name="faults-producer", daemon=True)
        t0 = time.monotonic()
        thread.start()
        span = len(stream) / rate
        plan = ((0.25, "add", workers[1]), (0.5, "add", workers[2]), (0.75, "remove", workers[1]))
        for at, what, w in plan:
            time.sleep(max(0.0, t0 + at * span - time.monotonic()))
            for other in workers:
                if other.proc is not None:
                    other.check_alive()
            if what == "add":
                w.start()
            else:
                w.stop()
            steps.append(f"{what} {w.name} at {time.monotonic() - t0:.0f}s")
        thread.join()
        drain = wait_drained(client, catalogue, [w for w in workers if w.proc is not None], timeout=900)
        behind = {k: v for k, v in lags(client, stage_inputs(catalogue, GROUP)).items() if v}
    finally:
        for w in workers:
            w.stop()
    res.figures["membership"] = (f"{len(phase1):,} consents, {len(stream):,} web events at {rate:,.0f}/s; "
                                 f"{'; '.join(steps)}; drained {drain:.0f}s after the last publish")
    res.check(f"every partition of every stage at lag 0 ({len(behind)} behind)", not behind)
    verify(res, client, catalogue, codec, published=len(phase1) + len(stream))


def throughput(res: Result, out: Path, servers: str, client: dict[str, Any], codec: AvroCodec,
               work: Workload, settle_s: float = 10.0, replication_factor: int = 1) -> None:
    backlog = [*consents(work), *web_events(work)]
    rates: dict[int, float] = {}
    for n in (1, 2, 3):
        prefix = f"s{n}"
        topo = private_topology(out, prefix)
        cat = load_catalogue(topo).with_partitions(PARTITIONS)
        ensure_topics(client, cat, replication_factor=replication_factor)
        group = f"{GROUP}-{prefix}"
        env = workload_env(servers, group, OMNIPIPE_TOPOLOGY=str(topo))
        workers = [WorkerProcess(f"{prefix}-w{i}", env, out / f"{prefix}-state-w{i}", out) for i in range(n)]
        groups = {f"{group}-profile": [cat["resolved"].name]}
        marks: dict[float, float] = {}
        try:
            start_all(workers)
            time.sleep(settle_s)  # the last join's rebalance is over (session timeout 6 s on this broker)
            publish(backlog, encode=codec.encode, bootstrap_servers=servers, catalogue=cat)
            deadline = time.monotonic() + 1800
            while time.monotonic() < deadline and 0.8 not in marks:
                for w in workers:
                    w.check_alive()
                done = committed_sum(client, groups) / len(backlog)
                for frac in (0.2, 0.8):
                    if done >= frac and frac not in marks:
                        marks[frac] = time.monotonic()
                time.sleep(0.25)
        finally:
            for w in workers:
                w.stop()
        if len(marks) == 2:
            rates[n] = 0.6 * len(backlog) / (marks[0.8] - marks[0.2])
    base = rates.get(1)
    if base:
        shown = ", ".join(f"{n} worker(s) {r:,.0f} events/s ({r / base:.2f})" for n, r in rates.items())
        res.figures["throughput"] = f"{shown}; {len(backlog):,} events, {PARTITIONS} partitions"
    res.check("throughput measured for 1, 2 and 3 workers", len(rates) == 3)


def run_scale(out: Path, *, customers: int, events: int, rate: float, seed: int) -> Result:
    res = Result("scale")
    out.mkdir(parents=True, exist_ok=True)
    catalogue = load_catalogue().with_partitions(PARTITIONS)
    codec = AvroCodec(SchemaCatalogue.load(), max_record_size=4 * 1024 * 1024)
    with fault_broker(out) as broker:
        client = {"bootstrap.servers": broker.bootstrap_servers}
        broker.ensure_topics(catalogue)
        now = int(time.time() * 1000)
        membership(res, out, broker.bootstrap_servers, client, catalogue, codec,
                   Workload(customers, events, seed, end_ms=now - DAY_MS), rate)
        throughput(res, out, broker.bootstrap_servers, client, codec,
                   Workload(customers, events, seed + 1000, end_ms=now - DAY_MS),
                   replication_factor=broker.replication_factor)
    res.notes.append("throughput: all workers share this machine's cores with the broker; more workers "
                     "only help where there are cores to give them")
    return res.finish()
