"""Scenario: SIGSTOP one of two workers past its session timeout; it must be fenced when it wakes.

Two workers, the workload of ``workload.py`` at a fixed rate. A third of the
way into the stream, worker 1 is stopped with SIGSTOP. The scenario waits
until every stage's consumer group has given all its partitions to worker 2
(the session timeout ran out), lets worker 2 work on them a few seconds, takes
the end offset of every watched topic (the changelogs, ``events.resolved``,
the trigger topics) and sends SIGCONT. Worker 1 wakes up with the batch it
was holding and its producer's queue; it may write before it learns it has
lost its partitions and rejoins. Everything is read back with
``isolation.level=read_committed``.

What counts as the paused worker's write, appended after SIGCONT (at or past
the offsets taken while it was stopped, so while its partitions were
elsewhere) and before the group gave it partitions again:

* on a changelog: a record whose commit header (``<writer>:<seq>``) names one
  of the paused worker's stage runs. Those are the writers with a completion
  mark in the 30 s before SIGSTOP and none while it was stopped (a stopped
  process writes nothing, the other worker commits all along);
* on any watched topic: a record created (producer timestamp) before SIGSTOP:
  only the stopped process can append one that old after it was woken.

A record of the paused worker created between the last look at the groups
without its new assignment and the first with one cannot be placed on either
side: it is counted as ambiguous, not as a leak. Records without a writer
header created after SIGCONT and before the re-assignment could be either
worker's: their count is reported, not judged (``events.resolved`` and the
triggers carry no writer id today).

The check "nothing leaked" must hold, and so must every ``crash`` check.
Today's commit protocol (completion marks) does not fence a paused worker, so
this scenario is expected to FAIL until the stages write with Kafka
transactions; it then reports what leaked and where.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from pipeline.broker.watermarks import fetched_highwaters
from pipeline.contracts.catalogue import SchemaCatalogue
from pipeline.contracts.codec import AvroCodec
from pipeline.faults.crash import GROUP, PARTITIONS, start_all, verify, wait_drained, workload_env
from pipeline.faults.lag import lags, stage_inputs
from pipeline.faults.scenario import Result
from pipeline.faults.substrate import fault_broker, quirks
from pipeline.faults.workers import WorkerProcess
from pipeline.faults.workload import DAY_MS, Workload, consents, web_events
from pipeline.simulate.publisher import publish
from pipeline.state.changelog import COMMIT_HEADER, read_done_commits
from pipeline.topology.catalogue import TopicCatalogue, load_catalogue

#: how long before SIGSTOP a writer's completion marks make it one of the paused worker's
ACTIVE_BEFORE_MS = 30_000

TopicPartitionKey = tuple[str, int]


@dataclass(frozen=True)
class Write:
    """One record on a watched topic, as read back."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int  # the producer's CreateTime
    writer: str | None = None  # the changelog commit header's stage run, None on other topics
    seq: int | None = None  # and its commit number


@dataclass(frozen=True)
class Window:
    """When the paused worker held nothing in one stage (wall-clock ms)."""

    stopped_ms: int  # SIGSTOP
    resumed_ms: int  # SIGCONT
    rejoin_after_ms: int  # the last look at the group with no new assignment for it
    rejoin_by_ms: int  # the first look with one


@dataclass
class Leaks:
    leaked: list[Write] = field(default_factory=list)  # the paused worker's, while it held nothing
    ambiguous: list[Write] = field(default_factory=list)  # the paused worker's, around its re-assignment
    unattributed: list[Write] = field(default_factory=list)  # either worker's, the paused one a zombie

    def by_topic(self, which: str = "leaked") -> dict[str, int]:
        return dict(sorted(Counter(w.topic for w in getattr(self, which)).items()))

    def where(self) -> str:
        """The leaked records per topic and partition, with their offset ranges."""
        spans: dict[tuple[str, int], list[int]] = {}
        for w in self.leaked:
            spans.setdefault((w.topic, w.partition), []).append(w.offset)
        return "; ".join(f"{t}[{p}] {len(o)} at {min(o)}..{max(o)}" for (t, p), o in sorted(spans.items()))


def parse_commit_header(
        headers: Iterable[tuple[str, Any]] | Mapping[str, Any] | None) -> tuple[str | None, int | None]:
    """(writer, seq) of a changelog record's ``omnipipe.commit`` header; (None, None) without one."""
    pairs = headers.items() if isinstance(headers, Mapping) else headers or ()
    for name, value in pairs:
        if name == COMMIT_HEADER and isinstance(value, bytes):
            writer, _, seq = value.decode().rpartition(":")
            return writer, int(seq)
    return None, None


