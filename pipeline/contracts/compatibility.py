"""Avro schema resolution rules, checked on schemas instead of on data.

The registry refuses a new version unless its reader resolves every older
writer (backward-transitive), and the codec refuses a writer id of another
subject unless it resolves to the expected reader. Both use this one reading
of the Avro specification's "Schema Resolution" section; the decoder uses
:func:`pick_branch` so the data path picks union branches the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline.contracts.canonical import NAMED_KINDS, PRIMITIVES, Schema, deref, kind, named_types

#: writer primitive -> reader primitives it may be read as (besides itself)
PROMOTIONS: Mapping[str, frozenset[str]] = {
    "int": frozenset({"long", "float", "double"}),
    "long": frozenset({"float", "double"}),
    "float": frozenset({"double"}),
    "string": frozenset({"bytes"}),
    "bytes": frozenset({"string"}),
}

Named = Mapping[str, dict[str, Any]]


def names_match(writer: dict[str, Any], reader: dict[str, Any]) -> bool:
    """Named types match by full name or by one of the reader's aliases."""
    return bool(writer["name"] == reader["name"] or writer["name"] in reader.get("aliases", ()))


def shallow_match(writer: Schema, reader: Schema) -> bool:
    """Whether the reader branch is a candidate for the writer (spec's "match")."""
    wk, rk = kind(writer), kind(reader)
    if wk in PRIMITIVES:
        return wk == rk or rk in PROMOTIONS.get(wk, ())
    if wk != rk:
        return False
    if wk in ("record", "enum", "fixed"):
        return names_match(writer, reader)
    return True  # arrays with arrays, maps with maps; contents checked deeply


def pick_branch(writer: Schema, reader_union: list[Any], named: Named) -> Schema | None:
    """The reader union branch a non-union writer resolves to, if any.

    The first branch of the exact same type wins; otherwise the first one the
    writer can be promoted to (what Java's resolver does).
    """
    branches = [deref(b, named) for b in reader_union]
    for branch in branches:
        if kind(branch) == kind(writer) and shallow_match(writer, branch):
            return branch
    for branch in branches:
        if shallow_match(writer, branch):
            return branch
    return None


@dataclass
class _Checker:
    writer_named: Named
    reader_named: Named
    problems: list[str] = field(default_factory=list)
    seen: set[tuple[str, str]] = field(default_factory=set)

    def check(self, writer: Schema, reader: Schema, path: str) -> None:
        writer, reader = deref(writer, self.writer_named), deref(reader, self.reader_named)
        wk, rk = kind(writer), kind(reader)
        if wk == "union":
            for branch in writer:
                self.check(branch, reader, f"{path}<{_label(deref(branch, self.writer_named))}>")
        elif rk == "union":
            chosen = pick_branch(writer, reader, self.reader_named)
            if chosen is None:
                self.problems.append(
                    f"{path}: writer type {_label(writer)} matches no branch of reader union"
                )
            else:
                self.check(writer, chosen, path)
        elif not shallow_match(writer, reader):
            self.problems.append(f"{path}: writer type {_label(writer)} cannot be read as {_label(reader)}")
        elif wk == "record":
            self._record(writer, reader, path)
        elif wk == "enum":
            missing = [s for s in writer["symbols"] if s not in reader["symbols"]]
            if missing and "default" not in reader:
                self.problems.append(
                    f"{path}: reader enum {reader['name']} lacks symbols {missing} and has no default"
                )
        elif wk == "fixed" and writer["size"] != reader["size"]:
            self.problems.append(f"{path}: fixed size {writer['size']} != {reader['size']}")
        elif wk == "array":
            self.check(writer["items"], reader["items"], f"{path}[]")
        elif wk == "map":
            self.check(writer["values"], reader["values"], f"{path}{{}}")

    def _record(self, writer: dict[str, Any], reader: dict[str, Any], path: str) -> None:
        key = (writer["name"], reader["name"])
        if key in self.seen:  # recursive types: one visit per pair is enough
            return
        self.seen.add(key)
        by_name = {f["name"]: f for f in writer["fields"]}
        for rfield in reader["fields"]:
            wfield = writer_field(by_name, rfield)
            where = rfield["name"] if path == "(root)" else f"{path}.{rfield['name']}"
            if wfield is not None:
                self.check(wfield["type"], rfield["type"], where)
            elif "default" not in rfield:
                self.problems.append(f"{where}: reader field has no default and the writer does not write it")


def writer_field(
    writer_fields: Mapping[str, dict[str, Any]], reader_field: dict[str, Any]
) -> dict[str, Any] | None:
    """The writer field a reader field reads: same name, else a reader alias."""
    for name in (reader_field["name"], *reader_field.get("aliases", ())):
        if name in writer_fields:
            return writer_fields[name]
    return None


def _label(schema: Schema) -> str:
    k = kind(schema)
    return f"{k} {schema['name']}" if k in NAMED_KINDS else k


def resolution_problems(writer: Schema, reader: Schema) -> list[str]:
    """Why data written with ``writer`` cannot be read with ``reader`` (empty: it can)."""
    checker = _Checker(named_types(writer), named_types(reader))
    checker.check(writer, reader, "(root)")
    return checker.problems


def backward_transitive_problems(new: Schema, older: list[Schema]) -> list[str]:
    """Problems of reading each older version with ``new``, labelled v1, v2..."""
    problems: list[str] = []
    for version, old in enumerate(older, start=1):
        problems.extend(f"v{version} -> new: {p}" for p in resolution_problems(old, new))
    return problems
