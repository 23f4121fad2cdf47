"""``omnipipe dlq show``: argument checks that need no broker."""

from __future__ import annotations

import argparse

import pytest

from pipeline.dlq.cli import add_dlq_parser, run_dlq
from pipeline.errors import ConfigError
from pipeline.settings import load_settings


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="omnipipe")
    add_dlq_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["dlq", "show", *argv])


def test_show_parses_its_options() -> None:
    args = parse("--partition", "2", "--offset", "17", "--decrypt")
    assert (args.command, args.dlq_verb, args.partition, args.offset) == ("dlq", "show", 2, 17)
    assert args.decrypt is True
    assert parse().decrypt is False


def test_without_a_cluster_it_says_which_variable_to_set() -> None:
    with pytest.raises(ConfigError, match="KAFKA_BOOTSTRAP_SERVERS"):
        run_dlq(load_settings(kafka_bootstrap_servers=None), parse())


def test_an_offset_needs_its_partition() -> None:
    settings = load_settings(kafka_bootstrap_servers="127.0.0.1:1",
                             pii_hash_key="cli-test-hash-key-0123456789")
    with pytest.raises(ConfigError, match="--offset needs --partition"):
        run_dlq(settings, parse("--offset", "3"))
