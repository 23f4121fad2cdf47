"""Scenario 6: one trigger destination stops reading for minutes; the pipeline and the others don't notice.

The same run twice, each on its own embedded broker: a *control* in which
every sender reads all along, then the *stalled* run, in which the e-mail
sender stops reading for the middle of it (minutes) and then resumes. One
worker takes the workload of ``workload.py`` at a fixed rate; three senders
read ``triggers.email``, ``triggers.sms`` and ``triggers.push`` in their own
consumer groups. Measured in each run, before / during / after the stall's
window:

* the pipeline's lag (all stages, all partitions), sampled every second;
* triggers written per second to each topic (the pipeline keeps deciding
  and sending to the topic nobody reads);
* the SMS sender's delay: its receipt time minus the trigger's timestamp.

The SMS delay grows over a run with nothing stopped (the broker holds more,
the profiles grow), so the stall window is judged against the same window
of the control, not against the start of the run. It passes if during the
stall the pipeline's peak lag and the SMS sender's p99 delay stay within the
bounds below of the control's, trigger rates do not drop, and after it the
e-mail sender receives every e-mail trigger.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from pipeline.broker.offset_gaps import OffsetGapGuard
from pipeline.broker.reader import count_records
from pipeline.contracts.catalogue import SchemaCatalogue
from pipeline.contracts.codec import AvroCodec
from pipeline.faults.crash import GROUP, PARTITIONS, wait_drained, workload_env
from pipeline.faults.lag import lags, stage_inputs
from pipeline.faults.scenario import Result
from pipeline.faults.substrate import fault_broker
from pipeline.faults.workers import WorkerProcess
from pipeline.faults.workload import DAY_MS, Workload, consents, web_events
from pipeline.simulate.publisher import publish
from pipeline.topology.catalogue import load_catalogue

#: during the stall, the pipeline's peak lag may be this many times the control's (plus the slack)
LAG_FACTOR, LAG_SLACK = 2.0, 2_000
#: during the stall, the SMS sender's p99 delay may be this many times the control's (plus the slack)
DELAY_FACTOR, DELAY_SLACK_MS = 2.0, 250
WINDOWS = ("before", "during", "after")
CHANNELS = ("EMAIL", "SMS", "PUSH")


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


def p99(values: list[float]) -> float:
    if not values:
        return 0.0
    return statistics.quantiles(values, n=100)[98] if len(values) >= 2 else values[0]


@dataclass
class Measured:
    """One run's figures by window, the windows counted in seconds from the start of the stream."""

    stalled: bool
    start_s: float  # the stall window: [start_s, end_s)
    end_s: float
    lag: list[tuple[float, int]] = field(default_factory=list)  # (s since start, total lag)
    received: dict[str, list[tuple[float, float]]] = field(default_factory=dict)  # ch -> (sent s, delay ms)
    written: dict[str, int] = field(default_factory=dict)
    jumps: int = 0

    def window(self, s: float) -> str:
        return "before" if s < self.start_s else "during" if s < self.end_s else "after"

    def peak_lag(self, window: str) -> int:
        return max((n for s, n in self.lag if self.window(s) == window), default=0)

    def delay_p99(self, channel: str, window: str) -> float:
        return p99([d for s, d in self.received[channel] if self.window(s) == window])

    def rate(self, channel: str, window: str) -> float:
        n = sum(1 for s, _d in self.received[channel] if self.window(s) == window)
        span = self.start_s if window == "before" else self.end_s - self.start_s
        return n / span if span > 0 else 0.0


