"""A real HTTP server speaking the Confluent Schema Registry subset we use.

Runs in a thread on a free localhost port so the client is tested through
sockets, HTTP status codes and JSON bodies exactly as in production. It can
stop and start again on the same port (an outage), or answer every request
with an error status (``fail_with``).
"""

from __future__ import annotations

import base64
import json
import re
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import unquote

from pipeline.contracts.canonical import canonicalize, dumps
from pipeline.contracts.compatibility import backward_transitive_problems


class FakeSchemaRegistry:
    """Schemas by global id, subjects as lists of ids; BACKWARD_TRANSITIVE."""

    def __init__(
        self, *, user: str | None = None, password: str | None = None, token: str | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self._tls = tls
        self.schemas: dict[int, str] = {}
        self.subjects: dict[str, list[int]] = {}
        self.requests: list[tuple[str, str]] = []
        #: when set, every request is answered with this status (a registry that is up but failing)
        self.fail_with: int | None = None
        self._auth = None
        if user is not None:
            self._auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        if token is not None:
            self._auth = f"Bearer {token}"
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._address: tuple[str, int] = ("127.0.0.1", 0)

    @property
    def url(self) -> str:
        host, port = self._address
        return f"{'https' if self._tls else 'http'}://{host!s}:{port}"

    def __enter__(self) -> FakeSchemaRegistry:
        self.start()
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()

    def start(self) -> None:
        """Listen (again) on the same address: a registry that comes back keeps its URL and schemas."""
        server = ThreadingHTTPServer(self._address, self._handler())
        if self._tls is not None:
            server.socket = self._tls.wrap_socket(server.socket, server_side=True)
        self._address = server.server_address[:2]  # type: ignore[assignment]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop listening: connections are refused until ``start``."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)
        self._server = self._thread = None

    # -- API --------------------------------------------------------------
    def handle(self, method: str, target: str, auth: str | None, body: bytes) -> tuple[int, Any]:
        path = target.split("?", 1)[0]
        with self._lock:
            self.requests.append((method, path))
            if self.fail_with is not None:
                return self.fail_with, {"error_code": self.fail_with * 100, "message": "simulated failure"}
            if self._auth and auth != self._auth:
                return 401, {"error_code": 401, "message": "Unauthorized"}
            if method == "GET" and (m := re.fullmatch(r"/schemas/ids/(\d+)", path)):
                schema = self.schemas.get(int(m[1]))
                return (
                    (200, {"schema": schema})
                    if schema
                    else (404, {"error_code": 40403, "message": "Schema not found"})
                )
            if method == "GET" and (m := re.fullmatch(r"/schemas/ids/(\d+)/versions", path)):
                uses = [
                    {"subject": s, "version": ids.index(int(m[1])) + 1}
                    for s, ids in self.subjects.items()
                    if int(m[1]) in ids
                ]
                return (200, uses) if uses else (404, {"error_code": 40403, "message": "Schema not found"})
            if method == "GET" and (m := re.fullmatch(r"/subjects/([^/]+)/versions/latest", path)):
                ids = self.subjects.get(unquote(m[1]))
                if not ids:
                    return 404, {"error_code": 40401, "message": "Subject not found"}
                return 200, {
                    "subject": unquote(m[1]),
                    "version": len(ids),
                    "id": ids[-1],
                    "schema": self.schemas[ids[-1]],
                }
            if method == "POST" and (m := re.fullmatch(r"/subjects/([^/]+)/versions", path)):
                return self._register(unquote(m[1]), json.loads(body)["schema"])
            return 404, {"error_code": 404, "message": f"no route {method} {path}"}

    def _register(self, subject: str, schema: str) -> tuple[int, Any]:
        text = dumps(canonicalize(json.loads(schema)))
        ids = self.subjects.setdefault(subject, [])
        for schema_id in ids:
            if self.schemas[schema_id] == text:
                return 200, {"id": schema_id}
        older = [json.loads(self.schemas[i]) for i in ids]
        problems = backward_transitive_problems(json.loads(text), older)
        if problems:
            return 409, {"error_code": 409, "message": f"incompatible: {problems[0]}"}
        schema_id = next((i for i, s in self.schemas.items() if s == text), len(self.schemas) + 1)
        self.schemas[schema_id] = text
        ids.append(schema_id)
        return 200, {"id": schema_id}

    def add(self, subject: str, schema: dict[str, Any]) -> int:
        """Register directly (as another team's deploy would); the id."""
        status, body = self._register(subject, json.dumps(schema))
        assert status == 200, body
        return int(body["id"])

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        registry = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                status, payload = registry.handle(
                    self.command, self.path, self.headers.get("Authorization"), self.rfile.read(length)
                )
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _serve

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler
