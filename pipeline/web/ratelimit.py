"""A token bucket per client for the lookup routes: pure and synchronous, the clock injected.

Each client (peer address) has a bucket of ``burst`` tokens refilled at
``rate_per_s``; a lookup takes one token, and a client with an empty bucket is
told when the next token is due (``Retry-After``). Memory is bounded: a bucket
that has refilled completely is the same as no bucket, so idle buckets are
dropped, and at most ``max_clients`` buckets are kept (the least recently used
one goes first; that client merely starts again with a full bucket).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class TokenBucket:
    rate_per_s: float
    burst: int
    tokens: float
    updated: float

    def refill(self, now: float) -> None:
        if now > self.updated:
            self.tokens = min(float(self.burst), self.tokens + (now - self.updated) * self.rate_per_s)
            self.updated = now

    def take(self, now: float) -> float:
        """Take one token: 0.0 if granted, else the seconds until one is due."""
        self.refill(now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate_per_s

    def full_at(self) -> float:
        """When the bucket is full again if nothing more is taken."""
        return self.updated + (self.burst - self.tokens) / self.rate_per_s


@dataclass(frozen=True)
class Decision:
    allowed: bool
    retry_after_s: float = 0.0


@dataclass
class RateLimiter:
    rate_per_s: float
    burst: int
    max_clients: int = 10_000
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)
    _buckets: OrderedDict[str, TokenBucket] = field(default_factory=OrderedDict, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.rate_per_s <= 0 or self.burst < 1 or self.max_clients < 1:
            raise ValueError("rate_per_s must be > 0, burst and max_clients >= 1")

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, client: str) -> Decision:
        now = self.clock()
        self._evict(now)
        bucket = self._buckets.get(client)
        if bucket is None:
            bucket = TokenBucket(self.rate_per_s, self.burst, float(self.burst), now)
            self._buckets[client] = bucket
            while len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(client)
        wait = bucket.take(now)
        return Decision(allowed=True) if wait == 0.0 else Decision(allowed=False, retry_after_s=wait)

    def _evict(self, now: float) -> None:
        """Drop buckets, least recently used first, that are full again (as good as absent)."""
        while self._buckets:
            client, bucket = next(iter(self._buckets.items()))
            if bucket.full_at() > now:
                return
            del self._buckets[client]
