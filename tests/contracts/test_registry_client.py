"""The registry resolver (confluent-kafka's client underneath), over real HTTP to an in-process registry."""

from __future__ import annotations

import random
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastavro.utils import generate_many
from pydantic import SecretStr

from pipeline.contracts import (
    AvroCodec,
    DecodeError,
    RegistryConfig,
    RegistryResolver,
    SchemaCatalogue,
    SchemaRegistryError,
    UnknownSchemaId,
    UnknownSubject,
)
from pipeline.contracts.encoder import compile_encoder
from pipeline.contracts.registry_client import redact_url
from pipeline.contracts.wire import frame, unframe
from pipeline.errors import ConfigError
from tests.contracts.registry_server import FakeSchemaRegistry
from tests.contracts.tls_certs import make_tls_files

WEB = "omnipipe.events.WebEvent"
EVENT = {"event_id": "e", "event_time": 1, "identifiers": {"customer_id": "42"}, "type": "LOGIN"}


def resolver(url: str, **kwargs: object) -> RegistryResolver:
    """Quick library retries, so failure tests do not sleep long."""
    fast = {"retries_wait_ms": 1, "retries_max_wait_ms": 2, "timeout_s": 2.0}
    return RegistryResolver(RegistryConfig(url, **{**fast, **kwargs}))  # type: ignore[arg-type]


@pytest.fixture
def registry() -> Iterator[FakeSchemaRegistry]:
    with FakeSchemaRegistry(user="svc", password="s3cret") as server:
        yield server


@pytest.fixture
def client(registry: FakeSchemaRegistry) -> RegistryResolver:
    return resolver(registry.url, username="svc", password=SecretStr("s3cret"))


def test_ensure_registered_uploads_the_history_oldest_first(
    registry: FakeSchemaRegistry, client: RegistryResolver, catalogue: SchemaCatalogue
) -> None:
    latest_ids = client.ensure_registered(catalogue)
    assert set(latest_ids) == set(catalogue.subjects())
    assert len(registry.schemas) == len(catalogue)
    assert len(registry.subjects[WEB]) == 2
    posts = sum(1 for method, _ in registry.requests if method == "POST")
    assert client.ensure_registered(catalogue) == latest_ids  # idempotent, served from the library's cache
    assert sum(1 for method, _ in registry.requests if method == "POST") == posts
    web = client.latest(WEB)
    assert (web.schema_id, web.version) == (latest_ids[WEB], 2)
    assert web.canonical_json == catalogue.latest(WEB).canonical_json


def test_what_omnipipe_registered_decodes_without_asking_the_registry_again(
    registry: FakeSchemaRegistry, client: RegistryResolver, catalogue: SchemaCatalogue
) -> None:
    ids = client.ensure_registered(catalogue)
    registry.stop()
    for subject, schema_id in ids.items():
        assert client.by_id(schema_id).canonical_json == catalogue.latest(subject).canonical_json
        assert client.by_id(schema_id).subject == subject


def test_codec_round_trips_through_the_registry(client: RegistryResolver, catalogue: SchemaCatalogue) -> None:
    ids = client.ensure_registered(catalogue)
    remote, local = AvroCodec(client), AvroCodec(catalogue)
    for subject in catalogue.subjects():
        random.seed(subject)
        for record in generate_many(catalogue.latest(subject).parsed, 5):
            value = remote.encode(subject, record)
            assert unframe(value)[0] == ids[subject]
            assert value[5:] == local.encode(subject, record)[5:]  # same body, registry's id
            assert remote.decode(value, subject) == local.decode(local.encode(subject, record), subject)


def test_old_data_under_the_registry_v1_id_reads_as_latest(
    client: RegistryResolver, catalogue: SchemaCatalogue
) -> None:
    client.ensure_registered(catalogue)
    v1 = catalogue.versions(WEB)[0]
    v1_id = client.register(WEB, v1.canonical_json)  # already there: same id back
    body = bytearray()
    compile_encoder(v1.schema)(EVENT, body)
    decoded = AvroCodec(client).decode(frame(v1_id, bytes(body)), WEB)
    assert decoded["referrer"] is None and decoded["identifiers"]["customer_id"] == "42"


def test_by_id_is_cached_forever_and_names_subject_and_version(
    registry: FakeSchemaRegistry, client: RegistryResolver, catalogue: SchemaCatalogue
) -> None:
    ids = client.ensure_registered()
    fresh = resolver(registry.url, username="svc", password="s3cret")
    before = len(registry.requests)
    schema = fresh.by_id(ids[WEB])
    assert (schema.subject, schema.version) == (WEB, len(catalogue.versions(WEB)))
    assert fresh.by_id(ids[WEB]) is schema
    assert len(registry.requests) == before + 2  # the schema, then where it is used
    registry.stop()  # a cached id needs no registry
    assert fresh.by_id(ids[WEB]) is schema


def test_unknown_id_and_subject(registry: FakeSchemaRegistry, client: RegistryResolver) -> None:
    client.ensure_registered()
    with pytest.raises(UnknownSchemaId):
        client.by_id(999)
    before = len(registry.requests)
    with pytest.raises(UnknownSchemaId):
        client.by_id(999)  # remembered for unknown_id_ttl: garbage ids cannot flood the registry
    assert len(registry.requests) == before
    with pytest.raises(UnknownSubject):
        client.latest("omnipipe.nope.Nothing")
    with pytest.raises(DecodeError) as err:
        AvroCodec(client).decode(frame(999, b"\x00"), WEB)
    assert err.value.reason == "unknown_schema_id" and not err.value.retryable


