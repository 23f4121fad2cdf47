"""A real HTTP server speaking the Confluent Schema Registry subset we use.

Runs in a thread on a free localhost port so the client is tested through
urllib, sockets, status codes and JSON bodies exactly as in production.
"""

from __future__ import annotations

import base64
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import unquote

from pipeline.contracts.canonical import canonicalize, dumps
from pipeline.contracts.compatibility import backward_transitive_problems


class FakeSchemaRegistry:
    """Schemas by global id, subjects as lists of ids; BACKWARD_TRANSITIVE."""

    def __init__(self, *, user: str | None = None, password: str | None = None) -> None:
        self.schemas: dict[int, str] = {}
        self.subjects: dict[str, list[int]] = {}
        self.requests: list[tuple[str, str]] = []
        self._auth = None
        if user is not None:
            self._auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> FakeSchemaRegistry:
        self._thread.start()
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    # -- API --------------------------------------------------------------
    def handle(self, method: str, path: str, auth: str | None, body: bytes) -> tuple[int, Any]:
        with self._lock:
            self.requests.append((method, path))
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