def paused_writers(marks: Iterable[tuple[str, int]], stopped_ms: int, resumed_ms: int,
                   before_ms: int = ACTIVE_BEFORE_MS) -> set[str]:
    """Stage runs that wrote a completion mark shortly before SIGSTOP and none while the worker was stopped.

    ``marks``: (writer, producer timestamp) of every mark on a commits topic."""
    before: set[str] = set()
    during: set[str] = set()
    for writer, ts in marks:
        if stopped_ms - before_ms <= ts < stopped_ms:
            before.add(writer)
        elif stopped_ms <= ts < resumed_ms:
            during.add(writer)
    return before - during


def classify(writes: Iterable[Write], resumed_at: Mapping[TopicPartitionKey, int], paused: set[str],
             window: Window) -> Leaks:
    """Sort the records appended after SIGCONT (offset >= ``resumed_at``, the end offsets taken while the
    worker was stopped) into the paused worker's leaks, ambiguous ones and unattributed ones."""
    out = Leaks()
    for w in writes:
        if w.offset < resumed_at.get((w.topic, w.partition), 0):
            continue  # on the topic before SIGCONT: not the woken worker's doing
        stale = w.timestamp_ms < window.stopped_ms  # created before SIGSTOP, appended after SIGCONT
        if w.writer is not None and w.writer not in paused:
            continue  # a changelog record of another stage run
        if w.writer is not None or stale:
            if stale or w.timestamp_ms <= window.rejoin_after_ms:
                out.leaked.append(w)
            elif w.timestamp_ms <= window.rejoin_by_ms:
                out.ambiguous.append(w)
        elif w.timestamp_ms <= window.rejoin_after_ms:
            out.unattributed.append(w)
    return out


# --------------------------------------------------------------------------- the broker side

def end_offsets(client: Mapping[str, Any], topics: Iterable[str]) -> dict[TopicPartitionKey, int]:
    probe = Consumer({**client, "group.id": f"omnipipe-pause-{uuid.uuid4().hex[:8]}",
                      "enable.auto.commit": False, "isolation.level": "read_committed"})
    try:
        ends: dict[TopicPartitionKey, int] = {}
        for topic in topics:
            for p in probe.list_topics(topic, timeout=10).topics[topic].partitions:
                ends[(topic, p)] = probe.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
    finally:
        probe.close()
    return fetched_highwaters(client, ends) if quirks() == "tansu" else ends


def read_writes(client: Mapping[str, Any], topic: str, timeout_s: float = 600.0) -> list[Write]:
    """Every committed record of ``topic`` up to its end now, with its timestamp and commit header."""
    ends = {p: o for (_t, p), o in end_offsets(client, [topic]).items()}
    c = Consumer({**client, "group.id": f"omnipipe-pause-{uuid.uuid4().hex[:8]}", "enable.auto.commit": False,
                  "isolation.level": "read_committed", "auto.offset.reset": "earliest"})
    out: list[Write] = []
    try:
        todo = {p for p, end in ends.items() if end > 0}
        c.assign([TopicPartition(topic, p, 0) for p in sorted(todo)])
        deadline = time.monotonic() + timeout_s
        while todo and time.monotonic() < deadline:
            for msg in c.consume(num_messages=5000, timeout=0.5):
                if msg.error() is not None:
                    continue
                p: int = msg.partition()  # type: ignore[assignment]
                off: int = msg.offset()  # type: ignore[assignment]
                writer, seq = parse_commit_header(msg.headers())
                out.append(Write(topic, p, off, msg.timestamp()[1], writer, seq))
                if off + 1 >= ends[p]:
                    todo.discard(p)
            # read_committed may end short of the end offset (an aborted or open transaction's markers)
            for tp in c.position([TopicPartition(topic, p) for p in list(todo)]):
                if tp.offset >= ends[tp.partition]:
                    todo.discard(tp.partition)
        if todo:
            raise TimeoutError(f"reading {topic} did not reach its end within {timeout_s:.0f}s")
    finally:
        c.close()
    return out


def read_marks(client: Mapping[str, Any], topic: str) -> list[tuple[str, int]]:
    """(writer, producer timestamp) of every completion mark on a commits topic."""
    c = Consumer({**client, "group.id": f"omnipipe-pause-{uuid.uuid4().hex[:8]}", "enable.auto.commit": False,
                  "isolation.level": "read_committed"})
    ends = {p: o for (_t, p), o in end_offsets(client, [topic]).items()}
    marks: list[tuple[str, int]] = []
    try:
        todo = {p for p, end in ends.items() if end > 0}
        c.assign([TopicPartition(topic, p, 0) for p in sorted(todo)])
        deadline = time.monotonic() + 300
        while todo and time.monotonic() < deadline:
            for msg in c.consume(num_messages=5000, timeout=0.5):
                if msg.error() is not None:
                    continue
                key = msg.key()
                if key is not None:
                    marks.append((key.decode(), msg.timestamp()[1]))
                if msg.offset() + 1 >= ends[msg.partition()]:  # type: ignore[operator,index]
                    todo.discard(msg.partition())  # type: ignore[arg-type]
            for tp in c.position([TopicPartition(topic, p) for p in list(todo)]):
                if tp.offset >= ends[tp.partition]:
                    todo.discard(tp.partition)
    finally:
        c.close()
    return marks


