"""``omnipipe dlq show``: list dead letters, and decrypt them for a fix and a replay.

Hooked into ``pipeline/cli.py`` with ``add_dlq_parser(subparsers)`` and
``run_dlq(settings, args)``. It reads the configured cluster (not an embedded
broker: there would be nothing in it) with the workers' settings: the same
OMNIPIPE_DLQ_KEY (or OMNIPIPE_PII_HASH_KEY it defaults from) decrypts.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any, TextIO

from pipeline.errors import ConfigError

if TYPE_CHECKING:
    from pipeline.settings import Settings


def add_dlq_parser(subparsers: Any) -> None:
    dlq = subparsers.add_parser("dlq", help="dead letters: list them, decrypt one to fix and replay it")
    verbs = dlq.add_subparsers(dest="dlq_verb", required=True)
    show = verbs.add_parser(
        "show", help="print dead letters as JSON lines (reason, detail, source coordinates, refs); "
                     "with --decrypt also the record's key and value (base64), or `erased`")
    show.add_argument("--partition", type=int, default=None, help="only this partition of the DLQ topic")
    show.add_argument("--offset", type=int, default=None, help="only this offset (with --partition)")
    show.add_argument("--decrypt", action="store_true",
                      help="open the sealed bytes with the key vault (needs the workers' OMNIPIPE_DLQ_KEY)")


def run_dlq(settings: Settings, args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    from pipeline.broker.client_config import librdkafka_config
    from pipeline.dlq.crypto import KeyEncryptionKey
    from pipeline.dlq.reader import describe, iter_dead_letters, open_dead_letter, read_vault
    from pipeline.runtime.cluster import load_topology
    from pipeline.runtime.schemas import build_codec

    if settings.embedded:
        raise ConfigError("omnipipe dlq reads the workers' cluster: set KAFKA_BOOTSTRAP_SERVERS")
    if args.offset is not None and args.partition is None:
        raise ConfigError("omnipipe dlq show --offset needs --partition")
    catalogue = load_topology(settings)
    client = librdkafka_config(settings)
    codec = build_codec(settings, max_record_size=2 * settings.max_record_bytes)
    dlq = catalogue["dlq"]
    kek = KeyEncryptionKey(settings.dlq_master_key()) if args.decrypt else None
    vault = read_vault(client, catalogue["dlq_vault_changelog"].name) if args.decrypt else None
    shown = 0
    for stored in iter_dead_letters(client, dlq.name, codec, dlq.avro_subject, args.partition, args.offset):
        opened = None if kek is None or vault is None else open_dead_letter(stored.dead_letter, kek, vault)
        print(json.dumps(describe(stored, opened), sort_keys=True), file=out)
        shown += 1
    if args.offset is not None and not shown:
        print(f"omnipipe: no dead letter at {dlq.name} partition {args.partition} offset {args.offset}",
              file=sys.stderr)
        return 1
    return 0
