"""The key vault's rules: store, erase, sweep; the dlq.keys record format; the changelog view."""

from __future__ import annotations

import msgpack
import pytest

from pipeline.dlq.crypto import KeyShare
from pipeline.dlq.vault import (
    Applied,
    EraseRecord,
    KeyRecord,
    SweepRecord,
    VaultRecordError,
    VaultView,
    apply,
    decode_record,
    decode_row,
    erase_record,
    key_record,
    row_key,
    split_row_key,
    sweep_record,
)
from pipeline.topology.catalogue import load_catalogue

DAY = 86_400_000


def store(rows: dict[bytes, bytes], ref: str, key_id: str, at: int) -> None:
    assert apply(rows, decode_record(key_record(KeyShare(ref, key_id, b"w-" + key_id.encode()), at))) == \
        Applied(stored=1)


def test_records_round_trip() -> None:
    share = KeyShare("email:abc", "k1", b"\x01\x02")
    assert decode_record(key_record(share, 5)) == KeyRecord("email:abc", "k1", b"\x01\x02", 5)
    assert decode_record(erase_record("cust:C1", 9)) == EraseRecord("cust:C1", 9)
    assert decode_record(sweep_record(7)) == SweepRecord(7)


@pytest.mark.parametrize("data", [
    None, b"", b"\xc1", msgpack.packb(["key", "r", "k"]), msgpack.packb(["erase", "r", "late"]),
    msgpack.packb(["sweep", True]), msgpack.packb({"kind": "key"}), msgpack.packb(["delete", "r", 1]),
])
def test_foreign_records_are_refused(data: bytes | None) -> None:
    with pytest.raises(VaultRecordError):
        decode_record(data)


def test_erase_deletes_every_share_of_its_ref_and_nothing_else() -> None:
    rows: dict[bytes, bytes] = {}
    store(rows, "cust:C1", "k1", 1)
    store(rows, "cust:C1", "k2", 2)
    store(rows, "cust:C12", "k3", 3)  # a longer ref with the same beginning
    store(rows, "email:abc", "k1", 1)  # the same dead letter's share under another ref
    assert apply(rows, EraseRecord("cust:C1", 10)) == Applied(erased=2)
    assert sorted(split_row_key(k).ref for k in rows) == ["cust:C12", "email:abc"]
    assert apply(rows, EraseRecord("cust:C1", 11)) == Applied(erased=0)  # a replayed erase: nothing left


def test_sweep_deletes_what_the_retention_outlived_on_its_partition_only() -> None:
    rows: dict[bytes, bytes] = {}
    store(rows, "unattributed:2026-11-01", "old", 1 * DAY)
    store(rows, "cust:mine", "old", 1 * DAY)
    store(rows, "cust:theirs", "old", 1 * DAY)
    store(rows, "cust:mine", "new", 40 * DAY)
    rows[b"not-a-vault-row"] = b"\x00"
    applied = apply(rows, SweepRecord(before=31 * DAY), owns=lambda ref: ref != "cust:theirs")
    assert applied == Applied(expired=2)
    assert set(rows) == {row_key("cust:theirs", "old"), row_key("cust:mine", "new"), b"not-a-vault-row"}


def test_view_from_changelog_applies_tombstones_in_order() -> None:
    k1, k2 = row_key("cust:C1", "k1"), row_key("email:abc", "k1")
    row = b"\x92\xc4\x01w\x05"  # msgpack [b"w", 5]
    view = VaultView.from_changelog([(k1, row), (k2, row), (k1, None), (None, row)])
    assert set(view.rows) == {k2}
    assert decode_row(view.rows[k2]).wrapped == b"w"
    assert view.shares(["cust:C1", "email:abc"], "k1") == {"email:abc": b"w"}


def test_row_keys_round_trip() -> None:
    assert split_row_key(row_key("email:0123", "ab" * 16)).key_id == "ab" * 16
    with pytest.raises(VaultRecordError):
        split_row_key(b"no-separator")


def test_catalogue_declares_the_vault_topics_copartitioned() -> None:
    cat = load_catalogue()
    keys, changelog = cat["dlq_keys"], cat["dlq_vault_changelog"]
    assert keys.partitions == changelog.partitions
    assert changelog.cleanup_policy == "compact" and changelog.retention_ms == -1
    assert 0 < keys.retention_ms <= cat["dlq"].retention_ms
