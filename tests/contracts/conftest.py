"""Fixtures for the contracts tests: the repo's catalogue and a codec on it."""

from __future__ import annotations

import pytest

from pipeline.contracts import AvroCodec, SchemaCatalogue


@pytest.fixture(scope="session")
def catalogue() -> SchemaCatalogue:
    return SchemaCatalogue.load()


@pytest.fixture(scope="session")
def codec(catalogue: SchemaCatalogue) -> AvroCodec:
    return AvroCodec(catalogue)
