"""kill -9 a worker mid-stream, start another: every event still arrives (at-least-once)."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from pipeline.broker.kafka_process import KafkaCluster
from pipeline.broker.reader import iter_topic
from pipeline.contracts.catalogue import SchemaCatalogue
from pipeline.contracts.codec import AvroCodec
from pipeline.metrics.scrape import scrape
from pipeline.simulate.truth import load_truth
from pipeline.topology.catalogue import DEFAULT_PATH, load_catalogue
from tests.e2e.test_cli_pipeline import _env, _port

pytestmark = pytest.mark.e2e


def _isolated_topology(tmp: Path) -> Path:
    """The shipped catalogue with every topic renamed, so this test shares no topic."""
    doc = yaml.safe_load(DEFAULT_PATH.read_text())
    for spec in doc["topics"].values():
        spec["name"] = "restart." + spec["name"]
    path = tmp / "topics.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _worker(broker: KafkaCluster, tmp: Path, name: str) -> tuple[subprocess.Popen[bytes], str]:
    port, metrics_port = _port(), _port()
    env = _env(broker, tmp / name, OMNIPIPE_WEB_PORT=str(port), OMNIPIPE_GROUP_ID="restart",
               OMNIPIPE_METRICS_PORT=str(metrics_port),
               OMNIPIPE_INGEST_BATCH_SIZE="200", OMNIPIPE_TOPOLOGY=str(tmp / "topics.yaml"))
    log = open(tmp / f"{name}.log", "wb")  # noqa: SIM115 - lives as long as the process
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", "worker"], env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    return proc, f"http://127.0.0.1:{metrics_port}/metrics"


def _consumed(url: str) -> float:
    with contextlib.suppress(OSError):
        return scrape(url).value("omnipipe_ingest_events_in_total")
    return 0.0


def test_killed_worker_loses_nothing(broker: KafkaCluster, tmp_path: Path) -> None:
    truth_path = tmp_path / "truth.jsonl"
    topology = _isolated_topology(tmp_path)
    cat = load_catalogue(topology)
    client = {"bootstrap.servers": broker.bootstrap_servers}
    codec = AvroCodec(SchemaCatalogue.load())
    sim = subprocess.run(
        [sys.executable, "-m", "pipeline", "simulate", "--customers", "1500", "--seed", "23",
         "--truth", str(truth_path)],
        env=_env(broker, tmp_path, OMNIPIPE_TOPOLOGY=str(topology)),
        capture_output=True, text=True, timeout=180,
    )
    assert sim.returncode == 0, sim.stderr[-2000:]
    expected = load_truth(truth_path).summary["events"]

    first, url1 = _worker(broker, tmp_path, "w1")
    try:
        deadline = time.monotonic() + 90
        while _consumed(url1) < 2000 and time.monotonic() < deadline:
            assert first.poll() is None
            time.sleep(0.1)
        assert _consumed(url1) >= 2000
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)

    second, _ = _worker(broker, tmp_path, "w2")
    try:
        ids: set[str] = set()
        total = 0
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert second.poll() is None, (tmp_path / "w2.log").read_text()[-2000:]
            records = [codec.decode(r.value or b"", cat["canonical"].subject)
                       for r in iter_topic(client, cat["canonical"].name, idle_s=1.0)]
            run = [e["event_id"] for e in records]
            ids, total = set(run), len(run)
            if len(ids) >= expected:
                break
            time.sleep(1.0)
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(timeout=30)
    assert len(ids) == expected  # nothing lost
    print(f"restart: {expected} events, {total - len(ids)} duplicates on the topic after kill -9")
