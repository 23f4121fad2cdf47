"""The identity loop on the session broker: bad input dead-lettered, good input resolved, state restored."""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import Producer
from prometheus_client import CollectorRegistry

from pipeline.app import build_identity
from pipeline.broker.admin import ensure_topics
from pipeline.broker.embedded import EmbeddedBroker
from pipeline.broker.reader import iter_topic
from pipeline.contracts.catalogue import SchemaCatalogue
from pipeline.contracts.codec import AvroCodec
from pipeline.identity.runner import IdentityLoop
from pipeline.settings import load_settings
from pipeline.topology.catalogue import TopicCatalogue, load_catalogue

from .test_link_reader import RECORDS

pytestmark = pytest.mark.broker
SUBJECT = "omnipipe.canonical.CanonicalEvent"
CODEC = AvroCodec(SchemaCatalogue.load())


def _catalogue(tag: str) -> TopicCatalogue:
    cat = load_catalogue().with_partitions(2)
    return TopicCatalogue({k: dataclasses.replace(v, name=f"runner-{tag}.{v.name}")
                           for k, v in cat.topics.items()})


def _loop(broker: EmbeddedBroker, cat: TopicCatalogue, state: Path, monkeypatch: pytest.MonkeyPatch,
          tag: str) -> IdentityLoop:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", broker.bootstrap_servers)
    monkeypatch.setenv("OMNIPIPE_PII_HASH_KEY", "k" * 32)
    monkeypatch.setenv("OMNIPIPE_LOCAL_BROKER", "1")
    monkeypatch.setenv("OMNIPIPE_DATA_DIR", str(state))
    monkeypatch.setenv("OMNIPIPE_GROUP_ID", f"runner-{tag}")
    return build_identity(load_settings(), cat, CODEC, CollectorRegistry())


