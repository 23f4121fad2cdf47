"""Pairwise accuracy of an identity grouping against the simulator's ground truth.

Pairwise, because it is the standard measure for entity resolution and it
weighs a false merge of two big profiles as the disaster it is: every pair of
identifiers put in one profile that no person's own events link is a false
pair; every pair a person's events do link that ends up apart is a miss.

The truth (``TruthRecorder`` groups) is, per person, the identifiers linked by
that person's own events. A family tablet appears in both family members'
groups, so its pairs with either are true, but no grouping can hold both:
recall below 1.0 on shared devices is expected and is what "follows the most
recent login" costs. Precision must be 1.0.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from itertools import combinations

from pipeline.identity.model import KIND_ALIASES, Ref, make_ref


@dataclass(frozen=True)
class PairwiseScore:
    identifiers: int  # identifiers in the truth
    true_pairs: int  # distinct pairs some person's events link
    predicted_pairs: int  # pairs the grouping puts in one profile
    correct_pairs: int
    false_merge_profiles: int  # profiles holding at least one false pair

    @property
    def false_pairs(self) -> int:
        return self.predicted_pairs - self.correct_pairs

    @property
    def precision(self) -> float:
        return self.correct_pairs / self.predicted_pairs if self.predicted_pairs else 1.0

    @property
    def recall(self) -> float:
        return self.correct_pairs / self.true_pairs if self.true_pairs else 1.0

    def as_dict(self) -> dict[str, float | int]:
        return {"identifiers": self.identifiers, "true_pairs": self.true_pairs,
                "predicted_pairs": self.predicted_pairs, "correct_pairs": self.correct_pairs,
                "false_pairs": self.false_pairs, "false_merge_profiles": self.false_merge_profiles,
                "precision": self.precision, "recall": self.recall}


def truth_ref(text: str, pii: Callable[[str, str], str] | None = None) -> Ref:
    """A truth identifier (``customer_id:C1``, ``email:a@b``) as a pipeline ref (``cust:C1``).

    ``pii(kind, raw)`` turns a raw e-mail or phone into what the pipeline stores
    (its keyed hash); without it the raw value stands in for the hash.
    """
    name, _, value = text.partition(":")
    kind = KIND_ALIASES[name]
    if pii is not None and kind in ("email", "phone"):
        value = pii(kind, value)
    return make_ref(kind, value)


def pairwise_score(grouping: Mapping[Ref, Ref], truth_groups: Iterable[Iterable[Ref]]) -> PairwiseScore:
    """Score ``grouping`` (identifier -> profile id) on the identifiers the truth knows.

    Identifiers the grouping lacks count as singletons; identifiers the truth
    lacks (e.g. from malformed records) are ignored.
    """
    groups_of: dict[Ref, set[int]] = {}
    true_pairs = 0
    for gid, group in enumerate(truth_groups):
        distinct = set(group)
        true_pairs += len(distinct) * (len(distinct) - 1) // 2
        for ref in distinct:
            groups_of.setdefault(ref, set()).add(gid)
    true_pairs -= _pairs_counted_twice(groups_of)
    profiles: dict[Ref, list[Ref]] = {}
    for ref in groups_of:
        profiles.setdefault(grouping.get(ref, ref), []).append(ref)
    predicted = correct = false_profiles = 0
    for members in profiles.values():
        bad = False
        for a, b in combinations(members, 2):
            predicted += 1
            if groups_of[a] & groups_of[b]:
                correct += 1
            else:
                bad = True
        false_profiles += bad
    return PairwiseScore(len(groups_of), true_pairs, predicted, correct, false_profiles)


def _pairs_counted_twice(groups_of: Mapping[Ref, set[int]]) -> int:
    """Pairs sharing more than one truth group were summed once per group; the excess."""
    shared: dict[int, list[Ref]] = {}
    for ref, gids in groups_of.items():
        if len(gids) > 1:
            for gid in gids:
                shared.setdefault(gid, []).append(ref)
    common: dict[tuple[Ref, Ref], int] = {}
    for refs in shared.values():
        for a, b in combinations(sorted(refs), 2):
            common[(a, b)] = common.get((a, b), 0) + 1
    return sum(n - 1 for n in common.values())


def deterministic_groups(truth_groups: Iterable[Iterable[Ref]]) -> list[list[Ref]]:
    """The truth without identifiers several people use (a family tablet, a shared cookie).

    What is left is linked by each person's own events alone, so a correct
    grouping must reach recall 1.0 on it; a shared device can only follow one
    of its users (the latest login), which is what costs recall on the full truth.
    """
    groups = [list(dict.fromkeys(g)) for g in truth_groups]
    seen: dict[Ref, int] = {}
    for g in groups:
        for ref in g:
            seen[ref] = seen.get(ref, 0) + 1
    return [[r for r in g if seen[r] == 1] for g in groups]
