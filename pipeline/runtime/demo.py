"""``make demo``: embedded broker, one worker process and the simulator, with a live summary.

The summary is read from the worker's real Prometheus endpoint, so what the
demo shows is what an SRE's dashboard would show.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.broker.client_config import librdkafka_config
from pipeline.broker.reader import count_records
from pipeline.metrics.scrape import Scrape, scrape
from pipeline.runtime.cluster import cluster, load_topology, prepare_topics
from pipeline.runtime.schemas import build_codec
from pipeline.runtime.simulate_cmd import SimulationRun, start_simulation
from pipeline.settings import Settings
from pipeline.simulate.journeys import EXPECTED_EVENTS_PER_CUSTOMER
from pipeline.simulate.senders import SimulatedSenders
from pipeline.topology.catalogue import Role, TopicCatalogue

CHANNEL_COLUMNS = ("web", "app", "pos", "callcenter", "email", "push", "sms", "control")


#: the profile's name for events without a channel (consent changes, erasures on control.privacy)
CONTROL = "control"


@dataclass(frozen=True)
class ChannelEvents:
    """One channel of one customer: what the profile counted and where those events came from."""

    channel: str
    profile: int  # events the profile folded on this channel
    simulated: int  # events the simulator published for this person (the ground truth counts these)
    sender_reports: int  # reports the simulated senders sent back about this customer's triggers

    @property
    def unexplained(self) -> int:
        return self.profile - self.simulated - self.sender_reports


@dataclass(frozen=True)
class EventComparison:
    """A customer-360 event count set against the truth: profile = simulated + sender reports."""

    rows: tuple[ChannelEvents, ...]

    @property
    def profile(self) -> int:
        return sum(r.profile for r in self.rows)

    @property
    def simulated(self) -> int:
        return sum(r.simulated for r in self.rows)

    @property
    def sender_reports(self) -> int:
        return sum(r.sender_reports for r in self.rows)

    @property
    def unexplained(self) -> int:
        return sum(r.unexplained for r in self.rows)


def compare_events(profile: Mapping[str, Any], simulated: Mapping[str, int],
                   sender_reports: Mapping[str, int]) -> EventComparison:
    """Break a customer-360 body's ``events`` down by channel next to their two sources.

    ``simulated``: channel (``CONTROL`` for control.privacy) -> events the simulator published for
    the person; ``sender_reports``: channel -> reports the simulated senders produced for the
    person's triggers. The ground truth only knows the first; the profile counts both.
    """
    per_channel = {ch: int(stats["events"]) for ch, stats in profile["channels"].items()}
    per_channel[CONTROL] = int(profile["events"]) - sum(per_channel.values())
    channels = sorted(set(per_channel) | set(simulated) | set(sender_reports),
                      key=lambda c: (c == CONTROL, c))
    return EventComparison(tuple(
        ChannelEvents(ch, per_channel.get(ch, 0), simulated.get(ch, 0), sender_reports.get(ch, 0))
        for ch in channels
        if per_channel.get(ch, 0) or simulated.get(ch, 0) or sender_reports.get(ch, 0)
    ))


def format_event_comparison(cmp: EventComparison) -> str:
    """One line: the total as a sum of comparable parts, then per channel, then what is left over."""
    parts = ", ".join(
        f"{r.channel} {r.profile}={r.simulated}" + (f"+{r.sender_reports}" if r.sender_reports else "")
        + (f" ({r.unexplained:+d})" if r.unexplained else "")
        for r in cmp.rows)
    line = (f"{cmp.profile} events in the profile = {cmp.simulated} the simulator published (the truth "
            f"counts these) + {cmp.sender_reports} reports the simulated senders sent back about its "
            f"triggers (sent, delivered, opened...)")
    if cmp.unexplained:
        line += f", {cmp.unexplained:+d} unexplained"
    return f"{line}; by channel, profile=simulated+reports: {parts}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker_env(settings: Settings, port: int, metrics_port: int) -> dict[str, str]:
    env = dict(os.environ)
    assert settings.kafka_bootstrap_servers and settings.pii_hash_key
    env.update({
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "OMNIPIPE_PII_HASH_KEY": settings.pii_hash_key.get_secret_value(),
        "OMNIPIPE_LOCAL_BROKER": "1" if settings.local_broker else "0",
        "OMNIPIPE_BROKER_QUIRKS": settings.broker_quirks,  # Tansu's workarounds only on Tansu
        "OMNIPIPE_WEB_PORT": str(port),
        "OMNIPIPE_METRICS_PORT": str(metrics_port),
        "OMNIPIPE_DATA_DIR": str(settings.data_dir),
        "OMNIPIPE_LOG_LEVEL": "WARNING",
        "OMNIPIPE_NBA_CLOCK": "event",  # the simulation replays history: decide at its time, not today's
    })
    return env


def _embedded_label(resolved: Settings) -> str:
    return " (embedded Tansu, memory)" if resolved.tansu else " (embedded Apache Kafka)"


def _wait_metrics(url: str, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> Scrape:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"worker exited with code {proc.returncode} during start-up")
        with contextlib.suppress(OSError):
            return scrape(url)
        time.sleep(0.25)
    raise RuntimeError(f"worker metrics did not come up at {url} within {timeout:.0f}s")


def _row(prev: Scrape, cur: Scrape, dt: float, elapsed: float) -> str:
    before = prev.by_label("omnipipe_ingest_events_in_total", "channel")
    now = cur.by_label("omnipipe_ingest_events_in_total", "channel")
    rates = [(now.get(c, 0) - before.get(c, 0)) / dt for c in CHANNEL_COLUMNS]
    total = sum(rates)
    accepted = cur.value("omnipipe_ingest_events_accepted_total")
    dlq = cur.value("omnipipe_dlq_records_total")
    cells = " ".join(f"{r:>6.0f}" for r in rates)
    resolved = cur.value("omnipipe_identity_resolved_events_total")
    merges = cur.value("omnipipe_identity_merges_total")
    refused = cur.value("omnipipe_identity_refused_links_total")
    return (f"{elapsed:>5.0f}s {total:>7.0f} | {cells} | {accepted:>9.0f} {dlq:>6.0f} | "
            f"{resolved:>9.0f} {merges:>7.0f} {refused:>7.0f}")


def _drain(url: str, timeout: float = 60.0) -> Scrape:
    """Wait until identity has taken every accepted event and its output stopped moving."""
    deadline = time.monotonic() + timeout
    time.sleep(1.0)
    last = scrape(url)
    while time.monotonic() < deadline:
        time.sleep(1.0)
        cur = scrape(url)
        settled = all(cur.value(m) == last.value(m) for m in (
            "omnipipe_ingest_events_in_total", "omnipipe_identity_resolved_events_total",
            "omnipipe_identity_changelog_records_total", "omnipipe_profile_folds_total",
            "omnipipe_profile_changelog_records_total"))
        if settled and cur.value("omnipipe_identity_events_total") >= cur.value(
                "omnipipe_ingest_events_accepted_total"):
            return cur
        last = cur
    print(f"  (identity still busy after {timeout:.0f}s; figures below are partial)")
    return last


def _print_evaluation(settings: Settings, catalogue: TopicCatalogue, truth: Path) -> None:
    """Pairwise precision/recall of the live grouping against the simulator's ground truth."""
    from pipeline.identity.grouping import evaluate_identity

    ev = evaluate_identity(settings, catalogue, truth)
    score = ev.all
    print(f"  identity vs ground truth: precision {score.precision:.4f}, recall {score.recall:.4f} "
          f"({score.correct_pairs:,} of {score.true_pairs:,} true pairs, {score.false_pairs:,} false pairs, "
          f"{score.false_merge_profiles} profiles with a false merge)")
    det = ev.deterministic
    print(f"  on deterministic links (no shared device or cookie): precision {det.precision:.4f}, "
          f"recall {det.recall:.4f}")