def test_incompatible_registration_is_a_409(client: RegistryResolver) -> None:
    client.ensure_registered()
    breaking = {"type": "record", "name": WEB, "fields": [{"name": "only", "type": "string"}]}
    with pytest.raises(SchemaRegistryError) as err:
        client.register(WEB, breaking)
    assert (err.value.status, err.value.error_code) == (409, 409)


def test_wrong_credentials_are_a_401(registry: FakeSchemaRegistry) -> None:
    client = resolver(registry.url, username="svc", password="wrong")
    with pytest.raises(SchemaRegistryError) as err:
        client.latest(WEB)
    assert err.value.status == 401 and "Unauthorized" in str(err.value)
    assert "wrong" not in repr(client) and "basic" in repr(client)


def test_a_static_bearer_token_is_sent() -> None:
    with FakeSchemaRegistry(token="t0ken-abc") as registry:
        assert resolver(registry.url, bearer_token=SecretStr("t0ken-abc")).ensure_registered()
        with pytest.raises(SchemaRegistryError) as err:
            resolver(registry.url, bearer_token=SecretStr("other")).latest(WEB)
        assert err.value.status == 401


def test_credentials_in_the_url_never_reach_errors_or_reprs() -> None:
    assert redact_url("https://svc:pw@reg.example:8081/,http://a:b@other/") == (
        "https://reg.example:8081,http://other"
    )
    port = _free_port()
    client = resolver(f"http://svc:hunter2@127.0.0.1:{port}")
    with pytest.raises(SchemaRegistryError) as err:
        client.by_id(1)
    assert "hunter2" not in str(err.value) and "hunter2" not in repr(client)
    assert f"127.0.0.1:{port}" in str(err.value)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # closed when the block ends: nothing listens


def test_unreachable_registry_is_retryable_for_the_codec() -> None:
    port = _free_port()
    client = resolver(f"http://127.0.0.1:{port}")
    with pytest.raises(SchemaRegistryError, match="unreachable") as err:
        client.by_id(1)
    assert f"http://127.0.0.1:{port}" in str(err.value)
    with pytest.raises(DecodeError) as decode_err:
        AvroCodec(client).decode(frame(1, b"\x00"), WEB)
    assert decode_err.value.reason == "registry_unavailable" and decode_err.value.retryable


OTHER = {"type": "record", "name": "t.Other", "fields": [{"name": "x", "type": "int"}]}


@pytest.mark.parametrize("status", [500, 503, 403])
def test_a_failing_registry_is_retryable_not_an_unknown_id(registry: FakeSchemaRegistry, status: int) -> None:
    client = resolver(registry.url, username="svc", password="s3cret", max_retries=2)
    client.ensure_registered()
    client.latest(WEB)  # the reader schema is cached; the writer's id is one this client never saw
    foreign = registry.add("t.Other", OTHER)
    registry.fail_with = status
    before = len(registry.requests)
    with pytest.raises(DecodeError) as err:
        AvroCodec(client).decode(frame(foreign, b"\x00"), WEB)
    assert err.value.reason == "registry_unavailable" and err.value.retryable
    retried = 3 if status >= 500 else 1  # the library retries 5xx (max_retries=2), not a refusal
    assert len(registry.requests) - before == retried
    registry.fail_with = None  # back: the id resolves (the failure was not remembered as "unknown")
    with pytest.raises(DecodeError) as err:
        AvroCodec(client).decode(frame(foreign, b"\x00"), WEB)
    assert err.value.reason == "schema_mismatch"


def test_a_404_without_a_registry_error_code_is_not_an_unknown_id(registry: FakeSchemaRegistry) -> None:
    """E.g. a proxy in front of the registry, or a URL with the wrong base path."""
    client = resolver(registry.url, username="svc", password="s3cret")
    client.ensure_registered()
    client.latest(WEB)
    foreign = registry.add("t.Other", OTHER)
    registry.fail_with = 404  # answers error code 40400, not the registry's 40403 "schema not found"
    with pytest.raises(SchemaRegistryError, match="SCHEMA_REGISTRY_URL"):
        client.by_id(foreign)
    with pytest.raises(DecodeError) as err:
        AvroCodec(client).decode(frame(foreign, b"\x00"), WEB)
    assert err.value.reason == "registry_unavailable"


def test_tls_with_a_private_ca_and_a_client_certificate(tmp_path: Path) -> None:
    tls = make_tls_files(tmp_path)
    with FakeSchemaRegistry(tls=tls.server_context()) as registry:
        assert registry.url.startswith("https://127.0.0.1:")
        client = resolver(registry.url, ssl_ca_location=tls.ca, ssl_certificate_location=tls.client_cert,
                          ssl_key_location=tls.client_key)
        ids = client.ensure_registered()
        assert client.by_id(ids[WEB]).subject == WEB
        without_cert = resolver(registry.url, ssl_ca_location=tls.ca, max_retries=0)
        with pytest.raises(SchemaRegistryError, match="unreachable"):
            without_cert.latest(WEB)  # the registry requires a client certificate
        unknown_ca = resolver(registry.url, ssl_certificate_location=tls.client_cert,
                              ssl_key_location=tls.client_key, max_retries=0)
        with pytest.raises(SchemaRegistryError, match="unreachable"):
            unknown_ca.latest(WEB)  # the server's certificate is not trusted without the CA


def test_an_unreadable_client_key_is_a_configuration_error(tmp_path: Path) -> None:
    tls = make_tls_files(tmp_path)
    (tmp_path / "broken.key").write_text("not a key")
    with pytest.raises(ConfigError, match="bad client configuration"):
        resolver("https://127.0.0.1:1", ssl_certificate_location=tls.client_cert,
                 ssl_key_location=tmp_path / "broken.key")
