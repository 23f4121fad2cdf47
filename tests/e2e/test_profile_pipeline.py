"""The profile stage on a real broker, in real worker processes.

One simulation, one worker killed with SIGKILL mid-stream and another started
on its state directory. Then:

* the customer-360 API answers, for every simulated customer whose
  identifiers nobody else shares, exactly what the ground truth says that
  person did (events per channel, purchases, revenue, first and last seen);
* erased people are gone: 404 from the API, a tombstone as the last word of
  their profile on the changelog, one completion record per request; for
  erasures requested after the person's events were taken in (as in
  production), the identity stage has forgotten every identifier of theirs
  (tombstones on its changelog, 404 from the identity lookup); an event
  after that starts a fresh profile without consent; no raw e-mail is in
  any worker log;
* recovery: the profile table's digest (every profile record; the
  changelog-offset marker, the stage's own bookkeeping, excluded) is the
  same after a kill -9 (RocksDB + changelog tail) and after a rebuild from
  the changelog alone on an empty directory.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from pipeline.broker.kafka_process import KafkaCluster
from pipeline.broker.reader import iter_topic
from pipeline.contracts.catalogue import SchemaCatalogue
from pipeline.contracts.codec import AvroCodec
from pipeline.faults.tables import local_digest
from pipeline.identity.evaluate import truth_ref
from pipeline.identity.grouping import hashed_pii, read_grouping_from
from pipeline.ingest.identifiers import PiiHasher
from pipeline.profile.engine import PROFILE_PREFIX
from pipeline.simulate.journeys import sample_record
from pipeline.simulate.truth import PersonTruth, load_truth
from pipeline.topology.catalogue import load_catalogue
from tests.e2e.test_cli_pipeline import HASH_KEY
from tests.e2e.test_identity_pipeline import Worker, _simulate, _topology

pytestmark = pytest.mark.e2e
CODEC = AvroCodec(SchemaCatalogue.load())

CHANNEL_OF_TOPIC = {"web": "WEB", "app": "APP", "pos": "POS", "callcenter": "CALLCENTER", "email": "EMAIL",
                    "push": "PUSH", "sms": "SMS"}


def _digest(state: Path) -> tuple[str, int]:
    """Every profile record of every partition, hashed in key order, and how many there are."""
    return local_digest(state / "profile", (PROFILE_PREFIX,))


def _expected(person: PersonTruth) -> dict[str, Any]:
    return {
        "events": person.total_events,
        "purchases": person.purchases,
        "returns": person.returns,
        "first_seen": person.first_event_ms,
        "last_seen": person.last_event_ms,
        "channels": {CHANNEL_OF_TOPIC[t]: n for t, n in person.events.items() if t in CHANNEL_OF_TOPIC},
    }


def _observed(body: dict[str, Any]) -> dict[str, Any]:
    bought = body["purchases"]
    return {
        "events": body["events"],
        "purchases": bought["online"] + bought["store"],
        "returns": bought["returns"],
        "first_seen": body["first_seen"],
        "last_seen": body["last_seen"],
        "channels": {ch: stats["events"] for ch, stats in body["channels"].items()},
    }


def _wait_settled(worker: Worker, metric: str, quiet_s: float = 13.0, timeout: float = 240) -> None:
    """Nothing folded or written for ``quiet_s``: longer than two session timeouts of the embedded mode
    (6 s), so a rebalance still waiting for a killed member to expire is not taken for the end."""
    deadline = time.monotonic() + timeout
    last, since = -1.0, time.monotonic()
    while time.monotonic() < deadline:
        worker.alive()
        if min(worker.metric("omnipipe_identity_restore_seconds_count"),
               worker.metric("omnipipe_profile_restore_seconds_count")) < 1:
            since = time.monotonic()  # not yet owning its partitions
            time.sleep(0.2)
            continue
        now = worker.metric(metric) + worker.metric("omnipipe_profile_changelog_records_total")
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since > quiet_s:
            return
        time.sleep(0.5)
    raise AssertionError(f"{metric} still moving after {timeout}s")


def test_profiles_match_the_truth_survive_kill_and_erasures_leave_nothing(broker: KafkaCluster,
                                                                         tmp_path: Path) -> None:
    cat = load_catalogue(_topology(tmp_path, "prof"))
    client = {"bootstrap.servers": broker.bootstrap_servers}
    truth_path = _simulate(broker, tmp_path, customers=800, seed=40)  # seed 40: 5 erasure requests
    truth = load_truth(truth_path)
    state = tmp_path / "state-w1"

    first = Worker(broker, tmp_path, "w1", state, "prof")
    try:
        deadline = time.monotonic() + 120
        while first.metric("omnipipe_profile_folds_total") < 2000 and time.monotonic() < deadline:
            first.alive()
            time.sleep(0.1)
        assert first.metric("omnipipe_profile_folds_total") >= 2000
    finally:
        first.stop(signal.SIGKILL)

    second = Worker(broker, tmp_path, "w2", state, "prof")
    try:
        _wait_settled(second, "omnipipe_profile_folds_total")
        # one profile per person: a login, nothing shared with others, and every identifier linked by
        # the person's own events (a card only ever used alone is, rightly, a profile of its own)
        people = [p for p in truth.persons.values() if p.identifiers.get("customer_id") and not p.shared
                  and len(p.groups) == 1 and p.erased_at_ms is None]
        assert len(people) > 150
        mismatches = []
        for person in people:
            ref = f"cust:{person.identifiers['customer_id'][0]}"
            status, body = second.get(f"/profiles/{ref}")
            if status != 200 or _observed(body) != _expected(person):
                got = body if status != 200 else _observed(body)
                mismatches.append((ref, status, _expected(person), got))
        assert not mismatches, (len(mismatches), len(people), mismatches[:3])
        print(f"\nprofiles: {len(people)} customers read through the API all match the truth")

        erased = [p for p in truth.persons.values() if p.erased_at_ms is not None]
        assert erased, "the simulation should include erasure requests"
        for person in erased:
            for cid in person.identifiers.get("customer_id", []):
                status, body = second.get(f"/profiles/cust:{cid}")
                assert status == 404, (cid, status, person.erased_at_ms, person.last_event_ms, body)
        completions = list(iter_topic(client, cat["erasures"].name, idle_s=1.0))
        assert len({r.key for r in completions}) == len(erased)
        last_word: dict[bytes, bytes | None] = {}
        for record in iter_topic(client, cat["profile_changelog"].name, idle_s=1.0):
            if record.key is not None and record.key.startswith(PROFILE_PREFIX):
                last_word[record.key] = record.value
        for person in erased:
            for cid in person.identifiers.get("customer_id", []):
                assert last_word.get(PROFILE_PREFIX + f"cust:{cid}".encode()) is None
        # erasure as it happens in production: long after the person's events were taken in
        live = people[:3]
        producer = Producer({**client, "partitioner": "murmur2_random"})
        now = max(p.last_event_ms for p in truth.persons.values()) + 60_000
        for i, person in enumerate(live):
            ids = {k: (v[0] if v else None) for k, v in person.identifiers.items()}
            ids = {k: ids.get(k) for k in ("customer_id", "loyalty_card", "email", "phone", "device_id",
                                            "anonymous_id")}
            request = {"event_id": f"erase-live-{i}", "event_time": now + i, "identifiers": ids,
                       "type": "ERASURE_REQUEST", "consent_channel": None, "consent_purpose": None,
                       "granted": None, "source": "e2e"}
            producer.produce(cat["privacy"].name, CODEC.encode(cat["privacy"].avro_subject, request),
                             ids["customer_id"].encode())
        assert producer.flush(10) == 0
        hasher = hashed_pii(PiiHasher(HASH_KEY.encode()))
        refs = {truth_ref(f"{kind}:{value}", hasher) for p in live for kind, values in p.identifiers.items()
                for value in values}
        deadline = time.monotonic() + 60
        left: dict[str, str] = {}
        while time.monotonic() < deadline:
            grouping = read_grouping_from(client, cat["identity_changelog"].name)
            left = {r: grouping[r] for r in refs if r in grouping}
            if not left:
                break
            time.sleep(1)
        assert not left, left  # every identifier of theirs is a tombstone on the identity changelog
        for person in live:
            ref = f"cust:{person.identifiers['customer_id'][0]}"
            assert second.get(f"/profiles/{ref}")[0] == 404 and second.get(f"/identity/{ref}")[0] == 404
        assert len({r.key for r in iter_topic(client, cat["erasures"].name, idle_s=1.0)}) == len(erased) + 3

        # the erased person comes back: a fresh profile, without consent
        cid = live[0].identifiers["customer_id"][0]
        visit = sample_record("pos", 41, 1, now + 10_000)
        visit["identifiers"] = {**visit["identifiers"], "customer_id": cid, "loyalty_card": None,
                                "anonymous_id": None, "device_id": None}
        producer.produce(cat["pos"].name, CODEC.encode(cat["pos"].avro_subject, visit), cid.encode())
        assert producer.flush(10) == 0
        deadline = time.monotonic() + 60
        status, body = second.get(f"/profiles/cust:{cid}")
        while status != 200 and time.monotonic() < deadline:
            time.sleep(0.5)
            status, body = second.get(f"/profiles/cust:{cid}")
        assert status == 200 and body["events"] == 1 and body["consent"] == [], body
    finally:
        second.stop(signal.SIGKILL)  # the table as a crash leaves it

    killed_digest, records = _digest(state)
    assert records > 500

    restore = {}
    workers = []
    for name, where in (("w3", state), ("w4", tmp_path / "state-fresh")):  # RocksDB + tail; changelog alone
        w = Worker(broker, tmp_path, name, where, "prof")
        workers.append(w)
        try:
            deadline = time.monotonic() + 120
            while w.metric("omnipipe_profile_restore_seconds_count") < 1 and time.monotonic() < deadline:
                w.alive()
                time.sleep(0.2)
            _wait_settled(w, "omnipipe_profile_folds_total", quiet_s=3.0)
            restore[name] = w.metric("omnipipe_profile_restore_seconds_sum")
        finally:
            w.stop()
    assert _digest(state) == (killed_digest, records)
    rebuilt = _digest(tmp_path / "state-fresh")
    assert rebuilt == (killed_digest, records)
    print(f"recovery: {records} profile records, digest {killed_digest[:16]}, same after kill -9 and after a "
          f"rebuild from the changelog (restore {restore['w3']:.2f}s and {restore['w4']:.2f}s)")

    emails = [e for p in truth.persons.values() for e in p.identifiers.get("email", [])]
    logs = "".join(w.log_path.read_text() for w in (first, second, *workers))
    assert emails and not any(e in logs for e in emails)
