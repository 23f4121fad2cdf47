"""The identity stage's grouping, read back from its changelog, and scored against the simulator's truth.

The compacted changelog is the stage's source of truth (RocksDB is only a
cache of it), so reading it to its end gives exactly the identifier ->
profile mapping the stage holds, whichever workers wrote it and however often
they crashed: the latest record per key wins and a tombstone (value None)
removes the key. Only identifier records (keys ``i|<ref>``) are decoded;
cluster and profile records are skipped unread.

The truth side (``truth_groups``) must produce refs exactly as ingest does:
``kind:value`` with the ingest key prefixes, e-mails and phones normalised and
hashed with the pipeline's PII key (``PiiHasher``), or they would never meet
the grouping's refs and every score would read as a miss.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.broker.reader import iter_topic
from pipeline.errors import ConfigError, OmnipipeError
from pipeline.identity.codec import (
    ERASED_PREFIX,
    IdentityCodecError,
    decode_record,
    parse_state_key,
    state_key,
)
from pipeline.identity.evaluate import PairwiseScore, deterministic_groups, pairwise_score, truth_ref
from pipeline.identity.messages import Space
from pipeline.identity.model import Ref
from pipeline.identity.state import IdentifierRecord
from pipeline.ingest.identifiers import PiiHasher
from pipeline.settings import Settings
from pipeline.simulate.truth import Truth, load_truth
from pipeline.topology.catalogue import TopicCatalogue

Pii = Callable[[str, str], str]
"""``pii(kind, raw)``: a raw e-mail or phone as the pipeline stores it (kind is ``email`` or ``phone``)."""

_IDENT_PREFIX = state_key(Space.IDENT, "x")[:-1]  # b"i|"


class GroupingError(OmnipipeError):
    """The changelog could not be read, or holds something this code cannot decode."""


class GroupingInputError(GroupingError, ConfigError):
    """What the command was given cannot be scored (no cluster configured, an unreadable truth file)."""


# --------------------------------------------------------------------------- the grouping
def grouping_from_records(records: Iterable[tuple[bytes | None, bytes | None]]) -> dict[Ref, Ref]:
    """Identifier ref -> profile id from changelog (key, value) pairs in log order.

    The last value per key wins; None (a tombstone) deletes the key. Only the
    surviving identifier records are decoded, so overwritten ones cost nothing.
    """
    latest: dict[bytes, bytes | None] = {}
    for key, value in records:
        if key is None:
            raise GroupingError("identity changelog record without a key")
        if key.startswith(_IDENT_PREFIX):
            latest[key] = value
        elif key.startswith(ERASED_PREFIX):
            continue  # erasure markers: keyed hashes, no record
        else:
            parse_state_key(key)  # other keyspaces are skipped, but a garbage key is still an error
    grouping: dict[Ref, Ref] = {}
    for key, value in latest.items():
        if value is None:
            continue
        _, ref = parse_state_key(key)
        rec = decode_record(value)
        if not isinstance(rec, IdentifierRecord) or rec.ref != ref:
            raise IdentityCodecError(f"changelog key {key!r} holds a {type(rec).__name__} for {rec.ref!r}")
        grouping[ref] = rec.profile
    return grouping


def read_grouping_from(client: Mapping[str, Any], topic: str, idle_s: float = 2.0,
                       timeout_s: float = 600.0) -> dict[Ref, Ref]:
    """Read the identity changelog ``topic`` to its end; see ``grouping_from_records``.

    ``client`` is a librdkafka configuration (``librdkafka_config(settings)``
    or just ``{"bootstrap.servers": ...}``). Raises GroupingError when the
    topic is missing (the identity stage never ran against this cluster, or
    another topology is in use) or holds records this code cannot decode.
    """
    _require_topic(client, topic)
    try:
        return grouping_from_records((r.key, r.value) for r in iter_topic(client, topic, idle_s, timeout_s))
    except IdentityCodecError as exc:
        raise GroupingError(f"{topic}: {exc}") from exc
    except TimeoutError as exc:
        raise GroupingError(str(exc)) from exc


def read_grouping(settings: Settings, catalogue: TopicCatalogue, idle_s: float = 2.0) -> dict[Ref, Ref]:
    """The grouping in the configured cluster's identity changelog."""
    from pipeline.broker.client_config import librdkafka_config

    if settings.embedded:
        raise GroupingInputError("reading the identity changelog needs KAFKA_BOOTSTRAP_SERVERS "
                            "(an embedded broker only lives as long as the command that started it)")
    return read_grouping_from(librdkafka_config(settings), catalogue["identity_changelog"].name, idle_s)