def _print_profiles(final: Scrape, base_url: str, truth: Path, catalogue: TopicCatalogue,
                    reports_by_customer: Mapping[str, Mapping[str, int]],
                    tokens: Sequence[bytes] = ()) -> None:
    """The profile stage's figures, and one customer read back through the customer-360 API."""
    import json
    import urllib.request

    from pipeline.simulate.truth import load_truth

    profiles = final.value("omnipipe_profile_profiles")
    stored = final.value("omnipipe_profile_stored_bytes")
    anomalies = final.by_label("omnipipe_profile_fold_anomalies_total", "outcome")
    listed = ", ".join(f"{k}={v:.0f}" for k, v in sorted(anomalies.items()) if v)
    print(f"  profiles: {profiles:.0f} live, {stored / max(profiles, 1):.0f} bytes each stored (before "
          f"RocksDB compression); {final.value('omnipipe_profile_folds_total'):.0f} folds, "
          f"{final.value('omnipipe_profile_merges_folded_total'):.0f} merges folded, "
          f"{final.value('omnipipe_profile_consent_changes_total'):.0f} consent changes, "
          f"{final.value('omnipipe_profile_erasures_completed_total'):.0f} erasures; "
          f"not applied as sent: {listed or 'none'}")
    people = [p for p in load_truth(truth).persons.values()
              if p.identifiers.get("customer_id") and not p.erased_at_ms and p.purchases]
    if not people:
        return
    # someone sharing no device with the family: all their events and only theirs are in one profile
    person = max(people, key=lambda p: (not p.shared, p.total_events))
    ref = f"cust:{person.identifiers['customer_id'][0]}"
    try:
        request = urllib.request.Request(f"{base_url}/profiles/{ref}")
        if tokens:  # OMNIPIPE_API_TOKENS is set: the API wants one of them
            request.add_header("Authorization", f"Bearer {tokens[0].decode()}")
        with urllib.request.urlopen(request, timeout=10) as resp:
            body = json.load(resp)
    except OSError as exc:
        print(f"  customer-360 {ref}: {exc}")
        return
    bought = body["purchases"]
    print(f"  customer-360 GET /profiles/{ref}: {bought['online'] + bought['store']} purchases (the truth: "
          f"{person.purchases}), preferred channel {body['preferred_channel']}, "
          f"{len(body['consent'])} consent records")
    simulated = {catalogue[topic_key].channel or CONTROL: n for topic_key, n in person.events.items()}
    reports = reports_by_customer.get(person.identifiers["customer_id"][0], {})
    print("    " + format_event_comparison(compare_events(body, simulated, reports)))


