"""Scenario 5: erasure requests for 1% of customers in the middle of a loaded run.

Two workers take the workload of ``workload.py`` at a fixed rate; for 1% of
the customers (chosen among those whose activity ends before the last fifth
of the stream), an ERASURE_REQUEST is published in time order just after
their last event. When every stage has drained:

* every request was carried out (one completion record each, profile found);
* no worker's API answers for them (404), while it does for others;
* the profile and identity tables rebuilt from their changelogs hold no key
  of theirs (their profile, their identifiers), and on both changelogs the
  last record of each such key is a tombstone;
* no trigger for them was sent after their completion record: every one of
  their trigger records on the topics carries an earlier timestamp, or is a
  withdrawal (``cancels``) of one sent before;
* everyone else is untouched: triggers and profiles equal the recomputation.
"""

from __future__ import annotations

import json
import random
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from pipeline.broker.reader import iter_topic
from pipeline.contracts.catalogue import SchemaCatalogue
from pipeline.contracts.codec import AvroCodec
from pipeline.faults.crash import ACTIONS, PARTITIONS, start_all, verify, wait_drained, workload_env
from pipeline.faults.reference import profile_of, recompute
from pipeline.faults.scenario import Result
from pipeline.faults.substrate import fault_broker
from pipeline.faults.tables import last_words, rebuilt_keys
from pipeline.faults.workers import WorkerProcess
from pipeline.faults.workload import DAY_MS, Workload, consents, web_events
from pipeline.identity.codec import state_key
from pipeline.identity.messages import Space
from pipeline.metrics.scrape import Scrape
from pipeline.nba.catalogue import load_action_catalogue
from pipeline.profile.engine import profile_key
from pipeline.simulate.journeys import PRIVACY, SimEvent
from pipeline.simulate.publisher import publish
from pipeline.topology.catalogue import load_catalogue
from pipeline.topology.profile_config import load_profile_limits


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            json.loads(resp.read())
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def erasure_requests(work: Workload, stream: list[SimEvent], share: float,
                     rng: random.Random) -> dict[int, SimEvent]:
    """customer -> its request, just after its last event, for customers done before the last fifth."""
    last: dict[int, int] = {}
    for e in stream:
        last[e.person] = e.event_time
    cut = stream[int(len(stream) * 0.8)].event_time
    eligible = sorted(c for c, t in last.items() if t < cut)
    chosen = rng.sample(eligible, max(1, int(work.customers * share)))
    out = {}
    for c in chosen:
        cid = work.customer_id(c)
        ids = {"customer_id": cid, "loyalty_card": None, "email": None, "phone": None, "device_id": None,
               "anonymous_id": None}
        out[c] = SimEvent(PRIVACY, cid.encode(), {
            "event_id": f"{work.tag}-{c:06d}-99999", "event_time": last[c] + 60_000, "identifiers": ids,
            "type": "ERASURE_REQUEST", "consent_channel": None, "consent_purpose": None, "granted": None,
            "source": "dsr"}, c)
    return out


