"""Worker-to-worker requests, signed with the cluster secret.

A worker that does not own a key forwards the request to the owner (see
``pipeline/runtime/routing.py``). The owner answers such a request from its
local state only, on internal routes no client may call; so the forwarded
request carries proof that a worker of this cluster sent it: an HMAC-SHA256,
keyed with ``Settings.routing_secret()``, over the method, the request target
(path and query, as sent on the wire) and a timestamp. A request outside a
short window around the owner's clock is refused, so a captured signature is
worth little.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum

SIGNED_AT = "X-Omnipipe-Signed-At"
SIGNATURE = "X-Omnipipe-Signature"
#: the unsigned marker older workers sent; a request that carries it is a forgery now
LEGACY_ROUTED = "X-Omnipipe-Routed"
ROUTING_HEADERS = (SIGNED_AT, SIGNATURE, LEGACY_ROUTED)
WINDOW_S = 30.0
_CONTEXT = b"omnipipe-route-v1"


class Verdict(Enum):
    UNSIGNED = "unsigned"  # carries no routing header: an ordinary client request
    VALID = "valid"
    MALFORMED = "malformed"  # a routing header without a usable signature or timestamp
    STALE = "stale"  # signed outside the window
    FORGED = "forged"  # the signature does not match

    @property
    def refused(self) -> bool:
        return self not in (Verdict.UNSIGNED, Verdict.VALID)


@dataclass(frozen=True)
class RouteSigner:
    secret: bytes
    window_s: float = WINDOW_S
    clock: Callable[[], float] = field(default=time.time, repr=False)

    def __post_init__(self) -> None:
        if len(self.secret) < 16:
            raise ValueError("the routing secret must be at least 16 bytes")

    def _mac(self, method: str, target: str, signed_at: str) -> str:
        message = b"\n".join((_CONTEXT, method.upper().encode(), target.encode("utf-8", "backslashreplace"),
                              signed_at.encode()))
        return hmac.new(self.secret, message, hashlib.sha256).hexdigest()

    def headers(self, method: str, target: str) -> dict[str, str]:
        """The headers that sign ``method target`` (``target`` = path and query exactly as sent)."""
        signed_at = f"{self.clock():.3f}"
        return {SIGNED_AT: signed_at, SIGNATURE: self._mac(method, target, signed_at)}

    def verify(self, method: str, target: str, headers: Mapping[str, str]) -> Verdict:
        if not any(name in headers for name in ROUTING_HEADERS):
            return Verdict.UNSIGNED
        signed_at, signature = headers.get(SIGNED_AT), headers.get(SIGNATURE)
        if not signed_at or not signature:
            return Verdict.MALFORMED
        try:
            at = float(signed_at)
        except ValueError:
            return Verdict.MALFORMED
        if not math.isfinite(at):
            return Verdict.MALFORMED
        if abs(self.clock() - at) > self.window_s:
            return Verdict.STALE
        expected = self._mac(method, target, signed_at)
        presented = signature.encode("utf-8", "backslashreplace")
        if not hmac.compare_digest(presented, expected.encode()):
            return Verdict.FORGED
        return Verdict.VALID
