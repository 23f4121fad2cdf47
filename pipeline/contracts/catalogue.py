"""The local, frozen schema catalogue: every registered version, parsed once.

It is the offline stand-in for a Schema Registry (same ``SchemaResolver``
protocol), so tests, local runs and the embedded broker need no registry.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from functools import lru_cache
from pathlib import Path

from pipeline.contracts.errors import UnknownSchemaId, UnknownSubject
from pipeline.contracts.resolver import RegisteredSchema, make_registered
from pipeline.contracts.store import RegistryStore
from pipeline.errors import SchemaError

#: ``schemas/`` at the repository root.
DEFAULT_ROOT = Path(__file__).resolve().parents[2] / "schemas"
REGISTRY_DIR = "registry"
SOURCE_DIR = "src"


class SchemaCatalogue:
    """Schemas by id and by subject; immutable once built."""

    def __init__(self, schemas: Iterable[RegisteredSchema]) -> None:
        self._by_id: dict[int, RegisteredSchema] = {}
        self._versions: dict[str, list[RegisteredSchema]] = {}
        for schema in sorted(schemas, key=lambda s: (s.subject, s.version)):
            if schema.schema_id in self._by_id:
                raise SchemaError(f"schema id {schema.schema_id} is registered twice")
            self._by_id[schema.schema_id] = schema
            self._versions.setdefault(schema.subject, []).append(schema)
        self._latest = {subject: versions[-1] for subject, versions in self._versions.items()}

    @classmethod
    def load(cls, root: Path | None = None, *, fresh: bool = False) -> SchemaCatalogue:
        """The catalogue of ``root`` (default: the repo's ``schemas/``).

        Loaded and parsed once per directory and shared: it never changes
        while a process runs. ``fresh=True`` re-reads (the register tool).
        """
        path = (root or DEFAULT_ROOT).resolve()
        return cls.read(path) if fresh else _cached(path)

    @classmethod
    def read(cls, root: Path) -> SchemaCatalogue:
        """Read ``root/registry``, checking every snapshot against its sha256."""
        store = RegistryStore(root / REGISTRY_DIR)
        schemas = []
        for entry in store.entries():
            registered = make_registered(
                entry.schema_id, entry.subject, entry.version, store.read_snapshot(entry)
            )
            if registered.fingerprint != entry.sha256:
                path = store.snapshot_path(entry.subject, entry.version)
                raise SchemaError(
                    f"{path} was edited after registration (sha256 differs); snapshots are frozen"
                )
            if registered.schema.get("name") != entry.subject:
                raise SchemaError(
                    f"schema id {entry.schema_id}: record name is not its subject {entry.subject}"
                )
            schemas.append(registered)
        if not schemas:
            raise SchemaError(
                f"{store.dir}: no registered schemas; run python -m pipeline.contracts.register"
            )
        return cls(schemas)

    def by_id(self, schema_id: int) -> RegisteredSchema:
        try:
            return self._by_id[schema_id]
        except KeyError:
            raise UnknownSchemaId(schema_id) from None

    def latest(self, subject: str) -> RegisteredSchema:
        try:
            return self._latest[subject]
        except KeyError:
            raise UnknownSubject(subject) from None

    def versions(self, subject: str) -> list[RegisteredSchema]:
        """Every version of ``subject``, oldest first."""
        if subject not in self._versions:
            raise UnknownSubject(subject)
        return list(self._versions[subject])

    def subjects(self) -> list[str]:
        return sorted(self._versions)

    def __iter__(self) -> Iterator[RegisteredSchema]:
        """Every registered schema in id order."""
        return iter(sorted(self._by_id.values(), key=lambda s: s.schema_id))

    def __len__(self) -> int:
        return len(self._by_id)


@lru_cache(maxsize=8)
def _cached(root: Path) -> SchemaCatalogue:
    return SchemaCatalogue.read(root)
