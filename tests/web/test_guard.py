"""The guard in front of a real aiohttp server: tokens, signed routing, rate limits, Faust's pages."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import faust
import pytest
from aiohttp import web
from faust.web import Request, Response, View
from prometheus_client import CollectorRegistry

from pipeline.metrics.scrape import parse
from pipeline.runtime.routing import OwnerRouter
from pipeline.web.auth import BearerTokens
from pipeline.web.guard import WebGuard, is_routed
from pipeline.web.ratelimit import RateLimiter
from pipeline.web.signing import LEGACY_ROUTED, RouteSigner

TOKENS = [b"token-one-0123456789abcdef", b"token-two-0123456789abcdef"]
SECRET = b"cluster-secret-0123456789abcdef"


def _guard(tokens: list[bytes], registry: CollectorRegistry, rate: float = 100.0, burst: int = 100,
           secret: bytes = SECRET) -> WebGuard:
    from pipeline.metrics.web import WebMetrics

    return WebGuard(BearerTokens(tokens), RouteSigner(secret), RateLimiter(rate, burst), WebMetrics(registry))


@asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    site = web.SockSite(runner, sock)
    await site.start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        await runner.cleanup()


def _app(guard: WebGuard) -> web.Application:
    """Routes like the worker's: a public lookup, an internal one, and one registered by 'another stage'."""
    async def lookup(request: web.Request) -> web.StreamResponse:
        if (limited := guard.throttle(request)) is not None:
            return limited  # type: ignore[return-value]
        return web.json_response({"routed": is_routed(request)})

    async def internal(request: web.Request) -> web.StreamResponse:
        if (forbidden := guard.internal_only(request)) is not None:
            return forbidden  # type: ignore[return-value]
        return web.json_response({"profile": request.match_info["profile"], "qs": request.query_string})

    async def other(_request: web.Request) -> web.StreamResponse:
        return web.json_response({"dlq": 0})

    app = web.Application(middlewares=[guard.middleware])
    app.router.add_get("/profiles/{ref}", lookup)
    app.router.add_get("/profiles/_local/{profile}", internal)
    app.router.add_get("/dlq", other)
    return app


async def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, Any, Any]:
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers or {}) as resp:
        text = await resp.text()
        return resp.status, json.loads(text) if resp.content_type == "application/json" else text, \
            resp.headers


