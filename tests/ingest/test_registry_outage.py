"""A schema registry that goes away and comes back: ingest waits, loses nothing, dead-letters nothing.

The registry is a real HTTP server (tests/contracts/registry_server.py) that
stops listening and starts again on the same port; the records are written
with schema ids that only the registry knows (versions another team
registered), so ingest cannot decode them without it.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer
from prometheus_client import CollectorRegistry

from pipeline.app import build_ingest
from pipeline.broker.admin import ensure_topics
from pipeline.broker.embedded import EmbeddedBroker
from pipeline.broker.reader import iter_topic
from pipeline.contracts.catalogue import SchemaCatalogue
from pipeline.contracts.encoder import compile_encoder
from pipeline.contracts.wire import frame
from pipeline.ingest.runner import IngestLoop
from pipeline.runtime.schemas import build_codec
from pipeline.settings import load_settings
from pipeline.topology.catalogue import TopicCatalogue, load_catalogue
from tests.contracts.registry_server import FakeSchemaRegistry

pytestmark = pytest.mark.broker
WEB = "omnipipe.events.WebEvent"


def _catalogue(tag: str) -> TopicCatalogue:
    cat = load_catalogue().with_partitions(2)
    return TopicCatalogue({k: dataclasses.replace(v, name=f"outage-{tag}.{v.name}")
                           for k, v in cat.topics.items()})


def _with_field(schema: dict[str, Any], name: str) -> dict[str, Any]:
    """A backward-compatible next version: one more optional field."""
    field = {"name": name, "type": ["null", "string"], "default": None}
    return {**schema, "fields": [*schema["fields"], field]}


class Running:
    """The loop in a thread, for the length of a ``with`` block."""

    def __init__(self, loop: IngestLoop) -> None:
        self.loop = loop
        self.thread = threading.Thread(target=loop.run, daemon=True)

    def __enter__(self) -> Running:
        self.thread.start()
        return self

    def wait(self, check: Callable[[], bool], timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not check():
            assert self.thread.is_alive()
            time.sleep(0.05)
        assert check()

    def __exit__(self, *exc: object) -> None:
        self.loop.stop()
        self.thread.join(30)


def test_a_registry_outage_pauses_ingest_and_dead_letters_nothing(
        broker: EmbeddedBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    tag = uuid.uuid4().hex[:6]
    cat = _catalogue(tag)
    client = {"bootstrap.servers": broker.bootstrap_servers}
    ensure_topics(client, cat)
    prom = CollectorRegistry()

    def metric(name: str, **labels: str) -> float:
        return prom.get_sample_value(name, labels) or 0.0

    def dead_letters() -> float:
        return sum(s.value for m in prom.collect() if m.name == "omnipipe_dlq_records"
                   for s in m.samples if s.name == "omnipipe_dlq_records_total")

    with FakeSchemaRegistry() as registry:
        monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", broker.bootstrap_servers)
        monkeypatch.setenv("OMNIPIPE_PII_HASH_KEY", "k" * 32)
        monkeypatch.setenv("OMNIPIPE_LOCAL_BROKER", "1")
        monkeypatch.setenv("OMNIPIPE_DATA_DIR", str(tmp_path / "state"))
        monkeypatch.setenv("OMNIPIPE_GROUP_ID", f"outage-{tag}")
        monkeypatch.setenv("SCHEMA_REGISTRY_URL", registry.url)
        monkeypatch.setenv("OMNIPIPE_REGISTRY_RETRY_MAX_S", "0.8")
        settings = load_settings()
        codec = build_codec(settings)  # registers the local versions, as a worker does at start
        loop = build_ingest(settings, cat, codec, prom)

        # another team registers WebEvent v3, and later v4: ids the worker can only learn from the registry
        local_latest = SchemaCatalogue.load().latest(WEB).schema
        v3 = _with_field(local_latest, "campaign")
        v4 = _with_field(v3, "campaign_medium")
        v3_id = registry.add(WEB, v3)
        now_ms = int(time.time() * 1000)

        def record(schema: dict[str, Any], schema_id: int, i: int) -> bytes:
            event = {"event_id": f"outage-{i}", "event_time": now_ms + i,
                     "identifiers": {"anonymous_id": f"cookie-{i}"}, "type": "PAGE_VIEW"}
            body = bytearray()
            compile_encoder(schema)(event, body)
            return frame(schema_id, bytes(body))

        producer = Producer(client)
        web = cat["web"].name
        with caplog.at_level(logging.INFO, logger="pipeline.ingest.runner"), Running(loop) as run:
            for i in range(20):
                producer.produce(web, record(v3, v3_id, i), f"cookie-{i}".encode())
            assert producer.flush(10) == 0
            run.wait(lambda: metric("omnipipe_ingest_events_accepted_total", channel="web") == 20)

            v4_id = registry.add(WEB, v4)
            registry.stop()  # connections refused from now on
            for i in range(20, 50):
                producer.produce(web, record(v4, v4_id, i), f"cookie-{i}".encode())
            assert producer.flush(10) == 0
            run.wait(lambda: metric("omnipipe_ingest_registry_unavailable") == 1)
            run.wait(lambda: metric("omnipipe_ingest_registry_retries_total") >= 3)
            assert metric("omnipipe_ingest_events_accepted_total", channel="web") == 20
            assert dead_letters() == 0
            time.sleep(2 * settings.ingest_commit_interval_s)  # commits go on for what was processed

            registry.start()  # back on the same URL
            run.wait(lambda: metric("omnipipe_ingest_registry_unavailable") == 0)
            run.wait(lambda: metric("omnipipe_ingest_events_accepted_total", channel="web") == 50)
            retries = metric("omnipipe_ingest_registry_retries_total")
        assert dead_letters() == 0

    canonical = [codec.decode(r.value or b"", cat["canonical"].avro_subject)
                 for r in iter_topic(client, cat["canonical"].name, idle_s=1.0)]
    assert sorted(e["event_id"] for e in canonical) == sorted(f"outage-{i}" for i in range(50))
    assert list(iter_topic(client, cat["dlq"].name, idle_s=1.0)) == []
    ours = [r for r in caplog.records if r.name == "pipeline.ingest.runner"]
    warnings = [r for r in ours if r.levelno == logging.WARNING and "registry" in r.getMessage()]
    assert len(warnings) == 1 and registry.url in warnings[0].getMessage()
    assert "cookie-" not in warnings[0].getMessage()  # no record contents
    resumed = [r for r in ours if r.levelno == logging.INFO and "resumed" in r.getMessage()]
    assert len(resumed) == 1 and f"({int(retries)} retries)" in resumed[0].getMessage()
