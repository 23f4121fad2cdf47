"""Ingest's dead letters keep no raw personal data, and are filed under the person's refs.

Every malformed kind the simulator makes, on every topic it applies to,
carrying a raw e-mail and phone, through the real ingest processor and
codec (no broker). On main before the fix each dead letter held the raw
record bytes, e-mail and phone included (``test_no_raw_contact_in_...``).
"""

from __future__ import annotations

import pytest

from pipeline.contracts.catalogue import SchemaCatalogue
from pipeline.contracts.codec import AvroCodec
from pipeline.dlq.crypto import KeyEncryptionKey, RawRecord
from pipeline.dlq.reader import Readability, open_dead_letter
from pipeline.dlq.refs import filing_refs, identifier_refs, unattributed_ref
from pipeline.dlq.sealer import DeadLetterSealer
from pipeline.dlq.vault import EraseRecord, VaultView, apply, decode_record
from pipeline.identity.model import LinkEvent
from pipeline.ingest.identifiers import PiiHasher
from pipeline.ingest.processor import Accepted, IngestProcessor, Rejected, SourceTopic
from pipeline.ingest.reasons import Reason
from pipeline.simulate.journeys import HOUR_MS
from pipeline.simulate.malformed import REASONS as BAD_REASONS
from pipeline.simulate.malformed import BadRecord, assignment, bad_contact, make_bad
from pipeline.topology.catalogue import load_catalogue

NOW = 1_795_000_000_000
SEED = 8
HASH_KEY = b"sealing-test-hash-key-0123456789"
DLQ_KEY = b"sealing-test-dlq-key-0123456789"
CAT = load_catalogue()
CODEC = AvroCodec(SchemaCatalogue.load())
SOURCES = {t.name: SourceTopic(t.name, t.avro_subject, t.channel) for t in CAT.ingest_sources}
HASHER = PiiHasher(HASH_KEY)
PROC = IngestProcessor(SOURCES, CODEC, HASHER, sealer=DeadLetterSealer(DLQ_KEY, HASHER))
KEK = KeyEncryptionKey(DLQ_KEY)
#: refused before anything of the record could be read: nobody to attribute it to
UNATTRIBUTED = {Reason.NOT_AVRO, Reason.BAD_MAGIC_BYTE, Reason.UNKNOWN_SCHEMA_ID, Reason.TRUNCATED,
                Reason.EMPTY, Reason.OVERSIZE, Reason.SCHEMA_MISMATCH, Reason.MISSING_IDENTIFIERS}

TOPIC_KEYS = [s.key for s in CAT.ingest_sources]
CASES = [assignment(seq, TOPIC_KEYS) for seq in range(len(BAD_REASONS) * len(TOPIC_KEYS))]  # every pair


def bad_record(seq: int) -> BadRecord:
    reason, key = CASES[seq]
    return make_bad(seq, reason, key, CAT[key].avro_subject, CODEC.encode, seed=SEED, now_ms=NOW,
                    event_time=NOW - HOUR_MS)


def reject(seq: int, bad: BadRecord) -> Rejected:
    out = PROC.process(CAT[bad.topic_key].name, 1, seq, NOW, b"producer-key", bad.value, NOW)
    assert isinstance(out, Rejected) and out.reason.value == bad.reason, (bad.reason, bad.topic_key)
    return out


def vault_of(*results: Rejected) -> dict[bytes, bytes]:
    rows: dict[bytes, bytes] = {}
    for result in results:
        for vk in result.vault_keys:
            record = decode_record(vk.payload)
            assert getattr(record, "ref", None) == vk.ref  # keyed by its ref: the erasure's partition
            apply(rows, record)
    return rows


def needles(seq: int) -> list[bytes]:
    contact = bad_contact(SEED, seq)
    return [contact.email.encode(), contact.phone.encode(), contact.phone.lstrip("+").encode()]


