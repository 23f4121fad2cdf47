"""Ground truth of a simulation run, for judging identity stitching and profiles later.

The truth is derived from the events actually published (the publisher feeds
every event it sends to :meth:`TruthRecorder.observe`), not from the
generator's intentions, so it stays right when a run is stopped early.

File format: JSON lines. Line 1 is the summary (``"type": "summary"``), then
one ``"type": "person"`` line per person who produced at least one event, then
one ``"type": "bad"`` line per injected malformed record. Raw e-mails and
phones of the synthetic people appear in this file on purpose (it is test data
the evaluator needs); they never appear in logs.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.simulate.journeys import IDENTIFIER_KINDS, TOPIC_KEYS, SimEvent

TRUTH_VERSION = 1
_PURCHASE_TYPES = frozenset({"PURCHASE", "STORE_PURCHASE"})


class _PersonAcc:
    """What one person did so far (mutable, compact)."""

    __slots__ = ("currency", "erased_at", "events", "first", "ids", "last", "longest_gap",
                 "parent", "purchases", "returns", "revenue")

    def __init__(self, t: int) -> None:
        self.ids: dict[str, set[str]] = {}
        self.events: dict[str, int] = {}
        self.parent: dict[str, str] = {}
        self.purchases = 0
        self.returns = 0
        self.revenue = 0.0
        self.currency: str | None = None
        self.first = t
        self.last = t
        self.longest_gap = 0
        self.erased_at: int | None = None

    def find(self, ref: str) -> str:
        parent = self.parent
        root = ref
        while parent[root] != root:
            root = parent[root]
        while parent[ref] != root:  # path compression
            parent[ref], ref = root, parent[ref]
        return root


@dataclass(frozen=True)
class PersonTruth:
    """One person as the generator knows them."""

    person: int
    identifiers: dict[str, list[str]]
    shared: dict[str, list[str]]
    events: dict[str, int]
    purchases: int
    returns: int
    revenue: float
    currency: str | None
    groups: list[list[str]]  # identifiers ("kind:value") linked by this person's own events
    first_event_ms: int
    last_event_ms: int
    longest_gap_ms: int
    erased_at_ms: int | None

    @property
    def total_events(self) -> int:
        return sum(self.events.values())

    @property
    def anonymous_only(self) -> bool:
        return set(self.identifiers) <= {"anonymous_id"}


@dataclass(frozen=True)
class BadTruth:
    """One injected malformed record and the reason ingest must give for it."""

    seq: int
    reason: str
    topic_key: str
    topic: str
    after_events: int  # good events published before it


@dataclass(frozen=True)
class Truth:
    summary: dict[str, Any]
    persons: dict[int, PersonTruth]
    bad: list[BadTruth] = field(default_factory=list)


class TruthRecorder:
    """Accumulates the truth while events are published; ``write`` saves it."""

    def __init__(self, seed: int, customers: int, **meta: Any) -> None:
        self.seed = seed
        self.customers = customers
        self.meta = dict(meta)
        self._people: dict[int, _PersonAcc] = {}
        self.events_per_topic: Counter[str] = Counter()
        self.bad: list[BadTruth] = []

    # ------------------------------------------------------------------ recording
    def observe(self, ev: SimEvent) -> None:
        """Account for one published event."""
        rec = ev.record
        t = rec["event_time"]
        acc = self._people.get(ev.person)
        if acc is None:
            acc = self._people[ev.person] = _PersonAcc(t)
        else:
            gap = t - acc.last
            if gap > acc.longest_gap:
                acc.longest_gap = gap
            if t > acc.last:
                acc.last = t
            if t < acc.first:
                acc.first = t
        topic = ev.topic_key
        self.events_per_topic[topic] += 1
        acc.events[topic] = acc.events.get(topic, 0) + 1
        first_root: str | None = None
        parent = acc.parent
        for kind, value in rec["identifiers"].items():
            if value is None:
                continue
            bucket = acc.ids.get(kind)
            if bucket is None:
                bucket = acc.ids[kind] = set()
            bucket.add(value)
            ref = f"{kind}:{value}"
            if ref not in parent:
                parent[ref] = ref
            root = acc.find(ref)
            if first_root is None:
                first_root = root
            elif root != first_root:
                parent[root] = first_root
        kind_of_event = rec["type"]
        if kind_of_event in _PURCHASE_TYPES:
            acc.purchases += 1
            acc.revenue += rec.get("amount") or 0.0
            acc.currency = rec.get("currency") or acc.currency
        elif kind_of_event == "STORE_RETURN":
            acc.returns += 1
        elif kind_of_event == "ERASURE_REQUEST":
            acc.erased_at = t

    def tap(self, events: Iterable[SimEvent]) -> Iterator[SimEvent]:
        """Pass events through, observing each (for runs without a publisher)."""
        for ev in events:
            self.observe(ev)
            yield ev

    def record_bad(self, seq: int, reason: str, topic_key: str, topic: str, after_events: int) -> None:
        """Account for one injected malformed record."""
        self.bad.append(BadTruth(seq, reason, topic_key, topic, after_events))

    # ------------------------------------------------------------------ results
    def _shared(self) -> dict[str, set[str]]:
        """Identifiers used by more than one person, by kind (by design only family devices)."""
        seen: dict[str, set[str]] = {}
        shared: dict[str, set[str]] = {}
        for acc in self._people.values():
            for kind, values in acc.ids.items():
                known = seen.setdefault(kind, set())
                dup = known & values
                if dup:
                    shared.setdefault(kind, set()).update(dup)
                known |= values
        return shared

    def summary(self) -> dict[str, Any]:
        bad_per_reason = Counter(b.reason for b in self.bad)
        bad_per_topic = Counter(b.topic_key for b in self.bad)
        return {
            "type": "summary",
            "version": TRUTH_VERSION,
            "seed": self.seed,
            "customers": self.customers,
            "persons_with_events": len(self._people),
            "events": sum(self.events_per_topic.values()),
            "events_per_topic": {k: self.events_per_topic.get(k, 0) for k in TOPIC_KEYS},
            "bad": len(self.bad),
            "bad_per_reason": dict(sorted(bad_per_reason.items())),
            "bad_per_topic": dict(sorted(bad_per_topic.items())),
            **self.meta,
        }

    def persons(self) -> Iterator[PersonTruth]:
        """Every person seen, in index order."""
        shared = self._shared()
        for index in sorted(self._people):
            acc = self._people[index]
            groups: dict[str, list[str]] = {}
            for ref in acc.parent:
                groups.setdefault(acc.find(ref), []).append(ref)
            yield PersonTruth(
                person=index,
                identifiers={k: sorted(acc.ids[k]) for k in IDENTIFIER_KINDS if k in acc.ids},
                shared={k: sorted(acc.ids[k] & shared[k]) for k in IDENTIFIER_KINDS
                        if k in acc.ids and k in shared and acc.ids[k] & shared[k]},
                events={k: acc.events[k] for k in TOPIC_KEYS if k in acc.events},
                purchases=acc.purchases,
                returns=acc.returns,
                revenue=round(acc.revenue, 2),
                currency=acc.currency,
                groups=sorted(sorted(g) for g in groups.values()),
                first_event_ms=acc.first,
                last_event_ms=acc.last,
                longest_gap_ms=acc.longest_gap,
                erased_at_ms=acc.erased_at,
            )

    def write(self, path: Path) -> Path:
        """Write the truth file (atomically: a reader never sees half a file)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with tmp.open("w", encoding="utf-8") as fh:
            fh.write(json.dumps(self.summary(), sort_keys=True) + "\n")
            for pt in self.persons():
                fh.write(json.dumps(_person_line(pt), sort_keys=True) + "\n")
            for b in self.bad:
                fh.write(json.dumps({"type": "bad", "seq": b.seq, "reason": b.reason,
                                     "topic_key": b.topic_key, "topic": b.topic,
                                     "after_events": b.after_events}, sort_keys=True) + "\n")
        tmp.replace(path)
        return path