def _require_topic(client: Mapping[str, Any], topic: str) -> None:
    from confluent_kafka.admin import AdminClient

    # all topics, not just this one: a metadata request naming a missing topic may create it
    # (the embedded Tansu broker does), and an empty new topic would read as an empty grouping
    md = AdminClient(dict(client)).list_topics(timeout=30)
    found = md.topics.get(topic)
    if found is None or found.error is not None or not found.partitions:
        why = found.error if found is not None and found.error is not None else "no partitions"
        raise GroupingError(f"identity changelog topic {topic!r} is not readable ({why}): "
                            "has the identity stage run against this cluster and topology?")


# --------------------------------------------------------------------------- the truth
def hashed_pii(hasher: PiiHasher) -> Pii:
    """The pipeline's own normalise-and-hash, as ingest applies it to e-mails and phones."""
    def pii(kind: str, raw: str) -> str:
        return hasher.email(raw) if kind == "email" else hasher.phone(raw)
    return pii


def truth_groups(truth: Truth | Path | str, pii: PiiHasher | Pii | None = None) -> list[list[Ref]]:
    """Every person's truth groups (identifiers their own events link) as pipeline refs.

    ``pii`` hashes raw e-mails and phones as ingest does: a ``PiiHasher`` built
    from the pipeline's key (``settings.hash_key()``), or any ``pii(kind, raw)``;
    None keeps the raw value (when the events were fed to the rules unhashed,
    as in ``tests/identity/test_evaluate.py``). An identifier ingest would
    reject (an e-mail or phone that does not normalise) is left out: it can
    never be in the grouping. People who asked for erasure are left out: the
    pipeline forgets every identifier of theirs, by design.
    """
    if not isinstance(truth, Truth):
        truth = load_truth(Path(truth))
    hash_pii = hashed_pii(pii) if isinstance(pii, PiiHasher) else pii
    groups: list[list[Ref]] = []
    for person in truth.persons.values():
        if person.erased_at_ms is not None:
            continue
        for group in person.groups:
            refs: list[Ref] = []
            for identifier in group:
                try:
                    refs.append(truth_ref(identifier, hash_pii))
                except ValueError:  # IdentifierError: ingest sends the event to the DLQ instead
                    continue
            groups.append(refs)
    return groups


# --------------------------------------------------------------------------- omnipipe evaluate identity
@dataclass(frozen=True)
class IdentityEvaluation:
    """Scores on the whole truth and on its deterministic links (no shared device or cookie)."""

    all: PairwiseScore
    deterministic: PairwiseScore

    def as_dict(self) -> dict[str, dict[str, float | int]]:
        return {"all": self.all.as_dict(), "deterministic": self.deterministic.as_dict()}


def evaluate_identity(settings: Settings, catalogue: TopicCatalogue, truth_path: Path,
                      idle_s: float = 2.0) -> IdentityEvaluation:
    """Score the configured cluster's identity changelog against a truth file (CLI ``evaluate``, demo)."""
    try:
        truth = load_truth(truth_path)
    except (OSError, ValueError, KeyError) as exc:
        raise GroupingInputError(f"cannot read truth file {truth_path}: {exc}") from exc
    groups = truth_groups(truth, PiiHasher(settings.hash_key()))
    grouping = read_grouping(settings, catalogue, idle_s)
    return IdentityEvaluation(pairwise_score(grouping, groups),
                              pairwise_score(grouping, deterministic_groups(groups)))


def format_evaluation(ev: IdentityEvaluation) -> str:
    det = ev.deterministic
    return "\n".join([
        format_score(ev.all),
        f"deterministic links only (shared devices/cookies left out): precision {det.precision:.6f}, "
        f"recall {det.recall:.6f} ({det.correct_pairs} of {det.true_pairs} pairs, "
        f"{det.false_pairs} false)",
    ])


def format_score(score: PairwiseScore) -> str:
    return "\n".join([
        f"identifiers:  {score.identifiers} in the truth",
        f"precision:    {score.precision:.6f}",
        f"recall:       {score.recall:.6f}",
        f"pairs:        {score.true_pairs} true, {score.predicted_pairs} predicted, "
        f"{score.correct_pairs} correct",
        f"false pairs:  {score.false_pairs}",
        f"false-merge profiles: {score.false_merge_profiles}",
    ])
