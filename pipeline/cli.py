"""``omnipipe`` command line: the only place that reads the environment."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.errors import OmnipipeError

if TYPE_CHECKING:
    from pipeline.settings import Settings


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    # Per-message debug records cost ~16% of a worker's time (DESIGN.md).
    for noisy in ("aiokafka", "kafka", "faust", "mode"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, getattr(logging, level)))


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="omnipipe", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    sub.add_parser(
        "worker", help="run a pipeline worker (embedded broker if KAFKA_BOOTSTRAP_SERVERS is unset)"
    )
    sub.add_parser("topics", help="create the topics declared in topologies/ (idempotent)")

    sim = sub.add_parser("simulate", help="publish simulated omnichannel journeys")
    sim.add_argument("--customers", type=int, default=1000)
    sim.add_argument("--seed", type=int, default=1)
    sim.add_argument("--days", type=float, default=14.0, help="simulated time span")
    sim.add_argument("--rate", type=float, default=0.0, help="events/s; 0 = as fast as possible")
    sim.add_argument("--duration", type=float, default=0.0, help="stop after N seconds (0 = all events)")
    sim.add_argument("--bad", type=int, default=0, help="inject exactly N malformed records")
    sim.add_argument("--truth", type=Path, default=Path("var/truth.jsonl"), help="ground-truth output file")

    demo = sub.add_parser("demo", help="broker + worker + simulator with a live summary")
    demo.add_argument("--seconds", type=float, default=60.0, help="run for N seconds (Ctrl-C stops earlier)")
    demo.add_argument("--customers", type=int, default=0, help="0 = enough for the whole run")
    demo.add_argument("--rate", type=float, default=2000.0)
    demo.add_argument("--bad", type=int, default=50)

    bench = sub.add_parser("bench", help="ingest throughput vs raw aiokafka passthrough, same run")
    bench.add_argument("--events", type=int, default=500_000)
    bench.add_argument("--customers", type=int, default=100_000)
    bench.add_argument("--partitions", type=int, default=4)
    bench.add_argument("--repeat", type=int, default=1)
    bench.add_argument("--with-faust", action="store_true",
                       help="also measure plain Faust agents (consume only; one send per event)")
    bench.add_argument("--faust-events", type=int, default=100_000)
    bench.add_argument("--skip-identity", action="store_true", help="only the ingest figures")
    bench.add_argument("--skip-latency", action="store_true",
                       help="skip the event-to-trigger latency run at half the measured throughput")
    bench.add_argument("--latency-seconds", type=float, default=20.0, help="length of the latency window")
    bench.add_argument("--latency-rate", type=float, default=None,
                       help="offered load of the latency run, events/s (default: half the measured maximum)")

    models = sub.add_parser("models", help="propensity models: validate and publish learned weights")
    verbs = models.add_subparsers(dest="verb", required=True)
    pub = verbs.add_parser("publish", help="validate a model document (JSON or YAML) and publish it on the "
                           "models topic; every worker swaps it in without a restart")
    pub.add_argument("file", type=Path)
    pub.add_argument("--check", action="store_true", help="only validate against the action catalogue")

    faults = sub.add_parser("faults", help="fault scenarios on real worker processes: crash, poison, "
                                           "rebuild, scale, erasure, slow sender (prints PASS/FAIL)")
    from pipeline.faults.suite import add_arguments

    add_arguments(faults)

    evaluate = sub.add_parser("evaluate", help="score a stage's output against a simulation's ground truth")
    stages = evaluate.add_subparsers(dest="stage", required=True)
    ident = stages.add_parser(
        "identity", help="the identity grouping (read from its changelog) vs the truth: pairwise scores"
    )
    source = ident.add_mutually_exclusive_group(required=True)
    source.add_argument("--truth", type=Path, help="ground-truth file of `omnipipe simulate`; reads the "
                        "identity changelog of the configured cluster")
    source.add_argument("--simulate", type=int, metavar="CUSTOMERS",
                        help="simulate this many customers, run ingest + identity here, then score")
    ident.add_argument("--seed", type=int, default=1, help="with --simulate")
    ident.add_argument("--json", action="store_true", help="print the scores as one JSON object")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from pipeline.settings import load_settings

    try:
        settings = load_settings()
        _configure_logging(settings.log_level)
        if args.command == "worker":
            from pipeline.runtime.worker import run_worker

            return run_worker(settings)
        if args.command == "topics":
            from pipeline.runtime.cluster import cluster, load_topology, prepare_topics

            catalogue = load_topology(settings)
            with cluster(settings) as resolved:
                for name, state in sorted(prepare_topics(resolved, catalogue).items()):
                    print(f"{name}: {state}")
            return 0
        if args.command == "simulate":
            from pipeline.runtime.simulate_cmd import run_simulate

            return run_simulate(settings, args)
        if args.command == "demo":
            from pipeline.runtime.demo import run_demo

            return run_demo(settings, args)
        if args.command == "bench":
            from pipeline.bench.ingest_bench import run_bench

            return run_bench(settings, args)
        if args.command == "evaluate":
            return _evaluate(settings, args)
        if args.command == "faults":
            from pipeline.faults.suite import run_suite

            return run_suite(args)
        if args.command == "models":
            from pipeline.nba.publish import publish_models

            print(publish_models(settings, args.file, check_only=args.check))
            return 0
    except OmnipipeError as exc:
        print(f"omnipipe: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 1


def _evaluate(settings: Settings, args: argparse.Namespace) -> int:
    """``evaluate identity``: read the changelog of the configured cluster, print the scores."""
    from pipeline.identity.grouping import evaluate_identity, format_evaluation
    from pipeline.runtime.cluster import load_topology

    if args.simulate:
        from pipeline.bench.identity_accuracy import simulate_and_evaluate

        score = simulate_and_evaluate(settings, args.simulate, args.seed)
    else:
        score = evaluate_identity(settings, load_topology(settings), args.truth)
    print(json.dumps(score.as_dict(), sort_keys=True) if args.json else format_evaluation(score))
    return 0


if __name__ == "__main__":
    sys.exit(main())
