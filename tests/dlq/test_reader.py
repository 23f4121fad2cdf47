"""What an operator reads back from a dead letter."""

from __future__ import annotations

import base64
from typing import Any

from pipeline.dlq.crypto import KeyEncryptionKey, SourceCoordinates
from pipeline.dlq.reader import Readability, StoredDeadLetter, describe, open_dead_letter
from pipeline.dlq.sealer import DeadLetterSealer
from pipeline.dlq.vault import VaultView, apply, decode_record
from pipeline.ingest.identifiers import PiiHasher

DLQ_KEY = b"reader-test-dlq-key-0123456789"
HASHER = PiiHasher(b"reader-test-hash-key-0123456789")
NOW = 1_795_000_000_000


def dead_letter(**fields: Any) -> dict[str, Any]:
    return {"source_topic": "events.web", "source_partition": 0, "source_offset": 5, "source_timestamp": None,
            "reason": "future_event_time", "detail": "event_time is 2592000s in the future",
            "stage": "ingest",
            "schema_id": 10, "dead_lettered_at": NOW, "key": None, "value": None, "filed_under": [],
            "sealed": None, **fields}


def sealed_dead_letter() -> tuple[dict[str, Any], VaultView]:
    sealed = DeadLetterSealer(DLQ_KEY, HASHER).seal(
        SourceCoordinates("events.web", 0, 5), {"email": "ann@example.com"}, None, b"raw ann@example.com",
        NOW)
    rows: dict[bytes, bytes] = {}
    for vk in sealed.vault_keys:
        apply(rows, decode_record(vk.payload))
    return dead_letter(**sealed.fields), VaultView(rows)


def test_a_sealed_dead_letter_decrypts_and_is_shown_in_base64() -> None:
    dl, vault = sealed_dead_letter()
    opened = open_dead_letter(dl, KeyEncryptionKey(DLQ_KEY), vault)
    assert opened.readability is Readability.DECRYPTED
    line = describe(StoredDeadLetter(2, 9, dl), opened)
    assert line["record"] == "decrypted" and line["key_base64"] is None
    assert base64.b64decode(line["value_base64"]) == b"raw ann@example.com"
    assert line["filed_under"] == [f"email:{HASHER.email('ann@example.com')}"]
    assert (line["dlq_partition"], line["dlq_offset"], line["source_offset"]) == (2, 9, 5)


def test_without_the_key_share_it_says_erased() -> None:
    dl, _vault = sealed_dead_letter()
    opened = open_dead_letter(dl, KeyEncryptionKey(DLQ_KEY), VaultView({}))
    line = describe(StoredDeadLetter(0, 0, dl), opened)
    assert line["record"] == "erased" and "value_base64" not in line
    assert "ann@example.com" not in repr(line)


def test_another_master_key_says_unreadable_and_why() -> None:
    dl, vault = sealed_dead_letter()
    opened = open_dead_letter(dl, KeyEncryptionKey(b"some-other-dlq-key-0123456789"), vault)
    assert opened.readability is Readability.UNREADABLE and "OMNIPIPE_DLQ_KEY" in opened.why


def test_dead_letters_from_before_v2_and_from_later_stages_are_plaintext() -> None:
    kek, vault = KeyEncryptionKey(DLQ_KEY), VaultView({})
    old = open_dead_letter(dead_letter(value=b"\x00bytes"), kek, vault)
    assert old.readability is Readability.PLAINTEXT
    assert old.record is not None and old.record.value == b"\x00bytes"
    assert open_dead_letter(dead_letter(), kek, vault).readability is Readability.EMPTY


def test_without_decrypt_only_the_metadata_is_listed() -> None:
    dl, _vault = sealed_dead_letter()
    line = describe(StoredDeadLetter(0, 0, dl), None)
    assert "record" not in line and line["reason"] == "future_event_time"
