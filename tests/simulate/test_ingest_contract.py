"""Contract with ingest: good simulated events are accepted, each bad record gets its reason.

Uses the project's real codec and ingest decision (pure, no broker), so a
change on either side that breaks the simulator's promises shows up here.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

codec_mod = pytest.importorskip("pipeline.contracts.codec")
catalogue_mod = pytest.importorskip("pipeline.contracts.catalogue")
processor_mod = pytest.importorskip("pipeline.ingest.processor")
identifiers_mod = pytest.importorskip("pipeline.ingest.identifiers")

from pipeline.simulate.journeys import HOUR_MS, iter_events  # noqa: E402
from pipeline.simulate.malformed import REASONS, assignment, make_bad  # noqa: E402
from pipeline.simulate.runner import SimulationPlan  # noqa: E402
from pipeline.topology.catalogue import load_catalogue  # noqa: E402

NOW = 1_795_000_000_000


def processor() -> tuple[Any, Any]:
    codec = codec_mod.AvroCodec(catalogue_mod.SchemaCatalogue.load())
    sources = {s.name: processor_mod.SourceTopic(s.name, s.subject, s.channel)
               for s in load_catalogue().ingest_sources}
    return codec, processor_mod.IngestProcessor(sources, codec, identifiers_mod.PiiHasher(b"k" * 32))


def test_every_simulated_event_is_accepted() -> None:
    codec, proc = processor()
    cat = load_catalogue()
    cfg = SimulationPlan(customers=250, seed=8).journey_config(NOW)
    outcomes: Counter[str] = Counter()
    for i, ev in enumerate(iter_events(cfg)):
        spec = cat[ev.topic_key]
        out = proc.process(spec.name, 0, i, NOW, ev.key, codec.encode(spec.subject, ev.record), NOW)
        outcomes["accepted" if isinstance(out, processor_mod.Accepted) else out.reason.value] += 1
    assert set(outcomes) == {"accepted"}, outcomes


def test_every_bad_record_is_dead_lettered_with_its_reason() -> None:
    codec, proc = processor()
    cat = load_catalogue()
    inputs = [s.key for s in cat.inputs]
    for seq in range(len(REASONS) * len(inputs)):
        reason, key = assignment(seq, inputs)
        spec = cat[key]
        bad = make_bad(seq, reason, key, spec.subject, codec.encode, seed=8, now_ms=NOW,
                       event_time=NOW - HOUR_MS)
        out = proc.process(spec.name, 0, seq, NOW, bad.key, bad.value, NOW)
        assert isinstance(out, processor_mod.Rejected), (reason, key)
        assert out.reason.value == reason, (reason, key)
