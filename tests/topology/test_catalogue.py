from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.errors import TopologyError
from pipeline.topology.catalogue import CHANNELS, Role, load_catalogue


def test_shipped_catalogue_declares_every_channel_and_trigger() -> None:
    cat = load_catalogue()
    assert sorted(t.channel for t in cat.inputs) == sorted(CHANNELS)
    assert {cat.trigger_topic(c).name for c in ("EMAIL", "PUSH", "SMS")} == {
        "triggers.email", "triggers.push", "triggers.sms"
    }
    assert cat["dlq"].role is Role.DLQ
    assert cat["privacy"].name == "control.privacy"
    assert all(t.partitions >= 1 and t.cleanup_policy for t in cat)


def _write(tmp_path: Path, body: str) -> Path:
    p = tmp_path / "topics.yaml"
    p.write_text(body)
    return p


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("topics: {}", "non-empty"),
        ("topics:\n  web: {name: 'bad name', role: input, channel: WEB, subject: s, partitions: 1,"
         " replication_factor: 1, retention_ms: 1, cleanup_policy: delete}", "invalid Kafka topic name"),
        ("defaults: {partitions: 1, replication_factor: 1, retention_ms: 1, cleanup_policy: delete}\n"
         "topics:\n  web: {name: a, role: sideways, subject: s}", "role"),
        ("topics:\n  web: {name: a, role: input, subject: s, partitons: 3}", "unknown field"),
        ("topics:\n  web: {name: a, role: input, subject: s, partitions: 0, replication_factor: 1,"
         " retention_ms: 1, cleanup_policy: delete, channel: WEB}", "partitions"),
    ],
)
def test_bad_catalogues_fail_with_a_message_that_says_what_to_fix(
    tmp_path: Path, body: str, message: str
) -> None:
    with pytest.raises(TopologyError, match=message):
        load_catalogue(_write(tmp_path, body))


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(TopologyError, match="cannot read"):
        load_catalogue(tmp_path / "nope.yaml")


def test_partition_override() -> None:
    cat = load_catalogue().with_partitions(2)
    assert {t.partitions for t in cat} == {2}


def test_identity_topics_must_share_the_canonical_partition_count(tmp_path: Path) -> None:
    shipped = (Path(__file__).resolve().parents[2] / "topologies" / "topics.yaml").read_text()
    body = shipped.replace("  identity_messages:\n    name: identity.messages\n",
                           "  identity_messages:\n    name: identity.messages\n    partitions: 3\n")
    assert body != shipped
    with pytest.raises(TopologyError, match=r"identity_messages=3.*same number of partitions"):
        load_catalogue(_write(tmp_path, body))
    cat = load_catalogue()
    counts = {cat[k].partitions for k in ("identity_messages", "canonical", "identity_changelog")}
    assert len(counts) == 1
    assert cat["identity_merges"].role is Role.AUDIT
