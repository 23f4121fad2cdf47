"""Identity lookup over the worker's Faust web server, answered by the worker that owns the key.

``GET /identity/{ref}`` (``ref`` = ``kind:value`` as stored, e.g. ``cust:C1`` or
``email:<hash>``) and ``POST /identity/lookup`` with one raw identifier in a
JSON body (``{"email": "a@b.example"}``), which is hashed here exactly as
ingest hashes it, so raw e-mails and phones never appear in URLs or access
logs. The answer: the identifier's profile id and the profile's identifiers
by kind.

Routing: partition ownership is published on ``identity.owners`` by each
worker when it takes a partition; a worker that does not own the key's
partition forwards the request to the owner's URL (one hop, signed with the
cluster secret so a request never travels twice: a worker that receives a
routed request for a partition it just lost answers 503, retry). The profile
record may live on another partition than the identifier; it is fetched the
same way. The owner-side routes (``?part=ident``, ``/identity/_profile/``)
answer signed requests only (403 otherwise); the client routes are rate
limited per client (``pipeline/web/guard.py``).
"""

from __future__ import annotations

import json
import logging
from typing import Any

import faust
from faust.web import Request, Response, View

from pipeline.identity.model import Ref, kind_of
from pipeline.identity.runner import IdentityLoop
from pipeline.ingest.identifiers import KINDS as RAW_KINDS
from pipeline.ingest.identifiers import IdentifierError, PiiHasher, resolve_identifiers
from pipeline.runtime.routing import NOT_OWNER, RETRY, OwnerRouter, Unavailable
from pipeline.web.guard import WebGuard, is_routed

log = logging.getLogger(__name__)

def ref_from_body(body: bytes, hasher: PiiHasher) -> Ref:
    """The ref of the one raw identifier in a JSON body, hashed as ingest hashes it.

    Errors (``ValueError``) name the kind, never the value.
    """
    try:
        doc = json.loads(body)
    except ValueError:
        raise ValueError("body must be JSON") from None
    if not isinstance(doc, dict) or len(doc) != 1 or next(iter(doc)) not in RAW_KINDS:
        raise ValueError(f"body must hold exactly one of {list(RAW_KINDS)}")
    try:
        ref = resolve_identifiers({k: str(v) for k, v in doc.items()}, hasher).strongest_key()
    except IdentifierError as exc:
        raise ValueError(str(exc)) from None
    if ref is None:
        raise ValueError("empty identifier")
    return ref


def register_identity_lookup(app: faust.App, loop: IdentityLoop, hasher: PiiHasher, guard: WebGuard) -> None:
    router = OwnerRouter(loop, loop.config.advertised_url, guard.signer)

    async def _owned(ref: Ref, routed: bool, local: Any, path: str) -> tuple[int, Any]:
        return await router.fetch(ref, routed, local, path, f"unknown identifier {ref}")

    async def resolve(view: View, ref: Ref, routed: bool) -> Response:
        try:
            kind_of(ref)
        except ValueError:
            return view.json({"error": "not an identifier: expected kind:value with kind in "
                                       "cust, card, email, phone, dev, anon"}, status=400)
        try:
            status, found = await _owned(ref, routed, loop.resolve_local, f"/identity/{ref}?part=ident")
            if status != 200:
                return view.json(found, status=status)
            if "identifiers" in found:  # answered whole by the owner
                return view.json(found)
            profile = found["profile_id"]
            pstatus, listing = await _owned(profile, False, loop.profile_local,
                                            f"/identity/_profile/{profile}")
        except Unavailable as exc:
            return view.json({"error": str(exc)}, status=503, headers={"Retry-After": "1"})
        identifiers = listing.get("identifiers", {}) if pstatus == 200 else {}
        return view.json({**found, "identifiers": identifiers, "served_by": loop.config.advertised_url})

    class IdentityView(View):
        async def get(self, request: Request, ref: str) -> Response:
            routed = is_routed(request)
            if request.query.get("part") == "ident":
                if (forbidden := guard.internal_only(request)) is not None:
                    return forbidden
                if not loop.owns(ref):
                    return self.json(NOT_OWNER, status=503, headers=RETRY)
                found = loop.resolve_local(ref)
                return self.json(found) if found else self.json({"error": f"unknown identifier {ref}"},
                                                               status=404)
            if (limited := guard.throttle(request)) is not None:
                return limited
            return await resolve(self, ref, routed)

    class ProfileView(View):
        async def get(self, request: Request, profile: str) -> Response:
            if (forbidden := guard.internal_only(request)) is not None:
                return forbidden
            if not loop.owns(profile):
                return self.json(NOT_OWNER, status=503, headers=RETRY)
            found = loop.profile_local(profile)
            if found is None:
                return self.json({"error": f"unknown profile {profile}"}, status=404)
            return self.json(found)

    class RawLookupView(View):
        async def post(self, request: Request) -> Response:
            if (limited := guard.throttle(request)) is not None:
                return limited
            try:
                ref = ref_from_body(await request.read(), hasher)
            except ValueError as exc:
                return self.json({"error": str(exc)}, status=400)
            return await resolve(self, ref, False)

    app.page("/identity/lookup")(RawLookupView)
    app.page("/identity/_profile/{profile}")(ProfileView)
    app.page("/identity/{ref}")(IdentityView)
