"""Freeze changed schema sources as new registry versions.

    python -m pipeline.contracts.register           # snapshot changed subjects
    python -m pipeline.contracts.register --check   # CI: fail if any is unregistered

A subject whose expanded source differs from its latest snapshot becomes a new
version with the next free id, but only if its reader can read everything
every older version wrote (backward-transitive). Either every change is
registered or none is, so a refused change leaves the registry untouched.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from pipeline.contracts.canonical import Schema
from pipeline.contracts.catalogue import DEFAULT_ROOT, REGISTRY_DIR, SOURCE_DIR, SchemaCatalogue
from pipeline.contracts.compatibility import backward_transitive_problems
from pipeline.contracts.errors import IncompatibleSchema
from pipeline.contracts.loader import SourceSchema, load_sources
from pipeline.contracts.resolver import fingerprint
from pipeline.contracts.store import Entry, RegistryStore
from pipeline.errors import SchemaError


def unregistered(sources: Mapping[str, SourceSchema], store: RegistryStore) -> list[SourceSchema]:
    """Sources that differ from their subject's latest snapshot (or have none)."""
    latest: dict[str, Entry] = {}
    for entry in store.entries():
        latest[entry.subject] = max(entry, latest.get(entry.subject, entry), key=lambda e: e.version)
    pending = []
    for subject, source in sorted(sources.items()):
        current = latest.get(subject)
        if current is None or current.sha256 != fingerprint(source.canonical_json):
            pending.append(source)
    return pending


def register(sources: Mapping[str, SourceSchema], root: Path) -> list[Entry]:
    """Snapshot every changed source; raises IncompatibleSchema before writing anything."""
    store = RegistryStore(root / REGISTRY_DIR)
    pending = unregistered(sources, store)
    catalogue = SchemaCatalogue.read(root) if pending and store.entries() else None
    for source in pending:
        problems = backward_transitive_problems(source.schema, _history(catalogue, source.subject))
        if problems:
            raise IncompatibleSchema(source.subject, problems)
    return [store.append(source.subject, source.schema) for source in pending]


def _history(catalogue: SchemaCatalogue | None, subject: str) -> list[Schema]:
    if catalogue is None or subject not in catalogue.subjects():
        return []
    return [registered.schema for registered in catalogue.versions(subject)]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.contracts.register", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--root", type=Path, default=DEFAULT_ROOT, help="schemas directory (src/ and registry/)"
    )
    parser.add_argument("--check", action="store_true", help="exit 1 if any source is not registered")
    args = parser.parse_args(argv)
    root: Path = args.root
    try:
        sources = load_sources(root / SOURCE_DIR)
        store = RegistryStore(root / REGISTRY_DIR)
        if args.check:
            if store.entries():
                SchemaCatalogue.read(root)  # snapshots intact and parseable
            pending = unregistered(sources, store)
            for source in pending:
                print(f"not registered: {source.subject} ({source.path})", file=sys.stderr)
            if pending:
                print("run: python -m pipeline.contracts.register", file=sys.stderr)
                return 1
            print(f"ok: {len(sources)} subjects registered")
            return 0
        for entry in register(sources, root):
            print(f"registered {entry.subject} v{entry.version} as id {entry.schema_id}")
        return 0
    except IncompatibleSchema as exc:
        print(f"refused: {exc}", file=sys.stderr)
        print(
            "make the change backward compatible (e.g. give new fields a default) or use a new subject",
            file=sys.stderr,
        )
        return 2
    except SchemaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
