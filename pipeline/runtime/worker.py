"""Run one worker until it is told to stop."""

from __future__ import annotations

import logging
import time

from pipeline.app import build_app
from pipeline.contracts.codec import AvroCodec
from pipeline.errors import TopologyError
from pipeline.nba.catalogue import ActionCatalogue
from pipeline.profile.limits import ProfileLimits
from pipeline.runtime.cluster import cluster, load_topology, prepare_topics
from pipeline.runtime.schemas import build_codec
from pipeline.settings import Settings
from pipeline.web.listen import http_url

log = logging.getLogger(__name__)


def check_stage_configs(settings: Settings) -> None:
    """Every stage's data configuration, validated before a broker is touched (raises TopologyError)."""
    from pipeline.nba.catalogue import load_action_catalogue
    from pipeline.topology.identity_config import load_identity_limits
    from pipeline.topology.profile_config import load_profile_limits

    load_identity_limits(settings.identity_config_path)
    limits = load_profile_limits(settings.profile_config_path)
    actions = load_action_catalogue(settings.actions_config_path)
    check_contacts_cap(limits, actions, settings)


def check_contacts_cap(limits: ProfileLimits, actions: ActionCatalogue, settings: Settings) -> None:
    """Caps are counted over the contacts a profile keeps: it must keep at least a week's worth."""
    weekly = [c.week for c in (actions.policy.overall, *actions.policy.channel_caps.values()) if c.week]
    need = max(weekly, default=0)
    if limits.caps.contacts < need:
        raise TopologyError(
            f"{settings.profile_config_path or 'topologies/profile.yaml'}: caps.contacts is "
            f"{limits.caps.contacts} but {settings.actions_config_path or 'topologies/actions.yaml'} allows "
            f"{need} contacts a week; raise caps.contacts to at least {need} so caps can be counted")


def run_worker(settings: Settings) -> int:
    """Start (or join) the cluster, create topics, run the Faust worker."""
    from faust.worker import Worker

    started_at = time.monotonic()
    catalogue = load_topology(settings)
    check_stage_configs(settings)
    # dead letters carry up to max_record_bytes of the raw record plus metadata
    codec: AvroCodec = build_codec(
        settings, max_record_size=2 * settings.max_record_bytes, strict_encode=False
    )
    with cluster(settings) as resolved:
        prepare_topics(resolved, catalogue)
        pipeline = build_app(resolved, catalogue, codec, started_at=started_at)
        worker = Worker(
            pipeline.app,
            loglevel=resolved.log_level.lower(),
            quiet=True,
            redirect_stdouts=False,
        )
        log.info(
            "worker %s starting: API %s%s, metrics %s; a line says when it is ready (or GET /readyz)",
            resolved.group_id, http_url(resolved.web_host, resolved.web_port),
            " (token required)" if resolved.api_token_values() else "",
            http_url(resolved.metrics_host, resolved.metrics_port, "/metrics"),
        )
        try:
            worker.execute_from_commandline()
        except SystemExit as exc:
            return int(exc.code or 0)
    return 0
