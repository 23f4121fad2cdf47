"""simulate -> worker -> topics, through the real CLI, against the session's embedded broker."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Producer

from pipeline.broker.embedded import EmbeddedBroker
from pipeline.broker.kafka_process import KafkaCluster
from pipeline.broker.reader import iter_topic
from pipeline.contracts.catalogue import SchemaCatalogue
from pipeline.contracts.codec import AvroCodec
from pipeline.ingest.identifiers import PiiHasher
from pipeline.metrics.scrape import Scrape, scrape
from pipeline.simulate.malformed import bad_contact
from pipeline.simulate.truth import Truth, load_truth
from pipeline.topology.catalogue import Role, load_catalogue

pytestmark = pytest.mark.e2e

HASH_KEY = "e2e-test-key-0123456789abcdef"
BAD = 48  # every malformed kind, several times
SEED = 11


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(broker: KafkaCluster | EmbeddedBroker, tmp: Path, **extra: str) -> dict[str, str]:
    """A CLI environment on the session's broker (Apache Kafka: no OMNIPIPE_BROKER_QUIRKS)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "OMNIPIPE_"))}
    env.update({
        "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
        "OMNIPIPE_PII_HASH_KEY": HASH_KEY,
        "OMNIPIPE_LOCAL_BROKER": "1",
        "OMNIPIPE_DATA_DIR": str(tmp / "state"),
        "OMNIPIPE_GROUP_ID": "e2e",
        "OMNIPIPE_TOPIC_PARTITIONS": "2",
        # the tests read many profiles back from one client: no lookup rate limit in the way
        "OMNIPIPE_LOOKUP_RATE_PER_S": "10000", "OMNIPIPE_LOOKUP_BURST": "10000",
        **extra,
    })
    return env


@pytest.fixture(scope="module")
def run(broker: KafkaCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    with _pipeline_run(broker, tmp_path_factory.mktemp("e2e")) as done:
        yield done


@contextlib.contextmanager
def _pipeline_run(broker: KafkaCluster | EmbeddedBroker, tmp: Path,
                  **extra: str) -> Iterator[dict[str, object]]:
    """simulate, then one worker until it has counted every record; the worker still runs inside."""
    truth_path = tmp / "truth.jsonl"
    sim = subprocess.run(
        [sys.executable, "-m", "pipeline", "simulate", "--customers", "300", "--seed", str(SEED),
         "--bad", str(BAD), "--truth", str(truth_path)],
        env=_env(broker, tmp, **extra), capture_output=True, text=True, timeout=180,
    )
    assert sim.returncode == 0, sim.stderr[-3000:]
    truth = load_truth(truth_path)
    port, metrics_port = _port(), _port()
    log_path = tmp / "worker.log"
    with open(log_path, "wb") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "pipeline", "worker"],
            env=_env(broker, tmp, OMNIPIPE_WEB_PORT=str(port), OMNIPIPE_METRICS_PORT=str(metrics_port),
                     **extra),
            stdout=log, stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        expected = truth.summary["events"] + truth.summary["bad"]
        last: Scrape | None = None
        deadline = time.monotonic() + 150
        try:
            while time.monotonic() < deadline:
                assert worker.poll() is None, log_path.read_text()[-3000:]
                with contextlib.suppress(OSError):
                    last = scrape(metrics_url)
                    if last.value("omnipipe_ingest_events_in_total") >= expected and last.value(
                        "omnipipe_ingest_commits_total"
                    ) > 0:
                        break
                time.sleep(0.5)
            time.sleep(1.5)  # a commit interval, and the DLQ agent catches up
            final = scrape(metrics_url)
            with urllib.request.urlopen(url + "/dlq", timeout=5) as resp:
                dlq_view = json.loads(resp.read())
            yield {"truth": truth, "metrics": final, "dlq_view": dlq_view, "worker": worker,
                   "log": log_path, "truth_path": truth_path}
        finally:
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)
                try:
                    worker.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    worker.kill()
                    worker.wait()


def test_every_record_is_counted_per_channel(run: dict) -> None:
    _check_counted_per_channel(run)


def _check_counted_per_channel(run: dict) -> None:
    truth, metrics = run["truth"], run["metrics"]
    per_channel = metrics.by_label("omnipipe_ingest_events_in_total", "channel")
    expected = Counter({k: v for k, v in truth.summary["events_per_topic"].items()})
    for bad in truth.bad:
        expected[bad.topic_key] += 1
    got = {("control" if k == "privacy" else k): v for k, v in expected.items()}
    assert {k: v for k, v in per_channel.items() if v} == {k: v for k, v in got.items() if v}
    assert metrics.value("omnipipe_ingest_events_accepted_total") == truth.summary["events"]


