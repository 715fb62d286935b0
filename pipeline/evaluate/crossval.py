"""Validation beyond one test split: repeated grouped k-fold CV, plain or nested.

k-fold CV (stage `cv`): every image of the dataset (after segment+crop) is tested once per
repeat by a model that never saw its group (subject or duplicate chain). Inside each fold a
grouped validation part is carved out of the training part for checkpoint selection and only
the training part is augmented, so everything fitted (scalers, SVMs, networks) is fitted inside
the fold by construction. The summary gives the folds' mean and std and, with bootstrap CIs,
the metrics of the pooled out-of-fold predictions.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from pipeline import manifest, paths
from pipeline.config import ConfigError
from pipeline.evaluate.fold_store import FoldStore
from pipeline.evaluate.metrics import Number, compute_metrics, metrics_args, summarise_folds
from pipeline.io import atomic_path, atomic_write_json, read_image
from pipeline.labels import NEGATIVE, POSITIVE, THRESHOLD, call_scores, called_all, y_true
from pipeline.models.base import build_model
from pipeline.preprocess.augment import augmented_table, materialise, plan_augmentation
from pipeline.preprocess.split import (
    IMAGE_LEVEL_WARNING,
    check_split,
    grouped_folds,
    hold_out,
    split_groups,
)
from pipeline.train.context import TrainContext
from pipeline.train.history import selection_row

PREDICTION_COLUMNS = ["id", "label", "group", "repeat", "fold", "part", "p_all"]
WRITTEN_COLUMNS = [*PREDICTION_COLUMNS[:-1], "candidate", "p_all"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Fold:
    """One train/val/test assignment of the dataset's rows (`split[i]` for row i)."""

    repeat: int
    fold: int
    split: np.ndarray

    @property
    def name(self) -> str:
        return f"repeat{self.repeat}-fold{self.fold}"


def make_folds(
    frame: pd.DataFrame,
    folds: int,
    repeats: int,
    seed: int,
    val_fraction: float,
    group_by: str = "subject",
    tolerance: float = 0.25,
) -> list[Fold]:
    """Repeated stratified group k-fold, each fold's training part split again into train/val.

    The validation part (~`val_fraction` of the training part) is grouped and stratified too,
    so no group spans train, val and test, and every part holds both classes.
    """
    if folds < 2 or repeats < 1:
        raise ConfigError(f"cv.folds must be >= 2 and cv.repeats >= 1, got {folds}, {repeats}")
    if not 0 < val_fraction < 1:
        raise ConfigError(
            f"split.val / (split.train + split.val) must be in (0, 1) for CV, got {val_fraction}"
        )
    if group_by == "none":
        log.warning("cv: %s", IMAGE_LEVEL_WARNING)
    frame = frame.reset_index(drop=True)
    groups = split_groups(frame, group_by).reset_index(drop=True)
    if groups.nunique() < folds:
        raise ConfigError(f"cv.folds={folds} exceeds the dataset's {groups.nunique()} groups")
    out = []
    for repeat, fold, train, test in grouped_folds(
        frame, folds, repeats, seed, group_by=group_by, tolerance=tolerance
    ):
        val = hold_out(
            frame.iloc[train],
            groups.iloc[train],
            val_fraction,
            seed + 1,
            tolerance,
            f"the validation part of cv repeat {repeat} fold {fold}",
        )
        split = np.full(len(frame), "train", dtype=object)
        split[test] = "test"
        split[train[val]] = "val"
        checked = frame.assign(split=split, split_group=groups)
        try:
            check_split(checked, group_column="split_group")
        except ValueError as exc:
            # the same type: a ConfigError (a class missing from a part) stays the user's
            raise type(exc)(f"cv repeat {repeat} fold {fold}: {exc}") from exc
        out.append(Fold(repeat, fold, split))
    return out


def folds_for(frame: pd.DataFrame, cfg: DictConfig) -> list[Fold]:
    """The folds of `cv.*` with the split's validation share, grouping and tolerance."""
    return make_folds(
        frame,
        cfg.cv.folds,
        cfg.cv.repeats,
        cfg.seed,
        cfg.split.val / (cfg.split.train + cfg.split.val),
        group_by=cfg.split.group_by,
        tolerance=cfg.split.tolerance,
    )