@dataclass(frozen=True)
class GroupView:
    state: str
    members: dict[str, int]  # member id -> partitions assigned


def group_views(admin: AdminClient, groups: list[str]) -> dict[str, GroupView]:
    futures = admin.describe_consumer_groups(groups, request_timeout=5)
    out: dict[str, GroupView] = {}
    for g, fut in futures.items():
        d = fut.result()
        out[g] = GroupView(str(d.state).rsplit(".", 1)[-1],
                           {m.member_id: len(m.assignment.topic_partitions) if m.assignment else 0
                            for m in d.members})
    return out


def wait_takeover(admin: AdminClient, groups: list[str], workers: list[WorkerProcess],
                  timeout: float) -> dict[str, str]:
    """Until each group is stable with one member holding partitions: that member (the other worker's)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for w in workers:
            w.check_alive()
        try:
            views = group_views(admin, groups)
        except Exception:  # the coordinator moving: ask again
            views = {}
        alone = {g: next(iter(v.members)) for g, v in views.items()
                 if v.state == "STABLE" and len(v.members) == 1 and next(iter(v.members.values())) > 0}
        if len(alone) == len(groups):
            return alone
        time.sleep(0.2)
    raise TimeoutError(f"the stopped worker's partitions did not move within {timeout:.0f}s")


def watch_rejoin(admin: AdminClient, groups: list[str], survivors: Mapping[str, str],
                 timeout: float) -> dict[str, tuple[int, int]]:
    """Per group, (last look without, first look with) a member other than the survivor holding
    partitions, in wall-clock ms: the woken worker's re-assignment lies between."""
    found: dict[str, tuple[int, int]] = {}
    last_without = {g: int(time.time() * 1000) for g in groups}
    deadline = time.monotonic() + timeout
    while len(found) < len(groups) and time.monotonic() < deadline:
        asked = int(time.time() * 1000)
        try:
            views = group_views(admin, [g for g in groups if g not in found])
        except Exception:
            time.sleep(0.05)
            continue
        for g, v in views.items():
            if any(m != survivors[g] and n > 0 for m, n in v.members.items()):
                found[g] = (last_without[g], int(time.time() * 1000))
            else:
                last_without[g] = asked
        time.sleep(0.05)
    for g in groups:  # never rejoined within the time: everything it wrote until now is after the loss
        found.setdefault(g, (int(time.time() * 1000), int(time.time() * 1000)))
    return found


def watched_topics(catalogue: TopicCatalogue) -> dict[str, list[str]]:
    """Stage -> the topics it writes that must not carry a fenced worker's records."""
    return {
        "identity": [catalogue["identity_changelog"].name, catalogue["resolved"].name],
        "profile": [catalogue["profile_changelog"].name,
                    *(catalogue.trigger_topic(ch).name for ch in ("EMAIL", "PUSH", "SMS"))],
    }


