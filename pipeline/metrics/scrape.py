"""Read a worker's /metrics endpoint (on its metrics port, OMNIPIPE_METRICS_PORT) back into numbers."""

from __future__ import annotations

import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families


@dataclass
class Scrape:
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = field(
        default_factory=lambda: defaultdict(dict)
    )
    types: dict[str, str] = field(default_factory=dict)

    def value(self, name: str, **labels: str) -> float:
        """Sum of the samples of ``name`` whose labels include ``labels``."""
        want = set(labels.items())
        return sum(v for k, v in self.samples.get(name, {}).items() if want <= set(k))

    def by_label(self, name: str, label: str) -> dict[str, float]:
        out: dict[str, float] = defaultdict(float)
        for k, v in self.samples.get(name, {}).items():
            d = dict(k)
            if label in d:
                out[d[label]] += v
        return dict(out)


    def quantile(self, name: str, q: float, **labels: str) -> float | None:
        """``histogram_quantile`` over a histogram's cumulative buckets (linear within a bucket)."""
        want = set(labels.items())
        buckets: dict[float, float] = defaultdict(float)
        for k, v in self.samples.get(f"{name}_bucket", {}).items():
            if want <= set(k):
                buckets[float(dict(k)["le"])] += v
        if not buckets:
            return None
        bounds = sorted(buckets)
        total = buckets[bounds[-1]]
        if total <= 0:
            return None
        rank, lower, below = q * total, 0.0, 0.0
        for bound in bounds:
            count = buckets[bound]
            if count >= rank:
                if bound == float("inf"):
                    return lower
                return lower + (bound - lower) * (rank - below) / max(count - below, 1e-12)
            lower, below = bound, count
        return bounds[-1]


def parse(text: str) -> Scrape:
    result = Scrape()
    for family in text_string_to_metric_families(text):
        result.types[family.name] = family.type
        for s in family.samples:
            result.samples[s.name][tuple(sorted(s.labels.items()))] = s.value
    return result


def scrape(url: str, timeout: float = 5.0) -> Scrape:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return parse(resp.read().decode())