@pytest.mark.parametrize("seq", range(len(CASES)))
def test_no_raw_contact_in_the_dead_letter_its_detail_or_its_keys(seq: int) -> None:
    bad = bad_record(seq)
    result = reject(seq, bad)
    stored = CODEC.encode(CAT["dlq"].avro_subject, result.dead_letter)  # the bytes on events.dlq
    keys = b"".join(vk.payload + vk.ref.encode() for vk in result.vault_keys)  # the bytes on dlq.keys
    carried = [n for n in needles(seq) if n in bad.value]
    for needle in needles(seq):
        assert needle not in stored and needle not in keys
        assert needle.decode() not in result.dead_letter["detail"]
    if bad.reason not in ("empty", "truncated", "not_avro", "missing_identifiers", "schema_mismatch"):
        assert carried, "the malformed record must carry the raw contact for this test to mean anything"


@pytest.mark.parametrize("seq", range(len(CASES)))
def test_dead_letter_is_filed_under_the_persons_refs_and_opens_with_the_vault(seq: int) -> None:
    bad = bad_record(seq)
    result = reject(seq, bad)
    dl = result.dead_letter
    contact = bad_contact(SEED, seq)
    if result.reason in UNATTRIBUTED:
        assert dl["filed_under"] == [unattributed_ref(NOW)]
    else:
        assert f"email:{HASHER.email(contact.email)}" in dl["filed_under"] or result.reason is \
            Reason.INVALID_IDENTIFIER  # unless the e-mail is the malformed identifier
        assert all(not ref.startswith("unattributed:") for ref in dl["filed_under"])
    assert [vk.ref for vk in result.vault_keys] == dl["filed_under"]
    kept = bad.value[:PROC._rules.max_record_bytes]
    opened = open_dead_letter(dl, KEK, VaultView(vault_of(result)))
    assert opened.readability is Readability.DECRYPTED
    assert opened.record == RawRecord(b"producer-key", kept)


def test_erasing_one_ref_of_the_person_shreds_their_dead_letter_only() -> None:
    future = next(s for s, (reason, _t) in enumerate(CASES) if reason == "future_event_time")
    stale = next(s for s, (reason, _t) in enumerate(CASES) if reason == "stale_event_time")
    mine, theirs = reject(future, bad_record(future)), reject(stale, bad_record(stale))
    rows = vault_of(mine, theirs)
    erased = f"phone:{HASHER.phone(bad_contact(SEED, future).phone)}"
    assert erased in mine.dead_letter["filed_under"]
    apply(rows, EraseRecord(erased, NOW))
    gone = open_dead_letter(mine.dead_letter, KEK, VaultView(rows))
    assert gone.readability is Readability.ERASED and gone.record is None
    assert open_dead_letter(theirs.dead_letter, KEK, VaultView(rows)).readability is Readability.DECRYPTED


def test_refs_are_the_ones_identity_forms_for_the_same_record() -> None:
    """An erasure names refs as the identity stage does; a dead letter must be filed under the same."""
    contact = bad_contact(SEED, 1)
    identifiers = {"customer_id": "C-7", "loyalty_card": "L-7", "email": contact.email.upper(),
                   "phone": contact.phone, "device_id": "d-7", "anonymous_id": "a-7"}
    record = {"event_id": "e-1", "event_time": NOW - 60_000, "identifiers": identifiers,
              "type": "SEARCH", "query": "shoes"}
    value = CODEC.encode(CAT["web"].avro_subject, record)
    accepted = PROC.process(CAT["web"].name, 0, 1, NOW, None, value, NOW)
    assert isinstance(accepted, Accepted)
    assert identifier_refs(identifiers, HASHER) == LinkEvent.from_canonical(accepted.event).refs


def test_a_malformed_identifier_is_skipped_and_the_others_still_file_it() -> None:
    refs = identifier_refs({"customer_id": "C 1", "email": "no-at-sign", "phone": "+447700900123"}, HASHER)
    assert refs == (f"phone:{HASHER.phone('+447700900123')}",)
    assert filing_refs({"email": "no-at-sign"}, HASHER, NOW) == (unattributed_ref(NOW),)
    assert unattributed_ref(1_795_000_000_000) == "unattributed:2026-11-18"
