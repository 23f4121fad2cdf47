"""A replay of history through ingest -> identity -> profile decides the same read in one burst or paced.

Broker tier (issue 14, item 5): the same history, built with the simulator's
record builder and sent by its publisher, goes through the three stage loops
(threads of this process, as ``make bench`` runs them) with
``OMNIPIPE_NBA_CLOCK=event``: once published before the stages start (read as
fast as it can be), once paced. The customers' consents come first in both
runs (they arrive on another input topic, whose order against the purchases
the pipeline does not keep; README, "What a replay guarantees"). Then:

- the same trigger idempotency keys, and no decision suppressed as ``stale``;
- the issue's first minimal case: 64 customers with one store purchase each,
  6 h apart, each given its cross-sell at lag 0 (or recorded as holdout);
- its second: purchases at T+1 h and T+40 d give a win-back at T+30 d+1 h.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from pipeline.app import build_identity, build_ingest, build_profile
from pipeline.broker.admin import ensure_topics
from pipeline.broker.embedded import EmbeddedBroker
from pipeline.broker.reader import iter_topic
from pipeline.contracts.catalogue import SchemaCatalogue
from pipeline.contracts.codec import AvroCodec
from pipeline.nba.catalogue import load_action_catalogue
from pipeline.nba.policy import in_holdout
from pipeline.runtime.stage_threads import StageThreads
from pipeline.settings import load_settings
from pipeline.simulate.journeys import POS, PRIVACY, SimEvent, sample_record
from pipeline.simulate.publisher import publish
from pipeline.topology.catalogue import TopicCatalogue, load_catalogue

pytestmark = pytest.mark.broker
CODEC = AvroCodec(SchemaCatalogue.load())
TRIGGER = "omnipipe.triggers.Trigger"
ACTIONS = load_action_catalogue()
HOUR = 3_600_000
DAY = 24 * HOUR
WIN_BACK_AFTER = ACTIONS.actions["win_back"].trigger.after_ms or 0  # 30d shipped
CUSTOMERS = 64
#: the win-back customer: the first id after the 64 outside the holdout group (so a trigger is sent)
WIN_BACK = next(n for n in range(CUSTOMERS, CUSTOMERS + 100) if not in_holdout(f"cust:R{n}", ACTIONS.policy))
PACED_PER_S = 4.0  # the paced run took one event per 0.5 s; the purchases take ~17 s here


def _ids(n: int) -> dict[str, Any]:
    return {"customer_id": f"R{n}", "loyalty_card": f"L{n}", "email": f"replay{n}@example.com", "phone": None,
            "device_id": None, "anonymous_id": None}


def _record(topic: str, n: int, k: int, t: int, **fields: Any) -> SimEvent:
    record = {**sample_record(topic, 14, n * 10 + k, t), "identifiers": _ids(n), **fields}
    return SimEvent(topic, f"R{n}".encode(), record, n)


def _history(t0: int) -> tuple[list[SimEvent], list[SimEvent]]:
    """(consents, purchases): 64 customers buying once, 6 h apart; one buying at T+1 h and T+40 d."""
    consents = [_record(PRIVACY, n, 0, t0 - HOUR) for n in [*range(CUSTOMERS), WIN_BACK]]
    purchases = [_record(POS, n, 1, t0 + n * 6 * HOUR) for n in range(CUSTOMERS)]
    purchases += [_record(POS, WIN_BACK, 1, t0 + HOUR), _record(POS, WIN_BACK, 2, t0 + 40 * DAY)]
    return consents, sorted(purchases, key=lambda e: e.event_time)


def _catalogue(tag: str) -> TopicCatalogue:
    cat = load_catalogue().with_partitions(4)
    return TopicCatalogue({k: dataclasses.replace(v, name=f"replay-{tag}.{v.name}")
                           for k, v in cat.topics.items()})


@dataclasses.dataclass
class Outcome:
    triggers: list[dict[str, Any]]
    stale: float
    holdout: float


def _wait(check: Any, run: StageThreads, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert run.alive(), "a stage loop died"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _replay(broker: EmbeddedBroker, tmp: Path, monkeypatch: pytest.MonkeyPatch, paced: bool,
            consents: list[SimEvent], purchases: list[SimEvent]) -> Outcome:
    tag = uuid.uuid4().hex[:6]
    cat = _catalogue(tag)
    client = {"bootstrap.servers": broker.bootstrap_servers}
    ensure_topics(client, cat)
    for name, value in {"KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
                        "OMNIPIPE_PII_HASH_KEY": "k" * 32, "OMNIPIPE_LOCAL_BROKER": "1",
                        "OMNIPIPE_DATA_DIR": str(tmp / tag), "OMNIPIPE_GROUP_ID": f"replay-{tag}",
                        "OMNIPIPE_NBA_CLOCK": "event"}.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    registry = CollectorRegistry()
    ingest = build_ingest(settings, cat, CODEC, registry)
    identity = build_identity(settings, cat, CODEC, registry)
    profile = build_profile(settings, cat, CODEC, registry, ACTIONS)

    def send(events: list[SimEvent], rate: float | None) -> None:
        stats = publish(events, encode=CODEC.encode, bootstrap_servers=broker.bootstrap_servers,
                        catalogue=cat, rate=rate)
        assert stats.delivery_errors == 0

    def folded(n: int) -> bool:
        return profile.stats.events >= n and profile.stats.idle_since is not None

    with StageThreads("replay", daemon=True, join_timeout=30, ingest=ingest, identity=identity,
                      profile=profile) as run:
        send(consents, None)
        _wait(lambda: folded(len(consents)), run, "the consents")
        if paced:
            send(purchases, PACED_PER_S)
        else:  # in one burst, as fast as it can be read
            send(purchases, None)
        # idle: every event folded, the timers due on each partition's clock fired, their triggers sent
        _wait(lambda: folded(len(consents) + len(purchases)), run, "the purchases")
        time.sleep(0.5)
        _wait(lambda: profile.stats.idle_since is not None, run, "the last timers")
    triggers = [CODEC.decode(r.value or b"", TRIGGER)
                for key in ("triggers_email", "triggers_push", "triggers_sms")
                for r in iter_topic(client, cat[key].name, idle_s=1.0)]
    suppressed = "omnipipe_nba_suppressions_total"
    return Outcome(triggers, registry.get_sample_value(suppressed, {"reason": "stale"}) or 0,
                   registry.get_sample_value(suppressed, {"reason": "holdout"}) or 0)


@pytest.fixture
def history() -> Iterator[tuple[int, list[SimEvent], list[SimEvent]]]:
    t0 = (int(time.time() * 1000) // DAY - 50) * DAY  # history: 50 days ago to 10 days ago
    yield t0, *_history(t0)


def test_a_replay_read_in_one_burst_decides_what_it_decides_paced(
    broker: EmbeddedBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    history: tuple[int, list[SimEvent], list[SimEvent]],
) -> None:
    t0, consents, purchases = history
    burst = _replay(broker, tmp_path, monkeypatch, False, consents, purchases)
    paced = _replay(broker, tmp_path, monkeypatch, True, consents, purchases)

    keys = [{t["idempotency_key"] for t in run.triggers} for run in (burst, paced)]
    assert keys[0] == keys[1], f"burst only {sorted(keys[0] - keys[1])}, paced {sorted(keys[1] - keys[0])}"
    assert len(burst.triggers) == len(keys[0])  # no key twice: nothing was redelivered here
    assert burst.stale == paced.stale == 0
    customers = [f"cust:R{n}" for n in [*range(CUSTOMERS), WIN_BACK]]
    held_out = {c for c in customers if in_holdout(c, ACTIONS.policy)}
    cross = [t for t in burst.triggers if t["action"] == "store_cross_sell"]
    assert {t["profile_id"] for t in cross} == set(customers) - held_out  # all 64 decided: none stale
    assert all(t["created_at"] == t["source_event_time"] for t in cross)  # each at lag 0
    assert burst.holdout == paced.holdout >= len(held_out)
    wins = [t for t in burst.triggers if t["action"] == "win_back" and t["profile_id"] == f"cust:R{WIN_BACK}"]
    assert [(w["source_event_time"], w["created_at"]) for w in wins] == [(t0 + HOUR + WIN_BACK_AFTER,) * 2]
