"""Hypothesis strategies producing valid values for any Avro schema.

fastavro's ``generate_many`` only makes ASCII strings and small shapes; these
add unicode, extreme ints, empty and nested containers and recursion.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hypothesis import strategies as st

from pipeline.contracts.canonical import Schema, deref, kind

MAX_DEPTH = 3


def values(schema: Schema, named: Mapping[str, Any], depth: int = 0) -> st.SearchStrategy[Any]:
    """Values ``schema`` accepts (each union branch reachable by value type)."""
    schema = deref(schema, named)
    k = kind(schema)
    size = 3 if depth < MAX_DEPTH else 0
    simple: dict[str, st.SearchStrategy[Any]] = {
        "null": st.none(),
        "boolean": st.booleans(),
        "int": st.integers(-(2**31), 2**31 - 1),
        "long": st.integers(-(2**63), 2**63 - 1),
        "float": st.floats(width=32, allow_nan=False),
        "double": st.floats(allow_nan=False),
        "string": st.text(max_size=12),
        "bytes": st.binary(max_size=12),
    }
    if k in simple:
        return simple[k]
    if k == "fixed":
        return st.binary(min_size=schema["size"], max_size=schema["size"])
    if k == "enum":
        return st.sampled_from(schema["symbols"])
    if k == "union":
        return st.one_of(*(values(b, named, depth) for b in schema))
    if k in ("array", "map") and not size:  # stops recursive types
        return st.just([] if k == "array" else {})
    if k == "array":
        return st.lists(values(schema["items"], named, depth + 1), max_size=size)
    if k == "map":
        return st.dictionaries(st.text(max_size=4), values(schema["values"], named, depth + 1), max_size=size)
    return st.fixed_dictionaries({f["name"]: values(f["type"], named, depth + 1) for f in schema["fields"]})
