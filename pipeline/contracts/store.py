"""The frozen local registry on disk: ``schemas/registry``.

Layout: ``<subject>/v<N>.avsc`` holds each version's self-contained schema and
``ids.yaml`` maps each stable id to its subject, version and SHA-256, so an
edited snapshot is caught instead of silently changing what an id means.
Only :meth:`RegistryStore.append` writes, and it only ever adds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from pipeline.contracts.canonical import Schema, dumps
from pipeline.contracts.resolver import fingerprint
from pipeline.errors import SchemaError

IDS_FILE = "ids.yaml"
_HEADER = (
    "# Frozen schema ids: id -> subject, version, sha256 of the canonical schema.\n"
    "# Written only by `python -m pipeline.contracts.register`; never edit, reuse or renumber.\n"
)


@dataclass(frozen=True, order=True)
class Entry:
    """One line of ids.yaml."""

    schema_id: int
    subject: str
    version: int
    sha256: str


class RegistryStore:
    """Reads and appends to one registry directory."""

    def __init__(self, registry_dir: Path) -> None:
        self.dir = registry_dir

    def snapshot_path(self, subject: str, version: int) -> Path:
        return self.dir / subject / f"v{version}.avsc"

    def entries(self) -> list[Entry]:
        """Every id, validated: unique ids, versions 1..N per subject."""
        path = self.dir / IDS_FILE
        if not path.exists():
            return []
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            entries = sorted(
                Entry(int(i), str(e["subject"]), int(e["version"]), str(e["sha256"])) for i, e in raw.items()
            )
        except (OSError, yaml.YAMLError, AttributeError, KeyError, TypeError, ValueError) as exc:
            raise SchemaError(f"{path}: unreadable: {exc}") from exc
        _validate(path, entries)
        return entries

    def history(self, subject: str) -> list[Entry]:
        """A subject's versions, oldest first."""
        return sorted((e for e in self.entries() if e.subject == subject), key=lambda e: e.version)

    def read_snapshot(self, entry: Entry) -> str:
        path = self.snapshot_path(entry.subject, entry.version)
        try:
            return path.read_text(encoding="utf-8")
        except OSError as exc:
            raise SchemaError(f"{path}: missing snapshot for schema id {entry.schema_id}: {exc}") from exc

    def append(self, subject: str, schema: Schema) -> Entry:
        """Freeze ``schema`` as the next version of ``subject`` under the next id."""
        entries = self.entries()
        entry = Entry(
            schema_id=max((e.schema_id for e in entries), default=0) + 1,
            subject=subject,
            version=1 + sum(1 for e in entries if e.subject == subject),
            sha256=fingerprint(dumps(schema)),
        )
        path = self.snapshot_path(subject, entry.version)
        if path.exists():
            raise SchemaError(f"{path} exists but is not in {IDS_FILE}; refusing to overwrite it")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(dumps(schema, pretty=True), encoding="utf-8")
        self._write_ids([*entries, entry])
        return entry

    def _write_ids(self, entries: list[Entry]) -> None:
        lines = [
            f"{e.schema_id}: {{subject: {e.subject}, version: {e.version}, sha256: {e.sha256}}}\n"
            for e in sorted(entries)
        ]
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / f".{IDS_FILE}.tmp"
        tmp.write_text(_HEADER + "".join(lines), encoding="utf-8")
        tmp.replace(self.dir / IDS_FILE)


def _validate(path: Path, entries: list[Entry]) -> None:
    seen: dict[tuple[str, int], int] = {}
    for entry in entries:
        if entry.schema_id <= 0:
            raise SchemaError(f"{path}: schema id {entry.schema_id} must be positive")
        key = (entry.subject, entry.version)
        if key in seen:
            raise SchemaError(
                f"{path}: {entry.subject} v{entry.version} has two ids: {seen[key]}, {entry.schema_id}"
            )
        seen[key] = entry.schema_id
    for subject in {e.subject for e in entries}:
        versions = sorted(v for s, v in seen if s == subject)
        if versions != list(range(1, len(versions) + 1)):
            raise SchemaError(f"{path}: {subject} versions {versions} are not 1..{len(versions)}")
