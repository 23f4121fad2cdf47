"""Scenario 1: kill -9 workers at random moments; nothing expected is missing, nothing extra appears.

Two workers over the embedded broker; the input of ``workload.py`` (one
login per customer, a per-customer sequence number). Phase one publishes the
consents and waits until every stage has committed them. Phase two publishes
the web events at a fixed rate while a random worker is killed with SIGKILL
at random moments and restarted on its own state directory. When every
stage's lag is 0, the output is compared with ``reference.recompute`` over
the canonical events:

* every expected trigger key is on the trigger topics (0 missing), with the
  same record (action, channel, send_after, score, reasons...);
* no key the reference does not expect (a redelivery never yields a new
  key), so after dropping repeats by key there are 0 duplicates; repeats on
  the topics themselves (at-least-once delivery) are counted and reported;
* the profile table rebuilt from the changelog equals the recomputed
  profiles, field for field.
"""

from __future__ import annotations

import dataclasses
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.broker.reader import iter_topic
from pipeline.contracts.catalogue import SchemaCatalogue
from pipeline.contracts.codec import AvroCodec
from pipeline.faults.lag import lags, stage_inputs
from pipeline.faults.reference import Expected, profile_of, recompute
from pipeline.faults.scenario import Result
from pipeline.faults.substrate import fault_broker
from pipeline.faults.tables import profile_table
from pipeline.faults.workers import WorkerProcess, worker_env
from pipeline.faults.workload import DAY_MS, Workload, consents, web_events
from pipeline.nba.catalogue import load_action_catalogue
from pipeline.profile.codec import state_fields
from pipeline.profile.state import ProfileState
from pipeline.simulate.publisher import publish
from pipeline.topology.catalogue import TopicCatalogue, load_catalogue
from pipeline.topology.profile_config import load_profile_limits

ROOT = Path(__file__).resolve().parents[2]
ACTIONS = ROOT / "topologies" / "faults" / "actions.yaml"
HASH_KEY = "faults-hmac-key-0123456789abcdef"
GROUP = "faults"
PARTITIONS = 4


def workload_env(servers: str, group: str = GROUP, **extra: str) -> dict[str, str]:
    """Workers deciding as of each event's time over the fault catalogue: what ``verify`` recomputes."""
    return worker_env(servers, HASH_KEY, OMNIPIPE_GROUP_ID=group, OMNIPIPE_TOPIC_PARTITIONS=str(PARTITIONS),
                      OMNIPIPE_NBA_CLOCK="occasion", OMNIPIPE_ACTIONS_CONFIG=str(ACTIONS), **extra)


def start_all(workers: list[WorkerProcess]) -> None:
    """Start them together, return once each holds partitions."""
    for w in workers:
        w.start()
    for w in workers:
        w.wait_up()


def wait_drained(client: dict[str, Any], catalogue: TopicCatalogue, workers: list[WorkerProcess],
                 timeout: float, quiet_s: float = 3.0) -> float:
    """Until every stage has committed everything on its inputs (twice, ``quiet_s`` apart)."""
    groups = stage_inputs(catalogue, GROUP)
    deadline = time.monotonic() + timeout
    started = time.monotonic()
    zero_since: float | None = None
    while time.monotonic() < deadline:
        for w in workers:
            w.check_alive()
        behind = sum(lags(client, groups).values())
        if behind == 0:
            zero_since = zero_since or time.monotonic()
            if time.monotonic() - zero_since >= quiet_s:
                return time.monotonic() - started
        else:
            zero_since = None
        time.sleep(0.5)
    raise TimeoutError(f"the stages still lag after {timeout:.0f}s: {lags(client, groups)}")


def _comparable(state: ProfileState) -> list[Any]:
    """Every field but ``merged_from``: the identity stage starts each new identifier as a profile of its
    own and merges it into the customer's at once (an empty transfer); which identifiers went that way
    is the identity stage's business, checked separately (they must be the customer's own)."""
    return state_fields(dataclasses.replace(state, merged_from={}))


