"""Identity lookup over the worker's Faust web server, answered by the worker that owns the key.

``GET /identity/{ref}`` (``ref`` = ``kind:value`` as stored, e.g. ``cust:C1`` or
``email:<hash>``) and ``POST /identity/lookup`` with one raw identifier in a
JSON body (``{"email": "a@b.example"}``), which is hashed here exactly as
ingest hashes it, so raw e-mails and phones never appear in URLs or access
logs. The answer: the identifier's profile id and the profile's identifiers
by kind.

Routing: partition ownership is published on ``identity.owners`` by each
worker when it takes a partition; a worker that does not own the key's
partition forwards the request to the owner's URL (one hop, marked with a
header so a request never travels twice: a worker that receives a routed
request for a partition it just lost answers 503, retry). The profile record
may live on another partition than the identifier; it is fetched the same
way.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import aiohttp
import faust
from faust.web import Request, Response, View

from pipeline.identity.model import Ref, kind_of
from pipeline.identity.runner import IdentityLoop
from pipeline.ingest.identifiers import KINDS as RAW_KINDS
from pipeline.ingest.identifiers import IdentifierError, PiiHasher, resolve_identifiers

log = logging.getLogger(__name__)

ROUTED = "X-Omnipipe-Routed"
NOT_OWNER = {"error": "this worker does not own the key's partition (moving); retry"}
RETRY = {"Retry-After": "1"}


class _Unavailable(Exception):
    pass


def register_identity_lookup(app: faust.App, loop: IdentityLoop, hasher: PiiHasher) -> None:
    timeout = aiohttp.ClientTimeout(total=5)

    async def _remote(url: str, path: str) -> tuple[int, Any]:
        async with (aiohttp.ClientSession(timeout=timeout) as session,
                    session.get(url.rstrip("/") + path, headers={ROUTED: "1"}) as resp):
            return resp.status, await resp.json(content_type=None)

    async def _owned(ref: Ref, routed: bool, local: Any, path: str) -> tuple[int, Any]:
        """Answer from this worker if it owns ``ref``'s partition, else from the owner."""
        if loop.owns(ref):
            found = await asyncio.get_running_loop().run_in_executor(None, local, ref)
            return (200, found) if found is not None else (404, {"error": f"unknown identifier {ref}"})
        partition, url = loop.owner_of(ref)
        if routed or url is None or url == loop.config.advertised_url:
            raise _Unavailable(f"partition {partition} is moving between workers; retry")
        try:
            return await _remote(url, path)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _Unavailable(f"owner of partition {partition} ({url}) did not answer: {exc}") from exc

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
        except _Unavailable as exc:
            return view.json({"error": str(exc)}, status=503, headers={"Retry-After": "1"})
        identifiers = listing.get("identifiers", {}) if pstatus == 200 else {}
        return view.json({**found, "identifiers": identifiers, "served_by": loop.config.advertised_url})

    class IdentityView(View):
        async def get(self, request: Request, ref: str) -> Response:
            routed = request.headers.get(ROUTED) == "1"
            if routed and request.query.get("part") == "ident":
                if not loop.owns(ref):
                    return self.json(NOT_OWNER, status=503, headers=RETRY)
                found = loop.resolve_local(ref)
                return self.json(found) if found else self.json({"error": f"unknown identifier {ref}"},
                                                               status=404)
            return await resolve(self, ref, routed)

    class ProfileView(View):
        async def get(self, request: Request, profile: str) -> Response:
            if not loop.owns(profile):
                return self.json(NOT_OWNER, status=503, headers=RETRY)
            found = loop.profile_local(profile)
            if found is None:
                return self.json({"error": f"unknown profile {profile}"}, status=404)
            return self.json(found)

    class RawLookupView(View):
        async def post(self, request: Request) -> Response:
            try:
                body = json.loads(await request.read())
            except ValueError:
                return self.json({"error": "body must be JSON"}, status=400)
            if not isinstance(body, dict) or len(body) != 1 or next(iter(body)) not in RAW_KINDS:
                return self.json({"error": f"body must hold exactly one of {list(RAW_KINDS)}"}, status=400)
            try:
                ref = resolve_identifiers({k: str(v) for k, v in body.items()}, hasher).strongest_key()
            except IdentifierError as exc:
                return self.json({"error": str(exc)}, status=400)  # names the kind, never the value
            if ref is None:
                return self.json({"error": "empty identifier"}, status=400)
            return await resolve(self, ref, False)

    app.page("/identity/lookup")(RawLookupView)
    app.page("/identity/_profile/{profile}")(ProfileView)
    app.page("/identity/{ref}")(IdentityView)
