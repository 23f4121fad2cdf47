"""``make bench``: pipeline throughput against raw passthroughs, all in one run.

The same pre-loaded topics are read by (1) a raw aiokafka consume -> produce
passthrough, the reference baseline, (2) a raw librdkafka passthrough, the
ceiling for the client ingest uses, (3) the real ingest loop (decode,
validate, hash, normalise, encode, produce, commit) and (4) ingest,
identity and profile with next-best-action decisions together, as one worker
runs them (one process, three stage threads, fresh internal and trigger
topics and RocksDB per round, the stream-time decision clock since the
pre-loaded events are history), timed from the first input batch until every
event came out resolved, and until every event was folded and its triggers
sent. Machines here are noisy, so only ratios measured in the same run mean
anything; with ``--repeat`` the runs are interleaved and the median of each
is reported. Then, unless ``--skip-latency``, ``trigger_latency`` measures
event-to-trigger latency at half that throughput in a fresh round.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import resource
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry

from pipeline.app import build_identity, build_ingest, build_profile
from pipeline.bench.baselines import aiokafka_passthrough, faust_agent, librdkafka_passthrough
from pipeline.bench.trigger_latency import TRIGGER_TOPICS, measure_trigger_latency, outbox_sent, sample_sum
from pipeline.broker.admin import ensure_topics
from pipeline.broker.client_config import librdkafka_config
from pipeline.nba.catalogue import load_action_catalogue
from pipeline.nba.decide import REASONS
from pipeline.runtime.cluster import cluster, load_topology
from pipeline.runtime.schemas import build_codec
from pipeline.runtime.stage_threads import StageThreads
from pipeline.settings import Settings
from pipeline.simulate.journeys import JourneyConfig, iter_events
from pipeline.simulate.publisher import publish
from pipeline.state.changelog import restore_partitions
from pipeline.state.partition_store import PartitionStore
from pipeline.topology.catalogue import Role, TopicCatalogue, TopicSpec

#: Topics the ingest+identity+profile+nba run writes; renamed per round so every round starts empty.
ROUND_TOPICS = ("canonical", "resolved", "identity_messages", "identity_forget", "identity_changelog",
                "identity_merges", "identity_owners", "identity_commits", "dlq", "profile_messages",
                "profile_changelog", "profile_commits", "profile_owners", "erasures", *TRIGGER_TOPICS)

#: Bench-only sink for the raw passthroughs; not part of the pipeline's topology.
PASSTHROUGH_TOPIC = "bench.passthrough"


@dataclass
class Figures:
    aiokafka: list[float]
    librdkafka: list[float]
    ingest: list[float]
    identity: list[float] = dataclasses.field(default_factory=list)
    profile: list[float] = dataclasses.field(default_factory=list)


def _preload(settings: Settings, catalogue: TopicCatalogue, events: int, customers: int) -> int:
    codec = build_codec(settings)
    days = 14.0
    now = int(time.time() * 1000)
    cfg = JourneyConfig(customers=customers, seed=7, start_ms=now - int(days * 86_400_000) - 3_600_000,
                        days=days)
    t0 = time.perf_counter()
    stats = publish(
        itertools.islice(iter_events(cfg), events), encode=codec.encode,
        bootstrap_servers=settings.kafka_bootstrap_servers,
        client_config=librdkafka_config(settings), catalogue=catalogue,
    )
    per_topic = ", ".join(f"{k}={v}" for k, v in sorted(stats.events_per_topic.items()))
    print(f"pre-loaded {stats.events:,} events over {customers:,} customers in "
          f"{time.perf_counter() - t0:.1f}s ({per_topic})")
    if stats.delivery_errors:
        raise RuntimeError(f"{stats.delivery_errors} records failed to pre-load")
    return stats.events


def _run_ingest(settings: Settings, catalogue: TopicCatalogue, expected: int) -> float:
    codec = build_codec(settings, max_record_size=2 * settings.max_record_bytes, strict_encode=False)
    loop = build_ingest(settings, catalogue, codec, CollectorRegistry())
    loop.config.group_id = f"bench-ingest-{uuid.uuid4().hex[:6]}"
    with StageThreads("bench", ingest=loop) as run:
        deadline = time.monotonic() + 600
        while loop.stats.consumed < expected and run.alive() and time.monotonic() < deadline:
            time.sleep(0.01)
    s = loop.stats
    if s.consumed < expected or s.first_batch_at is None or s.last_commit_at is None:
        raise RuntimeError(f"ingest consumed {s.consumed} of {expected}")
    if s.dead_lettered:
        print(f"  note: ingest dead-lettered {s.dead_lettered} records")
    return s.consumed / (s.last_commit_at - s.first_batch_at)


def _round_catalogue(catalogue: TopicCatalogue, tag: str,
                     keys: Sequence[str] = ROUND_TOPICS) -> TopicCatalogue:
    return TopicCatalogue({k: dataclasses.replace(v, name=f"{v.name}.{tag}") if k in keys else v
                           for k, v in catalogue.topics.items()})


def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _run_pipeline(settings: Settings, catalogue: TopicCatalogue, expected: int) -> tuple[float, float, str]:
    """Events/s from raw input to resolved output, and to folded profiles with their triggers sent."""
    tag = uuid.uuid4().hex[:6]
    cat = _round_catalogue(catalogue, tag)
    ensure_topics(librdkafka_config(settings), cat)
    state = Path(tempfile.mkdtemp(prefix="omnipipe-bench-pipeline-"))
    # the pre-loaded simulation is history: with the wall clock every timer and occasion would be stale
    s = settings.model_copy(update={"data_dir": state, "group_id": f"bench-{tag}", "nba_clock": "event"})
    codec = build_codec(s, max_record_size=2 * s.max_record_bytes, strict_encode=False)
    registry = CollectorRegistry()
    ingest = build_ingest(s, cat, codec, registry)
    identity = build_identity(s, cat, codec, registry)
    profile = build_profile(s, cat, codec, registry, load_action_catalogue(s.actions_config_path))
    resolved_at = None
    try:
        with StageThreads("bench", ingest=ingest, identity=identity, profile=profile) as run:
            deadline = time.monotonic() + 1800
            ist = identity.stats
            # an event of an erased person's past that identity takes after the erasure is dropped there
            while run.alive() and time.monotonic() < deadline:
                if resolved_at is None and ist.resolved + ist.erased_dropped >= expected:
                    resolved_at = time.perf_counter()
                if resolved_at is not None and profile.stats.events >= ist.resolved:
                    break
                time.sleep(0.01)
            sent = outbox_sent(profile)  # the last events' triggers leave with the next commit
            while not sent() and run.alive() and time.monotonic() < deadline:
                time.sleep(0.005)
            done = time.perf_counter()
            resolved_at = resolved_at or done
            while profile.engine.unsent() and time.monotonic() < deadline:  # merged states still moving
                time.sleep(0.05)
            time.sleep(1.0)  # the last commit
            live, stored = profile.engine.totals()  # before the stop revokes the partitions
        disk = _dir_bytes(state / "profile")
        rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        restore_dir = Path(tempfile.mkdtemp(prefix="omnipipe-bench-restore-"))
        store = PartitionStore(restore_dir)
        started = time.perf_counter()
        try:
            restored = restore_partitions(store, librdkafka_config(s), cat["profile_changelog"].name,
                                          range(cat["profile_changelog"].partitions))
        finally:
            store.close()
        restore_s = time.perf_counter() - started
        shutil.rmtree(restore_dir, ignore_errors=True)
    finally:
        shutil.rmtree(state, ignore_errors=True)
    st = identity.stats
    if (st.resolved + st.erased_dropped < expected or profile.stats.events < st.resolved
            or ingest.stats.first_batch_at is None):
        raise RuntimeError(f"identity resolved {st.resolved} (+{st.erased_dropped} of erased people), "
                           f"profiles took {profile.stats.events} of {expected} events")
    start = ingest.stats.first_batch_at
    decisions = {o: sample_sum(registry, "omnipipe_nba_decisions_total", outcome=o)
                 for o in ("triggered", "suppressed", "not_eligible", "duplicate")}
    triggers = sample_sum(registry, "omnipipe_nba_triggers_total")
    cancels = sample_sum(registry, "omnipipe_nba_cancellations_total")
    timers = sample_sum(registry, "omnipipe_nba_timers_fired_total")
    reasons = {r: sample_sum(registry, "omnipipe_nba_suppressions_total", reason=r) for r in REASONS}
    top = ", ".join(f"{n:,.0f} {r}" for r, n in sorted(reasons.items(), key=lambda kv: -kv[1])[:3] if n)
    detail = (f"nba: {triggers:,.0f} triggers, {cancels:,.0f} cancellations from "
              f"{sum(decisions.values()):,.0f} decisions "
              f"({', '.join(f'{v:,.0f} {k}' for k, v in decisions.items())}; suppressed most for "
              f"{top or 'nothing'}), {timers:,.0f} timers fired; "
              f"identity: {st.remote_messages:,} messages via the broker, {st.changelog_records:,} changelog "
              f"records, {st.erased_dropped:,} events of erased people dropped; profiles: {live:,} live, "
              f"{stored / max(live, 1):,.0f} B each stored, "
              f"{disk / max(live, 1):,.0f} B each on disk (RocksDB files), max RSS {rss_mb:,.0f} MB, "
              f"changelog restore of {sum(restored.applied.values()):,} records in {restore_s:.1f}s = "
              f"{restore_s * 100_000 / max(live, 1):.1f}s per 100k profiles")
    return expected / (resolved_at - start), expected / (done - start), detail


def run_bench(settings: Settings, args: argparse.Namespace) -> int:
    customers = args.customers  # 500k events over 100k people: the first weeks of their journeys
    if getattr(args, "broker", None):
        settings = settings.model_copy(update={"embedded_broker": args.broker})
    catalogue = load_topology(settings).with_partitions(args.partitions)
    with cluster(settings) as s:
        client = librdkafka_config(s)
        sink = TopicSpec(key="bench", name=PASSTHROUGH_TOPIC, role=Role.INTERNAL, subject=None,
                         partitions=args.partitions, replication_factor=1, retention_ms=3_600_000,
                         cleanup_policy="delete")
        ensure_topics(client, TopicCatalogue({**catalogue.topics, "bench": sink}))
        n = _preload(s, catalogue, args.events, customers)
        sources = [t.name for t in catalogue.ingest_sources]
        assert s.kafka_bootstrap_servers
        figs = Figures([], [], [], [], [])
        for i in range(args.repeat):
            tag = uuid.uuid4().hex[:6]
            figs.aiokafka.append(aiokafka_passthrough(
                s.kafka_bootstrap_servers, sources, PASSTHROUGH_TOPIC, n, f"bench-aio-{tag}"))
            figs.librdkafka.append(librdkafka_passthrough(
                client, sources, PASSTHROUGH_TOPIC, n, f"bench-rdk-{tag}"))
            figs.ingest.append(_run_ingest(s, catalogue, n))
            if not args.skip_identity:
                rate, prate, detail = _run_pipeline(s, catalogue, n)
                figs.identity.append(rate)
                figs.profile.append(prate)
            print(f"  round {i + 1}: aiokafka {figs.aiokafka[-1]:,.0f}/s, "
                  f"librdkafka {figs.librdkafka[-1]:,.0f}/s, ingest {figs.ingest[-1]:,.0f}/s"
                  + (f", ingest+identity {figs.identity[-1]:,.0f}/s, ingest+identity+profile+nba "
                     f"{figs.profile[-1]:,.0f}/s ({detail})" if figs.identity else ""))
        latency_lines: list[str] = []
        if figs.profile and not args.skip_latency:
            print()
            keys = (*ROUND_TOPICS, *(t.key for t in catalogue.ingest_sources))  # inputs fresh too
            try:
                fresh = _round_catalogue(catalogue, uuid.uuid4().hex[:6], keys)
                result = measure_trigger_latency(s, fresh, statistics.median(figs.profile),
                                                 args.latency_seconds, customers, offered=args.latency_rate)
                latency_lines = result.lines()
            except RuntimeError as exc:  # keep the throughput figures
                latency_lines = [f"  not measured: {exc}"]
    aio = statistics.median(figs.aiokafka)
    rdk = statistics.median(figs.librdkafka)
    ing = statistics.median(figs.ingest)
    # ratios are taken per round (same minute, same machine state), then the median
    r_rdk = statistics.median(r / a for r, a in zip(figs.librdkafka, figs.aiokafka, strict=True))
    r_ing = statistics.median(i / a for i, a in zip(figs.ingest, figs.aiokafka, strict=True))
    faust_lines = []
    if args.with_faust:
        with cluster(settings) as s2:  # a fresh broker: same data, no leftover groups
            assert s2.kafka_bootstrap_servers
            ensure_topics(librdkafka_config(s2), TopicCatalogue({**catalogue.topics, "bench": sink}))
            n2 = _preload(s2, catalogue, args.faust_events, customers)
            srcs = [t.name for t in catalogue.ingest_sources]
            base = aiokafka_passthrough(s2.kafka_bootstrap_servers, srcs, PASSTHROUGH_TOPIC, n2, "f-aio")
            for mode in ("consume", "send"):
                rate = faust_agent(s2.kafka_bootstrap_servers, srcs, n2, mode, PASSTHROUGH_TOPIC)
                faust_lines.append(f"  faust agent, {mode:<7} (n={n2:,})  {rate:>8,.0f} events/s   "
                                   f"{rate / base:.2f} of its own aiokafka run ({base:,.0f}/s)")
    print()
    print(f"events: {n:,} over {len(sources)} topics x {args.partitions} partitions, "
          f"{customers:,} customers; median of {args.repeat} interleaved round(s)")
    print(f"  {'raw aiokafka passthrough':<41}{aio:>10,.0f} events/s   1.00 (baseline)")
    print(f"  {'raw librdkafka passthrough':<41}{rdk:>10,.0f} events/s   {r_rdk:.2f}")
    print(f"  {'ingest (decode..produce)':<41}{ing:>10,.0f} events/s   {r_ing:.2f}  "
          f"(target >= 0.50: {'met' if r_ing >= 0.5 else 'NOT met'})")
    if figs.identity:
        idn = statistics.median(figs.identity)
        r_idn = statistics.median(i / a for i, a in zip(figs.identity, figs.aiokafka, strict=True))
        print(f"  {'ingest+identity (to resolved)':<41}{idn:>10,.0f} events/s   {r_idn:.2f}  "
              f"(target >= 0.30: {'met' if r_idn >= 0.3 else 'NOT met'})")
        prf = statistics.median(figs.profile)
        r_prf = statistics.median(p / a for p, a in zip(figs.profile, figs.aiokafka, strict=True))
        print(f"  {'ingest+identity+profile+nba (to triggers)':<41}{prf:>10,.0f} events/s   {r_prf:.2f}  "
              f"(target >= 0.25: {'met' if r_prf >= 0.25 else 'NOT met'})")
    if latency_lines:
        print("event -> trigger latency at a fixed load (ingest+identity+profile+nba, fresh round, "
              "wall decision clock):")
        for line in latency_lines:
            print(line)
    for line in faust_lines:
        print(line)
    return 0
