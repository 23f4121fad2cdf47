"""``omnipipe evaluate identity --simulate N``: simulate, run ingest + identity, score the grouping.

One command for the figure BENCHMARKS.md reports: N simulated customers are
published at full speed (with their ground truth), the real ingest and
identity loops run in this process against the cluster (the embedded broker
by default), and once every accepted event came out resolved and the stage
went quiet, the grouping is read back from the identity changelog (what a
restarted worker would restore) and scored pairwise against the truth.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from prometheus_client import CollectorRegistry

from pipeline.app import build_identity, build_ingest
from pipeline.broker.client_config import librdkafka_config
from pipeline.identity.grouping import IdentityEvaluation, evaluate_identity
from pipeline.runtime.cluster import cluster, load_topology, prepare_topics
from pipeline.runtime.schemas import build_codec
from pipeline.runtime.stage_threads import StageThreads
from pipeline.settings import Settings
from pipeline.simulate.runner import SimulationPlan, run_simulation


def simulate_and_evaluate(settings: Settings, customers: int, seed: int = 1,
                          truth_path: Path | None = None) -> IdentityEvaluation:
    catalogue = load_topology(settings)
    with cluster(settings) as s, tempfile.TemporaryDirectory(prefix="omnipipe-accuracy-") as tmp:
        prepare_topics(s, catalogue)
        truth = truth_path or Path(tmp) / "truth.jsonl"
        codec = build_codec(s, max_record_size=2 * s.max_record_bytes, strict_encode=False)
        started = time.perf_counter()
        published = run_simulation(
            SimulationPlan(customers=customers, seed=seed, truth_path=truth), encode=codec.encode,
            bootstrap_servers=s.kafka_bootstrap_servers, client_config=librdkafka_config(s),
            catalogue=catalogue)
        print(f"published {published.events:,} events of {customers:,} customers in "
              f"{time.perf_counter() - started:.0f}s")
        registry = CollectorRegistry()
        ingest = build_ingest(s, catalogue, codec, registry)
        identity = build_identity(s, catalogue, codec, registry)
        started = time.perf_counter()
        with StageThreads("accuracy", daemon=True, join_timeout=60, ingest=ingest, identity=identity) as run:
            last = -1
            while True:
                time.sleep(2.0)
                if not run.alive():
                    raise RuntimeError("a stage stopped; see the log")
                st = identity.stats
                done = (ingest.stats.accepted >= published.events and st.events >= ingest.stats.accepted
                        and st.idle_since is not None and time.monotonic() - st.idle_since > 3.0
                        and st.changelog_records == last)
                print(f"  {time.perf_counter() - started:>6.0f}s  ingest {ingest.stats.accepted:>9,}  "
                      f"identity {st.events:>9,} events, {st.resolved:>9,} resolved", flush=True)
                if done:
                    break
                last = st.changelog_records
        print(f"ingest + identity done in {time.perf_counter() - started:.0f}s "
              f"({identity.stats.changelog_records:,} changelog records)")
        started = time.perf_counter()
        score = evaluate_identity(s, catalogue, truth)
        print(f"grouping read from the changelog and scored in {time.perf_counter() - started:.0f}s")
        return score
