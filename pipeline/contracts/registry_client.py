"""Confluent Schema Registry client (stdlib HTTP only) as a ``SchemaResolver``.

Subjects follow the record-name strategy: subject = record full name, the same
names as the local catalogue. Ids are immutable, so schemas by id are cached
forever; a subject's latest version is cached for ``latest_ttl`` seconds, and
an unknown id for ``unknown_id_ttl`` so garbage ids cannot flood the registry.
"""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.request
from typing import Any, Protocol
from urllib.parse import quote

from pipeline.contracts.canonical import Schema, canonicalize, dumps
from pipeline.contracts.catalogue import SchemaCatalogue
from pipeline.contracts.errors import SchemaRegistryError, UnknownSchemaId, UnknownSubject
from pipeline.contracts.resolver import RegisteredSchema, make_registered
from pipeline.errors import SchemaError

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"


class Secret(Protocol):
    """Anything like pydantic's SecretStr (kept out of reprs and logs)."""

    def get_secret_value(self) -> str: ...


class SchemaRegistryClient:
    """The subset of the Confluent REST API a codec and a deploy step need."""

    def __init__(
        self,
        url: str,
        *,
        user: str | None = None,
        password: str | Secret | None = None,
        timeout: float = 10.0,
        latest_ttl: float = 300.0,
        unknown_id_ttl: float = 30.0,
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.latest_ttl = latest_ttl
        self.unknown_id_ttl = unknown_id_ttl
        self._auth: str | None = None
        if user is not None:
            secret = (
                password if isinstance(password, str) or password is None else password.get_secret_value()
            )
            token = base64.b64encode(f"{user}:{secret or ''}".encode()).decode("ascii")
            self._auth = f"Basic {token}"
        self._by_id: dict[int, RegisteredSchema] = {}
        self._unknown_ids: dict[int, float] = {}
        self._latest: dict[str, tuple[float, RegisteredSchema]] = {}
        self._registered: dict[tuple[str, str], int] = {}

    def __repr__(self) -> str:
        return f"SchemaRegistryClient({self.url!r}, auth={'basic' if self._auth else 'none'})"

    # -- SchemaResolver ---------------------------------------------------
    def by_id(self, schema_id: int) -> RegisteredSchema:
        """``GET /schemas/ids/{id}`` (+ ``/versions`` for subject and version)."""
        cached = self._by_id.get(schema_id)
        if cached is not None:
            return cached
        if time.monotonic() < self._unknown_ids.get(schema_id, 0.0):
            raise UnknownSchemaId(schema_id)
        try:
            body = self._request("GET", f"/schemas/ids/{schema_id}")
        except SchemaRegistryError as exc:
            if exc.status == 404:
                self._unknown_ids[schema_id] = time.monotonic() + self.unknown_id_ttl
                raise UnknownSchemaId(schema_id) from None
            raise
        _require_avro(body, f"schema id {schema_id}")
        subject, version = self._subject_version(schema_id, body["schema"])
        registered = make_registered(schema_id, subject, version, body["schema"])
        self._by_id[schema_id] = registered
        return registered

    def latest(self, subject: str) -> RegisteredSchema:
        """``GET /subjects/{subject}/versions/latest``, cached for ``latest_ttl``."""
        now = time.monotonic()
        cached = self._latest.get(subject)
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            body = self._request("GET", f"/subjects/{quote(subject, safe='')}/versions/latest")
        except SchemaRegistryError as exc:
            if exc.status == 404:
                raise UnknownSubject(subject) from None
            raise
        _require_avro(body, f"subject {subject}")
        registered = self._by_id.get(body["id"]) or make_registered(
            int(body["id"]), str(body["subject"]), int(body["version"]), body["schema"]
        )
        self._by_id[registered.schema_id] = registered
        self._latest[subject] = (now + self.latest_ttl, registered)
        return registered

    # -- registration -----------------------------------------------------
    def register(self, subject: str, schema: Schema | str) -> int:
        """``POST /subjects/{subject}/versions``: the id (existing or new).

        The registry applies its compatibility rule and answers 409 if the
        schema breaks it; that surfaces as SchemaRegistryError.
        """
        text = dumps(canonicalize(json.loads(schema) if isinstance(schema, str) else schema))
        key = (subject, text)
        if key not in self._registered:
            body = self._request("POST", f"/subjects/{quote(subject, safe='')}/versions", {"schema": text})
            self._registered[key] = int(body["id"])
            self._latest.pop(subject, None)
        return self._registered[key]

    def ensure_registered(self, catalogue: SchemaCatalogue | None = None) -> dict[str, int]:
        """Register every local version, oldest first, so the registry holds
        the same history (and can check compatibility against it); returns
        subject -> the registry's id for the latest local version."""
        catalogue = catalogue or SchemaCatalogue.load()
        latest: dict[str, int] = {}
        for subject in catalogue.subjects():
            for version in catalogue.versions(subject):
                latest[subject] = self.register(subject, version.canonical_json)
        return latest

    # -- HTTP -------------------------------------------------------------
    def _subject_version(self, schema_id: int, schema_text: str) -> tuple[str, int]:
        """Where an id is registered; old registries lack the endpoint, then the
        record name is the subject and the version is unknown (0)."""
        name = str(json.loads(schema_text).get("name", "")) if schema_text.lstrip().startswith("{") else ""
        try:
            uses = self._request("GET", f"/schemas/ids/{schema_id}/versions")
        except SchemaRegistryError as exc:
            if exc.status == 404 and name:
                return name, 0
            raise
        if not isinstance(uses, list) or not uses:
            raise SchemaRegistryError(f"schema id {schema_id}: no subject uses it")
        chosen = next((u for u in uses if u.get("subject") == name), uses[0])
        return str(chosen["subject"]), int(chosen["version"])

    def _request(self, method: str, path: str, payload: dict[str, Any] | None = None) -> Any:
        data = None if payload is None else json.dumps(payload).encode("utf-8")
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Accept", CONTENT_TYPE)
        if data is not None:
            request.add_header("Content-Type", CONTENT_TYPE)
        if self._auth:
            request.add_header("Authorization", self._auth)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise _http_error(method, path, exc) from None
        except (urllib.error.URLError, OSError) as exc:
            raise SchemaRegistryError(f"{method} {self.url}{path}: registry unreachable: {exc}") from exc
        except ValueError as exc:
            raise SchemaRegistryError(f"{method} {self.url}{path}: response is not JSON: {exc}") from exc


def _http_error(method: str, path: str, exc: urllib.error.HTTPError) -> SchemaRegistryError:
    """Confluent errors are JSON ``{"error_code", "message"}``; keep both."""
    code: int | None = None
    message = exc.reason
    try:
        body = json.loads(exc.read() or b"{}")
        code = int(body.get("error_code")) if body.get("error_code") is not None else None
        message = body.get("message") or message
    except (ValueError, AttributeError, OSError):
        pass
    return SchemaRegistryError(
        f"{method} {path}: HTTP {exc.code}: {message}", status=exc.code, error_code=code
    )


def _require_avro(body: Any, what: str) -> None:
    if not isinstance(body, dict) or "schema" not in body:
        raise SchemaRegistryError(f"{what}: malformed registry response")
    if body.get("schemaType", "AVRO") != "AVRO":  # the data is fine, just not ours to read
        raise SchemaError(f"{what} is a {body['schemaType']} schema, not Avro")
