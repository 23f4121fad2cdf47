"""``omnipipe faults``: run the chosen scenarios, print one PASS/FAIL block each, exit 1 on any failure."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

from pipeline.faults import substrate
from pipeline.faults.scenario import Result
from pipeline.faults.workers import fetch_jumps, kill_leftovers

SCENARIOS = ("crash", "poison", "rebuild", "scale", "erasure", "slow-sender", "broker-bounce", "pause")
#: scenarios that need brokers to kill and restart on their own storage: not the in-memory Tansu
KAFKA_ONLY = ("broker-bounce",)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--broker", choices=substrate.BROKERS, default="kafka",
                   help="kafka: 3 Apache Kafka brokers (RF 3, min.insync.replicas 2); tansu: embedded Tansu")
    p.add_argument("--only", default=None, help=f"comma-separated subset of {SCENARIOS} (default: all "
                                                f"the broker can run)")
    p.add_argument("--out", type=Path, default=Path("var/faults"), help="state, logs and broker log")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--customers", type=int, default=20_000)
    p.add_argument("--events", type=int, default=200_000, help="crash: web events (consents on top)")
    p.add_argument("--kills", type=int, default=10, help="crash: kill -9 this many times")
    p.add_argument("--rate", type=float, default=2_000.0, help="crash: offered events/s")
    p.add_argument("--poison-events", type=int, default=1_000_000, help="poison: good events, roughly")
    p.add_argument("--rebuild-events", type=int, default=300_000, help="rebuild: simulated events, roughly")
    p.add_argument("--stall", type=float, default=120.0, help="slow-sender: seconds the e-mail sender stops")
    p.add_argument("--bad-ratio", type=float, default=0.01, help="poison: share of malformed records")
    p.add_argument("--bounces", type=int, default=5, help="broker-bounce: kill -9 the leading broker, times")
    p.add_argument("--bounce-rate", type=float, default=400.0,
                   help="broker-bounce: offered events/s, so that the stream outlasts the restarts")
    p.add_argument("--pause-events", type=int, default=100_000, help="pause: web events (consents on top)")


def chosen_scenarios(only: str | None, broker: str) -> list[str]:
    """The scenarios to run: ``--only``'s, else every one the broker can run; one line if not possible."""
    if only is None:
        return [s for s in SCENARIOS if broker == "kafka" or s not in KAFKA_ONLY]
    chosen = [s.strip() for s in only.split(",") if s.strip()]
    unknown = sorted(set(chosen) - set(SCENARIOS))
    if unknown:
        raise SystemExit(f"omnipipe faults: unknown scenario(s) {unknown}; known: {list(SCENARIOS)}")
    refused = [s for s in chosen if broker != "kafka" and s in KAFKA_ONLY]
    if refused:
        raise SystemExit(f"omnipipe faults: {refused} need(s) --broker kafka (brokers restarted on their "
                         f"storage; Tansu keeps everything in memory)")
    return chosen


def run_suite(args: argparse.Namespace) -> int:
    chosen = chosen_scenarios(args.only, args.broker)
    reason = substrate.unavailable_reason(args.broker)
    if reason is not None:
        raise SystemExit(f"omnipipe faults: {reason}")
    substrate.use(args.broker)
    where = "Apache Kafka, 3 brokers" if args.broker == "kafka" else "Tansu"
    print(f"faults on {where}: {', '.join(chosen)}", flush=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    runners: dict[str, Callable[[Path], Result]] = {
        "crash": lambda out: _crash(out, args),
        "poison": lambda out: _poison(out, args),
        "rebuild": lambda out: _rebuild(out, args),
        "erasure": lambda out: _erasure(out, args),
        "scale": lambda out: _scale(out, args),
        "slow-sender": lambda out: _slow_sender(out, args),
        "broker-bounce": lambda out: _broker_bounce(out, args),
        "pause": lambda out: _pause(out, args),
    }
    results = []
    for name in chosen:
        out = args.out / f"{stamp}-{name}"
        print(f"--- {name} (state and logs in {out})", flush=True)
        try:
            result = runners[name](out)
        except Exception as exc:  # the scenario could not finish: that is a failure, and the next runs
            result = Result(name)
            result.check(f"the scenario ran to the end ({type(exc).__name__}: {exc})", False)
            result.finish()
        finally:
            left = kill_leftovers()
            if left:
                print(f"    ({left} worker process(es) left running were killed)", flush=True)
        if out.is_dir():
            jumps, accepted = fetch_jumps(out)
            result.figures["broker fetches that jumped over offsets (re-read / given up)"] = (
                f"{jumps} / {accepted}")
            result.check(f"no fetch jump given up on (records skipped: {accepted} jumps)", not accepted)
        results.append(result)
        print(result.render(), flush=True)
    failed = [r.name for r in results if not r.passed]
    tail = f"; FAILED: {failed}" if failed else ""
    print(f"faults: {len(results) - len(failed)}/{len(results)} passed{tail}")
    return 1 if failed else 0


def _crash(out: Path, args: argparse.Namespace) -> Result:
    from pipeline.faults.crash import run_crash

    return run_crash(out, customers=args.customers, events=args.events, kills=args.kills, rate=args.rate,
                     seed=args.seed)


def _poison(out: Path, args: argparse.Namespace) -> Result:
    from pipeline.faults.poison import run_poison

    return run_poison(out, events=args.poison_events, bad_ratio=args.bad_ratio, seed=args.seed)


def _rebuild(out: Path, args: argparse.Namespace) -> Result:
    from pipeline.faults.rebuild import run_rebuild

    return run_rebuild(out, events=args.rebuild_events, seed=args.seed)


def _erasure(out: Path, args: argparse.Namespace) -> Result:
    from pipeline.faults.erasure import run_erasure

    return run_erasure(out, customers=args.customers, events=args.events, rate=args.rate, share=0.01,
                       seed=args.seed)


def _scale(out: Path, args: argparse.Namespace) -> Result:
    from pipeline.faults.scale import run_scale

    return run_scale(out, customers=args.customers // 2, events=args.events // 2, rate=args.rate,
                     seed=args.seed)


def _slow_sender(out: Path, args: argparse.Namespace) -> Result:
    from pipeline.faults.slow_sender import run_slow_sender

    seconds, rate = args.stall + 60.0, args.rate / 4  # a steady load the worker keeps up with
    return run_slow_sender(out, customers=max(100, int(rate * seconds / 10)), rate=rate, seconds=seconds,
                           stall=args.stall, seed=args.seed)


def _broker_bounce(out: Path, args: argparse.Namespace) -> Result:
    from pipeline.faults.broker_bounce import run_broker_bounce

    return run_broker_bounce(out, customers=args.customers, events=args.events, bounces=args.bounces,
                             rate=args.bounce_rate, seed=args.seed)


def _pause(out: Path, args: argparse.Namespace) -> Result:
    from pipeline.faults.pause import run_pause

    return run_pause(out, customers=args.customers // 2, events=args.pause_events, rate=args.rate,
                     seed=args.seed)
