"""The worker's schema source: the local catalogue, or a Schema Registry over real HTTP."""

from __future__ import annotations

import re
import struct
from pathlib import Path

import pytest

from pipeline.contracts.catalogue import SchemaCatalogue
from pipeline.errors import ConfigError
from pipeline.runtime.schemas import build_codec
from pipeline.settings import load_settings
from tests.contracts.registry_server import FakeSchemaRegistry
from tests.contracts.tls_certs import make_tls_files

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


def test_tls_and_bearer_settings_reach_the_registry_client(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    tls = make_tls_files(tmp_path)
    with FakeSchemaRegistry(token="t" * 24, tls=tls.server_context()) as registry:
        monkeypatch.setenv("SCHEMA_REGISTRY_URL", registry.url)
        monkeypatch.setenv("SCHEMA_REGISTRY_BEARER_TOKEN", "t" * 24)
        monkeypatch.setenv("SCHEMA_REGISTRY_SSL_CA_LOCATION", str(tls.ca))
        monkeypatch.setenv("SCHEMA_REGISTRY_SSL_CERTIFICATE_LOCATION", str(tls.client_cert))
        monkeypatch.setenv("SCHEMA_REGISTRY_SSL_KEY_LOCATION", str(tls.client_key))
        codec = build_codec(load_settings())
        assert set(registry.subjects) == set(SchemaCatalogue.load().subjects())
        assert codec.decode(codec.encode(WEB, RECORD), WEB)["event_id"] == "e1"


@pytest.mark.parametrize(("env", "named"), [
    ({"SCHEMA_REGISTRY_BEARER_TOKEN": "tok"}, "SCHEMA_REGISTRY_BEARER_TOKEN set without SCHEMA_REGISTRY_URL"),
    ({"SCHEMA_REGISTRY_URL": "https://r", "SCHEMA_REGISTRY_USERNAME": "u"}, "SCHEMA_REGISTRY_PASSWORD"),
    ({"SCHEMA_REGISTRY_URL": "https://r", "SCHEMA_REGISTRY_USERNAME": "u", "SCHEMA_REGISTRY_PASSWORD": "p",
      "SCHEMA_REGISTRY_BEARER_TOKEN": "tok"}, "choose one"),
    ({"SCHEMA_REGISTRY_URL": "https://r", "SCHEMA_REGISTRY_SSL_KEY_LOCATION": "{tmp}/client.key"},
     "SCHEMA_REGISTRY_SSL_KEY_LOCATION needs SCHEMA_REGISTRY_SSL_CERTIFICATE_LOCATION"),
    ({"SCHEMA_REGISTRY_URL": "https://r", "SCHEMA_REGISTRY_SSL_CA_LOCATION": "{tmp}/missing-ca.pem"},
     "SCHEMA_REGISTRY_SSL_CA_LOCATION={tmp}/missing-ca.pem: no such file"),
])
def test_bad_registry_settings_fail_fast_naming_the_variable(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, env: dict[str, str], named: str) -> None:
    (tmp_path / "client.key").write_text("key")
    for name, value in env.items():
        monkeypatch.setenv(name, value.format(tmp=tmp_path))
    with pytest.raises(ConfigError, match=re.escape(named.format(tmp=tmp_path))):
        load_settings()
