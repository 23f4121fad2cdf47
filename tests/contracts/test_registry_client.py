"""The Schema Registry client over real HTTP against an in-process registry."""

from __future__ import annotations

import random
import socket
from collections.abc import Iterator

import pytest
from fastavro.utils import generate_many
from pydantic import SecretStr

from pipeline.contracts import (
    AvroCodec,
    DecodeError,
    SchemaCatalogue,
    SchemaRegistryClient,
    SchemaRegistryError,
    UnknownSchemaId,
    UnknownSubject,
)
from pipeline.contracts.encoder import compile_encoder
from pipeline.contracts.wire import frame, unframe
from tests.contracts.registry_server import FakeSchemaRegistry

WEB = "omnipipe.events.WebEvent"
EVENT = {"event_id": "e", "event_time": 1, "identifiers": {"customer_id": "42"}, "type": "LOGIN"}


@pytest.fixture
def registry() -> Iterator[FakeSchemaRegistry]:
    with FakeSchemaRegistry(user="svc", password="s3cret") as server:
        yield server


@pytest.fixture
def client(registry: FakeSchemaRegistry) -> SchemaRegistryClient:
    return SchemaRegistryClient(registry.url, user="svc", password=SecretStr("s3cret"))


def test_ensure_registered_uploads_the_history_oldest_first(
    registry: FakeSchemaRegistry, client: SchemaRegistryClient, catalogue: SchemaCatalogue
) -> None:
    latest_ids = client.ensure_registered(catalogue)
    assert set(latest_ids) == set(catalogue.subjects())
    assert len(registry.schemas) == len(catalogue)
    assert len(registry.subjects[WEB]) == 2
    assert client.ensure_registered(catalogue) == latest_ids  # idempotent, served from cache
    web = client.latest(WEB)
    assert (web.schema_id, web.version) == (latest_ids[WEB], 2)
    assert web.canonical_json == catalogue.latest(WEB).canonical_json


def test_codec_round_trips_through_the_registry(
    client: SchemaRegistryClient, catalogue: SchemaCatalogue
) -> None:
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
    client: SchemaRegistryClient, catalogue: SchemaCatalogue
) -> None:
    client.ensure_registered(catalogue)
    v1 = catalogue.versions(WEB)[0]
    v1_id = client.register(WEB, v1.canonical_json)  # already there: same id back
    body = bytearray()
    compile_encoder(v1.schema)(EVENT, body)
    decoded = AvroCodec(client).decode(frame(v1_id, bytes(body)), WEB)
    assert decoded["referrer"] is None and decoded["identifiers"]["customer_id"] == "42"


def test_by_id_is_cached_forever_and_names_subject_and_version(
    registry: FakeSchemaRegistry, client: SchemaRegistryClient
) -> None:
    ids = client.ensure_registered()
    fresh = SchemaRegistryClient(registry.url, user="svc", password="s3cret")
    before = len(registry.requests)
    schema = fresh.by_id(ids["omnipipe.dlq.DeadLetter"])
    assert (schema.subject, schema.version) == ("omnipipe.dlq.DeadLetter", 1)
    assert fresh.by_id(ids["omnipipe.dlq.DeadLetter"]) is schema
    assert len(registry.requests) == before + 2  # the schema, then where it is used


def test_unknown_id_and_subject(registry: FakeSchemaRegistry, client: SchemaRegistryClient) -> None:
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
    assert err.value.reason == "unknown_schema_id"


def test_incompatible_registration_is_a_409(client: SchemaRegistryClient) -> None:
    client.ensure_registered()
    breaking = {"type": "record", "name": WEB, "fields": [{"name": "only", "type": "string"}]}
    with pytest.raises(SchemaRegistryError) as err:
        client.register(WEB, breaking)
    assert (err.value.status, err.value.error_code) == (409, 409)


def test_wrong_credentials_are_a_401(registry: FakeSchemaRegistry) -> None:
    client = SchemaRegistryClient(registry.url, user="svc", password="wrong")
    with pytest.raises(SchemaRegistryError) as err:
        client.latest(WEB)
    assert err.value.status == 401 and "Unauthorized" in str(err.value)
    assert "wrong" not in repr(client)


def test_unreachable_registry_is_retryable_for_the_codec() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed when the block ends: nothing listens
    client = SchemaRegistryClient(f"http://127.0.0.1:{port}", timeout=2)
    with pytest.raises(SchemaRegistryError, match="unreachable"):
        client.by_id(1)
    with pytest.raises(DecodeError) as err:
        AvroCodec(client).decode(frame(1, b"\x00"), WEB)
    assert err.value.reason == "registry_unavailable" and err.value.retryable
