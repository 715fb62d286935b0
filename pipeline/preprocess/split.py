"""Leak-free stratified splitting: a group (C-NMC subject, byte-identical images) never spans
two splits or folds, and every split and fold holds both classes.

scikit-learn's StratifiedGroupKFold does the work where groups are many and small (ALL-IDB2,
folder datasets: one image per group). With few, unequal groups (C-NMC fold 0: 9 healthy
subjects of 18 to 404 cells) it can leave a split without a class, or far from its share.
Then a seeded search assigns each class's groups to the parts: every part gets at least one
group of each class, and the cell counts come as close to the target shares as the group
sizes allow (least squared relative deviation). When a class has fewer groups than parts, one
error names the class and its group count.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from pipeline.config import GROUP_BY, SPLITS, ConfigError
from pipeline.labels import NEGATIVE, POSITIVE

if TYPE_CHECKING:
    from omegaconf import DictConfig

IMAGE_LEVEL_WARNING = (
    "split.group_by=none: the paper's image-level protocol; cells of one subject sit in "
    "train and test, so its stain and illumination leak and the scores are optimistic"
)
SEARCH_RESTARTS = 64
MANY_GROUPS = 60  # above this many groups per class the greedy start is already close


def split_groups(frame: pd.DataFrame, group_by: str) -> pd.Series:
    """The groups a split keeps together: the manifest's (subject + duplicates), or with
    `group_by: none` only byte-identical files (the paper's image-level protocol, which lets
    a subject's cells sit in train and test: a labelled comparison, never the default)."""
    if group_by not in GROUP_BY:
        raise ConfigError(f"split.group_by: {group_by!r} not in {GROUP_BY}")
    return frame["group"] if group_by == "subject" else "sha:" + frame["sha256"]


def _sgkf(frame: pd.DataFrame, groups: pd.Series, k: int, seed: int):
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "least populated class" on tiny sets
        yield from splitter.split(frame, frame["label"], groups)


def hold_out(
    frame: pd.DataFrame,
    groups: pd.Series,
    fraction: float,
    seed: int,
    tolerance: float,
    what: str,
) -> np.ndarray:
    """Boolean mask of a stratified, grouped ~`fraction` of `frame`: one StratifiedGroupKFold
    fold (the fraction rounded to the nearest 1/k), or the search when that fold misses a
    class or is further than `tolerance` (relative) from a class's share."""
    frame, groups = frame.reset_index(drop=True), groups.reset_index(drop=True)
    fractions = [1 - fraction, fraction]
    k = max(2, int(round(1 / fraction)))
    parts = np.zeros(len(frame), dtype=int)
    # else scikit-learn refuses k folds outright; the search below says what is missing
    if k <= frame["label"].value_counts().max() and k <= groups.nunique():
        _, held = next(_sgkf(frame, groups, k, seed))
        parts[held] = 1
    if not _acceptable(frame, parts, fractions, tolerance):
        parts = balanced_partition(frame, groups, fractions, seed, what)
    return parts == 1


def assign_splits(frame: pd.DataFrame, cfg: DictConfig, seed: int) -> pd.Series:
    """A `split` column (train/val/test) for `frame` (columns label, group, sha256): the test
    part held out first, then the validation part from the rest (`cfg`: the split config)."""
    frame = frame.reset_index(drop=True)
    groups = split_groups(frame, cfg.group_by).reset_index(drop=True)
    require_groups(frame, groups, len(SPLITS), "the train/val/test split")
    split = np.full(len(frame), "train", dtype=object)
    test = hold_out(frame, groups, cfg.test, seed, cfg.tolerance, "the test split")
    split[test] = "test"
    rest = np.flatnonzero(~test)
    val = hold_out(
        frame.iloc[rest],
        groups.iloc[rest],
        cfg.val / (cfg.train + cfg.val),
        seed + 1,
        cfg.tolerance,
        "the validation split",
    )
    split[rest[val]] = "val"
    return pd.Series(split, name="split")


def grouped_folds(
    frame: pd.DataFrame,
    folds: int,
    repeats: int,
    seed: int,
    group_by: str = "subject",
    tolerance: float = 0.25,
) -> list[tuple[int, int, np.ndarray, np.ndarray]]:
    """Repeated stratified group k-fold: (repeat, fold, train_idx, test_idx) for each split,
    from StratifiedGroupKFold, or the search when a fold would miss a class or its share."""
    frame = frame.reset_index(drop=True)
    groups = split_groups(frame, group_by).reset_index(drop=True)
    require_groups(frame, groups, folds, f"{folds} folds")
    fractions = [1 / folds] * folds
    out = []
    for repeat in range(repeats):
        parts = np.zeros(len(frame), dtype=int)
        for fold, (_, test) in enumerate(_sgkf(frame, groups, folds, seed + repeat)):
            parts[test] = fold
        if not _acceptable(frame, parts, fractions, tolerance):
            parts = balanced_partition(frame, groups, fractions, seed + repeat, f"{folds} folds")
        for fold in range(folds):
            out.append((repeat, fold, np.flatnonzero(parts != fold), np.flatnonzero(parts == fold)))
    return out


def _acceptable(
    frame: pd.DataFrame, parts: np.ndarray, fractions: Sequence[float], tolerance: float
) -> bool:
    """Every part holds every class, within `tolerance` (relative) of its share of the class."""
    for label in frame["label"].unique():
        is_label = (frame["label"] == label).to_numpy()
        counts = np.bincount(parts[is_label], minlength=len(fractions))
        targets = np.asarray(fractions) * is_label.sum()
        if (counts == 0).any() or (np.abs(counts - targets) > tolerance * targets).any():
            return False
    return True


def balanced_partition(
    frame: pd.DataFrame,
    groups: pd.Series,
    fractions: Sequence[float],
    seed: int,
    what: str,
) -> np.ndarray:
    """Part index per row: each class's groups spread over the parts so that every part gets
    at least one group of the class and the counts are closest to `fractions` (seeded
    restarts of a greedy start plus single-group moves and pairwise swaps)."""
    frame = frame.reset_index(drop=True)
    codes, group_ids = np.unique(groups.to_numpy(), return_inverse=True)
    sizes = np.bincount(group_ids)
    positives = np.bincount(group_ids, weights=(frame["label"] == POSITIVE).to_numpy())
    group_label = np.where(2 * positives >= sizes, POSITIVE, NEGATIVE)
    rng = np.random.default_rng(seed)
    part_of_group = np.zeros(len(codes), dtype=int)
    for label in sorted(set(group_label)):
        members = np.flatnonzero(group_label == label)
        if len(members) < len(fractions):
            raise ConfigError(_too_few(what, label, len(members), len(fractions)))
        part_of_group[members] = _search(sizes[members], np.asarray(fractions), rng)
    return part_of_group[group_ids]


def _too_few(what: str, label: str, count: int, parts: int, mixed: int = 0) -> str:
    subjects = "subject" if count == 1 else "subjects"
    shared = (
        f" ({mixed} of them also hold the other class: a subject with cells of both classes, "
        "or one subject name used in both class folders)"
        if mixed
        else ""
    )
    return (
        f"cannot make {what}: class '{label}' has {count} {subjects} (groups), fewer than the "
        f"{parts} parts, each of which needs one{shared}; use fewer folds, or "
        "split.group_by=none for the image-level protocol"
    )


def _in_mixed_group(labels: pd.Series, groups: pd.Series) -> pd.Series:
    """Per image: whether its group holds both classes (a subject with cells of both, or one
    subject name used in both class folders)."""
    return labels.groupby(groups.to_numpy()).transform("nunique") > 1


def require_groups(frame: pd.DataFrame, groups: pd.Series, parts: int, what: str) -> None:
    """One ConfigError naming the first class whose images lie in fewer than `parts` groups,
    counted over the whole of `frame` (before any part is held out)."""
    frame, groups = frame.reset_index(drop=True), groups.reset_index(drop=True)
    mixed_groups = set(groups[_in_mixed_group(frame["label"], groups)])
    for label in sorted(frame["label"].unique()):
        holding = set(groups[frame["label"] == label])
        if len(holding) < parts:
            raise ConfigError(
                _too_few(what, label, len(holding), parts, len(holding & mixed_groups))
            )


def _cost(counts: np.ndarray, targets: np.ndarray) -> float:
    return float((((counts - targets) / targets) ** 2).sum())


def _search(sizes: np.ndarray, fractions: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    targets = fractions * sizes.sum()
    best, best_cost = None, np.inf
    restarts = 1 if len(sizes) > MANY_GROUPS else SEARCH_RESTARTS
    for _ in range(restarts):
        assignment = _greedy(sizes, targets, rng)
        if len(sizes) <= MANY_GROUPS:
            assignment = _improve(assignment, sizes, targets)
        counts = np.bincount(assignment, weights=sizes, minlength=len(targets))
        cost = _cost(counts, targets)
        if cost < best_cost - 1e-12:
            best, best_cost = assignment, cost
    return best


def _greedy(sizes: np.ndarray, targets: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One random group seeds each part; the rest go, largest first (random ties), to the
    part furthest below its target (relative)."""
    order = rng.permutation(len(sizes))
    assignment = np.full(len(sizes), -1)
    assignment[order[: len(targets)]] = rng.permutation(len(targets))
    seeds = order[: len(targets)]
    counts = np.bincount(assignment[seeds], weights=sizes[seeds], minlength=len(targets))
    rest = order[len(targets) :]
    for g in rest[np.argsort(-sizes[rest], kind="stable")]:
        part = int(np.argmax((targets - counts) / targets))
        assignment[g] = part
        counts[part] += sizes[g]
    return assignment


def _improve(assignment: np.ndarray, sizes: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Moves and swaps of single groups while they lower the cost; no part is left empty."""
    assignment = assignment.copy()
    n_parts = len(targets)
    improved = True
    while improved:
        improved = False
        counts = np.bincount(assignment, weights=sizes, minlength=n_parts)
        members = np.bincount(assignment, minlength=n_parts)
        cost = _cost(counts, targets)
        for g in range(len(sizes)):
            src = assignment[g]
            for dst in range(n_parts):
                if dst == src:
                    continue
                if members[src] > 1:  # move g
                    moved = counts.copy()
                    moved[src] -= sizes[g]
                    moved[dst] += sizes[g]
                    if _cost(moved, targets) < cost - 1e-12:
                        assignment[g], improved = dst, True
                        break
                for h in np.flatnonzero(assignment == dst):  # swap g and h
                    swapped = counts.copy()
                    swapped[src] += sizes[h] - sizes[g]
                    swapped[dst] += sizes[g] - sizes[h]
                    if _cost(swapped, targets) < cost - 1e-12:
                        assignment[g], assignment[h], improved = dst, src, True
                        break
                if improved:
                    break
            if improved:
                break
    return assignment


def split_summary(frame: pd.DataFrame, fractions: dict[str, float]) -> dict[str, object]:
    """Achieved cell and group counts and shares per split and class (for the log and the
    report): how close the grouped split came to the configured fractions."""
    out: dict[str, object] = {}
    for label in sorted(frame["label"].unique()):
        of_label = frame[frame["label"] == label]
        for split in SPLITS:
            part = of_label[of_label["split"] == split]
            out[f"{split}_{label}_images"] = len(part)
            out[f"{split}_{label}_groups"] = int(part["group"].nunique())
            out[f"{split}_{label}_share"] = len(part) / len(of_label) if len(of_label) else None
            out[f"{split}_target_share"] = fractions[split]
    return out


def check_split(frame: pd.DataFrame, group_column: str = "group") -> None:
    """Raise if a group spans splits or a split misses a class (guards every run)."""
    spans = frame.groupby(group_column)["split"].nunique()
    leaking = spans[spans > 1].index.tolist()
    if leaking:
        raise ValueError(f"groups span several splits (leakage): {leaking[:10]}")
    missing = [
        f"{s}/{c}"
        for s in SPLITS
        for c in sorted(frame["label"].unique())
        if not ((frame["split"] == s) & (frame["label"] == c)).any()
    ]
    if missing:
        counts = _group_counts(frame, group_column)
        raise ConfigError(f"split/class combinations without images: {missing} ({counts})")


def _group_counts(frame: pd.DataFrame, group_column: str) -> str:
    """How many groups hold each class, and how many of them hold both: a class whose images
    sit in groups of the other class's majority gets no part of its own."""
    in_mixed = _in_mixed_group(frame["label"], frame[group_column])
    counts = []
    for label in sorted(frame["label"].unique()):
        of_label = frame["label"] == label
        mixed = frame.loc[of_label & in_mixed, group_column].nunique()
        counts.append(
            f"class '{label}' lies in {frame.loc[of_label, group_column].nunique()} groups, "
            f"{mixed} of them holding both classes"
        )
    return "; ".join(counts) + (
        "; a group holding both classes (a subject with cells of both, or one subject name "
        "used in both class folders) is placed as its majority class"
    )