def write_fold_dataset(
    frame: pd.DataFrame, fold: Fold, out_dir: Path, augment: Any, seed: int
) -> Path:
    """The fold's image folder `<out_dir>/{train,val}/<class>/*.png`; train alone augmented.

    `augment` is the `augment` config; its `splits` are ignored here: a CV test fold is never
    written, and augmenting the validation part would let near-copies pick the checkpoint.
    """
    frame = frame.reset_index(drop=True).assign(split=fold.split)
    kept = frame[frame["split"] != "test"].reset_index(drop=True)
    train_only = OmegaConf.create(
        {"ops": list(augment.ops), "multiplier": augment.multiplier, "splits": ["train"]}
    )
    table = augmented_table(kept, plan_augmentation(kept, train_only, seed))
    written = materialise(table, out_dir, desc=f"cv {fold.name} images")
    manifest.write(written, Path(out_dir) / "manifest.csv")  # groups, as in the augment stage
    return Path(out_dir)


def fit_predict_fold(
    frame: pd.DataFrame,
    fold: Fold,
    model_config: Mapping[str, Any],
    cfg: DictConfig,
    work_dir: Path,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
) -> tuple[pd.DataFrame, list[dict[str, float]]]:
    """Train a fresh model on the fold's train/val part; return P(ALL) of its validation and
    test rows (`fold_predictions`) and the training history.

    `cfg` supplies `augment`, `train`, `crop.size` and `seed` exactly as the train stage uses
    them; `work_dir` (emptied by the caller) receives the fold's images and checkpoints.
    """
    data_dir = write_fold_dataset(frame, fold, work_dir / "data", cfg.augment, cfg.seed)
    classifier = build_model(dict(model_config))
    history = classifier.fit(
        TrainContext.from_config(cfg, data_dir, work_dir / "checkpoints", on_epoch)
    )
    scored = frame.reset_index(drop=True)[fold.split != "train"]
    p_all = classifier.predict_proba([read_image(p) for p in scored["path"]])
    return fold_predictions(frame, fold, p_all), history


def train_or_resume(
    store: FoldStore,
    key: str,
    frame: pd.DataFrame,
    fold: Fold,
    model_name: str,
    cfg: DictConfig,
    work_dir: Path,
) -> tuple[pd.DataFrame, list[dict[str, float]]]:
    """`fit_predict_fold` inside an active MLflow run, or the result an earlier, killed run of
    the same fold and settings left in `store` (its epochs are logged again, tag `resumed`)."""
    from pipeline import tracking

    stored = store.load(key)
    if stored is not None:
        log.info("cv %s %s: resumed from %s", model_name, fold.name, store.root)
        tracking.set_tags({"resumed": "true"})
        for row in stored[1]:
            tracking.log_epoch(row, step=int(row.get("epoch", 1)))
        return stored
    predictions, history = fit_predict_fold(
        frame,
        fold,
        OmegaConf.to_container(cfg.models[model_name], resolve=True),
        cfg,
        work_dir,
        on_epoch=lambda epoch, row: tracking.log_epoch(row, step=epoch),
    )
    store.save(key, predictions, history)
    return predictions, history


def fold_predictions(frame: pd.DataFrame, fold: Fold, p_all: np.ndarray) -> pd.DataFrame:
    """One row per validation and test image of the fold, in frame order, with its P(ALL)."""
    scored = fold.split != "train"
    rows = frame.reset_index(drop=True)[scored]
    return rows[["id", "label", "group"]].assign(
        repeat=fold.repeat, fold=fold.fold, part=fold.split[scored], p_all=p_all
    )[PREDICTION_COLUMNS]


def test_fold_rows(predictions: pd.DataFrame) -> pd.DataFrame:
    """The test-fold rows (tables written before validation rows were kept have no `part`)."""
    if "part" not in predictions.columns:
        return predictions
    return predictions[predictions["part"] == "test"]


def test_fold_metrics(predictions: pd.DataFrame, **settings: Any) -> dict[str, Any]:
    """`compute_metrics` of one fold's test rows (`settings`: `metrics_args`)."""
    test = test_fold_rows(predictions)
    return compute_metrics(
        y_true(test["label"]), test["p_all"], groups=test["group"].to_numpy(), **settings
    )


def validation_row(predictions: pd.DataFrame) -> dict[str, float]:
    """Accuracy and log loss of the validation rows of one fold (what selection may read)."""
    val = predictions[predictions["part"] == "val"]
    if val.empty:
        return {}
    return call_scores(y_true(val["label"]).astype(bool), val["p_all"], "val")


