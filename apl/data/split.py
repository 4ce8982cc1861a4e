"""A seeded train/validation split that respects multi-label structure.

A random split of a small multi-label dataset easily leaves a rare label without
any validation positive, and then its AP is undefined and thresholds cannot be
tuned for it. This is iterative stratification (Sechidis, Tsoumakas and Vlahavas,
2011: rarest label first, each sample to the subset that still wants that label
most) followed by a repair pass that guarantees every label with at least two
positives has a positive on both sides. All randomness comes from one
`numpy.random.Generator` seeded by the caller, so a seed always gives the same split.
A held-out test split (`split_test_indices`) is made the same way before the
train/validation split, from an RNG stream of its own.
"""

from __future__ import annotations

import numpy as np

from apl.errors import DatasetError

#: A label needs this many positives before the split promises one on each side.
MIN_POSITIVES_FOR_GUARANTEE = 2


def _pick(rng: np.random.Generator, candidates: np.ndarray) -> int:
    return int(candidates[int(rng.integers(len(candidates)))])


def _iterative_stratification(
    targets: np.ndarray, val_fraction: float, rng: np.random.Generator
) -> np.ndarray:
    """Return a boolean mask: True where a sample goes to validation."""
    n = targets.shape[0]
    positives = targets > 0.5
    fractions = np.array([1.0 - val_fraction, val_fraction])
    # desired[s, l]: positives of label l subset s still wants; wanted[s]: samples it still wants.
    desired = np.outer(fractions, positives.sum(axis=0).astype(np.float64))
    n_val = round(val_fraction * n)
    n_val = min(max(n_val, 1), n - 1)
    wanted = np.array([n - n_val, n_val], dtype=np.float64)
    assignment = np.full(n, -1, dtype=np.int64)
    remaining = positives.copy()

    def choose_subset(scores: np.ndarray) -> int:
        best = np.flatnonzero(scores == scores.max())
        if len(best) > 1:
            tie = wanted[best]
            best = best[tie == tie.max()]
        return _pick(rng, best)

    while True:
        counts = remaining.sum(axis=0)
        live = np.flatnonzero(counts > 0)
        if len(live) == 0:
            break
        rarest = live[counts[live] == counts[live].min()]
        label = _pick(rng, rarest)
        members = np.flatnonzero(remaining[:, label])
        for sample in rng.permutation(members):
            subset = choose_subset(desired[:, label])
            assignment[sample] = subset
            desired[subset] -= positives[sample]
            wanted[subset] -= 1
            remaining[sample] = False
    # Samples without any label fill whatever room is left.
    for sample in rng.permutation(np.flatnonzero(assignment < 0)):
        subset = choose_subset(wanted)
        assignment[sample] = subset
        wanted[subset] -= 1
    mask: np.ndarray = assignment == 1
    return mask


def _repair(targets: np.ndarray, is_val: np.ndarray, rng: np.random.Generator) -> None:
    """Move samples so each label with enough positives has one in train and in validation."""
    positives = targets > 0.5
    guaranteed = positives.sum(axis=0) >= MIN_POSITIVES_FOR_GUARANTEE

    def counts(side: np.ndarray) -> np.ndarray:
        return np.asarray(positives[side].sum(axis=0))

    for _ in range(2 * targets.shape[1] + 2):
        changed = False
        for label in np.flatnonzero(guaranteed):
            for to_val in (True, False):
                source = ~is_val if to_val else is_val
                if positives[is_val == to_val, label].any():
                    continue
                source_counts = counts(source)
                candidates = np.flatnonzero(source & positives[:, label])
                # Prefer a sample whose move leaves every guaranteed label a positive behind.
                safe = [c for c in candidates if not np.any(guaranteed & positives[c] & (source_counts < 2))]
                pool = np.array(safe) if safe else candidates
                if len(pool) == 0:
                    continue
                fewest = pool[positives[pool].sum(axis=1) == positives[pool].sum(axis=1).min()]
                mover = _pick(rng, fewest)
                is_val[mover] = to_val
                changed = True
                # Keep the sizes: send back one sample whose move costs no guaranteed label.
                target_side = is_val == to_val
                target_counts = counts(target_side)
                back = [
                    c
                    for c in np.flatnonzero(target_side)
                    if c != mover and not np.any(guaranteed & positives[c] & (target_counts < 2))
                ]
                if back:
                    is_val[_pick(rng, np.array(back))] = not to_val
        if not changed:
            return


