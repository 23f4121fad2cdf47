"""DLQ key vault metrics: key shares stored and destroyed (bounded ``change`` label)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

from pipeline.dlq.vault import Applied

CHANGES = ("stored", "erased", "expired")


class DlqVaultMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.shares = Counter(
            "omnipipe_dlq_vault_shares_total",
            "Dead-letter key shares stored in the vault, and destroyed by an erasure or the DLQ retention.",
            ["change"], registry=registry,
        )
        for change in CHANGES:
            self.shares.labels(change)
        self.bad_records = Counter(
            "omnipipe_dlq_vault_bad_records_total",
            "Records on dlq.keys that are not key, erase or sweep records (skipped).",
            registry=registry,
        )

    def add(self, applied: Applied) -> None:
        counts = {"stored": applied.stored, "erased": applied.erased, "expired": applied.expired}
        for change, n in counts.items():
            if n:
                self.shares.labels(change).inc(n)
