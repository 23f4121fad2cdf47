"""Metrics of the worker's HTTP API: requests it refused, by a closed set of reasons."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

#: why a request was refused: no or a wrong bearer token (401), a missing, stale or forged routing
#: signature (403), too many lookups from one client (429)
REFUSAL_REASONS = ("token_missing", "token_invalid", "signature_missing", "signature_malformed",
                   "signature_stale", "signature_forged", "rate_limited")


class WebMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.refused = Counter(
            "omnipipe_web_requests_refused_total",
            "API requests refused before reaching a view, per reason.",
            ["reason"], registry=registry,
        )
        for reason in REFUSAL_REASONS:
            self.refused.labels(reason)
