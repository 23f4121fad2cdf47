"""Identifier rules: normalisation, format checks and keyed hashing of PII.

E-mail and phone never leave this module raw: they are normalised (so the
same person hashes the same way on every channel) and replaced by a keyed
HMAC-SHA256, truncated to 128 bits, which is plenty to avoid collisions and
halves the bytes every later stage stores.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass

#: Strongest first; the profile id follows the strongest identifier present.
KINDS = ("customer_id", "loyalty_card", "email", "phone", "device_id", "anonymous_id")
KEY_PREFIX = {
    "customer_id": "cust",
    "loyalty_card": "card",
    "email": "email",
    "phone": "phone",
    "device_id": "dev",
    "anonymous_id": "anon",
}

_OPAQUE = re.compile(r"^[\x21-\x7e]{1,128}$")
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s.][^@\s]*\.[^@\s.]{2,}$")
_PHONE_STRIP = str.maketrans("", "", " -.()/")
_PHONE = re.compile(r"^\+?[0-9]{7,15}$")
_HASH_CHARS = 32


class IdentifierError(ValueError):
    """An identifier has an impossible format; ``kind`` names which (never the value)."""

    def __init__(self, kind: str, why: str) -> None:
        super().__init__(f"{kind}: {why}")
        self.kind = kind


def normalise_email(value: str) -> str:
    email = value.strip().lower()
    if len(email) > 254 or not _EMAIL.match(email):
        raise IdentifierError("email", "not a valid e-mail address")
    return email


def normalise_phone(value: str) -> str:
    phone = value.strip().translate(_PHONE_STRIP)
    if phone.startswith("00"):
        phone = "+" + phone[2:]
    if not _PHONE.match(phone):
        raise IdentifierError("phone", "not a phone number (7 to 15 digits, optional leading +)")
    return phone


def check_opaque(kind: str, value: str) -> str:
    value = value.strip()
    if not _OPAQUE.match(value):
        raise IdentifierError(kind, "must be 1 to 128 printable ASCII characters without spaces")
    return value


class PiiHasher:
    """Keyed HMAC-SHA256 of normalised e-mails and phones.

    The key makes hashes useless to anyone without it (a plain hash of an
    e-mail is reversible by dictionary); the kind is mixed in so an e-mail
    and a phone with the same text never collide.
    """

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("the PII hash key must be at least 16 bytes")
        self._base = hmac.new(key, digestmod=hashlib.sha256)

    def hash(self, kind: str, normalised: str) -> str:
        mac = self._base.copy()
        mac.update(kind.encode())
        mac.update(b"\x00")
        mac.update(normalised.encode())
        return mac.hexdigest()[:_HASH_CHARS]

    def email(self, raw: str) -> str:
        return self.hash("email", normalise_email(raw))

    def phone(self, raw: str) -> str:
        return self.hash("phone", normalise_phone(raw))


@dataclass(frozen=True, slots=True)
class ResolvedIdentifiers:
    """Identifiers after checks; e-mail and phone only as hashes."""

    customer_id: str | None = None
    loyalty_card: str | None = None
    email_hash: str | None = None
    phone_hash: str | None = None
    device_id: str | None = None
    anonymous_id: str | None = None

    def strongest_key(self) -> str | None:
        """``kind:value`` of the strongest identifier, the record's partition key."""
        if self.customer_id:
            return "cust:" + self.customer_id
        if self.loyalty_card:
            return "card:" + self.loyalty_card
        if self.email_hash:
            return "email:" + self.email_hash
        if self.phone_hash:
            return "phone:" + self.phone_hash
        if self.device_id:
            return "dev:" + self.device_id
        if self.anonymous_id:
            return "anon:" + self.anonymous_id
        return None


def resolve_identifiers(raw: Mapping[str, str | None] | None, hasher: PiiHasher) -> ResolvedIdentifiers:
    """Check and hash one event's identifiers; empty strings count as absent.

    Raises IdentifierError naming the offending kind.
    """
    if not raw:
        return ResolvedIdentifiers()
    values: dict[str, str | None] = {}
    for kind in ("customer_id", "loyalty_card", "device_id", "anonymous_id"):
        v = raw.get(kind)
        values[kind] = check_opaque(kind, v) if v else None
    email = raw.get("email")
    phone = raw.get("phone")
    return ResolvedIdentifiers(
        customer_id=values["customer_id"],
        loyalty_card=values["loyalty_card"],
        email_hash=hasher.email(email) if email else None,
        phone_hash=hasher.phone(phone) if phone else None,
        device_id=values["device_id"],
        anonymous_id=values["anonymous_id"],
    )


class IdentifierResolver:
    """``resolve_identifiers`` with a bounded memo of recent identifier sets.

    A customer's events repeat the same identifiers (the same cookie, the same
    login), so most lookups skip the format checks and the HMAC. The memo is
    process memory only and is dropped whole when full, which keeps it bounded
    without per-hit bookkeeping.
    """

    def __init__(self, hasher: PiiHasher, max_entries: int = 200_000) -> None:
        self._hasher = hasher
        self._max = max_entries
        self._memo: dict[tuple[str | None, ...], ResolvedIdentifiers] = {}

    def resolve(self, raw: Mapping[str, str | None] | None) -> ResolvedIdentifiers:
        if not raw:
            return ResolvedIdentifiers()
        get = raw.get
        memo_key = (get("customer_id"), get("loyalty_card"), get("email"),
                    get("phone"), get("device_id"), get("anonymous_id"))
        hit = self._memo.get(memo_key)
        if hit is not None:
            return hit
        resolved = resolve_identifiers(raw, self._hasher)  # raises before caching
        if len(self._memo) >= self._max:
            self._memo.clear()
        self._memo[memo_key] = resolved
        return resolved