def summarise_selection(selected: Sequence[Mapping[str, float]]) -> dict[str, Number]:
    """Mean/std over folds of the kept checkpoints' validation scores (`val_<m>_mean/_std`).

    These come from each fold's inner validation part only, never its test fold, so they are
    what hyperparameter selection may look at (`pipeline.stages.tune`).
    """
    out: dict[str, Number] = {}
    for name in ("val_accuracy", "val_loss"):
        values = np.array([row[name] for row in selected if row.get(name) is not None], float)
        out[f"{name}_mean"] = float(values.mean()) if len(values) else None
        out[f"{name}_std"] = float(values.std(ddof=1)) if len(values) > 1 else None
    return out


def rank_by_validation(scores: Sequence[Mapping[str, float]]) -> list[int]:
    """Candidate indices, best first, by validation scores only: highest `val_accuracy`, then
    lowest `val_loss`, then the earliest (the same rule as `tuning.select`)."""

    def key(i: int) -> tuple[float, float, int]:
        accuracy, loss = scores[i].get("val_accuracy"), scores[i].get("val_loss")
        return (
            -(accuracy if accuracy is not None else -1.0),
            loss if loss is not None else float("inf"),
            i,
        )

    return sorted(range(len(scores)), key=key)


def choose(scores: Sequence[Mapping[str, float]]) -> int:
    """Index of the best candidate by `rank_by_validation`."""
    if not scores:
        raise ValueError("no candidates to choose from")
    return rank_by_validation(scores)[0]


def cv_run_args(dataset: str, model_name: str) -> dict[str, str]:
    """The MLflow run fields every run of one model's CV carries (parent, fold, shard)."""
    return {"dataset": dataset, "model": model_name, "stage": f"cv@{model_name}"}


def cross_validate(
    frame: pd.DataFrame,
    cfg: DictConfig,
    model_name: str,
    run_name: str,
    parent_run_id: str | None = None,
    candidates: Sequence[Mapping[str, Any]] = ({},),
) -> tuple[dict[str, Any], pd.DataFrame]:
    """k-fold CV of one model as configured in `cfg` (cv, split, augment, train, crop, seed).

    With several `candidates` (override dicts, e.g. a tuning grid) the selection is nested:
    inside each fold every candidate trains on the fold's training part, the one with the best
    score on the fold's validation part is kept (`choose`), and only its predictions of the
    test fold are scored; the test fold never sees the others. The summary then says
    `"selection": "nested"` and lists the choice per fold.

    MLflow: one run (`run_name`, nested under `parent_run_id` if given) with the summary and
    the out-of-fold predictions, one child run per fold (per candidate when nested). Returns
    the summary and the predictions (validation and test rows of every fold, kept candidate).
    """
    from pipeline import tracking  # MLflow only where CV runs

    dataset = cfg.dataset.name
    plan = CandidatePlan.build(frame, cfg, model_name, candidates)
    nested = len(plan.configs) > 1
    folds = folds_for(frame, cfg)
    plan.report_unusable(folds)
    bootstrap = metrics_args(cfg)
    parts, per_fold, selected = [], [], []
    run_args = cv_run_args(dataset, model_name)
    with tracking.start_run(
        cfg, run_name=run_name, nested=parent_run_id is not None, parent_run_id=parent_run_id,
        **run_args,
    ) as parent:  # fmt: skip
        tracking.set_tags({"selection": "nested" if nested else "fixed"})
        for fold in folds:
            tried = train_candidates(plan, frame, fold, cfg, run_name, parent.info.run_id)
            best = choose([kept for _, kept, _ in tried])
            predictions, kept, run_id = tried[best]
            metrics = test_fold_metrics(predictions, **bootstrap)
            with tracking.start_run(  # the test fold scores the chosen candidate only
                cfg, run_id=run_id, nested=True, parent_run_id=parent.info.run_id, **run_args
            ):
                tracking.log_test_metrics(metrics)
                tracking.set_tags({"chosen": "true"})
            parts.append(predictions.assign(candidate=best))
            per_fold.append(metrics)
            selected.append(kept)
        predictions = pd.concat(parts, ignore_index=True)
        summary = summarise_cv(
            predictions, per_fold, cfg.cv.folds, cfg.cv.repeats, selected, **bootstrap
        )
        summary["selection"] = "nested" if nested else "fixed"
        summary["candidates"] = len(plan.configs)
        tracking.log_cv_summary(summary)
        with tempfile.TemporaryDirectory() as scratch:
            table = Path(scratch) / f"{model_name}.csv"
            predictions.to_csv(table, index=False)
            tracking.log_artifacts([table], artifact_path="cv")
    plan.store.clear()
    return summary, predictions