def _split_mask(targets: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """A boolean mask of the samples that go to the smaller side (validation or test)."""
    n = len(targets)
    is_held = _iterative_stratification(np.asarray(targets), fraction, rng)
    _repair(np.asarray(targets), is_held, rng)
    if is_held.all() or not is_held.any():
        # Only possible for degenerate inputs; keep the promise of one sample per side.
        is_held[:] = False
        is_held[_pick(rng, np.arange(n))] = True
    return is_held


def split_indices(targets: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split sample indices into (train, validation), both sorted ascending.

    Deterministic for a given `seed`. Roughly `val_fraction` of the samples go to
    validation (the repair pass may shift a few), never fewer than one on each side.
    """
    n = len(targets)
    if n < 2:
        raise DatasetError("at least 2 samples are needed to split into training and validation")
    if not 0.0 < val_fraction < 1.0:
        raise DatasetError("val_fraction must be between 0 and 1")
    is_val = _split_mask(targets, val_fraction, np.random.default_rng(seed))
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


#: Second word of the test split's RNG seed, so it draws from a stream of its own: the same
#: `seed` gives the same test split whatever the validation fraction, and vice versa.
TEST_SPLIT_STREAM = 0x7E57


def split_test_indices(
    targets: np.ndarray, test_fraction: float, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split sample indices into (train, validation, test), each sorted ascending.

    The test split comes off first, stratified like validation and drawn from its own
    RNG stream (`TEST_SPLIT_STREAM`); the rest is then split into train and validation
    exactly as `split_indices` does. It depends on nothing but the targets, the two
    fractions and `seed`, so every candidate of a sweep with one seed gets the same three
    splits. The test split is never shown to training, early stopping or threshold tuning.
    """
    n = len(targets)
    if n < 4:
        raise DatasetError("at least 4 samples are needed to split into training, validation and test")
    if not 0.0 < test_fraction < 1.0:
        raise DatasetError("test_fraction must be between 0 and 1")
    targets = np.asarray(targets)
    is_test = _split_mask(targets, test_fraction, np.random.default_rng([seed, TEST_SPLIT_STREAM]))
    rest, test = np.flatnonzero(~is_test), np.flatnonzero(is_test)
    if len(rest) < 3:
        raise DatasetError("the test split leaves fewer than 3 samples for training and validation")
    train, val = split_indices(targets[rest], val_fraction, seed)
    return rest[train], rest[val], test


def job_split(
    targets: np.ndarray, val_fraction: float, seed: int, test_fraction: float | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(train, validation, test or None): the split a job trains on, the same wherever it is made.

    The API makes it too, before a job is queued, to refuse labels `unannotated_labels` names.
    """
    if test_fraction is not None:
        return split_test_indices(targets, test_fraction, val_fraction, seed)
    train, val = split_indices(targets, val_fraction, seed)
    return train, val, None


def unannotated_labels(targets: np.ndarray, rows: np.ndarray) -> list[int]:
    """Indices of the labels with no known cell (every one NaN) among `rows`: nothing to learn from.

    Unknown cells are never positives, so the split above places known positives on both sides
    whenever it can; a label that is unknown on every training sample is still possible and
    would train on nothing, which is why a job refuses it.
    """
    known = ~np.isnan(np.asarray(targets, dtype=np.float64)[rows])
    return [int(j) for j in np.flatnonzero(~known.any(axis=0))]
