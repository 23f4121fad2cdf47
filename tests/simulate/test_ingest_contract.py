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

from pipeline.simulate.journeys import DAY_MS, HOUR_MS, iter_events  # noqa: E402
from pipeline.simulate.malformed import REASONS, assignment, make_bad, topics_for  # noqa: E402
from pipeline.simulate.publisher import BadInjection, publish  # noqa: E402
from pipeline.simulate.runner import SimulationPlan  # noqa: E402
from pipeline.simulate.truth import TruthRecorder  # noqa: E402
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
    sources = [s.key for s in cat.ingest_sources]
    seen = set()
    for seq in range(len(REASONS) * len(sources)):
        reason, key = assignment(seq, sources)
        spec = cat[key]
        bad = make_bad(seq, reason, key, spec.subject, codec.encode, seed=8, now_ms=NOW,
                       event_time=NOW - HOUR_MS)
        out = proc.process(spec.name, 0, seq, NOW, bad.key, bad.value, NOW)
        assert isinstance(out, processor_mod.Rejected), (reason, key)
        assert out.reason.value == reason, (reason, key, out.dead_letter["detail"])
        seen.add((reason, key))
    assert seen == {(r, k) for r in REASONS for k in topics_for(r, sources)}


def _pairs() -> list[tuple[str, str]]:
    sources = [s.key for s in load_catalogue().ingest_sources]
    return [(r, k) for r in REASONS for k in topics_for(r, sources)]


@pytest.mark.parametrize(("reason", "key"), _pairs())
def test_each_reason_on_each_topic_it_allows_gets_exactly_that_reason(reason: str, key: str) -> None:
    """Every variant (makers rotate what they spoil with ``seq``), also when ingest reads it later."""
    codec, proc = processor()
    spec = load_catalogue()[key]
    for seq in range(84):  # a multiple of every maker's rotation (2, 3, 4 and 7 variants)
        bad = make_bad(seq, reason, key, spec.subject, codec.encode, seed=8, now_ms=NOW,
                       event_time=NOW - HOUR_MS)
        for ingest_now in (NOW, NOW + DAY_MS):
            out = proc.process(spec.name, 0, seq, NOW, bad.key, bad.value, ingest_now)
            assert isinstance(out, processor_mod.Rejected), (reason, key, seq)
            assert out.reason.value == reason, (reason, key, seq, out.dead_letter["detail"])
            if reason == "schema_mismatch":  # the foreign id is registered and reported
                assert out.dead_letter["schema_id"] == int.from_bytes(bad.value[1:5], "big")


class _Capture:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes | None]] = []

    def produce(self, topic: str, value: bytes | None = None, key: bytes | None = None) -> None:
        assert value is not None
        self.sent.append((topic, value, key))

    def poll(self, timeout: float = 0.0) -> int:
        return 0

    def flush(self, timeout: float = 0.0) -> int:
        return 0


def test_a_published_run_is_dead_lettered_exactly_as_its_truth_says() -> None:
    """The publisher's defaults (every reason, every ingest topic) through the real ingest decision."""
    codec, proc = processor()
    cfg = SimulationPlan(customers=60, seed=5).journey_config(NOW)
    events = list(iter_events(cfg))
    truth = TruthRecorder(5, 60)
    n_bad = 2 * len(REASONS) * len(load_catalogue().ingest_sources)
    prod = _Capture()
    stats = publish(events, encode=codec.encode, producer=prod, truth=truth, seed=5, now_ms=NOW,
                    bad=BadInjection(count=n_bad, expected_events=len(events)))
    assert stats.bad == n_bad and set(stats.bad_per_reason) == set(REASONS)
    rejected = []
    accepted = 0
    for offset, (topic, value, key) in enumerate(prod.sent):
        out = proc.process(topic, 0, offset, NOW, key, value, NOW)
        if isinstance(out, processor_mod.Accepted):
            accepted += 1
        else:
            rejected.append((out.reason.value, topic))
    assert accepted == stats.events
    assert rejected == [(b.reason, b.topic) for b in truth.bad]