@dataclass(frozen=True)
class CandidatePlan:
    """What every fold of one model's CV trains: each candidate's config and fold-store key."""

    model_name: str
    configs: list[DictConfig]
    fingerprints: list[str]
    store: FoldStore

    @classmethod
    def build(
        cls,
        frame: pd.DataFrame,
        cfg: DictConfig,
        model_name: str,
        candidates: Sequence[Mapping[str, Any]],
    ) -> CandidatePlan:
        from pipeline.evaluate.tuning import apply_candidate, data_digest, fingerprint

        configs = [apply_candidate(cfg, candidate) for candidate in candidates]
        digest = data_digest(frame)
        store = FoldStore(paths.cv_fold_store(cfg.dataset.name, model_name))
        store.check_writable()
        fingerprints = [fingerprint(c, model_name, digest) for c in configs]
        return cls(model_name, configs, fingerprints, store)

    def key(self, number: int, fold: Fold) -> str:
        return self.store.key(self.fingerprints[number], fold.name)

    def report_unusable(self, folds: Sequence[Fold]) -> None:
        """Warn about store entries no (fold, candidate) of this CV can use: typically a shard
        trained on another machine from other crop bytes or code, which this run retrains."""
        keys = {self.key(n, fold) for fold in folds for n in range(len(self.configs))}
        unusable = self.store.entries_except(keys)
        if unusable:
            log.warning(
                "cv %s: %d entries in %s match no fold of this CV (other settings, images or "
                "code; a shard run elsewhere must use the same commit and byte-identical "
                "crops): kept, not used: %s",
                self.model_name,
                len(unusable),
                self.store.root,
                ", ".join(p.name for p in unusable),
            )


def train_candidates(
    plan: CandidatePlan,
    frame: pd.DataFrame,
    fold: Fold,
    cfg: DictConfig,
    run_name: str,
    parent_run_id: str,
) -> list[tuple[pd.DataFrame, dict[str, float], str]]:
    """Train (or resume from the fold store) every candidate on `fold`, one MLflow child run
    each; (predictions, kept epoch's scores, run id) per candidate. Nothing is scored here."""
    from pipeline import tracking

    name = plan.model_name
    run_args = cv_run_args(cfg.dataset.name, name)
    tried = []
    for number, candidate_cfg in enumerate(plan.configs):
        suffix = f" #{number}" if len(plan.configs) > 1 else ""
        with (
            tracking.start_run(
                cfg,
                run_name=f"{run_name} {fold.name}{suffix}",
                nested=True,
                parent_run_id=parent_run_id,
                **run_args,
            ) as child,
            tempfile.TemporaryDirectory(prefix=f"cv-{name}-") as work,
        ):
            predictions, history = train_or_resume(
                plan.store, plan.key(number, fold), frame, fold, name, candidate_cfg, Path(work)
            )
            kept = selection_row(history, candidate_cfg.train.monitor, validation_row(predictions))
            tracking.log_selected_epoch(kept)
        tried.append((predictions, kept, child.info.run_id))
    return tried


def train_fold_shard(
    frame: pd.DataFrame,
    cfg: DictConfig,
    model_name: str,
    fold_numbers: Sequence[int],
    candidates: Sequence[Mapping[str, Any]] = ({},),
) -> Path:
    """Train only some outer folds of the CV into its fold store, and score nothing.

    A nested CV of a network on C-NMC runs for hours on a CPU: its folds can train on several
    machines (or in several sessions) at once, each writing its entries to one shared store
    (`ALL_DETECT_CV_STORE`), and the `cv` stage then finds every fold finished and only
    selects and scores. Every machine must run the same code on byte-identical images (the
    entries' keys hold both); the `cv` stage names the entries it cannot use. Returns the store.
    """
    from pipeline import tracking

    folds = folds_for(frame, cfg)
    unknown = [n for n in fold_numbers if not 0 <= n < len(folds)]
    if unknown or not fold_numbers:
        raise ConfigError(
            f"cv fold numbers {list(fold_numbers)}: give one or more of 0..{len(folds) - 1} "
            f"(cv.folds={cfg.cv.folds} x cv.repeats={cfg.cv.repeats})"
        )
    plan = CandidatePlan.build(frame, cfg, model_name, candidates)
    run_name = f"cv {model_name} folds {','.join(map(str, fold_numbers))}"
    run_args = cv_run_args(cfg.dataset.name, model_name)
    with tracking.start_run(cfg, run_name=run_name, **run_args) as parent:
        tracking.set_tags({"shard": ",".join(map(str, fold_numbers))})
        for number in sorted(set(fold_numbers)):
            train_candidates(plan, frame, folds[number], cfg, run_name, parent.info.run_id)
    return plan.store.root


