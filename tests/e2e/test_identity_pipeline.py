"""The identity stage on a real broker, in real worker processes.

* kill -9 a worker mid-stream and restart it on the same state directory:
  the final grouping (read from the identity changelog) equals the
  reference model's grouping of every canonical event, and has no false
  merge against the simulator's ground truth;
* two workers share the partitions: a lookup sent to either worker is
  answered for any identifier (routed to the owner), and both agree.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.broker.kafka_process import KafkaCluster
from pipeline.broker.reader import iter_topic
from pipeline.contracts.catalogue import SchemaCatalogue
from pipeline.contracts.codec import AvroCodec
from pipeline.identity.evaluate import pairwise_score
from pipeline.identity.grouping import read_grouping_from, truth_groups
from pipeline.identity.model import LinkEvent
from pipeline.identity.reference import reference_grouping
from pipeline.ingest.identifiers import PiiHasher
from pipeline.metrics.scrape import scrape
from pipeline.simulate.truth import load_truth
from pipeline.topology.catalogue import DEFAULT_PATH, TopicCatalogue, load_catalogue
from pipeline.topology.identity_config import load_identity_limits
from tests.e2e.test_cli_pipeline import HASH_KEY, _env, _port

pytestmark = pytest.mark.e2e


def _topology(tmp: Path, prefix: str) -> Path:
    doc = yaml.safe_load(DEFAULT_PATH.read_text())
    for spec in doc["topics"].values():
        spec["name"] = f"{prefix}.{spec['name']}"
    path = tmp / "topics.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


class Worker:
    def __init__(self, broker: KafkaCluster, tmp: Path, name: str, state: Path, group: str) -> None:
        self.port = _port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.metrics_port = _port()  # /metrics: its own listener
        self.metrics_url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        self.log_path = tmp / f"{name}.log"
        env = _env(broker, tmp, OMNIPIPE_WEB_PORT=str(self.port), OMNIPIPE_GROUP_ID=group,
                   OMNIPIPE_METRICS_PORT=str(self.metrics_port),
                   OMNIPIPE_DATA_DIR=str(state), OMNIPIPE_INGEST_BATCH_SIZE="300",
                   OMNIPIPE_IDENTITY_BATCH_SIZE="300", OMNIPIPE_TOPOLOGY=str(tmp / "topics.yaml"))
        log = open(self.log_path, "wb")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen([sys.executable, "-m", "pipeline", "worker"], env=env,
                                     stdout=log, stderr=subprocess.STDOUT)

    def metric(self, name: str) -> float:
        with contextlib.suppress(OSError):
            return scrape(self.metrics_url).value(name)
        return 0.0

    def alive(self) -> None:
        assert self.proc.poll() is None, self.log_path.read_text()[-3000:]

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=30)

    def get(self, path: str) -> tuple[int, Any]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=10) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")


def _simulate(broker: KafkaCluster, tmp: Path, customers: int, seed: int) -> Path:
    truth = tmp / "truth.jsonl"
    sim = subprocess.run(
        [sys.executable, "-m", "pipeline", "simulate", "--customers", str(customers), "--seed", str(seed),
         "--truth", str(truth)],
        env=_env(broker, tmp, OMNIPIPE_TOPOLOGY=str(tmp / "topics.yaml")),
        capture_output=True, text=True, timeout=300,
    )
    assert sim.returncode == 0, sim.stderr[-2000:]
    return truth


def _canonical_events(client: dict[str, str], cat: TopicCatalogue) -> list[dict[str, Any]]:
    codec = AvroCodec(SchemaCatalogue.load())
    events = {}
    for r in iter_topic(client, cat["canonical"].name, idle_s=1.0):
        e = codec.decode(r.value or b"", cat["canonical"].avro_subject)
        events[e["event_id"]] = e
    return list(events.values())


def _all_canonical_events(client: dict[str, str], cat: TopicCatalogue, truth: Path,
                          workers: list[Worker], timeout: float = 180) -> list[dict[str, Any]]:
    """Every good event of the simulation, once ingest has published them all."""
    expected = load_truth(truth).summary["events"]
    deadline = time.monotonic() + timeout
    events = _canonical_events(client, cat)
    while len(events) < expected and time.monotonic() < deadline:
        for w in workers:
            w.alive()
        time.sleep(1)
        events = _canonical_events(client, cat)
    assert len(events) == expected
    return events


def _erased_profiles(grouping: dict[str, str], events: list[dict[str, Any]]) -> set[str]:
    erased = set()
    for e in events:
        if e["type"] == "erasure_request":
            strongest = LinkEvent.from_canonical(e).refs[0]
            erased.add(grouping.get(strongest, strongest))
    return erased


def _outside(grouping: dict[str, str], reference: dict[str, str], erased: set[str]) -> dict[str, str]:
    """The grouping of every identifier the reference puts in a profile nobody asked to erase.

    Erased profiles are forgotten by the identity stage; with the whole stream published before the
    workers start, an erasure may be carried out while older events of the same person still wait on
    other partitions, so what those re-link is not compared (tests/e2e/test_profile_pipeline.py checks
    erasure where it happens after the person's events, as in production).
    """
    return {ref: profile for ref, profile in grouping.items() if reference.get(ref, profile) not in erased}


def _settled_grouping(client: dict[str, str], cat: TopicCatalogue, expected: dict[str, str],
                      workers: list[Worker], reference: dict[str, str], erased: set[str],
                      timeout: float = 180) -> dict[str, str]:
    """Read the changelog until it shows the expected grouping outside erased profiles (or time is up)."""
    deadline = time.monotonic() + timeout
    grouping: dict[str, str] = {}
    while time.monotonic() < deadline:
        for w in workers:
            w.alive()
        grouping = read_grouping_from(client, cat["identity_changelog"].name)
        if _outside(grouping, reference, erased) == expected:
            break
        time.sleep(2)
    return grouping


def test_killed_identity_worker_ends_with_the_reference_grouping(broker: KafkaCluster,
                                                                  tmp_path: Path) -> None:
    cat = load_catalogue(_topology(tmp_path, "idkill"))
    client = {"bootstrap.servers": broker.bootstrap_servers}
    truth = _simulate(broker, tmp_path, customers=1200, seed=31)
    state = tmp_path / "state-w1"

    first = Worker(broker, tmp_path, "w1", state, "idkill")
    try:
        deadline = time.monotonic() + 120
        while first.metric("omnipipe_identity_events_total") < 3000 and time.monotonic() < deadline:
            first.alive()
            time.sleep(0.1)
        assert first.metric("omnipipe_identity_events_total") >= 3000
    finally:
        first.stop(signal.SIGKILL)

    second = Worker(broker, tmp_path, "w2", state, "idkill")  # same RocksDB: marker + changelog tail
    try:
        # ingest finishes first; then the identity stage must end where the reference does
        events = _all_canonical_events(client, cat, truth, [second])
        reference = reference_grouping(events, load_identity_limits())
        full = reference.grouping()
        erased = _erased_profiles(full, events)
        expected = _outside(full, full, erased)
        grouping = _outside(_settled_grouping(client, cat, expected, [second], full, erased), full, erased)
        missing = expected.keys() - grouping.keys()
        wrong = {r: (grouping[r], p) for r, p in expected.items() if r in grouping and grouping[r] != p}
        assert not missing and not wrong, (len(missing), list(wrong.items())[:10])
        assert grouping == expected

        hasher = PiiHasher(HASH_KEY.encode())
        score = pairwise_score(grouping, truth_groups(truth, hasher))
        print(f"\nidentity after kill -9: {len(events)} events, {len(grouping)} identifiers, "
              f"{score.as_dict()}")
        assert score.precision == 1.0 and score.false_merge_profiles == 0
        assert score.recall > 0.97
    finally:
        second.stop()


def test_lookup_is_answered_by_any_worker(broker: KafkaCluster, tmp_path: Path) -> None:
    cat = load_catalogue(_topology(tmp_path, "idlookup"))
    client = {"bootstrap.servers": broker.bootstrap_servers}
    truth = _simulate(broker, tmp_path, customers=300, seed=5)
    workers = [Worker(broker, tmp_path, f"w{i}", tmp_path / f"state-{i}", "idlookup") for i in (1, 2)]
    try:
        events = _all_canonical_events(client, cat, truth, workers)
        full = reference_grouping(events, load_identity_limits()).grouping()
        erased = _erased_profiles(full, events)
        expected = _outside(full, full, erased)
        settled = _settled_grouping(client, cat, expected, workers, full, erased)
        assert _outside(settled, full, erased) == expected

        resolvers: set[str] = set()
        sample = sorted(expected)[:: max(1, len(expected) // 60)]
        for ref in sample:
            answers = []
            for w in workers:
                status, body = w.get(f"/identity/{ref}")
                for _ in range(10):  # 503 only while a partition moves
                    if status != 503:
                        break
                    time.sleep(0.5)
                    status, body = w.get(f"/identity/{ref}")
                assert status == 200, (ref, status, body)
                answers.append(body)
                resolvers.add(body["resolved_by"])
            assert {a["profile_id"] for a in answers} == {expected[ref]}
            listing = answers[0]["identifiers"]
            kind = ref.partition(":")[0]
            assert ref in listing.get(kind, []) or kind in ("dev", "anon"), (ref, listing)
        assert resolvers == {w.url for w in workers}, "every worker must have answered for its own keys"

        # the customer-360 is answered the same by both workers (each routes to the profile's owner)
        served = set()
        customers = sorted({p for p in expected.values() if p.startswith("cust:")})[::5][:30]
        for ref in customers:
            bodies = []
            for w in workers:
                status, body = w.get(f"/profiles/{ref}")
                for _ in range(20):  # 503 while a partition moves; 404 until the profile stage caught up
                    if status == 200:
                        break
                    time.sleep(0.5)
                    status, body = w.get(f"/profiles/{ref}")
                assert status == 200, (ref, status, body)
                body.pop("served_by")
                bodies.append(body)
            assert bodies[0] == bodies[1] and bodies[0]["profile_id"] == ref
            served.add(bodies[0]["owner"])
        assert served == {w.url for w in workers}, "each worker must have answered for its own profiles"
        assert workers[0].get("/profiles/cust:nobody-has-this")[0] == 404

        assert workers[0].get("/identity/cust:nobody-has-this")[0] == 404
        assert workers[1].get("/identity/not-a-ref")[0] == 400
        email = next(line for line in truth.read_text().splitlines() if '"email:' in line)
        raw = email.split('"email:', 1)[1].split('"', 1)[0]
        req = urllib.request.Request(workers[1].url + "/identity/lookup",
                                     data=json.dumps({"email": raw}).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            body = json.loads(resp.read())
        assert body["ref"].startswith("email:") and raw not in json.dumps(body)
        assert body["profile_id"] == expected.get(body["ref"], body["ref"])
    finally:
        for w in workers:
            w.stop()
    for w in workers:
        assert raw not in w.log_path.read_text()