def _print_triggers(final: Scrape, counts: dict[str, int], wall_clock: bool = False) -> None:
    """Next-best-action: triggers by action and channel, why the others sent nothing, outcomes, latency."""
    triggers: dict[tuple[str, str], float] = {}
    for labels, v in final.samples.get("omnipipe_nba_triggers_total", {}).items():
        d = dict(labels)
        if v:
            triggers[(d["action"], d["channel"])] = v
    decisions = final.by_label("omnipipe_nba_decisions_total", "outcome")
    print(f"  next-best-action: {sum(decisions.values()):.0f} decisions ("
          + ", ".join(f"{k}={v:.0f}" for k, v in sorted(decisions.items())) + f"), "
          f"{final.value('omnipipe_nba_timers_fired_total'):.0f} timers fired")
    channels = sorted({c for _a, c in triggers})
    print(f"    {'triggers':<22}" + "".join(f"{c:>8}" for c in channels))
    for action in sorted({a for a, _c in triggers}):
        print(f"    {action:<22}" + "".join(f"{triggers.get((action, c), 0):>8.0f}" for c in channels))
    suppressed = final.by_label("omnipipe_nba_suppressions_total", "reason")
    print("    suppressed by reason: " + ", ".join(f"{r}={v:.0f}" for r, v in sorted(suppressed.items(),
                                                                                    key=lambda kv: -kv[1])))
    deferred = final.by_label("omnipipe_nba_quiet_hours_deferred_total", "channel")
    cancelled = final.by_label("omnipipe_nba_cancellations_total", "cause")
    moved = ", ".join(f"{c}={v:.0f}" for c, v in sorted(deferred.items())) or "none"
    withdrawn = ", ".join(f"{c}={v:.0f}" for c, v in sorted(cancelled.items())) or "none"
    print(f"    quiet hours moved send_after: {moved}; withdrawn: {withdrawn}")
    outcomes = final.by_label("omnipipe_nba_outcomes_total", "outcome")
    print("    sender reports linked to their trigger: "
          + (", ".join(f"{o}={v:.0f}" for o, v in sorted(outcomes.items()) if v) or "none"))
    recorded = final.by_label("omnipipe_nba_decisions_recorded_total", "group")
    converted = final.by_label("omnipipe_nba_conversions_total", "group")
    print("    attribution: " + ", ".join(
        f"{g} {converted.get(g, 0):.0f}/{recorded.get(g, 0):.0f} converted" for g in ("treated", "holdout")))
    for occasion in ("event", "timer") if wall_clock else ():
        p50 = final.quantile("omnipipe_nba_event_to_trigger_seconds", 0.5, occasion=occasion)
        p99 = final.quantile("omnipipe_nba_event_to_trigger_seconds", 0.99, occasion=occasion)
        if p50 is not None and p99 is not None:
            print(f"    {occasion} to trigger: p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms")
    print("  on the broker: " + ", ".join(f"{name}={n}" for name, n in sorted(counts.items())))


