"""Customer-360 over the worker's Faust web server: a profile by any identifier, from its owner.

``GET /profiles/{ref}`` (``ref`` = ``kind:value`` as stored: ``cust:C1``,
``email:<hash>``) and ``POST /profiles/lookup`` with one raw identifier in a
JSON body (``{"email": "a@b.example"}``, hashed here, so raw e-mails and
phones never appear in URLs or access logs). The identifier is resolved to
its profile id by the identity stage (on the identity owner), then the
profile is read on the profile partition's owner (``runtime/routing.py``).
The answer holds refs only (e-mail and phone as HMAC hashes). The owner-side
route ``/profiles/_local/`` answers signed worker-to-worker requests only
(403 otherwise); the client routes are rate limited per client
(``pipeline/web/guard.py``). OpenAPI: ``docs/openapi/customer-360.yaml``.
"""

from __future__ import annotations

from typing import Any

import faust
from faust.web import Request, Response, View

from pipeline.identity.lookup import ref_from_body
from pipeline.identity.model import kind_of
from pipeline.identity.runner import IdentityLoop
from pipeline.ingest.identifiers import PiiHasher
from pipeline.profile.runner import ProfileLoop
from pipeline.runtime.routing import NOT_OWNER, RETRY, OwnerRouter, Unavailable
from pipeline.web.guard import WebGuard

BAD_REF = {"error": "not an identifier: expected kind:value with kind in cust, card, email, phone, dev, anon"}


def register_profile_api(app: faust.App, profiles: ProfileLoop, identity: IdentityLoop,
                         hasher: PiiHasher, guard: WebGuard) -> None:
    url = profiles.config.advertised_url
    identity_router = OwnerRouter(identity, url, guard.signer)
    profile_router = OwnerRouter(profiles, url, guard.signer)

    async def answer(view: View, ref: str) -> Response:
        try:
            kind_of(ref)
        except ValueError:
            return view.json(BAD_REF, status=400)
        try:
            status, found = await identity_router.fetch(
                ref, False, identity.resolve_local, f"/identity/{ref}?part=ident",
                f"unknown identifier {ref}")
            if status != 200:
                return view.json(found, status=status)
            profile_id = found["profile_id"]
            status, body = await profile_router.fetch(
                profile_id, False, profiles.profile_local, f"/profiles/_local/{profile_id}",
                f"no profile for {ref}")
        except Unavailable as exc:
            return view.json({"error": str(exc)}, status=503, headers=RETRY)
        if status != 200:
            return view.json(body, status=status)
        return view.json({**body, "requested": ref, "served_by": url})

    class ProfileView(View):
        async def get(self, request: Request, ref: str) -> Response:
            if (limited := guard.throttle(request)) is not None:
                return limited
            return await answer(self, ref)

    class LocalView(View):
        """The owner's answer to a routed request."""

        async def get(self, request: Request, profile: str) -> Response:
            if (forbidden := guard.internal_only(request)) is not None:
                return forbidden
            if not profiles.owns(profile):
                return self.json(NOT_OWNER, status=503, headers=RETRY)
            found: dict[str, Any] | None = profiles.profile_local(profile)
            if found is None:
                return self.json({"error": f"unknown profile {profile}"}, status=404)
            return self.json(found)

    class LookupView(View):
        async def post(self, request: Request) -> Response:
            if (limited := guard.throttle(request)) is not None:
                return limited
            try:
                ref = ref_from_body(await request.read(), hasher)
            except ValueError as exc:
                return self.json({"error": str(exc)}, status=400)
            return await answer(self, ref)

    app.page("/profiles/lookup")(LookupView)
    app.page("/profiles/_local/{profile}")(LocalView)
    app.page("/profiles/{ref}")(ProfileView)
