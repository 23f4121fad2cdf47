"""Reading the identity grouping back from its changelog, the truth as pipeline refs, ``evaluate identity``.

The pure parts (folding changelog records, truth -> refs) run without a
broker; the ``broker`` tests write real changelog records, tombstones
included, and read them back through ``iter_topic`` and the CLI.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from pipeline.broker.embedded import EmbeddedBroker
from pipeline.cli import _parser, main
from pipeline.errors import ExitCode
from pipeline.identity.codec import IdentityCodecError, encode_record, state_key
from pipeline.identity.grouping import (
    GroupingError,
    grouping_from_records,
    hashed_pii,
    read_grouping,
    read_grouping_from,
    truth_groups,
)
from pipeline.identity.messages import Space
from pipeline.identity.model import LinkEvent
from pipeline.identity.state import ClusterRecord, IdentifierRecord, ProfileRecord
from pipeline.ingest.identifiers import PiiHasher, resolve_identifiers
from pipeline.settings import load_settings
from pipeline.simulate.journeys import JourneyConfig, iter_events
from pipeline.simulate.truth import TruthRecorder, load_truth
from pipeline.topology.catalogue import DEFAULT_PATH, TopicCatalogue, load_catalogue

KEY = "grouping-test-key-0123456789abcdef"
HASHER = PiiHasher(KEY.encode())


def ident(ref: str, profile: str) -> tuple[bytes, bytes]:
    return state_key(Space.IDENT, ref), encode_record(IdentifierRecord(ref, profile=profile))


def tombstone(ref: str) -> tuple[bytes, None]:
    return state_key(Space.IDENT, ref), None


def changelog() -> list[tuple[bytes, bytes | None]]:
    """Log order: an overwrite, a deletion, a deletion then a re-creation, other keyspaces."""
    return [
        ident("cust:A", "cust:A"),
        ident("email:h", "card:K"),
        (state_key(Space.CLUSTER, "cust:A"), encode_record(ClusterRecord("cust:A"))),
        ident("dev:d", "cust:A"),
        ident("email:h", "cust:A"),  # overwritten: the later value wins
        tombstone("dev:d"),  # deleted
        tombstone("anon:x"),
        ident("anon:x", "cust:A"),  # deleted before, written after: present
        (state_key(Space.PROFILE, "cust:A"), encode_record(ProfileRecord("cust:A"))),
        (state_key(Space.CLUSTER, "card:K"), None),
    ]


EXPECTED = {"cust:A": "cust:A", "email:h": "cust:A", "anon:x": "cust:A"}


# ---------------------------------------------------------------------------- changelog -> grouping
def test_the_latest_identifier_record_per_key_wins_and_tombstones_delete() -> None:
    assert grouping_from_records(changelog()) == EXPECTED
    assert grouping_from_records([]) == {}


@pytest.mark.parametrize("bad", [
    [(b"q|cust:A", b"")],  # unknown keyspace (x| is the erasure markers)
    [(b"nonsense", b"")],
    [(state_key(Space.IDENT, "cust:A"), b"\x00not a record")],
    [ident("cust:B", "cust:B")[:1] + ident("cust:A", "cust:A")[1:]],  # a record under another key
    [(state_key(Space.IDENT, "cust:A"), encode_record(ClusterRecord("cust:A")))],  # wrong record type
])
def test_a_changelog_this_code_cannot_read_is_an_error_not_a_smaller_grouping(
        bad: list[tuple[bytes, bytes | None]]) -> None:
    with pytest.raises(IdentityCodecError):
        grouping_from_records(changelog() + bad)


def test_a_record_without_key_is_an_error() -> None:
    with pytest.raises(GroupingError, match="without a key"):
        grouping_from_records([(None, b"")])


def test_read_grouping_needs_a_configured_cluster() -> None:
    settings = load_settings(kafka_bootstrap_servers=None)
    assert settings.embedded
    with pytest.raises(GroupingError, match="KAFKA_BOOTSTRAP_SERVERS"):
        read_grouping(settings, load_catalogue())


# ---------------------------------------------------------------------------- truth -> refs
def person_line(person: int, groups: list[list[str]]) -> dict[str, Any]:
    identifiers: dict[str, list[str]] = {}
    for group in groups:
        for ident_ in group:
            kind, _, value = ident_.partition(":")
            identifiers.setdefault(kind, []).append(value)
    return {"type": "person", "person": person, "identifiers": identifiers, "shared": {}, "events": {},
            "purchases": 0, "returns": 0, "revenue": 0.0, "currency": None, "groups": groups,
            "first_event_ms": 0, "last_event_ms": 0, "longest_gap_ms": 0, "erased_at_ms": None}


def write_truth(path: Path, people: list[list[list[str]]]) -> Path:
    lines = [{"type": "summary", "version": 1}] + [person_line(i, g) for i, g in enumerate(people)]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def ingest_ref(kind: str, raw: str) -> str:
    """The ref ingest + the identity stage give a raw identifier: through their own code."""
    resolved = resolve_identifiers({kind: raw}, HASHER)
    fields = {f.name: getattr(resolved, f.name) for f in dataclasses.fields(resolved)}
    return LinkEvent.from_canonical({"event_id": "e", "event_time": 0, **fields}).refs[0]


def test_truth_identifiers_become_the_refs_ingest_writes(tmp_path: Path) -> None:
    path = write_truth(tmp_path / "truth.jsonl", [
        [["customer_id:C1", "email: Ann.Lee@Example.COM ", "phone:+44 20 7946-0958", "anonymous_id:ck-1"]],
        [["loyalty_card:K9"], ["device_id:tab-1"]],
    ])
    email, phone = ingest_ref("email", " Ann.Lee@Example.COM "), ingest_ref("phone", "+44 20 7946-0958")
    expected = [["cust:C1", email, phone, "anon:ck-1"], ["card:K9"], ["dev:tab-1"]]
    assert expected[0][1] == "email:" + HASHER.email("ann.lee@example.com")
    assert truth_groups(path, HASHER) == expected
    assert truth_groups(str(path), hashed_pii(HASHER)) == expected
    assert truth_groups(load_truth(path), HASHER) == expected
    raw = truth_groups(path)  # no key: raw values stand in for the hashes
    assert raw[0][1:3] == ["email: Ann.Lee@Example.COM ", "phone:+44 20 7946-0958"]


def test_identifiers_ingest_would_reject_are_left_out(tmp_path: Path) -> None:
    path = write_truth(tmp_path / "truth.jsonl", [[["customer_id:C1", "email:not-an-address", "phone:12"]]])
    assert truth_groups(path, HASHER) == [["cust:C1"]]


def test_simulated_truth_refs_are_exactly_the_refs_of_the_ingested_events(tmp_path: Path) -> None:
    cfg = JourneyConfig(customers=60, seed=7, shared_device_every=20)
    recorder = TruthRecorder(cfg.seed, cfg.customers)
    refs_from_events: set[str] = set()
    for ev in recorder.tap(iter_events(cfg)):
        resolved = resolve_identifiers(ev.record["identifiers"], HASHER)
        fields = {f.name: getattr(resolved, f.name) for f in dataclasses.fields(resolved)}
        refs_from_events.update(LinkEvent.from_canonical({"event_id": "e", "event_time": 0, **fields}).refs)
    groups = truth_groups(recorder.write(tmp_path / "truth.jsonl"), HASHER)
    assert {ref for group in groups for ref in group} == refs_from_events
    assert any(ref.startswith("email:") for ref in refs_from_events)


# ---------------------------------------------------------------------------- the CLI
def test_evaluate_identity_is_a_subcommand_that_needs_a_truth_file(
        capsys: pytest.CaptureFixture[str]) -> None:
    args = _parser().parse_args(["evaluate", "identity", "--truth", "t.jsonl", "--json"])
    assert (args.command, args.stage, args.truth, args.json) == ("evaluate", "identity", Path("t.jsonl"),
                                                                 True)
    with pytest.raises(SystemExit):
        _parser().parse_args(["evaluate", "identity"])
    capsys.readouterr()


def test_evaluate_without_a_cluster_or_truth_says_what_is_missing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    assert main(["evaluate", "identity", "--truth", str(tmp_path / "missing.jsonl")]) == ExitCode.CONFIG
    assert "cannot read truth file" in capsys.readouterr().err
    truth = write_truth(tmp_path / "truth.jsonl", [[["customer_id:C1"]]])
    assert main(["evaluate", "identity", "--truth", str(truth)]) == ExitCode.CONFIG
    assert "KAFKA_BOOTSTRAP_SERVERS" in capsys.readouterr().err


# ---------------------------------------------------------------------------- on the broker
def new_topic(broker: EmbeddedBroker, partitions: int = 3) -> str:
    name = f"grouping-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": broker.bootstrap_servers})
    topic = NewTopic(name, partitions, 1, config={"cleanup.policy": "compact"})
    admin.create_topics([topic])[name].result(10)
    return name


def produce(broker: EmbeddedBroker, topic: str, records: list[tuple[bytes, bytes | None]]) -> None:
    producer = Producer({"bootstrap.servers": broker.bootstrap_servers, "enable.idempotence": True})
    for key, value in records:
        producer.produce(topic, value, key)  # default partitioner: one key, one partition, in order
    assert producer.flush(10) == 0


@pytest.mark.broker
def test_read_grouping_from_a_real_changelog(broker: EmbeddedBroker) -> None:
    topic = new_topic(broker)
    produce(broker, topic, changelog())
    client = {"bootstrap.servers": broker.bootstrap_servers}
    assert read_grouping_from(client, topic, idle_s=0.5) == EXPECTED

    settings = load_settings(kafka_bootstrap_servers=broker.bootstrap_servers, pii_hash_key=KEY)
    cat = load_catalogue()
    cat = TopicCatalogue({**cat.topics, "identity_changelog": replace(cat["identity_changelog"], name=topic)})
    assert read_grouping(settings, cat, idle_s=0.5) == EXPECTED


@pytest.mark.broker
def test_a_missing_changelog_topic_is_reported(broker: EmbeddedBroker) -> None:
    with pytest.raises(GroupingError, match="has the identity stage run"):
        read_grouping_from({"bootstrap.servers": broker.bootstrap_servers}, f"absent-{uuid.uuid4().hex[:8]}",
                           idle_s=0.5)


@pytest.mark.broker
def test_omnipipe_evaluate_identity_scores_the_changelog(
        broker: EmbeddedBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    topic = new_topic(broker, partitions=2)
    email = "email:" + HASHER.email("ann@example.com")
    produce(broker, topic, [
        ident("cust:C1", "cust:C1"), ident(email, "cust:C1"), ident("cust:C2", "cust:C2"),
        ident("anon:x", "cust:C1"),  # person 2's cookie in person 1's profile: a false merge
        ident("card:K", "cust:C1"), tombstone("card:K"),
    ])
    truth = write_truth(tmp_path / "truth.jsonl", [[["customer_id:C1", "email:Ann@Example.com"]],
                                                   [["customer_id:C2", "anonymous_id:x"]]])
    doc = yaml.safe_load(DEFAULT_PATH.read_text())
    doc["topics"]["identity_changelog"]["name"] = topic
    topology = tmp_path / "topics.yaml"
    topology.write_text(yaml.safe_dump(doc))
    for name in ("OMNIPIPE_TOPIC_PARTITIONS", "OMNIPIPE_LOG_LEVEL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", broker.bootstrap_servers)
    monkeypatch.setenv("OMNIPIPE_PII_HASH_KEY", KEY)
    monkeypatch.setenv("OMNIPIPE_TOPOLOGY", str(topology))

    assert main(["evaluate", "identity", "--truth", str(truth), "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)
    score = scores["all"]
    assert scores["deterministic"] == score  # nobody shares an identifier here
    # pairs: C1-email true and kept; C2-x true but split; C1-x and email-x put together falsely
    assert score == {"identifiers": 4, "true_pairs": 2, "predicted_pairs": 3, "correct_pairs": 1,
                     "false_pairs": 2, "false_merge_profiles": 1, "precision": 1 / 3, "recall": 0.5}

    assert main(["evaluate", "identity", "--truth", str(truth)]) == 0
    text = capsys.readouterr().out
    assert "precision:    0.333333" in text and "false-merge profiles: 1" in text
    assert "deterministic links only" in text