def run_demo(settings: Settings, args: argparse.Namespace) -> int:
    catalogue = load_topology(settings)
    stop = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda *_: stop.set())
    log_dir = Path(settings.data_dir) / "demo"
    log_dir.mkdir(parents=True, exist_ok=True)
    try:
        with cluster(settings, log_dir=log_dir) as resolved:
            prepare_topics(resolved, catalogue)
            port, metrics_port = _free_port(), _free_port()
            api, url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{metrics_port}/metrics"
            worker_log = open(log_dir / "worker.log", "wb")  # noqa: SIM115 - closed below
            worker = subprocess.Popen(
                [sys.executable, "-m", "pipeline", "worker"],
                env=_worker_env(resolved, port, metrics_port),
                stdout=worker_log, stderr=subprocess.STDOUT,
            )
            try:
                print(f"omnipipe demo: broker {resolved.kafka_bootstrap_servers}"
                      f"{_embedded_label(resolved) if settings.embedded else ''}")
                print(f"  worker pid {worker.pid}, metrics at {url}, log {log_dir / 'worker.log'}")
                _wait_metrics(url, worker)
                # enough customers to keep the simulator busy for the whole run
                customers = args.customers or max(
                    100, int(args.rate * args.seconds / EXPECTED_EVENTS_PER_CUSTOMER)
                )
                sim: SimulationRun = start_simulation(
                    resolved, catalogue, customers=customers, seed=1, rate=args.rate,
                    duration=args.seconds, bad=args.bad, truth=log_dir / "truth.jsonl", stop=stop,
                )
                codec = build_codec(resolved)
                senders_stop = threading.Event()  # the senders answer until the pipeline has drained
                senders = SimulatedSenders(librdkafka_config(resolved), catalogue, codec.decode, codec.encode,
                                           senders_stop)
                senders.thread.start()
                print(f"  simulator: {customers} customers at {args.rate:.0f} events/s, "
                      f"{args.bad} malformed records injected; Ctrl-C stops")
                header = " ".join(f"{c[:6]:>6}" for c in CHANNEL_COLUMNS)
                print(f"\n  time   in/s  | {header} |  accepted    dlq |  resolved  merges refused")
                started = time.monotonic()
                prev = scrape(url)
                prev_t = started
                while not stop.is_set() and time.monotonic() - started < args.seconds:
                    stop.wait(2.0)
                    if sim.errors:
                        raise sim.errors[0]
                    if worker.poll() is not None:
                        print(f"worker exited unexpectedly with code {worker.returncode}")
                        return 1
                    cur = scrape(url)
                    now = time.monotonic()
                    print(_row(prev, cur, now - prev_t, now - started), flush=True)
                    prev, prev_t = cur, now
                stop.set()
                published = sim.join()
                _drain(url)
                time.sleep(2.0)  # the senders read the last triggers
                senders_stop.set()
                senders.thread.join(10)
                final = _drain(url)  # and their reports went through
                client = librdkafka_config(resolved)
                print("\nsummary")
                print(f"  published: {published.events} events + {published.bad} malformed records")
                print(f"  ingest consumed {final.value('omnipipe_ingest_events_in_total'):.0f}, "
                      f"accepted {final.value('omnipipe_ingest_events_accepted_total'):.0f}")
                reasons = final.by_label("omnipipe_dlq_records_total", "reason")
                listed = ", ".join(f"{r}={v:.0f}" for r, v in sorted(reasons.items()) if v)
                print(f"  dead letters: {sum(reasons.values()):.0f} ({listed or 'none'})")
                print(f"  on the broker: {catalogue['canonical'].name}="
                      f"{count_records(client, catalogue['canonical'].name, idle_s=1.0)}, "
                      f"{catalogue['dlq'].name}={count_records(client, catalogue['dlq'].name, idle_s=1.0)}")
                refusals = final.by_label("omnipipe_identity_refused_links_total", "reason")
                listed = ", ".join(f"{r}={v:.0f}" for r, v in sorted(refusals.items()) if v)
                # absorbed=identifier: an identifier that came with a stronger one; profile: a history moved
                merged = ", ".join(f"absorbed {k}={v:.0f}" for k, v in sorted(
                    final.by_label("omnipipe_identity_merges_total", "absorbed").items()))
                print(f"  identity: {final.value('omnipipe_identity_events_total'):.0f} events in, "
                      f"{final.value('omnipipe_identity_resolved_events_total'):.0f} resolved, "
                      f"{final.value('omnipipe_identity_links_total'):.0f} links, "
                      f"{final.value('omnipipe_identity_merges_total'):.0f} merges ({merged}), "
                      f"refused {sum(refusals.values()):.0f} ({listed or 'none'}), "
                      f"{final.value('omnipipe_identity_forwarding_hops_total'):.0f} forwarding hops")
                records = final.by_label("omnipipe_identity_records", "space")
                print("  identity tables: " + ", ".join(f"{s}={v:.0f}" for s, v in sorted(records.items())))
                for key in ("resolved", "identity_merges"):
                    name = catalogue[key].name
                    print(f"  on the broker: {name}={count_records(client, name, idle_s=1.0)}")
                _print_evaluation(resolved, catalogue, log_dir / "truth.jsonl")
                _print_profiles(final, api, log_dir / "truth.jsonl", catalogue,
                                senders.stats.reports_by_customer, resolved.api_token_values())
                _print_triggers(final, {t.name: count_records(client, t.name, idle_s=1.0)
                                        for t in catalogue.by_role(Role.OUTPUT)})
                st = senders.stats
                print(f"  simulated senders: {st.sent} triggers sent ({st.withdrawn} withdrawn before "
                      f"sending, {st.repeats} repeats dropped by key, {st.no_customer} without a customer id "
                      f"skipped), {st.reports} reports back with the trigger key")
                print(f"  ground truth written to {log_dir / 'truth.jsonl'}")
            finally:
                if worker.poll() is None:
                    worker.send_signal(signal.SIGTERM)
                    try:
                        worker.wait(timeout=20)
                    except subprocess.TimeoutExpired:
                        worker.kill()
                        worker.wait()
                worker_log.close()
        print("stopped cleanly: worker and broker are down")
        return 0
    finally:
        signal.signal(signal.SIGINT, previous)
