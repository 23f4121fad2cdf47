"""Scenario 6: one trigger destination stops reading for minutes; the pipeline and the others don't notice.

One worker takes the workload of ``workload.py`` at a fixed rate. Three
senders read ``triggers.email``, ``triggers.sms`` and ``triggers.push`` in
their own consumer groups; the e-mail sender stops reading for the middle of
the run (minutes), then resumes. Measured, before / during / after the stall:

* the pipeline's lag (all stages, all partitions), sampled every second;
* triggers written per second to each topic (the pipeline keeps deciding
  and sending to the topic nobody reads);
* the SMS sender's delay: its receipt time minus the trigger's timestamp.

It passes if during the stall the pipeline's peak lag and the SMS sender's
p99 delay stay within the bounds below of the time before it, trigger rates
do not drop, and after it the e-mail sender receives every e-mail trigger.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from pipeline.broker.admin import ensure_topics
from pipeline.broker.embedded import EmbeddedBroker
from pipeline.broker.offset_gaps import OffsetGapGuard
from pipeline.broker.reader import count_records
from pipeline.contracts.catalogue import SchemaCatalogue
from pipeline.contracts.codec import AvroCodec
from pipeline.faults.crash import GROUP, PARTITIONS, wait_drained, workload_env
from pipeline.faults.lag import lags, stage_inputs
from pipeline.faults.scenario import Result
from pipeline.faults.workers import WorkerProcess
from pipeline.faults.workload import DAY_MS, Workload, consents, web_events
from pipeline.simulate.publisher import publish
from pipeline.topology.catalogue import load_catalogue

#: during the stall, the pipeline's peak lag may be this many times the peak before it (plus the slack)
LAG_FACTOR, LAG_SLACK = 2.0, 2_000
#: during the stall, the SMS sender's p99 delay may be this many times the one before it (plus the slack)
DELAY_FACTOR, DELAY_SLACK_MS = 2.0, 250


class Sender(threading.Thread):
    """Reads one trigger topic in its own group; ``paused`` stops it reading (and committing)."""

    def __init__(self, client: Mapping[str, Any], topic: str) -> None:
        super().__init__(name=f"sender-{topic}", daemon=True)
        self.topic = topic
        self.client = dict(client)
        self.paused = threading.Event()
        self.halt = threading.Event()
        self.ready = threading.Event()  # the group gave it its partitions
        self.received: list[tuple[float, int]] = []  # (receipt wall ms, record timestamp ms)
        self.jumps: list[str] = []  # the broker's fetch jumps its guard re-read (offset_gaps.py)

    def run(self) -> None:
        c = Consumer({**self.client, "group.id": f"sender-{self.topic}", "auto.offset.reset": "earliest",
                      "max.poll.interval.ms": 600_000, "session.timeout.ms": 30_000,
                      "fetch.wait.max.ms": 10})
        guard = OffsetGapGuard(self.jumps.append)  # a real sender must not skip what the broker hid

        def assigned(_c: Consumer, parts: list[TopicPartition]) -> None:
            guard.forget(parts)
            if parts:
                self.ready.set()

        c.subscribe([self.topic], on_assign=assigned, on_revoke=lambda _c, parts: guard.forget(parts))
        try:
            while not self.halt.is_set():
                if self.paused.is_set():
                    time.sleep(0.1)  # a sender that stopped reading: nothing fetched, nothing committed
                    continue
                for msg in guard.filter(c, c.consume(num_messages=500, timeout=0.1)):
                    if msg.error() is None:
                        self.received.append((time.time() * 1000, msg.timestamp()[1]))
        finally:
            c.close()


def _p99(values: list[float]) -> float:
    if not values:
        return 0.0
    return statistics.quantiles(values, n=100)[98] if len(values) >= 2 else values[0]


def run_slow_sender(out: Path, *, customers: int, rate: float, seconds: float, stall: float,
                    seed: int) -> Result:
    res = Result("slow-sender")
    out.mkdir(parents=True, exist_ok=True)
    catalogue = load_catalogue().with_partitions(PARTITIONS)
    codec = AvroCodec(SchemaCatalogue.load(), max_record_size=4 * 1024 * 1024)
    work = Workload(customers, int(rate * seconds), seed, end_ms=int(time.time() * 1000) - DAY_MS)
    topics = {ch: catalogue.trigger_topic(ch).name for ch in ("EMAIL", "SMS", "PUSH")}
    with EmbeddedBroker(log_path=out / "tansu.log") as broker:
        servers = broker.bootstrap_servers
        client = {"bootstrap.servers": servers}
        ensure_topics(client, catalogue)
        env = workload_env(servers)
        worker = WorkerProcess("slow-w1", env, out / "state-w1", out)
        senders = {ch: Sender(client, t) for ch, t in topics.items()}
        lag_samples: list[tuple[float, int]] = []
        try:
            worker.start()
            worker.wait_up()
            publish(consents(work), encode=codec.encode, bootstrap_servers=servers, catalogue=catalogue)
            wait_drained(client, catalogue, [worker], timeout=600)
            for s in senders.values():
                s.start()
            for s in senders.values():  # a first join is slow on this broker: not part of the baseline
                if not s.ready.wait(120):
                    raise TimeoutError(f"sender {s.topic} got no partitions in 120s")
            stream = web_events(work)
            thread = threading.Thread(target=publish, args=(stream,), kwargs={
                "encode": codec.encode, "bootstrap_servers": servers, "catalogue": catalogue, "rate": rate},
                name="faults-producer", daemon=True)
            t0 = time.time() * 1000
            thread.start()
            start_stall = t0 + (seconds - stall) / 2 * 1000
            end_stall = start_stall + stall * 1000
            groups = stage_inputs(catalogue, GROUP)
            while thread.is_alive():
                now = time.time() * 1000
                if start_stall <= now < end_stall:
                    senders["EMAIL"].paused.set()
                else:
                    senders["EMAIL"].paused.clear()
                worker.check_alive()
                lag_samples.append((now, sum(lags(client, groups).values())))
                time.sleep(1.0)
            senders["EMAIL"].paused.clear()
            wait_drained(client, catalogue, [worker], timeout=600)
            time.sleep(3.0)  # the senders read the rest
        finally:
            for s in senders.values():
                s.halt.set()
            worker.stop()
        written = {ch: count_records(client, t, idle_s=1.0) for ch, t in topics.items()}

    def window(ts: float) -> str:
        return "before" if ts < start_stall else "during" if ts < end_stall else "after"

    peak = {w: max((n for ts, n in lag_samples if window(ts) == w), default=0) for w in ("before", "during")}
    sms = senders["SMS"].received
    delay = {w: _p99([r - ts for r, ts in sms if window(ts) == w]) for w in ("before", "during", "after")}
    made = {ch: {w: sum(1 for _r, ts in s.received if window(ts) == w) for w in ("before", "during", "after")}
            for ch, s in senders.items()}
    secs = {"before": (start_stall - t0) / 1000, "during": stall}
    res.figures["run"] = (f"{len(stream):,} web events at {rate:,.0f}/s over {customers:,} customers; the "
                          f"e-mail sender stopped reading from {(start_stall - t0) / 1000:.0f}s to "
                          f"{(end_stall - t0) / 1000:.0f}s ({stall:.0f}s)")
    res.figures["pipeline lag"] = f"peak before {peak['before']:,}, during the stall {peak['during']:,}"
    res.figures["triggers per second (by send time)"] = "; ".join(
        f"{ch} before {made[ch]['before'] / secs['before']:.1f}/s, "
        f"during {made[ch]['during'] / stall:.1f}/s" for ch in ("EMAIL", "SMS"))
    res.figures["sms sender delay p99"] = (f"before {delay['before']:.0f} ms, "
                                           f"during {delay['during']:.0f} ms, after {delay['after']:.0f} ms")
    res.figures["senders: broker fetch jumps re-read"] = sum(len(s.jumps) for s in senders.values())
    res.check(f"pipeline lag during the stall <= {LAG_FACTOR} x before + {LAG_SLACK}",
              peak["during"] <= LAG_FACTOR * peak["before"] + LAG_SLACK)
    res.check(f"SMS sender p99 delay during the stall <= {DELAY_FACTOR} x before + {DELAY_SLACK_MS} ms",
              delay["during"] <= DELAY_FACTOR * delay["before"] + DELAY_SLACK_MS)
    rate_before = made["EMAIL"]["before"] / secs["before"]
    rate_during = made["EMAIL"]["during"] / stall
    res.check("e-mail triggers kept being written during the stall (>= half the rate before)",
              rate_before > 0 and rate_during >= 0.5 * rate_before)
    res.check(f"after the stall the e-mail sender received every e-mail trigger "
              f"({len(senders['EMAIL'].received):,} of {written['EMAIL']:,})",
              len(senders["EMAIL"].received) == written["EMAIL"] > 0)
    return res.finish()
