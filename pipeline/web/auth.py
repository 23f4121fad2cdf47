"""Bearer-token authentication (RFC 6750) for the worker's API.

Tokens come from ``OMNIPIPE_API_TOKENS`` (``Settings.api_token_values()``):
several may be accepted at once, so a token is rotated by adding the new one,
moving clients over, then removing the old one. A presented token is compared
with every accepted token in constant time (``hmac.compare_digest``, no early
exit), so neither which token matched nor how much of one matched shows in the
response time.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from enum import Enum

#: the ``WWW-Authenticate`` challenge of a request without credentials
CHALLENGE = 'Bearer realm="omnipipe"'
#: ... and of one whose token is not accepted
INVALID_CHALLENGE = 'Bearer realm="omnipipe", error="invalid_token"'


class AuthResult(Enum):
    OPEN = "open"  # no tokens configured: the API is loopback-only and open
    ACCEPTED = "accepted"
    MISSING = "missing"  # no (bearer) credentials in the request
    INVALID = "invalid"  # a bearer token that is not one of ours


def presented_token(authorization: str | None) -> bytes | None:
    """The token of an ``Authorization: Bearer <token>`` header (scheme case-insensitive), else None."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    try:
        return token.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate from a mangled header: no token of ours
        return b"\x00"


class BearerTokens:
    """The accepted tokens; empty means authentication is off (the settings allow that on loopback only)."""

    def __init__(self, tokens: Sequence[bytes]) -> None:
        if any(not t for t in tokens):
            raise ValueError("an API token must not be empty")
        self._tokens = tuple(tokens)

    @property
    def required(self) -> bool:
        return bool(self._tokens)

    def check(self, authorization: str | None) -> AuthResult:
        if not self._tokens:
            return AuthResult.OPEN
        token = presented_token(authorization)
        if token is None:
            return AuthResult.MISSING
        matched = False
        for accepted in self._tokens:  # every token, whatever matched first: constant time
            matched |= hmac.compare_digest(token, accepted)
        return AuthResult.ACCEPTED if matched else AuthResult.INVALID