def _fields_differing(got: ProfileState | None, want: ProfileState) -> str:
    if got is None:
        return "(absent)"
    names = [f.name for f in dataclasses.fields(ProfileState) if f.name != "merged_from"]
    return ", ".join(f"{n}: {getattr(got, n)!r:.200} != {getattr(want, n)!r:.200}" for n in names
                     if getattr(got, n) != getattr(want, n))


def _read(client: dict[str, Any], topic: str, subject: str, codec: AvroCodec) -> list[dict[str, Any]]:
    return [codec.decode(r.value, subject) for r in iter_topic(client, topic, idle_s=1.0, timeout_s=600)
            if r.value is not None]


def run_crash(out: Path, *, customers: int, events: int, kills: int, rate: float, seed: int) -> Result:
    res = Result("crash")
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    catalogue = load_catalogue().with_partitions(PARTITIONS)
    codec = AvroCodec(SchemaCatalogue.load(), max_record_size=4 * 1024 * 1024)
    work = Workload(customers, events, seed, end_ms=int(time.time() * 1000) - DAY_MS)
    with fault_broker(out) as broker:
        client = {"bootstrap.servers": broker.bootstrap_servers}
        broker.ensure_topics(catalogue)
        env = workload_env(broker.bootstrap_servers)
        workers = [WorkerProcess(f"crash-w{i}", env, out / f"state-w{i}", out) for i in (1, 2)]
        try:
            start_all(workers)
            phase1 = consents(work)
            publish(phase1, encode=codec.encode, bootstrap_servers=broker.bootstrap_servers,
                    catalogue=catalogue)
            wait_drained(client, catalogue, workers, timeout=600)
            stream = web_events(work)
            stop = threading.Event()
            published: list[Any] = []

            def producer() -> None:
                published.append(publish(stream, encode=codec.encode, catalogue=catalogue, rate=rate,
                                         bootstrap_servers=broker.bootstrap_servers, stop=stop))

            thread = threading.Thread(target=producer, name="faults-producer", daemon=True)
            t0 = time.monotonic()
            thread.start()
            moments: list[float] = []
            spacing = len(stream) / rate / (kills + 1)  # spread over the whole stream
            while len(moments) < kills:
                time.sleep(rng.uniform(0.3, 1.7) * spacing)
                victim = rng.choice(workers)
                for w in workers:
                    if w is not victim:
                        w.check_alive()
                moments.append(round(time.monotonic() - t0, 1))
                victim.kill()
                time.sleep(rng.uniform(0.0, 2.0))
                victim.start()
            thread.join()
            drain = wait_drained(client, catalogue, workers, timeout=900)
            res.figures["run"] = (f"{len(phase1):,} consents, then {len(stream):,} web events over "
                                  f"{customers:,} customers at {rate:,.0f}/s; "
                                  f"{sum(w.kills for w in workers)} kill -9 at {moments} s; "
                                  f"drained {drain:.0f}s after the last publish")
        finally:
            for w in workers:
                w.stop()
        verify(res, client, catalogue, codec, published=len(phase1) + len(stream))
        res.check(f"at least {kills} kill -9 with restart", sum(w.kills for w in workers) >= kills)
    return res.finish()


@dataclass
class Observed:
    """What the run left on the broker, for scenario-specific checks after ``verify``."""

    events: dict[str, dict[str, Any]]  # event id -> the first canonical copy
    triggers: list[tuple[dict[str, Any], int]]  # every trigger record on the topics, with its timestamp
    table: dict[str, ProfileState]
    expected: Expected
    copies: int = 0  # canonical records, copies included (``len(events)`` are distinct)
    repeats: int = 0  # trigger records beyond the first of their key