def run(coro: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(coro())  # type: ignore[arg-type]


def test_every_route_needs_a_token_once_tokens_are_set() -> None:
    registry = CollectorRegistry()
    guard = _guard(TOKENS, registry)

    async def go() -> None:
        async with serving(_app(guard)) as base:
            for path in ("/profiles/cust:C1", "/dlq", "/no-such-route", "/profiles/_local/cust:C1"):
                status, body, headers = await _get(base + path)
                assert status == 401, path
                assert headers["WWW-Authenticate"].startswith("Bearer")
                assert "Bearer" in body["error"]
            wrong = {"Authorization": "Bearer wrong-token-0123456789ab"}
            status, _, headers = await _get(base + "/dlq", wrong)
            assert status == 401 and 'error="invalid_token"' in headers["WWW-Authenticate"]
            for token in TOKENS:  # both tokens of a rotation
                status, body, _ = await _get(base + "/dlq", {"Authorization": f"Bearer {token.decode()}"})
                assert (status, body) == (200, {"dlq": 0})
            good = {"Authorization": f"Bearer {TOKENS[0].decode()}"}
            assert (await _get(base + "/no-such-route", good))[0] == 404

    run(go)
    refused = parse(_exposition(registry)).by_label("omnipipe_web_requests_refused_total", "reason")
    assert refused["token_missing"] == 4 and refused["token_invalid"] == 1


def _exposition(registry: CollectorRegistry) -> str:
    from prometheus_client import generate_latest

    return generate_latest(registry).decode()


def test_without_tokens_public_routes_are_open_but_internal_ones_are_not() -> None:
    guard = _guard([], CollectorRegistry())

    async def go() -> None:
        async with serving(_app(guard)) as base:
            assert (await _get(base + "/profiles/cust:C1"))[:2] == (200, {"routed": False})
            status, body, _ = await _get(base + "/profiles/_local/cust:C1")
            assert status == 403 and "internal route" in body["error"]

    run(go)


def test_a_forged_routing_header_gets_403_even_with_a_valid_token() -> None:
    guard = _guard(TOKENS, CollectorRegistry())
    auth = {"Authorization": f"Bearer {TOKENS[0].decode()}"}

    async def go() -> None:
        async with serving(_app(guard)) as base:
            for path in ("/profiles/_local/cust:C1", "/profiles/cust:C1", "/dlq"):
                status, body, _ = await _get(base + path, {**auth, LEGACY_ROUTED: "1"})
                assert status == 403 and "forbidden" in body["error"], path
            assert (await _get(base + "/profiles/_local/cust:C1", auth))[0] == 403  # a token is not enough

    run(go)


class _Elsewhere:
    """A stage that owns nothing: every key is forwarded to ``url``."""

    def __init__(self, url: str) -> None:
        self.url = url

    def owns(self, key: str) -> bool:
        return False

    def owner_of(self, key: str) -> tuple[int, str | None]:
        return 3, self.url


def test_the_router_signs_what_the_owner_verifies_and_a_wrong_secret_is_refused() -> None:
    owner = _guard(TOKENS, CollectorRegistry())

    async def go() -> None:
        async with serving(_app(owner)) as base:
            router = OwnerRouter(_Elsewhere(base), "http://127.0.0.1:1", RouteSigner(SECRET))
            path = "/profiles/_local/email:ab+cd%2Fef?part=ident&x=a%20b"
            status, body = await router.fetch("k", False, lambda _k: None, path, "missing")
            assert status == 200, body
            assert body == {"profile": "email:ab+cd/ef", "qs": "part=ident&x=a b"}
            intruder = OwnerRouter(_Elsewhere(base), "http://127.0.0.1:1",
                                   RouteSigner(b"not-the-cluster-secret-0123"))
            status, body = await intruder.fetch("k", False, lambda _k: None, path, "missing")
            assert status == 403 and "OMNIPIPE_CLUSTER_SECRET" in body["error"]

    run(go)


def test_lookups_beyond_the_rate_get_429_with_retry_after_and_routed_requests_do_not_count() -> None:
    guard = _guard([], CollectorRegistry(), rate=0.5, burst=3)

    async def go() -> None:
        async with serving(_app(guard)) as base:
            statuses = [(await _get(base + "/profiles/cust:C1"))[0] for _ in range(3)]
            assert statuses == [200, 200, 200]
            status, body, headers = await _get(base + "/profiles/cust:C1")
            assert status == 429 and headers["Retry-After"] == "2" and "retry after 2 s" in body["error"]
            target = "/profiles/cust:C1"
            signed = RouteSigner(SECRET).headers("GET", target)
            assert (await _get(base + target, signed))[:2] == (200, {"routed": True})

    run(go)


def _faust_app(debug: bool, guard: WebGuard) -> faust.App:
    app = faust.App(f"guard-test-{debug}", broker="memory://", web_enabled=True, autodiscover=False)

    class Early(View):
        async def get(self, request: Request) -> Response:
            return self.json({"early": True})

    app.page("/early")(Early)  # registered before the guard
    guard.install(app, debug=debug)

    class Late(View):  # like a route another stage adds later
        async def get(self, request: Request) -> Response:
            return self.json({"late": True})

    app.page("/late")(Late)
    app.web.init_server()  # what the worker does when it starts: applies Faust's blueprints
    return app


def _paths(app: faust.App) -> set[str]:
    web_app: web.Application = app.web.web_app  # type: ignore[attr-defined]
    return {r.canonical for r in web_app.router.resources()}


def test_faust_pages_are_not_served_by_default_and_every_page_is_guarded() -> None:
    app = _faust_app(False, _guard(TOKENS, CollectorRegistry()))
    assert _paths(app) == {"/early", "/late"}
    auth = {"Authorization": f"Bearer {TOKENS[1].decode()}"}

    async def go() -> None:
        async with serving(app.web.web_app) as base:  # type: ignore[attr-defined]
            for path in ("/", "/router/", "/table/", "/graph/", "/stats/", "/assignment/"):
                assert (await _get(base + path, auth))[0] == 404, path
            for path in ("/early", "/late"):
                assert (await _get(base + path))[0] == 401, path
                assert (await _get(base + path, auth))[0] == 200, path

    run(go)


def test_faust_pages_are_served_with_web_debug() -> None:
    paths = _paths(_faust_app(True, _guard([], CollectorRegistry())))
    assert {"/", "/router/", "/table/"} <= paths


@pytest.mark.parametrize("debug", [False, True])
def test_the_guard_is_installed_once_on_the_faust_server(debug: bool) -> None:
    guard = _guard([], CollectorRegistry())
    app = _faust_app(debug, guard)
    assert len(app.web.web_app.middlewares) == 1  # type: ignore[attr-defined]
