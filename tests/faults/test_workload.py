"""The fault suite's input (pipeline/faults/workload.py): deterministic, one login, sequence in time order."""

from __future__ import annotations

from collections import defaultdict

from pipeline.faults.workload import DAY_MS, Workload, consents, sequence_of, web_events
from pipeline.simulate.journeys import PRIVACY, WEB

END = 1_790_000_000_000
WORK = Workload(customers=200, events=2_000, seed=4, end_ms=END)


def test_the_same_seed_gives_the_same_stream() -> None:
    assert web_events(WORK) == web_events(Workload(200, 2_000, 4, END))
    assert web_events(WORK) != web_events(Workload(200, 2_000, 5, END))


def test_exactly_the_asked_events_time_ordered_within_the_span() -> None:
    stream = web_events(WORK)
    assert len(stream) == 2_000 and {e.topic_key for e in stream} == {WEB}
    times = [e.event_time for e in stream]
    assert times == sorted(times)
    assert times[0] >= END - 15 * DAY_MS and times[-1] < END


def test_each_customer_has_one_identifier_and_a_gapless_sequence_in_time_order() -> None:
    per: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for e in [*consents(WORK), *web_events(WORK)]:
        ids = {k: v for k, v in e.record["identifiers"].items() if v}
        assert ids["customer_id"] == WORK.customer_id(e.person) and e.key == ids["customer_id"].encode()
        if e.topic_key == WEB:
            assert set(ids) == {"customer_id"}  # no other identifier: no merges on the web
        head, seq = sequence_of(e.record["event_id"])
        assert head == f"{WORK.tag}-{e.person:06d}"
        per[head].append((seq, e.event_time))
    assert len(per) == 200
    for events in per.values():
        events.sort()
        assert [s for s, _t in events] == list(range(len(events)))  # 0, 1 consents, then the web events
        assert [t for _s, t in events] == sorted(t for _s, t in events)


def test_consents_come_first_on_the_privacy_topic() -> None:
    cons = consents(WORK)
    assert len(cons) == 400 and {e.topic_key for e in cons} == {PRIVACY}
    first_web = min(e.event_time for e in web_events(WORK))
    assert max(e.event_time for e in cons) < first_web
    granted = sum(1 for e in cons if e.record["consent_channel"] == "EMAIL" and e.record["granted"])
    assert 150 < granted < 200  # about 90% grant e-mail marketing
