"""``omnipipe faults``: run the chosen scenarios, print one PASS/FAIL block each, exit 1 on any failure."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

from pipeline.faults.scenario import Result
from pipeline.faults.workers import fetch_jumps, kill_leftovers

SCENARIOS = ("crash", "poison", "rebuild", "scale", "erasure", "slow-sender")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--only", default=",".join(SCENARIOS), help=f"comma-separated subset of {SCENARIOS}")
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


def run_suite(args: argparse.Namespace) -> int:
    chosen = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(chosen) - set(SCENARIOS))
    if unknown:
        raise SystemExit(f"omnipipe faults: unknown scenario(s) {unknown}; known: {list(SCENARIOS)}")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    runners: dict[str, Callable[[Path], Result]] = {
        "crash": lambda out: _crash(out, args),
        "poison": lambda out: _poison(out, args),
        "rebuild": lambda out: _rebuild(out, args),
        "erasure": lambda out: _erasure(out, args),
        "scale": lambda out: _scale(out, args),
        "slow-sender": lambda out: _slow_sender(out, args),
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