def run_pause(out: Path, *, customers: int, events: int, rate: float, seed: int) -> Result:
    res = Result("pause")
    out.mkdir(parents=True, exist_ok=True)
    catalogue = load_catalogue().with_partitions(PARTITIONS)
    codec = AvroCodec(SchemaCatalogue.load(), max_record_size=4 * 1024 * 1024)
    work = Workload(customers, events, seed, end_ms=int(time.time() * 1000) - DAY_MS)
    stages = watched_topics(catalogue)
    groups = {stage: f"{GROUP}-{stage}" for stage in ("ingest", "identity", "profile")}
    with fault_broker(out) as broker:
        client = broker.client
        broker.ensure_topics(catalogue)
        admin = AdminClient({**client, "log_level": 0})
        env = workload_env(broker.bootstrap_servers)
        workers = [WorkerProcess(f"pause-w{i}", env, out / f"state-w{i}", out) for i in (1, 2)]
        paused, other = workers
        try:
            start_all(workers)
            phase1 = consents(work)
            publish(phase1, encode=codec.encode, bootstrap_servers=broker.bootstrap_servers,
                    catalogue=catalogue)
            wait_drained(client, catalogue, workers, timeout=600)
            stream = web_events(work)
            thread = threading.Thread(target=publish, args=(stream,), kwargs={
                "encode": codec.encode, "bootstrap_servers": broker.bootstrap_servers, "catalogue": catalogue,
                "rate": rate}, name="faults-producer", daemon=True)
            t0 = time.monotonic()
            thread.start()
            time.sleep(len(stream) / rate / 3)
            for w in workers:
                w.check_alive()
            assert paused.proc is not None
            stopped_ms, stop_at = int(time.time() * 1000), time.monotonic() - t0
            os.kill(paused.proc.pid, signal.SIGSTOP)
            try:
                survivors = wait_takeover(admin, list(groups.values()), [other], timeout=120)
                took_s = time.time() - stopped_ms / 1000
                time.sleep(3.0)  # the other worker writes on the partitions it took
                resumed_at = end_offsets(client, [t for ts in stages.values() for t in ts])
            finally:
                resumed_ms = int(time.time() * 1000)
                os.kill(paused.proc.pid, signal.SIGCONT)
            rejoined = watch_rejoin(admin, list(groups.values()), survivors, timeout=120)
            thread.join()
            drain = wait_drained(client, catalogue, workers, timeout=900)
            behind = {k: v for k, v in lags(client, stage_inputs(catalogue, GROUP)).items() if v}
        finally:
            for w in workers:
                w.stop()
        pause_s = (resumed_ms - stopped_ms) / 1000
        res.figures["run"] = (f"{len(phase1):,} consents, then {len(stream):,} web events over {customers:,} "
                              f"customers at {rate:,.0f}/s; {paused.name} stopped at {stop_at:.0f}s for "
                              f"{pause_s:.1f}s; drained {drain:.0f}s after the last publish")
        res.figures["takeover"] = (f"every stage's partitions with {other.name} {took_s:.1f}s after SIGSTOP; "
                                   f"{paused.name} assigned again "
                                   + ", ".join(f"{g.rsplit('-', 1)[1]} {(b - resumed_ms) / 1000:.1f}s"
                                               for g, (_a, b) in rejoined.items()) + " after SIGCONT")
        res.check("stopped past the session timeout: every stage's partitions moved to the other worker",
                  len(survivors) == len(groups))
        res.check(f"every partition of every stage at lag 0 ({len(behind)} behind)", not behind)
        leaks = Leaks()
        runs: dict[str, set[str]] = {}
        complete = 0
        for stage, topics in stages.items():
            commits = catalogue[f"{stage}_commits"].name
            runs[stage] = paused_writers(read_marks(client, commits), stopped_ms, resumed_ms)
            after, by = rejoined[groups[stage]]
            window = Window(stopped_ms, resumed_ms, after, by)
            writes = [w for t in topics for w in read_writes(client, t)]
            found = classify(writes, resumed_at, runs[stage], window)
            leaks.leaked += found.leaked
            leaks.ambiguous += found.ambiguous
            leaks.unattributed += found.unattributed
            done = read_done_commits(client, commits)
            complete += sum(1 for w in found.leaked
                            if w.writer is not None and w.seq is not None and w.seq <= done.get(w.writer, -1))
        res.check("the paused worker's stage runs found on the changelogs (one per stage: "
                  + ", ".join(f"{s} {len(r)}" for s, r in runs.items()) + ")",
                  all(len(r) == 1 for r in runs.values()))
        log = paused.log_path.read_text(errors="replace")
        res.figures["paused worker's writes after it lost its partitions"] = (
            f"{len(leaks.leaked):,} records {leaks.by_topic()}; {complete:,} of them changelog records of "
            f"commits with a completion mark (a restore applies them); {len(leaks.ambiguous):,} more around "
            f"its re-assignment {leaks.by_topic('ambiguous')}")
        if leaks.leaked:
            res.figures["where they are"] = leaks.where()
        res.figures["records without a writer id between SIGCONT and the re-assignment (either worker)"] = (
            f"{len(leaks.unattributed):,} {leaks.by_topic('unattributed')}")
        res.figures["paused worker's log"] = (f"{log.count('offset commit failed'):,} offset commits refused "
                                              f"(records since its last commit re-read by the new owner)")
        res.check(f"nothing the paused worker wrote after it lost its partitions is visible "
                  f"(read_committed; leaked: {len(leaks.leaked):,})", not leaks.leaked)
        for rec in sorted(leaks.leaked, key=lambda r: (r.topic, r.partition, r.offset))[:3]:
            res.notes.append(f"leaked: {rec.topic}[{rec.partition}]@{rec.offset} created "
                             f"{(rec.timestamp_ms - resumed_ms) / 1000:+.2f}s from SIGCONT"
                             + (f", commit {rec.writer}:{rec.seq}" if rec.writer else ""))
        verify(res, client, catalogue, codec, published=len(phase1) + len(stream))
    return res.finish()
