"""The Faust application factory: nothing connects or listens on import.

``build_app`` wires the stages registered for this worker explicitly; later
stages (identity, profiles, decisions) add their agents and tables here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import faust
from prometheus_client import CollectorRegistry

from pipeline.broker.client_config import faust_broker_kwargs, librdkafka_config
from pipeline.broker.partitioner import PartitionMap
from pipeline.contracts.codec import AvroCodec
from pipeline.dlq.agent import register_dlq_summary, register_dlq_vault
from pipeline.dlq.sealer import DeadLetterSealer
from pipeline.identity.link_reader import fast_header
from pipeline.identity.lookup import register_identity_lookup
from pipeline.identity.runner import IdentityConfig, IdentityLoop
from pipeline.ingest.identifiers import PiiHasher
from pipeline.ingest.processor import IngestProcessor, IngestRules, SourceTopic
from pipeline.ingest.runner import IngestConfig, IngestLoop
from pipeline.metrics.identity import IdentityMetrics
from pipeline.metrics.ingest import IngestMetrics
from pipeline.metrics.lag import lag_monitor
from pipeline.metrics.nba import NbaMetrics
from pipeline.metrics.profile import ProfileMetrics
from pipeline.nba.catalogue import ActionCatalogue, load_action_catalogue
from pipeline.profile.api import register_profile_api
from pipeline.profile.runner import ProfileConfig, ProfileLoop
from pipeline.runtime.stage_service import StageService
from pipeline.settings import Settings
from pipeline.topology.catalogue import CHANNELS, Role, TopicCatalogue
from pipeline.topology.identity_config import load_identity_limits
from pipeline.topology.profile_config import load_profile_limits
from pipeline.web.guard import WebGuard
from pipeline.web.health import HealthServer

#: librdkafka consumer settings for an embedded broker on this machine (OMNIPIPE_LOCAL_BROKER): short
#: group timeouts, so a worker that dies gives its partitions away within seconds (Tansu also holds a
#: new member's JoinGroup for about half the session timeout: 23 s with librdkafka's default 45 s,
#: 3 s with 6 s). 6 s is Apache Kafka's group.min.session.timeout.ms.
LOCAL_CONSUMER: dict[str, Any] = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000}
#: and only on Tansu (OMNIPIPE_BROKER_QUIRKS=tansu): it answers a fetch with no data only when
#: fetch.wait.max.ms runs out, even if records arrive meanwhile (one hop took p50 136 ms with the
#: default 500 ms, 11 ms with 10 ms). Apache Kafka answers as soon as data arrives: the default stays.
TANSU_CONSUMER: dict[str, Any] = {**LOCAL_CONSUMER, "fetch.wait.max.ms": 10}


def _broker_overrides(settings: Settings, overrides: dict[str, Any]) -> dict[str, Any]:
    """The stage config's broker-specific keys: group timeouts on a local broker, Tansu's workarounds."""
    if settings.local_broker and "consumer_overrides" not in overrides:
        overrides["consumer_overrides"] = TANSU_CONSUMER if settings.tansu else LOCAL_CONSUMER
    overrides.setdefault("tansu", settings.tansu)
    return overrides


@dataclass
class Pipeline:
    """The app plus the handles tests and the CLI need."""

    app: faust.App
    registry: CollectorRegistry
    ingest: IngestLoop
    identity: IdentityLoop
    profile: ProfileLoop
    actions: ActionCatalogue


def build_ingest(
    settings: Settings,
    catalogue: TopicCatalogue,
    codec: AvroCodec,
    registry: CollectorRegistry,
    **overrides: Any,
) -> IngestLoop:
    sources = {
        t.name: SourceTopic(name=t.name, subject=t.avro_subject, channel=t.channel)
        for t in catalogue.ingest_sources
    }
    processor = IngestProcessor(
        sources,
        codec,
        PiiHasher(settings.hash_key()),
        IngestRules(
            max_record_bytes=settings.max_record_bytes,
            max_future_skew_ms=int(settings.max_future_skew_s * 1000),
            max_event_age_ms=int(settings.max_event_age_days * 86_400_000),
        ),
        DeadLetterSealer(settings.dlq_master_key(), PiiHasher(settings.hash_key())),
    )
    _broker_overrides(settings, overrides)
    config = IngestConfig(
        client=librdkafka_config(settings),
        group_id=f"{settings.group_id}-ingest",
        sources=sources,
        canonical_topic=catalogue["canonical"].name,
        canonical_subject=catalogue["canonical"].avro_subject,
        dlq_topic=catalogue["dlq"].name,
        dlq_subject=catalogue["dlq"].avro_subject,
        dlq_keys_topic=catalogue["dlq_keys"].name,
        batch_size=settings.ingest_batch_size,
        commit_interval_s=settings.ingest_commit_interval_s,
        registry_retry_max_s=settings.registry_retry_max_s,
        **overrides,
    )
    return IngestLoop(config, processor, codec.encode, IngestMetrics(registry, CHANNELS))


def build_identity(
    settings: Settings,
    catalogue: TopicCatalogue,
    codec: AvroCodec,
    registry: CollectorRegistry,
    **overrides: Any,
) -> IdentityLoop:
    canonical = catalogue["canonical"]
    _broker_overrides(settings, overrides)
    config = IdentityConfig(
        client=librdkafka_config(settings),
        group_id=f"{settings.group_id}-identity",
        canonical_topic=canonical.name,
        canonical_subject=canonical.avro_subject,
        messages_topic=catalogue["identity_messages"].name,
        forget_topic=catalogue["identity_forget"].name,
        changelog_topic=catalogue["identity_changelog"].name,
        resolved_topic=catalogue["resolved"].name,
        merges_topic=catalogue["identity_merges"].name,
        merges_subject=catalogue["identity_merges"].avro_subject,
        owners_topic=catalogue["identity_owners"].name,
        commits_topic=catalogue["identity_commits"].name,
        dlq_keys_topic=catalogue["dlq_keys"].name,
        dlq_topic=catalogue["dlq"].name,
        dlq_subject=catalogue["dlq"].avro_subject,
        partitions=canonical.partitions,
        state_dir=settings.data_dir / "identity",
        limits=load_identity_limits(settings.identity_config_path),
        advertised_url=settings.advertised_url,
        canonical_header=fast_header(codec, canonical.avro_subject),
        batch_size=settings.identity_batch_size,
        commit_interval_s=settings.identity_commit_interval_s,
        secret=settings.hash_key(),
        settle_round_trips=settings.identity_settle,  # a replay resolves as paced (identity/settle.py)
        **overrides,
    )
    return IdentityLoop(config, codec.decode, codec.encode, PartitionMap(canonical.partitions),
                        IdentityMetrics(registry))


def build_profile(
    settings: Settings,
    catalogue: TopicCatalogue,
    codec: AvroCodec,
    registry: CollectorRegistry,
    actions: ActionCatalogue | None = None,
    **overrides: Any,
) -> ProfileLoop:
    """The profile stage; with ``actions`` it also decides next-best-actions and emits triggers."""
    resolved = catalogue["resolved"]
    if actions is not None:
        triggers = {t.channel: t for t in catalogue.by_role(Role.OUTPUT) if t.channel}
        overrides.setdefault("actions", actions)
        overrides.setdefault("triggers_topics", {ch: t.name for ch, t in triggers.items()})
        overrides.setdefault("triggers_subject", next(iter(triggers.values())).avro_subject)
        overrides.setdefault("models_topic", catalogue["nba_models"].name)
        overrides.setdefault("stock_topic", catalogue["stock"].name)
        overrides.setdefault("stock_subject", catalogue["stock"].avro_subject)
    _broker_overrides(settings, overrides)
    config = ProfileConfig(
        client=librdkafka_config(settings),
        group_id=f"{settings.group_id}-profile",
        resolved_topic=resolved.name,
        canonical_subject=resolved.avro_subject,
        merges_topic=catalogue["identity_merges"].name,
        merges_subject=catalogue["identity_merges"].avro_subject,
        messages_topic=catalogue["profile_messages"].name,
        changelog_topic=catalogue["profile_changelog"].name,
        commits_topic=catalogue["profile_commits"].name,
        owners_topic=catalogue["profile_owners"].name,
        erasures_topic=catalogue["erasures"].name,
        erasures_subject=catalogue["erasures"].avro_subject,
        forget_topic=catalogue["identity_forget"].name,
        dlq_topic=catalogue["dlq"].name,
        dlq_subject=catalogue["dlq"].avro_subject,
        partitions=resolved.partitions,
        state_dir=settings.data_dir / "profile",
        limits=load_profile_limits(settings.profile_config_path),
        advertised_url=settings.advertised_url,
        batch_size=settings.profile_batch_size,
        commit_interval_s=settings.profile_commit_interval_s,
        decision_clock=settings.nba_clock,
        secret=settings.hash_key(),
        **overrides,
    )
    return ProfileLoop(config, codec.decode, codec.encode, PartitionMap(resolved.partitions),
                       ProfileMetrics(registry),
                       nba_metrics=NbaMetrics(registry, actions) if actions is not None else None)


def build_app(
    settings: Settings,
    catalogue: TopicCatalogue,
    codec: AvroCodec,
    registry: CollectorRegistry | None = None,
    started_at: float | None = None,
) -> Pipeline:
    """Build the worker's Faust app; requires resolved bootstrap servers.

    Binds the metrics listener now (a ConfigError naming the variable if it cannot); the API and it
    serve once the worker runs.
    """
    from faust.sensors.prometheus import FaustMetrics, PrometheusMonitor

    registry = registry or CollectorRegistry()
    actions = load_action_catalogue(settings.actions_config_path)  # validated before anything starts
    (settings.data_dir / "faust").mkdir(parents=True, exist_ok=True)
    app = faust.App(
        settings.group_id,
        **faust_broker_kwargs(settings),
        autodiscover=False,
        datadir=str(settings.data_dir / "faust"),
        store="rocksdb://",
        topic_allow_declare=False,  # topics come from topologies/, created by the admin step
        topic_disable_leader=True,
        web_enabled=True,
        web_bind=settings.web_host,  # listen exactly there (Faust's default is every interface)
        web_host=settings.web_host,
        web_port=settings.web_port,
        web_in_thread=False,
        broker_rebalance_timeout=6 if settings.local_broker else 60,
        broker_session_timeout=6 if settings.local_broker else 60,
        broker_heartbeat_interval=1 if settings.local_broker else 3,
        producer_linger_ms=5,
        logging_config=None,
    )
    app.monitor = PrometheusMonitor(metrics=FaustMetrics.create(registry, "faust"))  # served by health
    guard = WebGuard.from_settings(settings, registry)
    guard.install(app, debug=settings.web_debug)  # auth on every route; Faust's pages only if debug
    register_dlq_summary(app, catalogue, codec)
    register_dlq_vault(app, catalogue, registry)
    ingest = build_ingest(settings, catalogue, codec, registry)
    identity = build_identity(settings, catalogue, codec, registry)
    profile = build_profile(settings, catalogue, codec, registry, actions)
    hasher = PiiHasher(settings.hash_key())
    register_identity_lookup(app, identity, hasher, guard)
    register_profile_api(app, profile, identity, hasher, guard)
    stages = [StageService(ingest, "ingest"), StageService(identity, "identity"),
              StageService(profile, "profile")]
    lag = lag_monitor(registry, {"ingest": ingest.status, "identity": identity.status,
                                 "profile": profile.status},
                      librdkafka_config(settings), tansu=settings.tansu)
    stages.append(StageService(lag, "lag"))  # omnipipe_consumer_lag_records, read in its own thread
    health = HealthServer.for_worker(settings, registry, [ingest.status, identity.status, profile.status],
                                     started_at=started_at)

    @app.task
    async def start_stages() -> None:
        await app.add_runtime_dependency(health)
        for service in stages:
            await app.add_runtime_dependency(service)

    return Pipeline(app=app, registry=registry, ingest=ingest, identity=identity, profile=profile,
                    actions=actions)
