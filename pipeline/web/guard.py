"""One aiohttp middleware in front of every route of the worker's API, whoever registered it.

* A request signed by another worker of the cluster (``signing.py``) is let
  through and marked routed; a request that carries routing headers without
  a valid signature is refused with 403, whatever route it asks for.
* Otherwise, once tokens are configured, a request needs one of them as a
  bearer token (401 with ``WWW-Authenticate: Bearer`` without one), on every
  route, Faust's and other stages' included, and even on loopback.
* Views call ``internal_only`` on routes only workers may call (403 unless
  routed) and ``throttle`` on lookup routes (429 with ``Retry-After``).
* Faust's own pages (``/``, ``/router``, ``/table``, ...) are not served
  unless ``OMNIPIPE_WEB_DEBUG`` is set.
"""

from __future__ import annotations

import logging
import math
from typing import Any, cast

import faust
from aiohttp import web
from aiohttp.typedefs import Handler
from faust.web import Request as FaustRequest
from faust.web import Response as FaustResponse
from faust.web.base import BlueprintManager
from prometheus_client import CollectorRegistry

from pipeline.metrics.web import WebMetrics
from pipeline.settings import Settings
from pipeline.web.auth import CHALLENGE, INVALID_CHALLENGE, AuthResult, BearerTokens
from pipeline.web.ratelimit import RateLimiter
from pipeline.web.signing import RouteSigner, Verdict

log = logging.getLogger(__name__)

#: set on a request whose routing signature was verified
ROUTED_KEY = web.RequestKey("omnipipe.routed", bool)

_SIGNATURE_ERRORS = {
    Verdict.MALFORMED: "a routing header without a valid signature",
    Verdict.STALE: "a routing signature outside the accepted time window (are the clocks in sync?)",
    Verdict.FORGED: "a routing signature that does not match (is OMNIPIPE_CLUSTER_SECRET the same on "
                    "every worker?)",
}


#: what a Faust view is handed: at run time the aiohttp request
AnyRequest = web.Request | FaustRequest


def _aiohttp(request: AnyRequest) -> web.Request:
    return cast(web.Request, request)


def _reply(body: dict[str, Any], status: int, headers: dict[str, str] | None = None) -> FaustResponse:
    return cast(FaustResponse, web.json_response(body, status=status, headers=headers))


def is_routed(request: AnyRequest) -> bool:
    """True for a request another worker of this cluster signed."""
    return bool(_aiohttp(request).get(ROUTED_KEY, False))


def _route(request: web.Request) -> str:
    """The route's pattern (``/profiles/_local/{profile}``), never the key in the path."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "(no route)"


class WebGuard:
    def __init__(self, tokens: BearerTokens, signer: RouteSigner, limiter: RateLimiter,
                 metrics: WebMetrics) -> None:
        self.tokens = tokens
        self.signer = signer
        self.limiter = limiter
        self.metrics = metrics

    @classmethod
    def from_settings(cls, settings: Settings, registry: CollectorRegistry) -> WebGuard:
        return cls(BearerTokens(settings.api_token_values()), RouteSigner(settings.routing_secret()),
                   RateLimiter(settings.lookup_rate_per_s, settings.lookup_burst), WebMetrics(registry))

    # ------------------------------------------------------------------ every request
    async def _check(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        verdict = self.signer.verify(request.method, request.raw_path, request.headers)
        if verdict is Verdict.VALID:
            request[ROUTED_KEY] = True
            return await handler(request)
        if verdict.refused:
            self.metrics.refused.labels(f"signature_{verdict.value}").inc()
            log.warning("refused %s %s: %s", request.method, _route(request), _SIGNATURE_ERRORS[verdict])
            return web.json_response({"error": f"forbidden: {_SIGNATURE_ERRORS[verdict]}"}, status=403)
        result = self.tokens.check(request.headers.get("Authorization"))
        if result is AuthResult.MISSING:
            self.metrics.refused.labels("token_missing").inc()
            return web.json_response({"error": "unauthorized: send Authorization: Bearer <token>"},
                                     status=401, headers={"WWW-Authenticate": CHALLENGE})
        if result is AuthResult.INVALID:
            self.metrics.refused.labels("token_invalid").inc()
            return web.json_response({"error": "unauthorized: the bearer token is not accepted"},
                                     status=401, headers={"WWW-Authenticate": INVALID_CHALLENGE})
        return await handler(request)

    @property
    def middleware(self) -> Any:
        @web.middleware
        async def omnipipe_guard(request: web.Request, handler: Handler) -> web.StreamResponse:
            return await self._check(request, handler)

        return omnipipe_guard

    # ------------------------------------------------------------------ called by views
    def internal_only(self, request: AnyRequest) -> FaustResponse | None:
        """403 unless another worker signed the request (the route answers from local state)."""
        if is_routed(request):
            return None
        self.metrics.refused.labels("signature_missing").inc()
        return _reply({"error": "forbidden: an internal route, answered only to signed requests of "
                                "other workers"}, status=403)

    def throttle(self, request: AnyRequest) -> FaustResponse | None:
        """429 once the client (peer address) exceeds the lookup rate; routed requests are not counted."""
        if is_routed(request):
            return None
        decision = self.limiter.take(_aiohttp(request).remote or "unknown")
        if decision.allowed:
            return None
        self.metrics.refused.labels("rate_limited").inc()
        retry = max(1, math.ceil(decision.retry_after_s))
        return _reply(
            {"error": f"too many lookups from this client (at most {self.limiter.rate_per_s:g}/s, burst "
                      f"{self.limiter.burst}); retry after {retry} s"},
            status=429, headers={"Retry-After": str(retry)})

    # ------------------------------------------------------------------ wiring
    def install(self, app: faust.App, debug: bool) -> None:
        """Put the guard in front of every route of ``app``'s web server; Faust's pages only if ``debug``."""
        server = app.web
        cast(Any, server).web_app.middlewares.append(self.middleware)
        if not debug:
            # Faust's built-in pages come from blueprints applied when the server starts; ours are
            # views (app.page), so an empty manager removes exactly Faust's pages.
            server.blueprints = BlueprintManager()
