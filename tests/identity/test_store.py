"""Restoring identity tables from the changelog, skipping commits a killed worker left half written."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from pipeline.broker.embedded import EmbeddedBroker
from pipeline.identity.codec import encode_record, state_key
from pipeline.identity.messages import Space
from pipeline.identity.state import IdentifierRecord
from pipeline.identity.store import RocksRecordStore, commit_header, read_done_commits, restore_partitions

pytestmark = pytest.mark.broker


def _topics(broker: EmbeddedBroker) -> tuple[str, str]:
    tag = uuid.uuid4().hex[:8]
    changelog, commits = f"store-{tag}-changelog", f"store-{tag}-commits"
    admin = AdminClient({"bootstrap.servers": broker.bootstrap_servers})
    for f in admin.create_topics([NewTopic(changelog, 2, 1, config={"cleanup.policy": "compact"}),
                                  NewTopic(commits, 1, 1, config={"cleanup.policy": "compact"})]).values():
        f.result(10)
    return changelog, commits


def _ident(ref: str, profile: str) -> bytes:
    return encode_record(IdentifierRecord(ref, profile=profile))


def test_a_half_written_commit_is_skipped_and_reported(broker: EmbeddedBroker, tmp_path: Path) -> None:
    client = {"bootstrap.servers": broker.bootstrap_servers}
    changelog, commits = _topics(broker)
    c1, c2, c3 = (state_key(Space.IDENT, f"cust:{i}") for i in (1, 2, 3))
    producer = Producer(client)
    # worker run w1, commit 1: complete
    producer.produce(changelog, _ident("cust:1", "cust:1"), c1, 0, headers=commit_header("w1", 1))
    producer.produce(commits, b"1", b"w1")
    # w1, commit 2: its records are out, its completion mark never was (killed in between)
    producer.produce(changelog, _ident("cust:1", "cust:9"), c1, 0, headers=commit_header("w1", 2))
    producer.produce(changelog, _ident("cust:2", "cust:9"), c2, 0, headers=commit_header("w1", 2))
    # another run, complete; and a record from before commit headers existed
    producer.produce(changelog, _ident("cust:3", "cust:3"), c3, 0, headers=commit_header("w2", 7))
    producer.produce(commits, b"7", b"w2")
    producer.produce(changelog, _ident("cust:4", "cust:4"), state_key(Space.IDENT, "cust:4"), 1)
    assert producer.flush(10) == 0

    done = read_done_commits(client, commits)
    assert done == {"w1": 1, "w2": 7}
    store = RocksRecordStore(tmp_path / "a")
    restored = restore_partitions(store, client, changelog, [0, 1], done=done)
    assert restored.applied == {0: 2, 1: 1}
    assert restored.undone == {0: {c1, c2}}
    one = store.load(0, Space.IDENT, "cust:1")
    assert isinstance(one, IdentifierRecord) and one.profile == "cust:1"  # the complete commit's value
    assert store.load(0, Space.IDENT, "cust:2") is None
    assert store.load(0, Space.IDENT, "cust:3") is not None
    assert store.load(1, Space.IDENT, "cust:4") is not None
    assert store.changelog_offset(0) == 3  # past the skipped records: they are never read again

    # without the completion marks, the half commit would be taken for real
    naive = RocksRecordStore(tmp_path / "b")
    restore_partitions(naive, client, changelog, [0, 1])
    wrong = naive.load(0, Space.IDENT, "cust:1")
    assert isinstance(wrong, IdentifierRecord) and wrong.profile == "cust:9"

    # a later complete commit for a skipped key settles it: no longer reported
    producer.produce(changelog, _ident("cust:2", "cust:2"), c2, 0, headers=commit_header("w3", 1))
    producer.produce(commits, b"1", b"w3")
    assert producer.flush(10) == 0
    fresh = RocksRecordStore(tmp_path / "c")
    again = restore_partitions(fresh, client, changelog, [0], done=read_done_commits(client, commits))
    assert again.undone == {0: {c1}}
    two = fresh.load(0, Space.IDENT, "cust:2")
    assert isinstance(two, IdentifierRecord) and two.profile == "cust:2"
