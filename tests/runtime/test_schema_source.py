"""The worker's schema source: the local catalogue, or a Schema Registry over real HTTP."""

from __future__ import annotations

import struct

import pytest

from pipeline.contracts.catalogue import SchemaCatalogue
from pipeline.runtime.schemas import build_codec
from pipeline.settings import load_settings
from tests.contracts.registry_server import FakeSchemaRegistry

WEB = "omnipipe.events.WebEvent"
RECORD = {"event_id": "e1", "event_time": 1_700_000_000_000, "identifiers": {"anonymous_id": "a1"},
          "type": "PAGE_VIEW"}


def test_without_registry_ids_come_from_the_local_catalogue(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SCHEMA_REGISTRY_URL", raising=False)
    codec = build_codec(load_settings())
    data = codec.encode(WEB, RECORD)
    assert struct.unpack(">bI", data[:5]) == (0, SchemaCatalogue.load().latest(WEB).schema_id)


def test_with_registry_every_local_version_is_registered_and_used(monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeSchemaRegistry(user="svc", password="pw") as registry:
        monkeypatch.setenv("SCHEMA_REGISTRY_URL", registry.url)
        monkeypatch.setenv("SCHEMA_REGISTRY_USERNAME", "svc")
        monkeypatch.setenv("SCHEMA_REGISTRY_PASSWORD", "pw")
        codec = build_codec(load_settings())
        local = SchemaCatalogue.load()
        assert set(registry.subjects) == set(local.subjects())
        assert len(registry.subjects[WEB]) == 2  # v1 and v2, oldest first
        data = codec.encode(WEB, RECORD)
        (schema_id,) = struct.unpack(">I", data[1:5])
        assert schema_id == registry.subjects[WEB][-1]
        assert codec.decode(data, WEB)["event_id"] == "e1"
