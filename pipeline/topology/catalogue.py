"""Typed topic catalogue loaded from ``topologies/topics.yaml``.

Topic names appear nowhere else in the code: everything asks the catalogue,
so renaming a topic or changing its layout is a data change.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml

from pipeline.errors import TopologyError

DEFAULT_PATH = Path(__file__).resolve().parents[2] / "topologies" / "topics.yaml"

_TOPIC_NAME = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
_CLEANUP = {"delete", "compact", "compact,delete"}
CHANNELS = ("WEB", "APP", "POS", "CALLCENTER", "EMAIL", "PUSH", "SMS")


class Role(StrEnum):
    INPUT = "input"
    CONTROL = "control"
    FEED = "feed"  # reference data every worker reads whole (the product catalogue's stock changes)
    INTERNAL = "internal"
    OUTPUT = "output"
    AUDIT = "audit"
    DLQ = "dlq"


@dataclass(frozen=True)
class TopicSpec:
    key: str
    name: str
    role: Role
    subject: str | None
    partitions: int
    replication_factor: int
    retention_ms: int
    cleanup_policy: str
    channel: str | None = None

    @property
    def avro_subject(self) -> str:
        """The subject of an Avro topic; internal Faust changelogs have none."""
        if self.subject is None:
            raise TopologyError(f"topic {self.name} carries no Avro subject")
        return self.subject

    def config(self) -> dict[str, str]:
        """Broker-side topic configuration."""
        return {"retention.ms": str(self.retention_ms), "cleanup.policy": self.cleanup_policy}


@dataclass(frozen=True)
class TopicCatalogue:
    topics: Mapping[str, TopicSpec]

    def __getitem__(self, key: str) -> TopicSpec:
        try:
            return self.topics[key]
        except KeyError:
            raise TopologyError(f"no topic {key!r} in the catalogue") from None

    def __iter__(self) -> Iterator[TopicSpec]:
        return iter(self.topics.values())

    def by_role(self, role: Role) -> list[TopicSpec]:
        return [t for t in self.topics.values() if t.role is role]

    @property
    def inputs(self) -> list[TopicSpec]:
        return self.by_role(Role.INPUT)

    @property
    def ingest_sources(self) -> list[TopicSpec]:
        """Topics the ingest stage consumes: the channels and privacy control."""
        return self.inputs + self.by_role(Role.CONTROL)

    def by_name(self, name: str) -> TopicSpec:
        for spec in self.topics.values():
            if spec.name == name:
                return spec
        raise TopologyError(f"topic {name!r} is not in the catalogue")

    def trigger_topic(self, channel: str) -> TopicSpec:
        for spec in self.by_role(Role.OUTPUT):
            if spec.channel == channel:
                return spec
        raise TopologyError(f"no trigger topic for channel {channel!r}")

    def with_partitions(self, partitions: int) -> TopicCatalogue:
        """The same catalogue with every topic's partition count overridden."""
        from dataclasses import replace

        return TopicCatalogue({k: replace(v, partitions=partitions) for k, v in self.topics.items()})


COPARTITIONED = (
    ("canonical", "identity_messages", "identity_forget", "identity_changelog"),
    ("resolved", "identity_merges", "profile_messages", "profile_changelog"),
)
"""Each stage routes by key over one group together: one partition number, one owner.

Identity: its input, messages and changelog. Profiles: resolved events and
merges (both keyed by profile id), profile messages and the changelog.
"""


def _check_copartitioned(path: Path, specs: Mapping[str, TopicSpec]) -> None:
    for group in COPARTITIONED:
        present = [specs[k] for k in group if k in specs]
        if len({t.partitions for t in present}) > 1:
            counts = ", ".join(f"{t.key}={t.partitions}" for t in present)
            raise TopologyError(f"{path}: {counts}: these topics must have the same number of partitions")


def _int(entry: Mapping[str, Any], field: str, where: str, minimum: int) -> int:
    value = entry[field]
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise TopologyError(f"{where}: {field} must be an integer >= {minimum}, got {value!r}")
    return value


def load_catalogue(path: Path | None = None) -> TopicCatalogue:
    """Load and validate the catalogue; errors name the file, topic and field to fix."""
    path = path or DEFAULT_PATH
    try:
        doc = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise TopologyError(f"cannot read topic catalogue {path}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise TopologyError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("topics"), dict) or not doc["topics"]:
        raise TopologyError(f"{path}: expected a mapping with a non-empty 'topics' section")
    defaults = doc.get("defaults") or {}
    known = {"name", "role", "subject", "partitions", "replication_factor",
             "retention_ms", "cleanup_policy", "channel"}
    specs: dict[str, TopicSpec] = {}
    seen_names: set[str] = set()
    for key, raw in doc["topics"].items():
        where = f"{path}: topic {key!r}"
        if not isinstance(raw, dict):
            raise TopologyError(f"{where}: expected a mapping")
        unknown = set(raw) - known
        if unknown:
            raise TopologyError(f"{where}: unknown field(s) {sorted(unknown)}; allowed: {sorted(known)}")
        entry = {**defaults, **raw}
        for field in ("name", "role", "partitions", "replication_factor",
                      "retention_ms", "cleanup_policy"):
            if field not in entry:
                raise TopologyError(f"{where}: missing {field!r} (and no default)")
        name = entry["name"]
        if not isinstance(name, str) or not _TOPIC_NAME.match(name):
            raise TopologyError(f"{where}: invalid Kafka topic name {name!r}")
        if name in seen_names:
            raise TopologyError(f"{where}: topic name {name!r} is declared twice")
        seen_names.add(name)
        try:
            role = Role(entry["role"])
        except ValueError:
            raise TopologyError(
                f"{where}: role {entry['role']!r} is not one of {[r.value for r in Role]}"
            ) from None
        cleanup = entry["cleanup_policy"]
        if cleanup not in _CLEANUP:
            raise TopologyError(f"{where}: cleanup_policy {cleanup!r} is not one of {sorted(_CLEANUP)}")
        retention = entry["retention_ms"]
        valid_retention = isinstance(retention, int) and not isinstance(retention, bool)
        if not valid_retention or (retention < 1 and retention != -1):
            raise TopologyError(f"{where}: retention_ms must be a positive integer or -1, got {retention!r}")
        channel = entry.get("channel")
        if channel is not None and channel not in CHANNELS:
            raise TopologyError(f"{where}: channel {channel!r} is not one of {CHANNELS}")
        if entry.get("subject") is None and role is not Role.INTERNAL:
            raise TopologyError(f"{where}: {role.value} topics must name their Avro subject")
        if role in (Role.INPUT, Role.OUTPUT) and channel is None:
            raise TopologyError(f"{where}: {role.value} topics must name their channel")
        specs[key] = TopicSpec(
            key=key,
            name=name,
            role=role,
            subject=entry.get("subject"),
            partitions=_int(entry, "partitions", where, 1),
            replication_factor=_int(entry, "replication_factor", where, 1),
            retention_ms=retention,
            cleanup_policy=cleanup,
            channel=channel,
        )
    for required in ("canonical", "dlq", "privacy"):
        if required not in specs:
            raise TopologyError(f"{path}: the catalogue must declare the {required!r} topic")
    _check_copartitioned(path, specs)
    return TopicCatalogue(specs)
