"""Scenario 2: a stream with 1% malformed records of every kind; exactly those are dead-lettered.

One worker, the journey simulator (every channel) with bad records mixed in
at a fixed ratio, every reason of ``pipeline/simulate/malformed.py`` over
every topic it applies to. When every stage has drained:

* the dead-letter topic holds exactly the injected records: as many distinct
  source positions as were injected, the same count per (reason, topic);
* every good event reached the canonical topic (so none was dead-lettered);
* the worker ran from start to end: the same process, no stage failure in
  its log (a failed stage stops the worker on purpose);
* memory stayed bounded: resident memory sampled every second, compared
  between the first and the second half of the run.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

from pipeline.broker.reader import iter_topic
from pipeline.contracts.catalogue import SchemaCatalogue
from pipeline.contracts.codec import AvroCodec
from pipeline.faults.crash import GROUP, HASH_KEY, PARTITIONS, wait_drained
from pipeline.faults.scenario import Result
from pipeline.faults.substrate import fault_broker
from pipeline.faults.workers import WorkerProcess, worker_env
from pipeline.simulate.journeys import EXPECTED_EVENTS_PER_CUSTOMER
from pipeline.simulate.malformed import REASONS
from pipeline.simulate.runner import SimulationPlan, run_simulation
from pipeline.topology.catalogue import load_catalogue

#: growth of resident memory from the first half's peak to the second half's that still counts as bounded
RSS_GROWTH_LIMIT = 1.25


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


class RssSampler(threading.Thread):
    def __init__(self, pid: int, every_s: float = 1.0) -> None:
        super().__init__(name="faults-rss", daemon=True)
        self.pid, self.every_s = pid, every_s
        self.samples: list[tuple[float, int]] = []
        self._halt = threading.Event()

    def run(self) -> None:
        t0 = time.monotonic()
        while not self._halt.wait(self.every_s):
            try:
                self.samples.append((time.monotonic() - t0, rss_bytes(self.pid)))
            except OSError:
                return

    def halt(self) -> None:
        self._halt.set()
        self.join(5)


def _agent_summary(url: str, expected: int, timeout: float = 60.0) -> dict[str, Any]:
    """The worker's Faust dead-letter agent's table (``GET /dlq``), once it has counted ``expected``."""
    deadline = time.monotonic() + timeout
    found: dict[str, Any] = {}
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError):
            with urllib.request.urlopen(f"{url}/dlq", timeout=10) as resp:
                found = json.loads(resp.read())
            if found.get("total", 0) >= expected:
                break
        time.sleep(1.0)
    return found


def run_poison(out: Path, *, events: int, bad_ratio: float, seed: int) -> Result:
    res = Result("poison")
    out.mkdir(parents=True, exist_ok=True)
    catalogue = load_catalogue().with_partitions(PARTITIONS)
    codec = AvroCodec(SchemaCatalogue.load(), max_record_size=4 * 1024 * 1024)
    customers = max(1, int(events / EXPECTED_EVENTS_PER_CUSTOMER))
    with fault_broker(out) as broker:
        client = {"bootstrap.servers": broker.bootstrap_servers}
        broker.ensure_topics(catalogue)
        env = worker_env(broker.bootstrap_servers, HASH_KEY, OMNIPIPE_GROUP_ID=GROUP,
                         OMNIPIPE_TOPIC_PARTITIONS=str(PARTITIONS), OMNIPIPE_NBA_CLOCK="event")
        worker = WorkerProcess("poison-w1", env, out / "state-w1", out)
        sampler: RssSampler | None = None
        try:
            worker.start()
            worker.wait_up()
            assert worker.proc is not None
            pid = worker.proc.pid
            sampler = RssSampler(pid)
            sampler.start()
            t0 = time.monotonic()
            stats = run_simulation(SimulationPlan(customers=customers, seed=seed, bad_ratio=bad_ratio),
                                   encode=codec.encode, bootstrap_servers=broker.bootstrap_servers,
                                   catalogue=catalogue)
            drain = wait_drained(client, catalogue, [worker], timeout=3600)
            took = time.monotonic() - t0
            worker.check_alive()
            same = worker.proc is not None and worker.proc.pid == pid and worker.starts == 1
            summary = _agent_summary(worker.url, stats.bad)
        finally:
            worker.stop()
            if sampler is not None:
                sampler.halt()
        log = worker.log_path.read_text(errors="replace")
        total = stats.events + stats.bad
        share = stats.bad / max(1, total)
        res.figures["run"] = (f"{stats.events:,} good + {stats.bad:,} malformed records ({share:.2%}) over "
                              f"{customers:,} customers; published in {stats.elapsed_s:.0f}s, all stages "
                              f"drained {drain:.0f}s later, {took:.0f}s in all ({total / took:,.0f} "
                              f"records/s)")
        dlq = catalogue["dlq"]
        letters: dict[tuple[str, int, int], dict[str, Any]] = {}
        for r in iter_topic(client, dlq.name, idle_s=1.0, timeout_s=600):
            if r.value is None:
                continue
            d = codec.decode(r.value, dlq.avro_subject)
            letters.setdefault((d["source_topic"], d["source_partition"], d["source_offset"]), d)
        topic_key = {spec.name: spec.key for spec in catalogue}
        got = Counter((d["reason"], topic_key.get(d["source_topic"], d["source_topic"]))
                      for d in letters.values())
        injected = Counter(dict(stats.bad_per_reason))
        by_reason = Counter(r for r, _ in got.elements())
        by_topic = Counter(t for _, t in got.elements())
        res.figures["injected"] = f"{stats.bad:,}; by reason {dict(sorted(injected.items()))}"
        res.figures["dead letters"] = (f"{len(letters):,} distinct source positions; by reason "
                                       f"{dict(sorted(by_reason.items()))}")
        res.check(f"dead letters = injected records ({len(letters):,} vs {stats.bad:,})",
                  len(letters) == stats.bad)
        res.check("the same count per reason", by_reason == injected)
        res.check("the same count per topic", by_topic == Counter(dict(stats.bad_per_topic)))
        res.check(f"every kind of malformed record injected ({len(injected)} of {len(REASONS)})",
                  set(injected) == set(REASONS))
        res.figures["dlq agent (Faust, /dlq)"] = f"{summary.get('total', 0):,} counted"
        res.check("the dead-letter agent counted every dead letter once, per reason",
                  summary.get("by_reason") == dict(sorted(injected.items())))
        canonical = catalogue["canonical"]
        ids = set()
        for r in iter_topic(client, canonical.name, idle_s=1.0, timeout_s=900):
            if r.value is not None:
                ids.add(codec.decode(r.value, canonical.avro_subject)["event_id"])
        res.figures["canonical events"] = f"{len(ids):,} distinct (good published {stats.events:,})"
        res.check("every good event reached the canonical topic", len(ids) == stats.events)
        failures = log.count("stage failed") + log.count("Traceback")
        keepalive = log.count("keepalive is not responding")
        res.figures["worker log"] = (f"{log.count('[ERROR]'):,} ERROR lines, of which {keepalive:,} Faust "
                                     f"'Thread keepalive is not responding' (its event loop starved of "
                                     f"the GIL "
                                     f"by the stage threads)")
        res.check(f"one worker process from start to end, no stage failure in its log ({failures} found)",
                  same and failures == 0)
        samples = sampler.samples if sampler is not None else []
        if samples:
            half = samples[-1][0] / 2
            first = max((b for t, b in samples if t <= half), default=0)
            second = max((b for t, b in samples if t > half), default=0)
            peak = max(b for _, b in samples)
            mib = 2**20
            quarters = [max((b for t, b in samples if t <= q * samples[-1][0]), default=0) // mib
                        for q in (0.25, 0.5, 0.75, 1.0)]
            res.figures["resident memory peak by quarter of the run (MiB)"] = quarters
            res.figures["resident memory"] = (
                f"peak {peak / mib:,.0f} MiB; first half peak {first / mib:,.0f} MiB, second half "
                f"{second / mib:,.0f} MiB ({len(samples)} samples)")
            res.check(f"memory bounded: second-half peak <= {RSS_GROWTH_LIMIT} x first-half peak",
                      first > 0 and second <= RSS_GROWTH_LIMIT * first)
    return res.finish()