def _person_line(pt: PersonTruth) -> dict[str, Any]:
    return {
        "type": "person", "person": pt.person, "identifiers": pt.identifiers, "shared": pt.shared,
        "events": pt.events, "purchases": pt.purchases, "returns": pt.returns,
        "revenue": pt.revenue, "currency": pt.currency, "groups": pt.groups,
        "first_event_ms": pt.first_event_ms, "last_event_ms": pt.last_event_ms,
        "longest_gap_ms": pt.longest_gap_ms, "erased_at_ms": pt.erased_at_ms,
    }


def load_truth(path: Path) -> Truth:
    """Read a truth file back (for accuracy evaluation)."""
    summary: dict[str, Any] | None = None
    persons: dict[int, PersonTruth] = {}
    bad: list[BadTruth] = []
    with Path(path).open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            doc = json.loads(line)
            kind = doc.get("type")
            if kind == "summary":
                summary = doc
            elif kind == "person":
                persons[doc["person"]] = PersonTruth(
                    person=doc["person"], identifiers=doc["identifiers"], shared=doc["shared"],
                    events=doc["events"], purchases=doc["purchases"], returns=doc["returns"],
                    revenue=doc["revenue"], currency=doc["currency"], groups=doc["groups"],
                    first_event_ms=doc["first_event_ms"], last_event_ms=doc["last_event_ms"],
                    longest_gap_ms=doc["longest_gap_ms"], erased_at_ms=doc["erased_at_ms"],
                )
            elif kind == "bad":
                bad.append(BadTruth(doc["seq"], doc["reason"], doc["topic_key"], doc["topic"],
                                    doc["after_events"]))
            else:
                raise ValueError(f"{path}:{n}: unknown truth line type {kind!r}")
    if summary is None:
        raise ValueError(f"{path}: no summary line; not a truth file")
    return Truth(summary=summary, persons=persons, bad=bad)
