"""Our ``SchemaResolver`` over confluent-kafka's Schema Registry client.

``confluent_kafka.schema_registry.SchemaRegistryClient`` does the HTTP: TLS
(a private CA, a client certificate and key), basic or static bearer auth,
several comma-separated URLs, retries with jittered exponential backoff on
connection errors, timeouts and 408/429/5xx, and caches of schemas by id and
of a subject's latest version. This adapter adds what the codec needs and
nothing else:

- the writer schema of an id, parsed once (ids are immutable: kept forever)
  and named by subject and version;
- a subject's latest version as the reader schema (the library caches it for
  ``latest_ttl`` seconds);
- a short memory of unknown ids, so garbage ids cannot flood the registry;
- one mapping of failures, which decides whether a record is dead-lettered:

  ========================================  ===============================
  the registry says                         we raise
  ========================================  ===============================
  404, error code 40403 for an id           ``UnknownSchemaId`` (the record's
                                            fault: dead letter)
  404, error code 40401/40402 for a subject ``UnknownSubject``
  anything else: refused connection,        ``SchemaRegistryError``: the
  timeout, TLS failure, 5xx, 401/403, a     registry's fault; the codec says
  404 without a registry error code (a      ``registry_unavailable`` and ingest
  proxy), a body that is not JSON           waits and retries
  ========================================  ===============================

Subjects follow the record-name strategy (subject = record full name, the
names of the local catalogue); producers may also use topic-name subjects, as
reading goes by id.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit, urlunsplit

from confluent_kafka.schema_registry import Schema as LibrarySchema
from confluent_kafka.schema_registry import SchemaRegistryClient as LibraryClient
from confluent_kafka.schema_registry import SchemaRegistryError as LibraryError

from pipeline.contracts.canonical import Schema, canonicalize, dumps
from pipeline.contracts.catalogue import SchemaCatalogue
from pipeline.contracts.errors import SchemaRegistryError, UnknownSchemaId, UnknownSubject
from pipeline.contracts.resolver import RegisteredSchema, make_registered
from pipeline.errors import ConfigError, SchemaError

try:  # the HTTP library the registry client uses (httpx2 on Python >= 3.10, else httpx)
    import httpx2 as _httpx
except ImportError:  # pragma: no cover - depends on confluent-kafka's extra
    import httpx as _httpx  # type: ignore[no-redef]

__all__ = ["RegistryConfig", "RegistryResolver", "Secret"]

#: The registry's own codes for "no such thing" (a 404 without one may be a proxy's).
SCHEMA_NOT_FOUND = 40403
SUBJECT_NOT_FOUND = 40401
VERSION_NOT_FOUND = 40402

T = TypeVar("T")


class Secret(Protocol):
    """Anything like pydantic's SecretStr (kept out of reprs and logs)."""

    def get_secret_value(self) -> str: ...


@dataclass(frozen=True)
class RegistryConfig:
    """Where the registry is and how to reach it; ``library_config`` is the client's dict.

    ``timeout_s`` bounds one HTTP request; ``max_retries`` and the waits are the
    library's own retries of one call (short: ingest has its own, longer
    backoff while the registry stays down, with a metric and a log line).
    """

    url: str
    username: str | None = None
    password: Secret | str | None = None
    bearer_token: Secret | str | None = None
    ssl_ca_location: Path | None = None
    ssl_certificate_location: Path | None = None
    ssl_key_location: Path | None = None
    timeout_s: float = 5.0
    max_retries: int = 2
    retries_wait_ms: int = 100
    retries_max_wait_ms: int = 1000
    latest_ttl_s: float = 300.0

    def __repr__(self) -> str:
        return f"RegistryConfig({redact_url(self.url)!r}, auth={self.auth_kind})"

    @property
    def auth_kind(self) -> str:
        return "bearer" if self.bearer_token else "basic" if self.username else "none"

    def library_config(self) -> dict[str, Any]:
        """The ``confluent_kafka.schema_registry.SchemaRegistryClient`` configuration."""
        conf: dict[str, Any] = {
            "url": self.url,
            "timeout": self.timeout_s,
            "max.retries": self.max_retries,
            "retries.wait.ms": self.retries_wait_ms,
            "retries.max.wait.ms": self.retries_max_wait_ms,
            "cache.latest.ttl.sec": self.latest_ttl_s,
        }
        if self.username is not None:
            conf["basic.auth.user.info"] = f"{self.username}:{_reveal(self.password)}"
        if self.bearer_token is not None:
            conf["bearer.auth.credentials.source"] = "STATIC_TOKEN"
            conf["bearer.auth.token"] = _reveal(self.bearer_token)
            # a Confluent Cloud header (target-sr-cluster); other registries ignore it
            conf["bearer.auth.logical.cluster"] = ""
        if self.ssl_ca_location is not None:
            conf["ssl.ca.location"] = str(self.ssl_ca_location)
        if self.ssl_certificate_location is not None:
            conf["ssl.certificate.location"] = str(self.ssl_certificate_location)
        if self.ssl_key_location is not None:
            conf["ssl.key.location"] = str(self.ssl_key_location)
        return conf