def measure(out: Path, *, customers: int, rate: float, seconds: float, stall: float, seed: int,
            stalled: bool) -> Measured:
    """One run on its own broker; with ``stalled`` the e-mail sender stops reading during the window."""
    out.mkdir(parents=True, exist_ok=True)
    catalogue = load_catalogue().with_partitions(PARTITIONS)
    codec = AvroCodec(SchemaCatalogue.load(), max_record_size=4 * 1024 * 1024)
    work = Workload(customers, int(rate * seconds), seed, end_ms=int(time.time() * 1000) - DAY_MS)
    topics = {ch: catalogue.trigger_topic(ch).name for ch in CHANNELS}
    m = Measured(stalled, (seconds - stall) / 2, (seconds + stall) / 2)
    with fault_broker(out) as broker:
        servers = broker.bootstrap_servers
        client = {"bootstrap.servers": servers}
        broker.ensure_topics(catalogue)
        worker = WorkerProcess("slow-w1", workload_env(servers), out / "state-w1", out)
        senders = {ch: Sender(client, t) for ch, t in topics.items()}
        t0 = 0.0
        try:
            worker.start()
            worker.wait_up()
            publish(consents(work), encode=codec.encode, bootstrap_servers=servers, catalogue=catalogue)
            wait_drained(client, catalogue, [worker], timeout=600)
            for sender in senders.values():
                sender.start()
            for sender in senders.values():  # a first join is slow on this broker: not in the measures
                if not sender.ready.wait(120):
                    raise TimeoutError(f"sender {sender.topic} got no partitions in 120s")
            thread = threading.Thread(target=publish, args=(web_events(work),), kwargs={
                "encode": codec.encode, "bootstrap_servers": servers, "catalogue": catalogue, "rate": rate},
                name="faults-producer", daemon=True)
            groups = stage_inputs(catalogue, GROUP)
            t0 = time.time() * 1000
            thread.start()
            while thread.is_alive():
                at = (time.time() * 1000 - t0) / 1000
                if stalled and m.window(at) == "during":
                    senders["EMAIL"].paused.set()
                else:
                    senders["EMAIL"].paused.clear()
                worker.check_alive()
                m.lag.append((at, sum(lags(client, groups).values())))
                time.sleep(1.0)
            senders["EMAIL"].paused.clear()
            wait_drained(client, catalogue, [worker], timeout=600)
            time.sleep(3.0)  # the senders read the rest
        finally:
            for sender in senders.values():
                sender.halt.set()
            worker.stop()
        m.written = {ch: count_records(client, t, idle_s=1.0) for ch, t in topics.items()}
    m.received = {ch: [((ts - t0) / 1000, r - ts) for r, ts in sender.received]
                  for ch, sender in senders.items()}
    m.jumps = sum(len(sender.jumps) for sender in senders.values())
    return m


def _by_window(f: Any) -> str:
    return " / ".join(f"{f(w):,.0f}" for w in WINDOWS)


def run_slow_sender(out: Path, *, customers: int, rate: float, seconds: float, stall: float,
                    seed: int) -> Result:
    res = Result("slow-sender")
    def one(name: str, stalled: bool) -> Measured:
        return measure(out / name, customers=customers, rate=rate, seconds=seconds, stall=stall, seed=seed,
                       stalled=stalled)

    control, run = one("control", False), one("stalled", True)
    res.figures["runs"] = (f"{int(rate * seconds):,} web events at {rate:,.0f}/s over {customers:,} "
                           f"customers, twice on fresh brokers: a control, then the e-mail sender stopped "
                           f"reading from {run.start_s:.0f}s to {run.end_s:.0f}s ({stall:.0f}s)")
    for name, m in (("control", control), ("stalled", run)):
        res.figures[f"{name}: pipeline lag peak before / during / after"] = _by_window(m.peak_lag)
        res.figures[f"{name}: SMS delay p99 ms before / during / after"] = _by_window(
            lambda w, m=m: m.delay_p99("SMS", w))
        res.figures[f"{name}: e-mail / SMS triggers per second before / during"] = (
            f"{m.rate('EMAIL', 'before'):.1f} / {m.rate('SMS', 'before'):.1f}, "
            f"{m.rate('EMAIL', 'during'):.1f} / {m.rate('SMS', 'during'):.1f}")
    res.figures["senders: broker fetch jumps re-read (control, stalled)"] = f"{control.jumps}, {run.jumps}"
    lag_limit = LAG_FACTOR * control.peak_lag("during") + LAG_SLACK
    res.check(f"pipeline lag peak during the stall <= {LAG_FACTOR} x the control's + {LAG_SLACK} "
              f"({run.peak_lag('during'):,} <= {lag_limit:,.0f})", run.peak_lag("during") <= lag_limit)
    delay_limit = DELAY_FACTOR * control.delay_p99("SMS", "during") + DELAY_SLACK_MS
    res.check(f"SMS sender p99 delay during the stall <= {DELAY_FACTOR} x the control's "
              f"+ {DELAY_SLACK_MS} ms ({run.delay_p99('SMS', 'during'):,.0f} <= {delay_limit:,.0f})",
              run.delay_p99("SMS", "during") <= delay_limit)
    res.check("SMS triggers kept reaching their sender during the stall (>= half the control's rate)",
              run.rate("SMS", "during") >= 0.5 * control.rate("SMS", "during") > 0)
    res.check("e-mail triggers kept being written during the stall (>= half the control's rate)",
              run.rate("EMAIL", "during") >= 0.5 * control.rate("EMAIL", "during") > 0)
    res.check(f"after the stall the e-mail sender received every e-mail trigger "
              f"({len(run.received['EMAIL']):,} of {run.written['EMAIL']:,})",
              len(run.received["EMAIL"]) == run.written["EMAIL"] > 0)
    return res.finish()