def ensemble_cv(
    members: Mapping[str, pd.DataFrame],
    weights: Sequence[float] | None,
    top_k: int | None,
    cfg: DictConfig,
) -> tuple[dict[str, Any], pd.DataFrame, dict[str, Any]]:
    """Soft voting over the members' own CV predictions: no retraining, identical folds.

    `members` maps a name to its `predictions.csv`. Fixed members are averaged with `weights`;
    with `top_k`, each fold keeps the k members with the best scores on that fold's validation
    part (`choose`'s rule), so the test fold never picks a member. Returns the summary, the
    ensemble's predictions and the selection record.
    """
    names = list(members)
    keys = ["id", "repeat", "fold", "part"]
    base = members[names[0]].sort_values(keys).reset_index(drop=True)
    for name in names[1:]:
        other = members[name].sort_values(keys).reset_index(drop=True)
        if not other[keys].equals(base[keys]):
            raise ConfigError(
                f"ensemble: {name}'s CV predictions are not on the same folds as {names[0]}'s "
                "(re-run their cv stages with the same cv, split and seed settings)"
            )
    if top_k is not None and "val" not in set(base["part"]):
        raise ConfigError(
            f"ensemble.top_k={top_k} chooses members on validation rows, and the CV predictions "
            f"of {names} have none (part 'val'): re-run their cv stages"
        )
    stacked = np.stack(
        [members[n].sort_values(keys)["p_all"].to_numpy(float) for n in names]
    )  # (members, rows)
    bootstrap = metrics_args(cfg)
    parts, per_fold, selected, chosen = [], [], [], []
    for (repeat, fold), rows in base.groupby(["repeat", "fold"], sort=True):
        index = rows.index.to_numpy()
        if top_k is None:
            keep = list(range(len(names)))
            w = np.asarray(weights or [1.0] * len(names), float)
        else:
            scores = [
                validation_row(base.loc[index].assign(p_all=stacked[m, index]))
                for m in range(len(names))
            ]
            keep, w = sorted(rank_by_validation(scores)[:top_k]), np.ones(top_k)
        p_all = (w / w.sum()) @ stacked[keep][:, index]
        predictions = base.loc[index, ["id", "label", "group", "repeat", "fold", "part"]].assign(
            candidate=0, p_all=p_all
        )
        per_fold.append(test_fold_metrics(predictions, **bootstrap))
        selected.append(validation_row(predictions))
        parts.append(predictions)
        chosen.append(
            {"repeat": int(repeat), "fold": int(fold), "members": [names[m] for m in keep]}
        )
    predictions = pd.concat(parts, ignore_index=True)
    summary = summarise_cv(
        predictions, per_fold, cfg.cv.folds, cfg.cv.repeats, selected if selected[0] else (),
        **bootstrap,
    )  # fmt: skip
    summary["selection"] = "nested" if top_k is not None else "fixed"
    summary["candidates"] = len(names)
    record = {
        "selection": summary["selection"],
        "pool": names,
        "weights": None if weights is None else list(weights),
        "top_k": top_k,
        "chosen": chosen,
    }
    return summary, predictions, record


def selection_record(
    summary: Mapping[str, Any], candidates: Sequence[Mapping[str, Any]], predictions: pd.DataFrame
) -> dict[str, Any]:
    """`selection.json` of a CV: the candidates and the one each fold kept (read from its
    prediction rows), so a reader sees which settings scored each test fold."""
    chosen = predictions.groupby(["repeat", "fold"])["candidate"].first()
    return {
        "selection": summary["selection"],
        "candidates": list(candidates),
        "chosen": [
            {"repeat": int(r), "fold": int(f), "candidate": int(c)} for (r, f), c in chosen.items()
        ],
    }