def run_erasure(out: Path, *, customers: int, events: int, rate: float, share: float, seed: int) -> Result:
    res = Result("erasure")
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed + 5)
    catalogue = load_catalogue().with_partitions(PARTITIONS)
    codec = AvroCodec(SchemaCatalogue.load(), max_record_size=4 * 1024 * 1024)
    work = Workload(customers, events, seed, end_ms=int(time.time() * 1000) - DAY_MS)
    phase1 = consents(work)
    web = web_events(work)
    requests = erasure_requests(work, web, share, rng)
    stream = sorted([*web, *requests.values()], key=lambda e: (e.event_time, e.record["event_id"]))
    erased = frozenset(f"cust:{work.customer_id(c)}" for c in requests)
    request_of = {e.record["event_id"]: f"cust:{work.customer_id(c)}" for c, e in requests.items()}
    with fault_broker(out) as broker:
        client = {"bootstrap.servers": broker.bootstrap_servers}
        broker.ensure_topics(catalogue)
        env = workload_env(broker.bootstrap_servers)
        workers = [WorkerProcess(f"erasure-w{i}", env, out / f"state-w{i}", out) for i in (1, 2)]
        try:
            start_all(workers)
            servers = broker.bootstrap_servers
            publish(phase1, encode=codec.encode, bootstrap_servers=servers, catalogue=catalogue)
            wait_drained(client, catalogue, workers, timeout=600)
            publish(stream, encode=codec.encode, bootstrap_servers=servers, catalogue=catalogue, rate=rate)
            drain = wait_drained(client, catalogue, workers, timeout=900)
            others = sorted({profile_of({"customer_id": work.customer_id(c)}) for c in range(customers)}
                            - erased)[:len(erased)]
            api_erased = [p for p in sorted(erased) if _status(f"{workers[0].url}/profiles/{p}") != 404]
            api_others = [p for p in others if _status(f"{workers[1].url}/profiles/{p}") != 200]
            dropped = sum((w.metrics() or Scrape()).value("omnipipe_identity_erased_events_dropped_total")
                          for w in workers)
        finally:
            for w in workers:
                w.stop()
        res.figures["run"] = (f"{len(phase1):,} consents, then {len(web):,} web events and {len(requests):,} "
                              f"erasure requests ({share:.0%} of {customers:,} customers) at {rate:,.0f}/s, "
                              f"two workers; drained {drain:.0f}s after the last publish")
        res.figures["identity: events dropped as an erased person's past"] = int(dropped)
        res.check(f"the API answers 404 for every erased customer (answered otherwise: {len(api_erased)})",
                  not api_erased)
        res.check(f"the API answers the others (sampled {len(others)}; not 200: {len(api_others)})",
                  not api_others)
        observed = verify(res, client, catalogue, codec, published=len(phase1) + len(stream),
                          leave_out=erased)
        erasures = catalogue["erasures"]
        completed: dict[str, dict[str, Any]] = {}
        for r in iter_topic(client, erasures.name, idle_s=1.0):
            if r.value is not None:
                rec = codec.decode(r.value, erasures.avro_subject)
                if rec["request_event_id"] in request_of:
                    completed.setdefault(request_of[rec["request_event_id"]], rec)
        res.check(f"every request carried out, profile found ({len(completed):,} of {len(requests):,})",
                  len(completed) == len(requests) and all(c["found"] for c in completed.values()))
        late = [t for t, ts in observed.triggers if t["profile_id"] in completed and not t["cancels"]
                and ts > completed[t["profile_id"]]["completed_at"]]
        theirs = [t for t, _ts in observed.triggers if t["profile_id"] in erased]
        withdrawn = [t for t in theirs if t["cancels"]]
        res.figures["their triggers"] = (f"{len(theirs) - len(withdrawn):,} sent before their request, "
                                         f"{len(withdrawn):,} withdrawals at erasure; {len(late)} after")
        res.check("no trigger for an erased customer after the request was carried out", not late)
        before = recompute((e for e in observed.events.values() if profile_of(e) in erased
                            and e["type"] != "erasure_request"), load_action_catalogue(ACTIONS),
                           load_profile_limits(None))
        refs = {ref for s in before.states.values() for ref in s.identifiers} | set(erased)
        pkeys = {profile_key(p) for p in erased}
        spaces = (Space.IDENT, Space.CLUSTER, Space.PROFILE)
        ikeys = {state_key(space, ref) for ref in refs for space in spaces}
        ptable = rebuilt_keys(client, catalogue["profile_changelog"].name, catalogue["profile_commits"].name)
        itable = rebuilt_keys(client, catalogue["identity_changelog"].name,
                              catalogue["identity_commits"].name)
        res.check(f"the rebuilt profile table holds none of their profiles ({len(pkeys & ptable)} found)",
                  not pkeys & ptable)
        res.check(f"the rebuilt identity table holds none of their {len(refs):,} identifiers and profiles "
                  f"({len(ikeys & itable)} found)", not ikeys & itable)
        pwords = last_words(client, catalogue["profile_changelog"].name)
        iwords = last_words(client, catalogue["identity_changelog"].name)
        not_dead = [k for k in pkeys if pwords.get(k) is not None]
        not_dead += [k for k in ikeys if iwords.get(k) is not None]
        seen = len([k for k in pkeys if k in pwords]) + len([k for k in ikeys if k in iwords])
        res.figures["changelogs"] = f"{seen:,} of their keys were written; {len(not_dead)} end on a value"
        res.check("on both changelogs each of their keys ends on a tombstone", seen > 0 and not not_dead)
    return res.finish()