def verify(res: Result, client: dict[str, Any], catalogue: TopicCatalogue, codec: AvroCodec, *,
           published: int, leave_out: frozenset[str] = frozenset()) -> Observed:
    """The recomputation from the canonical events against the trigger topics and the profile table.

    ``leave_out``: profiles not compared (erased people: the erasure scenario checks those itself).
    """
    actions = load_action_catalogue(ACTIONS)
    limits = load_profile_limits(None)
    canonical = catalogue["canonical"]
    got_events = _read(client, canonical.name, canonical.avro_subject, codec)
    unique: dict[str, dict[str, Any]] = {}
    for e in got_events:  # a re-ingested copy has a later ingest_time: the stages keep the first
        unique.setdefault(e["event_id"], e)
    res.figures["canonical events"] = f"{len(got_events):,} records, {len(unique):,} distinct"
    res.check("every published event reached the canonical topic", len(unique) == published)
    dlq = catalogue["dlq"]
    letters = Counter((d.get("stage") or "ingest", d["reason"])
                      for d in _read(client, dlq.name, dlq.avro_subject, codec))
    res.check(f"no dead letter: the workload has no bad record (found: {dict(letters)})", not letters)
    expected = recompute((e for e in unique.values() if profile_of(e) not in leave_out
                          and e["type"] != "erasure_request"), actions, limits)
    stamped: list[tuple[dict[str, Any], int]] = []
    for channel in ("EMAIL", "PUSH", "SMS"):
        spec = catalogue.trigger_topic(channel)
        stamped += [(codec.decode(r.value, spec.avro_subject), r.timestamp_ms)
                    for r in iter_topic(client, spec.name, idle_s=1.0, timeout_s=600) if r.value is not None]
    got = [t for t, _ts in stamped if t["profile_id"] not in leave_out]
    per_key = Counter(t["idempotency_key"] for t in got)
    by_key = {t["idempotency_key"]: t for t in got}
    missing = set(expected.triggers) - set(by_key)
    extra = set(by_key) - set(expected.triggers)
    differ = [k for k in set(expected.triggers) & set(by_key) if expected.triggers[k] != by_key[k]]
    repeats = sum(n - 1 for n in per_key.values())
    decisions = sum(expected.counts.decisions.values())
    res.figures["triggers"] = (f"expected {len(expected.triggers):,} (of {decisions:,} decisions); on the "
                               f"topics {len(got):,} records = {len(by_key):,} keys + {repeats:,} repeats "
                               f"(at-least-once, dropped by key)")
    res.figures["by action"] = dict(sorted(Counter(t["action"] for t in by_key.values()).items()))
    res.check(f"0 expected triggers missing (missing: {len(missing)})", not missing)
    res.check(f"0 keys the reference does not expect, i.e. 0 duplicates after dropping by key "
              f"(unexpected: {len(extra)})", not extra)
    res.check(f"every trigger equals the recomputed one (differ: {len(differ)})", not differ)
    table = profile_table(client, catalogue["profile_changelog"].name, catalogue["profile_commits"].name)
    compared = {p: s for p, s in table.items() if p not in leave_out}
    wrong = [p for p, s in expected.states.items() if p not in compared or _comparable(compared[p]) !=
             _comparable(s)]
    foreign = [p for p, s in compared.items() if not set(s.merged_from) <= set(s.identifiers)]
    strays = set(compared) - set(expected.states)
    res.figures["profiles"] = (f"{len(compared):,} in the changelog-rebuilt table, {len(expected.states):,} "
                               f"recomputed; {len(wrong):,} differ, {len(strays):,} not expected")
    res.check("profile table equals the recomputation from the input", not wrong and not strays)
    res.check(f"profiles merged in are the customer's own identifiers (other: {len(foreign)})", not foreign)
    for sample in (sorted(missing)[:2] + sorted(extra)[:2] + differ[:2]):
        res.notes.append(f"sample: {sample}")
    for p in wrong[:2]:
        res.notes.append(f"profile {p} differs in {_fields_differing(compared.get(p), expected.states[p])}")
    return Observed(unique, stamped, table, expected, copies=len(got_events), repeats=repeats)
