"""Scenario 3: delete a worker's local RocksDB and restart; the rebuilt tables equal the lost ones.

One worker takes in the journey simulator's stream and drains, then stops.
The digest of its tables (identity: identifiers, clusters, profiles and
erasure markers; profile: profiles, the timer and viewed indexes) is taken
from its RocksDB. The state directory is deleted, the worker restarts on an
empty one and rebuilds every partition from the changelogs; after it stops,
the digest is taken again and must be equal. The rebuild time is the
workers' own restore histograms, reported per 100k profiles.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from pipeline.contracts.catalogue import SchemaCatalogue
from pipeline.contracts.codec import AvroCodec
from pipeline.faults.crash import GROUP, HASH_KEY, PARTITIONS, wait_drained
from pipeline.faults.scenario import Result
from pipeline.faults.substrate import fault_broker
from pipeline.faults.tables import local_digest
from pipeline.faults.workers import WorkerProcess, worker_env
from pipeline.profile.engine import PROFILE_PREFIX, TIMER_PREFIX, VIEWED_PREFIX
from pipeline.simulate.journeys import EXPECTED_EVENTS_PER_CUSTOMER
from pipeline.simulate.runner import SimulationPlan, run_simulation
from pipeline.topology.catalogue import load_catalogue

PROFILE_TABLES = (PROFILE_PREFIX, TIMER_PREFIX, VIEWED_PREFIX)
IDENTITY_TABLES = (b"i|", b"c|", b"p|", b"x|")


def _digests(state: Path) -> dict[str, tuple[str, int]]:
    return {"identity": local_digest(state / "identity", IDENTITY_TABLES),
            "profile": local_digest(state / "profile", PROFILE_TABLES)}


def run_rebuild(out: Path, *, events: int, seed: int) -> Result:
    res = Result("rebuild")
    out.mkdir(parents=True, exist_ok=True)
    catalogue = load_catalogue().with_partitions(PARTITIONS)
    codec = AvroCodec(SchemaCatalogue.load(), max_record_size=4 * 1024 * 1024)
    customers = max(1, int(events / EXPECTED_EVENTS_PER_CUSTOMER))
    state = out / "state-w1"
    with fault_broker(out) as broker:
        client = {"bootstrap.servers": broker.bootstrap_servers}
        broker.ensure_topics(catalogue)
        env = worker_env(broker.bootstrap_servers, HASH_KEY, OMNIPIPE_GROUP_ID=GROUP,
                         OMNIPIPE_TOPIC_PARTITIONS=str(PARTITIONS), OMNIPIPE_NBA_CLOCK="event")
        worker = WorkerProcess("rebuild-w1", env, state, out)
        try:
            worker.start()
            worker.wait_up()
            stats = run_simulation(SimulationPlan(customers=customers, seed=seed), encode=codec.encode,
                                   bootstrap_servers=broker.bootstrap_servers, catalogue=catalogue)
            wait_drained(client, catalogue, [worker], timeout=3600)
        finally:
            worker.stop()
        before = _digests(state)
        for stage in ("identity", "profile"):
            shutil.rmtree(state / stage)
        restored: dict[str, float] = {}
        try:
            worker.start()
            deadline = time.monotonic() + 1800
            while time.monotonic() < deadline:
                worker.check_alive()
                m = worker.metrics()
                if m is not None and min(m.value("omnipipe_identity_restore_seconds_count"),
                                         m.value("omnipipe_profile_restore_seconds_count")) >= 1:
                    restored = {s: m.value(f"omnipipe_{s}_restore_seconds_sum")
                                for s in ("identity", "profile")}
                    break
                time.sleep(0.5)
            wait_drained(client, catalogue, [worker], timeout=600)
        finally:
            worker.stop()
        after = _digests(state)
    profiles = local_digest(state / "profile", (PROFILE_PREFIX,))[1]
    res.figures["run"] = f"{stats.events:,} simulated events over {customers:,} customers, one worker"
    for stage in ("identity", "profile"):
        (d0, n0), (d1, n1) = before[stage], after[stage]
        res.figures[f"{stage} tables"] = f"{n0:,} records, digest {d0[:16]} before; {n1:,}, {d1[:16]} rebuilt"
        res.check(f"{stage} tables rebuilt from the changelog equal the deleted ones", (d0, n0) == (d1, n1))
    res.check("the worker restored both stages", len(restored) == 2)
    if restored and profiles:
        per = {s: t / profiles * 100_000 for s, t in restored.items()}
        res.figures["rebuild time"] = (f"identity {restored['identity']:.1f}s, profile "
                                       f"{restored['profile']:.1f}s (in parallel) for {profiles:,} profiles:"
                                       f" {per['identity']:.1f}s and {per['profile']:.1f}s per 100k")
    return res.finish()