def test_topics_hold_every_good_event_and_exactly_the_bad_ones(broker: KafkaCluster, run: dict) -> None:
    truth = run["truth"]
    cat = load_catalogue()
    codec = AvroCodec(SchemaCatalogue.load())
    client = {"bootstrap.servers": broker.bootstrap_servers}
    canonical = [codec.decode(r.value or b"", cat["canonical"].subject)
                 for r in iter_topic(client, cat["canonical"].name)]
    assert len(canonical) >= truth.summary["events"]  # at-least-once: never fewer
    assert len({e["event_id"] for e in canonical}) == truth.summary["events"]
    dead = [codec.decode(r.value or b"", cat["dlq"].subject) for r in iter_topic(client, cat["dlq"].name)]
    assert Counter(d["reason"] for d in dead) == Counter(b.reason for b in truth.bad)
    assert Counter(d["source_topic"] for d in dead) == Counter(b.topic for b in truth.bad)
    for d in dead:
        assert d["source_offset"] >= 0
        assert d["value"] is None and d["key"] is None and d["sealed"] is not None  # raw bytes only sealed
        assert d["filed_under"]


def _raw_contacts(truth: Truth) -> set[str]:
    """Every raw e-mail and phone the run produced: the people's, and those in its malformed records."""
    raw = {v for p in truth.persons.values() for kind in ("email", "phone")
           for v in p.identifiers.get(kind, [])}
    bad = [bad_contact(SEED, b.seq) for b in truth.bad]
    return raw | {c.email for c in bad} | {c.phone for c in bad}


def test_no_raw_pii_in_any_topic_the_pipeline_writes(broker: KafkaCluster, run: dict) -> None:
    """Every topic of the catalogue but the producers' own (input, control): canonical, internal
    messages, changelogs, audit, triggers, events.dlq, dlq.keys and the DLQ vault; keys and values."""
    truth = run["truth"]
    raw = _raw_contacts(truth)
    assert any(v.startswith("bad.") for v in raw) and truth.persons, "e-mails and phones, in bad records too"
    cat = load_catalogue()
    client = {"bootstrap.servers": broker.bootstrap_servers}
    written = [t for t in cat if t.role not in (Role.INPUT, Role.CONTROL)]
    assert {"dlq", "dlq_keys", "dlq_vault_changelog", "canonical"} <= {t.key for t in written}
    found: dict[str, list[str]] = {}
    for topic in written:
        blob = b"".join((r.key or b"") + b"\x00" + (r.value or b"")
                        for r in iter_topic(client, topic.name, idle_s=0.5))
        hits = [v for v in raw if v.encode() in blob]
        if hits:
            found[topic.name] = sorted(hits)[:3]
    assert not found, found
    log = run["log"].read_text()
    metrics_text = repr(run["metrics"].samples)
    for value in raw:
        assert value not in log
        assert value not in metrics_text