def write_cv_outputs(
    dataset: str,
    model_name: str,
    summary: Mapping[str, Any],
    predictions: pd.DataFrame | None = None,
    subjects: pd.DataFrame | None = None,
    selection: Mapping[str, Any] | None = None,
) -> None:
    """`reports/cv/<dataset>/<model>/` (predictions.csv, subjects.csv, selection.json) and the
    summary `reports/metrics/<dataset>/cv/<model>.json`, each written atomically. Missing
    tables are written empty (CV off)."""
    write_cv_folder(paths.cv_dir(dataset, model_name), predictions, subjects, selection)
    atomic_write_json(paths.cv_metrics(dataset, model_name), dict(summary))


def write_cv_folder(
    folder: Path,
    predictions: pd.DataFrame | None = None,
    subjects: pd.DataFrame | None = None,
    selection: Mapping[str, Any] | None = None,
) -> None:
    """`folder/` with predictions.csv, subjects.csv and selection.json, replaced atomically."""
    predictions = predictions if predictions is not None else pd.DataFrame()
    with atomic_path(folder) as staged:
        staged.mkdir()
        predictions.reindex(columns=WRITTEN_COLUMNS).to_csv(staged / "predictions.csv", index=False)
        (subjects if subjects is not None else pd.DataFrame()).to_csv(
            staged / "subjects.csv", index=False
        )
        atomic_write_json(staged / "selection.json", dict(selection or {"enabled": False}))


POOLED_CI_COVERS = (
    "sampling of the images (resampled by group: subject or duplicate chain) given the "
    "procedure; the k fold models differ, and their training variation is in the folds' std"
)


def summary_from_predictions(
    predictions: pd.DataFrame, folds: int, repeats: int, **bootstrap: Any
) -> dict[str, Any]:
    """`summarise_cv` of a finished CV's predictions table alone: each fold's test rows
    scored, its validation rows as the kept model's validation scores. What `rescore` recomputes
    a published CV with when the metrics or the selection rule change."""
    per_fold, selected = [], []
    for _, fold in predictions.groupby(["repeat", "fold"], sort=True):
        per_fold.append(test_fold_metrics(fold, **bootstrap))
        selected.append(validation_row(fold) if "part" in fold else {})
    return summarise_cv(
        predictions, per_fold, folds, repeats, [row for row in selected if row], **bootstrap
    )


def summarise_cv(
    predictions: pd.DataFrame,
    per_fold: Sequence[Mapping[str, Number]],
    folds: int,
    repeats: int,
    selected: Sequence[Mapping[str, float]] = (),
    **bootstrap: Any,
) -> dict[str, Any]:
    """Flat CV metrics: `<m>_mean`/`<m>_std` over `per_fold` metrics, pooled `<m>` with its CI,
    and `val_<m>_mean/_std` of the kept checkpoints (`selected`, one history row per fold).

    Pooled: each image's out-of-fold P(ALL) on its test fold, averaged over repeats, so every
    image counts once in the bootstrap (repeats are not independent test images).
    `bootstrap` goes to `compute_metrics` (n_boot, confidence, seed).
    """
    pooled = (
        test_fold_rows(predictions)
        .groupby("id", sort=True)
        .agg(label=("label", "first"), group=("group", "first"), p_all=("p_all", "mean"))
    )
    return {
        "enabled": True,
        "folds": folds,
        "repeats": repeats,
        **summarise_folds(per_fold),
        **(summarise_selection(selected) if selected else {}),
        **compute_metrics(
            y_true(pooled["label"]), pooled["p_all"], groups=pooled["group"].to_numpy(), **bootstrap
        ),
        "ci_covers": POOLED_CI_COVERS,
    }


def subject_table(predictions: pd.DataFrame) -> pd.DataFrame:
    """Per group (subject) of the test folds: its cells, accuracy, the share called ALL (mean
    over repeats) and the subject-level call (ALL when at least half its cells are called ALL)."""
    test = test_fold_rows(predictions).assign(
        correct=lambda t: called_all(t["p_all"]) == (t["label"] == POSITIVE),
        called=lambda t: called_all(t["p_all"]),
    )
    table = test.groupby("group", sort=True).agg(
        label=("label", "first"),
        cells=("id", "nunique"),
        accuracy=("correct", "mean"),
        share_called_all=("called", "mean"),
    )
    table["subject_call"] = np.where(table["share_called_all"] >= THRESHOLD, POSITIVE, NEGATIVE)
    table["subject_correct"] = table["subject_call"] == table["label"]
    return table.reset_index()