class Running:
    """The loop in a thread, for the length of a ``with`` block."""

    def __init__(self, loop: IdentityLoop) -> None:
        self.loop = loop
        self.thread = threading.Thread(target=loop.run, daemon=True)

    def __enter__(self) -> Running:
        self.thread.start()
        return self

    def wait(self, check: Callable[[], bool], timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not check():
            assert self.thread.is_alive()
            time.sleep(0.1)
        assert check()

    def __exit__(self, *exc: object) -> None:
        self.loop.stop()
        self.thread.join(30)


def test_bad_canonical_records_are_dead_lettered_and_state_survives_a_restart(
        broker: EmbeddedBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tag = uuid.uuid4().hex[:6]
    cat = _catalogue(tag)
    client = {"bootstrap.servers": broker.bootstrap_servers}
    ensure_topics(client, cat)
    good = RECORDS[:50]
    no_ids = CODEC.decode(RECORDS[0], SUBJECT)
    for f in ("customer_id", "loyalty_card", "email_hash", "phone_hash", "device_id", "anonymous_id"):
        no_ids[f] = None
    bad = [b"\x00\x00\x00\x00\x01garbage", CODEC.encode(SUBJECT, no_ids), RECORDS[1][:9]]
    producer = Producer(client)
    for value in [*good, *bad]:
        producer.produce(cat["canonical"].name, value, b"k")
    assert producer.flush(10) == 0
    good_ids = {CODEC.decode(v, SUBJECT)["event_id"] for v in good}

    loop = _loop(broker, cat, tmp_path / "state", monkeypatch, tag)
    with Running(loop) as run:
        run.wait(lambda: loop.stats.resolved >= len(good) and loop.stats.idle_since is not None)
        before = {ref: loop.resolve_local(ref) for ref in _refs(good)}
    assert all(before.values())
    dead = [CODEC.decode(r.value or b"", cat["dlq"].avro_subject)
            for r in iter_topic(client, cat["dlq"].name, idle_s=1.0)]
    assert sorted(d["reason"] for d in dead) == ["invalid_identifier", "not_avro", "truncated"]
    assert {d["stage"] for d in dead} == {"identity"} and all(d["value"] for d in dead)
    resolved = {CODEC.decode(r.value or b"", SUBJECT)["event_id"]: r.key
                for r in iter_topic(client, cat["resolved"].name, idle_s=1.0)}
    assert resolved.keys() == good_ids and all(resolved.values())
    profiles = {(key or b"").decode() for key in resolved.values()}
    assert {found["profile_id"] for found in before.values()} <= profiles | set(before)

    # a second loop on the same state directory restores and resolves the same way, re-reading nothing
    again = _loop(broker, cat, tmp_path / "state", monkeypatch, tag)
    with Running(again) as run:
        run.wait(again.assigned.is_set)
        after = {ref: again.resolve_local(ref) for ref in before}
    assert after == before
    assert again.stats.events == 0  # offsets were committed: nothing replayed


def _refs(records: list[bytes]) -> set[str]:
    from pipeline.identity.link_reader import read_link_event

    return {ref for v in records for ref in read_link_event(v).refs}


def test_an_erasure_request_forgets_the_profile_and_every_identifier_it_lists(
        broker: EmbeddedBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.identity.grouping import read_grouping_from
    from pipeline.identity.runner import forget_request

    tag = uuid.uuid4().hex[:6]
    cat = _catalogue(tag)
    client = {"bootstrap.servers": broker.bootstrap_servers}
    ensure_topics(client, cat)
    producer = Producer({**client, "partitioner": "murmur2_random"})
    template = CODEC.decode(RECORDS[0], SUBJECT)
    records = []
    for i in range(40):  # 10 customers, each with a cookie and a device linked by their events
        ids = {"customer_id": f"C{i % 10}", "anonymous_id": f"a{i % 10}-{i % 3}", "device_id": f"d{i % 10}",
               "loyalty_card": None, "email_hash": None, "phone_hash": None}
        records.append(CODEC.encode(SUBJECT, {**template, **ids, "event_id": f"erase-{i}",
                                              "event_time": template["event_time"] + i}))
    for value in records:
        producer.produce(cat["canonical"].name, value, b"k")
    assert producer.flush(10) == 0
    loop = _loop(broker, cat, tmp_path / "state", monkeypatch, tag)
    with Running(loop) as run:
        refs = _refs(records)
        run.wait(lambda: all((loop.resolve_local(r) or {}).get("profile_id", "").startswith("cust:")
                             for r in refs))
        found = {ref: loop.resolve_local(ref) for ref in refs}
        by_profile: dict[str, set[str]] = {}
        for ref, answer in found.items():
            assert answer is not None
            by_profile.setdefault(answer["profile_id"], set()).add(ref)
        profile, members = max(by_profile.items(), key=lambda kv: len(kv[1]))
        assert len(members) >= 4, found  # the customer, its device and its cookies
        erased_at = template["event_time"] + 1000
        producer.produce(cat["identity_forget"].name, forget_request("profile", profile, erased_at),
                         profile.encode())
        assert producer.flush(10) == 0
        run.wait(lambda: all(loop.resolve_local(ref) is None for ref in members))
        for value in records:  # the erased past again (a replay after a crash): dropped, not re-linked
            producer.produce(cat["canonical"].name, value, b"k")
        assert producer.flush(10) == 0
        run.wait(lambda: loop.stats.events >= 2 * len(records) - 4 and loop.stats.idle_since is not None)
        assert all(loop.resolve_local(ref) is None for ref in members)
        others = {ref: loop.resolve_local(ref) for ref in found.keys() - members}
    assert all(others.values())  # nobody else was touched
    grouping = read_grouping_from(client, cat["identity_changelog"].name)
    assert not members & grouping.keys() and profile not in grouping.values()


class Killed(Exception):
    """Stands for kill -9 at the moment the changelog would be written."""


def test_no_resolved_event_leaves_before_the_state_that_resolved_it(
        broker: EmbeddedBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A resolved event published ahead of its memo entry can be resolved elsewhere on replay and be
    counted in two profiles; so a stage killed before its state is durable has published none."""
    tag = uuid.uuid4().hex[:6]
    cat = _catalogue(tag)
    client = {"bootstrap.servers": broker.bootstrap_servers}
    ensure_topics(client, cat)
    producer = Producer(client)
    good = RECORDS[:50]
    for value in good:
        producer.produce(cat["canonical"].name, value, b"k")
    assert producer.flush(10) == 0

    loop = _loop(broker, cat, tmp_path / "state", monkeypatch, tag)
    persisted: list[int] = []

    def killed(_producer: Producer, by_partition: dict[int, list[tuple[bytes, bytes | None]]]) -> None:
        persisted.append(sum(map(len, by_partition.values())))
        raise Killed

    loop._persist = killed  # type: ignore[method-assign]
    died: list[BaseException] = []

    def run() -> None:
        try:
            loop.run()
        except Killed as exc:
            died.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(60)
    assert died and persisted and persisted[0] > 0  # it resolved events and died writing their state
    assert list(iter_topic(client, cat["resolved"].name, idle_s=1.0)) == []

    again = _loop(broker, cat, tmp_path / "state", monkeypatch, tag)  # the restart replays them
    with Running(again) as running:
        running.wait(lambda: again.stats.resolved >= len(good) and again.stats.idle_since is not None)
    ids = [CODEC.decode(r.value or b"", SUBJECT)["event_id"] for r in iter_topic(client, cat["resolved"].name,
                                                                                  idle_s=1.0)]
    assert sorted(ids) == sorted(CODEC.decode(v, SUBJECT)["event_id"] for v in good)