class RegistryResolver:
    """Schemas by id and latest by subject from a Schema Registry; registration for deploys."""

    def __init__(
        self,
        config: RegistryConfig,
        *,
        unknown_id_ttl: float = 30.0,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.url = redact_url(config.url)
        self.unknown_id_ttl = unknown_id_ttl
        self._clock = clock or time.monotonic
        try:
            self._client = LibraryClient(config.library_config())
        except (ValueError, TypeError, OSError) as exc:  # e.g. an unreadable CA or key file
            raise ConfigError(
                f"schema registry {self.url}: bad client configuration ({exc}); check SCHEMA_REGISTRY_URL "
                "and SCHEMA_REGISTRY_SSL_CA_LOCATION / _CERTIFICATE_LOCATION / _KEY_LOCATION"
            ) from exc
        self._auth = config.auth_kind
        self._by_id: dict[int, RegisteredSchema] = {}
        self._unknown_ids: dict[int, float] = {}

    def __repr__(self) -> str:
        return f"RegistryResolver({self.url!r}, auth={self._auth})"

    def close(self) -> None:
        self._client.close()

    # -- SchemaResolver ---------------------------------------------------
    def by_id(self, schema_id: int) -> RegisteredSchema:
        """The writer schema of ``schema_id``; raises UnknownSchemaId or SchemaRegistryError."""
        cached = self._by_id.get(schema_id)
        if cached is not None:
            return cached
        if self._clock() < self._unknown_ids.get(schema_id, 0.0):
            raise UnknownSchemaId(schema_id)
        try:
            schema = self._call(f"schema id {schema_id}", self._client.get_schema, schema_id)
        except _NotFound as missing:
            if missing.error_code != SCHEMA_NOT_FOUND:
                raise missing.unavailable() from None
            self._unknown_ids[schema_id] = self._clock() + self.unknown_id_ttl
            raise UnknownSchemaId(schema_id) from None
        text = _avro_text(schema, f"schema id {schema_id}")
        subject, version = self._subject_version(schema_id, text)
        registered = make_registered(schema_id, subject, version, text)
        self._by_id[schema_id] = registered
        return registered

    def latest(self, subject: str) -> RegisteredSchema:
        """The newest version of ``subject`` (cached by the library for ``latest_ttl_s``)."""
        try:
            found = self._call(f"subject {subject}", self._client.get_latest_version, subject)
        except _NotFound as missing:
            if missing.error_code not in (SUBJECT_NOT_FOUND, VERSION_NOT_FOUND):
                raise missing.unavailable() from None
            raise UnknownSubject(subject) from None
        schema_id = found.schema_id
        if not isinstance(schema_id, int):
            raise SchemaRegistryError(f"schema registry {self.url}: subject {subject}: malformed answer")
        cached = self._by_id.get(schema_id)
        if cached is not None:
            return cached
        text = _avro_text(found.schema, f"subject {subject}")
        registered = make_registered(schema_id, found.subject or subject, found.version or 0, text)
        self._by_id[schema_id] = registered
        return registered

    # -- registration -----------------------------------------------------
    def register(self, subject: str, schema: Schema | str) -> int:
        """The id of ``schema`` under ``subject`` (existing or new).

        The registry applies its compatibility rule and answers 409 if the
        schema breaks it; that surfaces as SchemaRegistryError (status 409).
        """
        text = dumps(canonicalize(json.loads(schema) if isinstance(schema, str) else schema))
        try:
            return self._call(
                f"register {subject}", self._client.register_schema, subject, LibrarySchema(text, "AVRO")
            )
        except _NotFound as missing:
            raise missing.unavailable() from None

    def ensure_registered(self, catalogue: SchemaCatalogue | None = None) -> dict[str, int]:
        """Register every local version, oldest first, so the registry holds
        the same history (and can check compatibility against it); returns
        subject -> the registry's id for the latest local version."""
        catalogue = catalogue or SchemaCatalogue.load()
        latest: dict[str, int] = {}
        for subject in catalogue.subjects():
            for version in catalogue.versions(subject):
                schema_id = latest[subject] = self.register(subject, version.canonical_json)
                # what Omnipipe writes decodes without asking the registry again (even while it is
                # down); the version number is the local one
                self._by_id.setdefault(schema_id, dataclasses.replace(version, schema_id=schema_id))
        return latest

    # -- the library ------------------------------------------------------
    def _subject_version(self, schema_id: int, schema_text: str) -> tuple[str, int]:
        """Where an id is registered; registries without the endpoint: the record
        name is the subject and the version is unknown (0)."""
        name = str(json.loads(schema_text).get("name", "")) if schema_text.lstrip().startswith("{") else ""
        try:
            uses = self._call(f"schema id {schema_id} versions", self._client.get_schema_versions, schema_id)
        except _NotFound as missing:
            if name:
                return name, 0
            raise missing.unavailable() from None
        if not uses:
            raise SchemaRegistryError(f"schema registry {self.url}: schema id {schema_id}: no subject has it")
        chosen = next((u for u in uses if u.subject == name), uses[0])
        return str(chosen.subject), int(chosen.version or 0)

    def _call(self, what: str, fn: Callable[..., T], *args: Any) -> T:
        """One library call; its failures as ``_NotFound`` (a 404) or our SchemaRegistryError."""
        try:
            return fn(*args)
        except LibraryError as exc:
            status, code = exc.http_status_code, exc.error_code
            if status == 404:
                raise _NotFound(self.url, what, code, exc.error_message) from None
            raise SchemaRegistryError(
                f"schema registry {self.url}: {what}: HTTP {status}: {exc.error_message}",
                status=status, error_code=code,
            ) from None
        except _httpx.HTTPError as exc:  # refused, reset, timed out, TLS: nothing answered
            raise SchemaRegistryError(
                f"schema registry {self.url} unreachable (SCHEMA_REGISTRY_URL): {what}: "
                f"{type(exc).__name__}: {exc}"
            ) from None
        except (ValueError, KeyError, TypeError, AttributeError) as exc:  # a 200 that is not the API's
            raise SchemaRegistryError(
                f"schema registry {self.url}: {what}: malformed answer: {type(exc).__name__}"
            ) from None


class _NotFound(Exception):
    """A 404; the caller decides from ``error_code`` whether it is really 'no such thing'."""

    def __init__(self, url: str, what: str, error_code: int, message: str) -> None:
        super().__init__(f"{what}: {message}")
        self.url, self.what, self.error_code, self.message = url, what, error_code, message

    def unavailable(self) -> SchemaRegistryError:
        return SchemaRegistryError(
            f"schema registry {self.url}: {self.what}: HTTP 404 without a registry error code "
            f"({self.error_code}): {self.message}; is SCHEMA_REGISTRY_URL the registry's base URL?",
            status=404, error_code=self.error_code,
        )


def redact_url(url: str) -> str:
    """``url`` without any ``user:password@`` part (safe for logs and errors)."""
    parts = [p.strip() for p in url.split(",")]
    out = []
    for part in parts:
        split = urlsplit(part)
        if split.username is not None or split.password is not None:
            host = split.hostname or ""
            netloc = f"{host}:{split.port}" if split.port else host
            part = urlunsplit(split._replace(netloc=netloc))
        out.append(part.rstrip("/"))
    return ",".join(out)


def _reveal(secret: Secret | str | None) -> str:
    if secret is None:
        return ""
    return secret if isinstance(secret, str) else secret.get_secret_value()


def _avro_text(schema: LibrarySchema, what: str) -> str:
    if (schema.schema_type or "AVRO") != "AVRO":  # the data is fine, just not ours to read
        raise SchemaError(f"{what} is a {schema.schema_type} schema, not Avro")
    if not isinstance(schema.schema_str, str):
        raise SchemaRegistryError(f"{what}: malformed registry answer (no schema)")
    return schema.schema_str
