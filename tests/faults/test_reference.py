"""The recomputation the fault suite checks against (pipeline/faults/reference.py), and why it is the truth.

Agent tier, no broker: the fault workload goes through the real ingest
processor and the real profile engine (outbox, commits, redelivery after a
crash, an outbox re-sent before its acknowledgement) and must come out equal
to the pure recomputation: the same trigger keys and records, the same
profiles. ``make faults`` checks the same equality on real workers.
"""

from __future__ import annotations

import dataclasses
import random
import zlib
from typing import Any

import pytest

from pipeline.contracts.catalogue import SchemaCatalogue
from pipeline.contracts.codec import AvroCodec
from pipeline.faults.crash import ACTIONS as FAULT_ACTIONS
from pipeline.faults.reference import profile_of, recompute
from pipeline.faults.workload import Workload, consents, web_events
from pipeline.ingest.identifiers import PiiHasher
from pipeline.ingest.processor import Accepted, IngestProcessor, IngestRules, SourceTopic
from pipeline.nba.catalogue import load_action_catalogue
from pipeline.nba.decider import Decider
from pipeline.nba.model import ModelHolder, priors
from pipeline.profile.codec import state_fields
from pipeline.profile.engine import EventIn, ProfileEngine
from pipeline.profile.limits import ProfileLimits
from pipeline.topology.catalogue import load_catalogue
from tests.profile.test_engine import DictStore

ACTIONS = load_action_catalogue(FAULT_ACTIONS)
LIMITS = ProfileLimits()
CODEC = AvroCodec(SchemaCatalogue.load())
NOW = 1_790_000_000_000
PARTS = 3


def canonical(work: Workload) -> list[dict[str, Any]]:
    cat = load_catalogue()
    sources = {s.name: SourceTopic(s.name, s.subject, s.channel) for s in cat.ingest_sources}
    proc = IngestProcessor(sources, CODEC, PiiHasher(b"k" * 32), IngestRules())
    out = []
    for i, ev in enumerate([*consents(work), *web_events(work)]):
        spec = cat[ev.topic_key]
        got = proc.process(spec.name, 0, i, NOW, ev.key, CODEC.encode(spec.subject, ev.record), NOW)
        assert isinstance(got, Accepted)
        out.append(got.event)
    return out


def partition_of(profile: str) -> int:
    return zlib.crc32(profile.encode()) % PARTS


class Run:
    """The engine over per-partition logs, with crashes that lose everything not committed."""

    def __init__(self, events: list[dict[str, Any]], rng: random.Random) -> None:
        self.rng = rng
        self.logs: dict[int, list[dict[str, Any]]] = {p: [] for p in range(PARTS)}
        for ev in events:
            self.logs[partition_of(profile_of(ev))].append(ev)
        self.store = DictStore()
        self.sent: list[dict[str, Any]] = []
        self.crashes = 0
        self.engine = self.start()

    def start(self) -> ProfileEngine:
        decider = Decider(ACTIONS, ModelHolder(priors(ACTIONS)), LIMITS.caps.contacts)
        engine = ProfileEngine(LIMITS, partition_of, self.store, lambda: 0, decider=decider)
        for p in range(PARTS):
            engine.assign(p)
        return engine

    def commit(self) -> None:
        for p, items in self.engine.take_changes().items():
            self.store.write(p, items)
        unsent = self.engine.unsent()
        self.sent += [e.value[1] for _p, e in unsent if e.dest == "triggers"]
        if self.rng.random() < 0.05:  # sent, crashed before the acknowledgement: sent again on restart
            self.crash()
            return
        self.engine.acknowledge(unsent)
        for p, items in self.engine.take_changes().items():
            self.store.write(p, items)

    def crash(self) -> None:
        self.crashes += 1
        self.engine = self.start()

    def run(self) -> None:
        while True:
            progress = False
            for p in range(PARTS):
                start = self.engine.next_offset("resolved", p)
                batch = self.logs[p][start:start + self.rng.randint(1, 60)]
                if not batch:
                    continue
                progress = True
                self.engine.process([EventIn("resolved", p, start + i, profile_of(ev), "", ev, b"")
                                     for i, ev in enumerate(batch)])
                if self.rng.random() < 0.1:
                    self.crash()  # the batch was never committed: redelivered
                else:
                    self.commit()
            if not progress:
                break
        for _ in range(3):  # outbox entries left by a crash after the last commit
            self.commit()


@pytest.mark.parametrize("seed", [1, 2])
def test_the_engine_through_crashes_equals_the_recomputation(seed: int) -> None:
    work = Workload(customers=150, events=1_500, seed=seed, end_ms=NOW - 86_400_000)
    events = canonical(work)
    run = Run(events, random.Random(seed))
    run.run()
    assert run.crashes >= 10
    expected = recompute(events, ACTIONS, LIMITS)
    assert len(expected.triggers) > 100  # the workload makes decisions that depend on earlier ones
    assert expected.counts.suppressions["cooldown"] > 0 and expected.counts.suppressions["cap"] > 0
    by_key = {t["idempotency_key"]: t for t in run.sent}
    assert len(run.sent) > len(by_key)  # the crashes did re-send: repeats exist, dropped by key
    assert by_key == expected.triggers
    for p in range(PARTS):
        for profile in {profile_of(ev) for ev in run.logs[p]}:
            got = run.engine.peek(profile)
            assert got is not None and got.state is not None
            assert state_fields(dataclasses.replace(got.state, merged_from={})) == \
                state_fields(expected.states[profile])
