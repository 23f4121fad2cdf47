"""``omnipipe models publish FILE``: validate learned propensity weights, then hand them to every worker.

The document is checked against the action catalogue here, before it reaches
the workers (they check again and keep their models on a bad one), and is
published on the compacted models topic under one key, so a worker that
starts later reads the latest document first.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from confluent_kafka import Producer

from pipeline.broker.client_config import librdkafka_config
from pipeline.nba.catalogue import load_action_catalogue
from pipeline.nba.model import ModelError, parse_models
from pipeline.runtime.cluster import load_topology
from pipeline.settings import Settings

MODELS_KEY = b"propensity"


def publish_models(settings: Settings, path: Path, check_only: bool = False) -> str:
    try:
        doc = yaml.safe_load(path.read_text())  # JSON is YAML
    except (OSError, yaml.YAMLError) as exc:
        raise ModelError(f"cannot read {path}: {exc}") from exc
    models = parse_models(doc, load_action_catalogue(settings.actions_config_path))
    if check_only:
        return f"{path}: models {models.version} are valid ({len(models.models)} action/channel pairs)"
    if not settings.kafka_bootstrap_servers:
        raise ModelError("KAFKA_BOOTSTRAP_SERVERS is not set: name the cluster the workers run on")
    topic = load_topology(settings)["nba_models"].name
    producer = Producer({**librdkafka_config(settings), "acks": "all"})
    producer.produce(topic, json.dumps(doc, sort_keys=True).encode(), MODELS_KEY)
    if producer.flush(15) != 0:
        raise ModelError(f"the broker did not acknowledge the models on {topic} within 15 s")
    return f"published models {models.version} on {topic}"
