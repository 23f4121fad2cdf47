"""``omnipipe`` command line: the only place that reads the environment."""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import logging
import sys
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import annotated_types
from pydantic import SecretStr

from pipeline.dlq.cli import add_dlq_parser, run_dlq
from pipeline.errors import ExitCode, OmnipipeError

if TYPE_CHECKING:
    from pipeline.settings import Settings


@dataclass(frozen=True)
class EnvVariable:
    """One environment variable a worker reads, as ``pipeline/settings.py`` declares it."""

    name: str
    default: str
    secret: bool
    allowed: str  # the choices or bounds, "" when any value of the type is accepted
    description: str


def _is_secret(annotation: Any) -> bool:
    return annotation is SecretStr or any(_is_secret(a) for a in typing.get_args(annotation))


def _choices(annotation: Any) -> tuple[Any, ...]:
    if typing.get_origin(annotation) is typing.Literal:
        return typing.get_args(annotation)
    for arg in typing.get_args(annotation):
        found = _choices(arg)
        if found:
            return found
    return ()


def _show(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _bounds(metadata: Sequence[Any]) -> str:
    ge = next((m.ge for m in metadata if isinstance(m, annotated_types.Ge)), None)
    le = next((m.le for m in metadata if isinstance(m, annotated_types.Le)), None)
    if ge is not None and le is not None:
        return f"{_show(ge)}..{_show(le)}"
    parts = []
    for item in metadata:
        if isinstance(item, annotated_types.Ge):
            parts.append(f">= {_show(item.ge)}")
        elif isinstance(item, annotated_types.Gt):
            parts.append(f"> {_show(item.gt)}")
        elif isinstance(item, annotated_types.Le):
            parts.append(f"<= {_show(item.le)}")
        elif isinstance(item, annotated_types.MinLen):
            parts.append("not empty")
    return ", ".join(parts)


def environment_variables() -> list[EnvVariable]:
    """Every variable of ``Settings``: alias, default, allowed values, description (never a value)."""
    from pipeline.settings import Settings

    out = []
    for field in Settings.model_fields.values():
        assert field.alias, "every setting has its environment variable as alias"
        choices = _choices(field.annotation)
        secret = _is_secret(field.annotation)
        out.append(EnvVariable(
            name=field.alias,
            default=("(secret) " if secret else "") + _show(field.default),
            secret=secret,
            allowed=("one of " + ", ".join(map(str, choices))) if choices else _bounds(field.metadata),
            description=field.description or "",
        ))
    return out


def format_environment(variables: Sequence[EnvVariable]) -> str:
    """The ``worker --help`` epilog: one line per variable."""
    width = max(len(v.name) for v in variables) + 2
    dwidth = max(len(v.default) for v in variables) + 2
    lines = ["environment (default; allowed values; README.md, section Configuration, says what each does):"]
    for v in variables:
        note = "; ".join(p for p in (v.allowed, v.description) if p)
        lines.append(f"  {v.name:<{width}}{v.default:<{dwidth}}{note}".rstrip())
    lines.append("")
    lines.append(_exit_codes())
    return "\n".join(lines)


def _exit_codes() -> str:
    return "exit codes: " + ", ".join(f"{int(c)} {c.name.lower()}" for c in ExitCode)


def _version() -> str:
    try:
        return importlib.metadata.version("omnipipe")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "unknown (not installed)"


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    # Per-message debug records cost ~16% of a worker's time (DESIGN.md).
    for noisy in ("aiokafka", "kafka", "faust", "mode"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, getattr(logging, level)))


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="omnipipe", description=__doc__, epilog=_exit_codes())
    p.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = p.add_subparsers(dest="command", required=True)

    sub.add_parser(
        "worker", help="run a pipeline worker (embedded broker if KAFKA_BOOTSTRAP_SERVERS is unset)",
        description="Run a pipeline worker: ingest, identity, profiles and next-best-action. Without "
                    "KAFKA_BOOTSTRAP_SERVERS it starts an embedded broker.",
        epilog=format_environment(environment_variables()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
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
    bench.add_argument("--broker", choices=("kafka", "tansu"), default=None,
                       help="the embedded broker to measure on (default: OMNIPIPE_EMBEDDED_BROKER)")
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
                                           "rebuild, scale, erasure, slow sender, broker bounce, pause "
                                           "(prints PASS/FAIL)")
    from pipeline.faults.suite import add_arguments

    add_arguments(faults)
    add_dlq_parser(sub)

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
            from pipeline.runtime.preflight import check_worker
            from pipeline.runtime.worker import run_worker

            check_worker(settings)  # ports free, registry reachable: before any broker starts
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
        if args.command == "dlq":
            return run_dlq(settings, args)
        if args.command == "models":
            from pipeline.nba.publish import publish_models

            print(publish_models(settings, args.file, check_only=args.check))
            return 0
    except OmnipipeError as exc:
        print(f"omnipipe: {exc}", file=sys.stderr)
        return int(exc.exit_code)
    except KeyboardInterrupt:
        return int(ExitCode.INTERRUPTED)
    return int(ExitCode.FAILURE)


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