def _dlq_show(broker: KafkaCluster, tmp: Path) -> list[dict]:
    out = subprocess.run([sys.executable, "-m", "pipeline", "dlq", "show", "--decrypt"],
                         env=_env(broker, tmp), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    return [json.loads(line) for line in out.stdout.splitlines()]


def test_dead_letters_decrypt_until_the_person_is_erased(broker: KafkaCluster, run: dict,
                                                         tmp_path: Path) -> None:
    """Ingest seals, the vault agent keeps the shares, an erasure through the pipeline destroys them."""
    truth = run["truth"]
    cat = load_catalogue()
    target = next(b for b in truth.bad if b.reason == "future_event_time")
    contact = bad_contact(SEED, target.seq)
    email_ref = f"email:{PiiHasher(HASH_KEY.encode()).email(contact.email)}"
    deadline = time.monotonic() + 60
    lines = _dlq_show(broker, tmp_path)
    while sum(line["record"] == "decrypted" for line in lines) < BAD and time.monotonic() < deadline:
        time.sleep(1)  # the vault agent catching up with dlq.keys
        lines = _dlq_show(broker, tmp_path)
    readable = Counter(line["record"] for line in lines)
    assert readable == {"decrypted": BAD}, readable
    [mine] = [line for line in lines if email_ref in line["filed_under"]]
    assert contact.email.encode() in base64.b64decode(mine["value_base64"])  # the raw record, for a replay

    now = int(time.time() * 1000)
    request = {"event_id": "erase-bad-contact", "event_time": now, "type": "ERASURE_REQUEST",
               "identifiers": {"customer_id": None, "loyalty_card": None, "email": contact.email,
                               "phone": None, "device_id": None, "anonymous_id": None},
               "consent_channel": None, "consent_purpose": None, "granted": None, "source": "e2e"}
    codec = AvroCodec(SchemaCatalogue.load())
    producer = Producer({"bootstrap.servers": broker.bootstrap_servers})
    producer.produce(cat["privacy"].name, codec.encode(cat["privacy"].avro_subject, request))
    assert producer.flush(10) == 0
    deadline = time.monotonic() + 90
    lines = _dlq_show(broker, tmp_path)
    while [line["record"] for line in lines if email_ref in line["filed_under"]] != ["erased"]:
        assert time.monotonic() < deadline, "the erasure did not reach the DLQ vault"
        assert run["worker"].poll() is None
        time.sleep(1)
        lines = _dlq_show(broker, tmp_path)
    others = [line for line in lines if email_ref not in line["filed_under"]]
    assert len(others) == BAD - 1 and all(line["record"] == "decrypted" for line in others)


def test_metrics_endpoint_follows_conventions(run: dict) -> None:
    metrics: Scrape = run["metrics"]
    assert metrics.types["omnipipe_ingest_events_in"] == "counter"
    assert metrics.types["omnipipe_dlq_records"] == "counter"
    assert metrics.types["omnipipe_ingest_decode_seconds"] == "histogram"
    assert metrics.value("omnipipe_ingest_decode_seconds_count") > 0
    reasons = metrics.by_label("omnipipe_dlq_records_total", "reason")
    assert sum(reasons.values()) == BAD
    assert any(name.startswith("faust_") for name in metrics.types)  # Faust's own sensors


def test_dlq_summary_view_matches(run: dict) -> None:
    view = run["dlq_view"]
    assert view["total"] == BAD
    assert view["by_reason"] == dict(Counter(b.reason for b in run["truth"].bad))


def test_worker_stops_cleanly_on_sigterm(run: dict) -> None:
    worker = run["worker"]
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0


def test_dlq_table_recovers_from_its_changelog_after_restart(
    broker: KafkaCluster, run: dict, tmp_path: Path
) -> None:
    """A new worker with empty local state rebuilds the table from the changelog, to its real end."""
    assert run["worker"].wait(timeout=30) is not None  # the first worker is down
    port = _port()
    env = _env(broker, tmp_path, OMNIPIPE_WEB_PORT=str(port),  # fresh OMNIPIPE_DATA_DIR: no RocksDB
               OMNIPIPE_METRICS_PORT=str(_port()))
    with open(tmp_path / "worker2.log", "wb") as log:
        worker = subprocess.Popen([sys.executable, "-m", "pipeline", "worker"], env=env,
                                  stdout=log, stderr=subprocess.STDOUT)
        try:
            view: dict = {}
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                assert worker.poll() is None, (tmp_path / "worker2.log").read_text()[-3000:]
                with contextlib.suppress(OSError, ValueError):
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/dlq", timeout=5) as resp:
                        view = json.loads(resp.read())
                    if view.get("total") == BAD:
                        break
                time.sleep(0.5)
            assert view.get("total") == BAD, view
            assert view["by_reason"] == run["dlq_view"]["by_reason"]
        finally:
            worker.send_signal(signal.SIGTERM)
            worker.wait(timeout=30)


def test_the_pipeline_runs_on_tansu(tansu_broker: EmbeddedBroker, tmp_path: Path) -> None:
    """The zero-Java path: the same run on the embedded Tansu, with its workarounds on
    (OMNIPIPE_BROKER_QUIRKS=tansu); after the Kafka run's worker has stopped."""
    with _pipeline_run(tansu_broker, tmp_path, OMNIPIPE_BROKER_QUIRKS="tansu") as done:
        _check_counted_per_channel(done)
        truth = done["truth"]
        assert isinstance(truth, Truth)
        client = {"bootstrap.servers": tansu_broker.bootstrap_servers}
        cat = load_catalogue()
        codec = AvroCodec(SchemaCatalogue.load())
        canonical = {codec.decode(r.value or b"", cat["canonical"].subject)["event_id"]
                     for r in iter_topic(client, cat["canonical"].name)}
        assert len(canonical) == truth.summary["events"]
        view = done["dlq_view"]
        assert isinstance(view, dict) and view["by_reason"] == dict(Counter(b.reason for b in truth.bad))
        worker = done["worker"]
        assert isinstance(worker, subprocess.Popen)
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0
