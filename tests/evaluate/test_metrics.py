import json

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

from pipeline.evaluate.metrics import (
    METRICS,
    bootstrap_replicates,
    collapse_warning,
    compute_metrics,
    exact_interval,
    group_bootstrap_weights,
    summarise_folds,
)


def scores(n=500, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    return y, np.clip(0.35 * y + 0.65 * rng.random(n), 0, 1)


def test_hand_computed_confusion_counts():
    # 4 ALL: p = .9 .8 .6 .3 -> TP 3, FN 1; 4 hem: p = .7 .4 .2 .1 -> FP 1, TN 3.
    y = [1, 1, 1, 1, 0, 0, 0, 0]
    p = [0.9, 0.8, 0.6, 0.3, 0.7, 0.4, 0.2, 0.1]
    m = compute_metrics(y, p, n_boot=50)
    assert (m["tp"], m["fn"], m["fp"], m["tn"], m["n"]) == (3, 1, 1, 3, 8)
    assert m["accuracy"] == pytest.approx(6 / 8)
    assert m["precision"] == pytest.approx(3 / 4)
    assert m["recall"] == pytest.approx(3 / 4)
    assert m["specificity"] == pytest.approx(3 / 4)
    assert m["f1"] == pytest.approx(3 / 4)
    assert m["balanced_accuracy"] == pytest.approx(3 / 4)
    # 16 (pos, neg) pairs; the positive scores higher in 13 (not: 0.6 < 0.7, 0.3 < 0.4, 0.3 < 0.7).
    assert m["roc_auc"] == pytest.approx(13 / 16)


def test_threshold_moves_predictions():
    y, p = [1, 1, 0, 0], [0.9, 0.55, 0.52, 0.1]
    assert compute_metrics(y, p, threshold=0.5, n_boot=10)["fp"] == 1
    assert compute_metrics(y, p, threshold=0.6, n_boot=10)["fn"] == 1


def test_ci_contains_estimate_is_deterministic_and_json_safe():
    y, p = scores()
    m = compute_metrics(y, p, seed=7)
    for name in METRICS:
        assert m[f"{name}_ci_low"] <= m[name] <= m[f"{name}_ci_high"], name
        assert m[f"{name}_ci_low"] < m[f"{name}_ci_high"], name
    assert compute_metrics(y, p, seed=7) == m
    assert compute_metrics(y, p, seed=8)["roc_auc_ci_low"] != m["roc_auc_ci_low"]
    json.dumps(m, allow_nan=False)


def test_wider_confidence_gives_wider_interval():
    y, p = scores()
    narrow, wide = compute_metrics(y, p, confidence=0.5), compute_metrics(y, p, confidence=0.99)
    assert wide["accuracy_ci_low"] < narrow["accuracy_ci_low"]
    assert wide["accuracy_ci_high"] > narrow["accuracy_ci_high"]


def test_bootstrap_matches_sklearn_on_explicit_resamples():
    y, p = scores(60, seed=3)
    p = np.round(p, 1)  # ties, to exercise the tie handling of the rank AUC
    groups = np.arange(len(y)) // 3  # three images per group: resamples of whole groups
    weights = group_bootstrap_weights(y, groups, 5, np.random.default_rng(0))
    boot = bootstrap_replicates(y, p, 0.5, weights)
    for b in range(5):
        idx = np.repeat(np.arange(len(y)), weights[b].astype(int))
        yb, pb = y[idx], p[idx]
        pred = (pb >= 0.5).astype(int)
        expected = {
            "accuracy": accuracy_score(yb, pred),
            "precision": precision_score(yb, pred, zero_division=0),
            "recall": recall_score(yb, pred),
            "f1": f1_score(yb, pred),
            "f1_weighted": f1_score(yb, pred, average="weighted"),
            "specificity": recall_score(yb, pred, pos_label=0),
            "balanced_accuracy": balanced_accuracy_score(yb, pred),
            "roc_auc": roc_auc_score(yb, pb),
        }
        for name, value in expected.items():
            assert boot[name][b] == pytest.approx(value), name


def test_group_bootstrap_draws_whole_groups_and_keeps_both_classes():
    y = np.array([1] * 6 + [0] * 4)
    groups = np.array(["a", "a", "a", "b", "b", "c", "d", "d", "e", "e"])
    codes = np.unique(groups, return_inverse=True)[1]
    weights = group_bootstrap_weights(y, codes, 200, np.random.default_rng(1))
    for row in weights:
        for g in np.unique(codes):  # every image of a group is drawn as often as the group
            assert len(set(row[codes == g])) == 1
        assert row[y == 1].sum() > 0 and row[y == 0].sum() > 0


def test_perfect_small_sample_gets_the_exact_interval_not_a_point():
    # 26 of 26 right: the percentile bootstrap said [100, 100]; Clopper-Pearson [86.8, 100].
    y = np.array([1] * 13 + [0] * 13)
    m = compute_metrics(y, np.where(y == 1, 0.9, 0.1), n_boot=200)
    assert m["accuracy"] == 1.0
    assert m["accuracy_ci_low"] == pytest.approx(0.8677, abs=1e-4)
    assert m["accuracy_ci_high"] == 1.0
    for name in METRICS:  # nothing is zero-width from a finite sample
        assert m[f"{name}_ci_low"] < m[f"{name}_ci_high"], name


def test_clustered_cells_widen_the_interval():
    # 8 subjects of 50 cells, one class each, every subject with its own stain (a score
    # offset): its cells are not 50 independent draws
    rng = np.random.default_rng(5)
    subjects = np.repeat(np.arange(8), 50)
    y = (subjects < 4).astype(int)
    offset = rng.normal(0, 1.5, 8)[subjects]
    p = 1 / (1 + np.exp(-(1.2 * (2 * y - 1) + offset + rng.normal(0, 1, len(y)))))
    independent = compute_metrics(y, p, n_boot=400)
    clustered = compute_metrics(y, p, groups=subjects.astype(str), n_boot=400)
    width = lambda m, k: m[f"{k}_ci_high"] - m[f"{k}_ci_low"]  # noqa: E731
    assert clustered["n_groups"] == 8 and independent["n_groups"] == 400
    assert width(clustered, "roc_auc") >= width(independent, "roc_auc")
    assert width(clustered, "accuracy") >= width(independent, "accuracy")


def test_weighted_f1_is_the_challenge_metric():
    y = [1, 1, 1, 0, 0, 1, 0, 1]
    p = [0.9, 0.2, 0.7, 0.6, 0.1, 0.8, 0.3, 0.4]
    m = compute_metrics(y, p, n_boot=20)
    assert m["f1_weighted"] == pytest.approx(f1_score(y, np.asarray(p) >= 0.5, average="weighted"))


def test_a_model_calling_everything_one_class_is_flagged():
    y = np.array([1] * 30 + [0] * 10)
    collapsed = compute_metrics(y, np.full(40, 0.8), n_boot=20)
    assert collapsed["collapsed"] and collapsed["predicted_all_share"] == 1.0
    assert collapsed["balanced_accuracy"] == 0.5
    assert "COLLAPSED" in collapse_warning("svm_hog", collapsed)
    fine = compute_metrics(y, np.where(y == 1, 0.8, 0.2), n_boot=20)
    assert not fine["collapsed"]


def test_single_class_gives_none_auc():
    m = compute_metrics([1, 1, 1, 1], [0.9, 0.8, 0.2, 0.7], n_boot=100)
    assert m["roc_auc"] is None and m["roc_auc_ci_low"] is None and m["roc_auc_ci_high"] is None
    assert m["recall"] == pytest.approx(3 / 4)
    assert m["balanced_accuracy"] == pytest.approx(3 / 4)
    assert m["specificity"] == 0  # zero division -> 0
    json.dumps(m, allow_nan=False)


def test_no_positive_predictions_give_zero_precision():
    m = compute_metrics([1, 0, 1, 0], [0.1, 0.2, 0.3, 0.4], n_boot=20)
    assert m["precision"] == 0 and m["f1"] == 0
    # no predicted positive: precision is not estimated at all by these 4 images
    assert (m["precision_ci_low"], m["precision_ci_high"]) == (0.0, 1.0)


@pytest.mark.parametrize(
    "y,p,match",
    [
        ([1, 0], [0.5], "equal length"),
        ([], [], "empty"),
        ([1, 2], [0.1, 0.2], "0/1"),
        ([1, 0], [0.1, 1.5], "probabilities"),
        ([1, 0], [0.1, np.nan], "probabilities"),
    ],
)
def test_bad_input_is_named(y, p, match):
    with pytest.raises(ValueError, match=match):
        compute_metrics(y, p)


def test_summarise_folds():
    folds = [
        {"accuracy": 0.8, "roc_auc": 0.9, "n": 10},
        {"accuracy": 0.9, "roc_auc": None, "n": 12},
        {"accuracy": 1.0, "roc_auc": 0.7, "n": 11},
    ]
    s = summarise_folds(folds)
    assert s["n_folds"] == 3 and s["n"] == 33
    assert s["accuracy_mean"] == pytest.approx(0.9)
    assert s["accuracy_std"] == pytest.approx(0.1)
    assert s["roc_auc_mean"] == pytest.approx(0.8)  # the undefined fold is left out
    assert s["f1_mean"] is None and s["f1_std"] is None
    assert summarise_folds(folds[:1])["accuracy_std"] is None
    with pytest.raises(ValueError):
        summarise_folds([])


def test_a_class_without_errors_keeps_its_exact_uncertainty():
    # 15/15 ALL found, 4 of 15 healthy cells called ALL: no resample can miss an ALL cell, so
    # the bootstrap alone would give F1 and balanced accuracy recall's certainty
    y = np.array([1] * 15 + [0] * 15)
    p = np.where(y == 1, 0.9, 0.1)
    p[15:19] = 0.8
    m = compute_metrics(y, p, n_boot=500)
    recall_low = m["recall_ci_low"]
    assert m["recall"] == 1.0 and recall_low == pytest.approx(0.782, abs=1e-3)
    tp = 15 * recall_low  # F1 and balanced accuracy with recall at its exact bound
    assert m["f1_ci_low"] <= 2 * tp / (2 * tp + 4 + (15 - tp)) + 1e-12
    assert m["balanced_accuracy_ci_low"] <= (recall_low + m["specificity"]) / 2 + 1e-12
    assert m["f1_weighted_ci_low"] < m["f1_weighted"] < m["f1_weighted_ci_high"]


def test_rates_off_the_boundary_leave_the_bootstrap_interval_alone():
    y, p = scores(200, seed=3)
    m = compute_metrics(y, p, n_boot=300, seed=9)
    weights = group_bootstrap_weights(y, np.arange(len(y)), 300, np.random.default_rng(9))
    boot = bootstrap_replicates(y, p, 0.5, weights)
    for name in ("f1", "f1_weighted", "balanced_accuracy"):
        expected = np.percentile(boot[name], [2.5, 97.5])
        assert [m[f"{name}_ci_low"], m[f"{name}_ci_high"]] == pytest.approx(expected)


def test_a_stuck_rate_of_clustered_cells_counts_its_groups_not_its_cells():
    """4 ALL subjects of 60 cells, all called ALL: recall is 4/4 subjects, not 240/240 cells,
    and F1 and balanced accuracy inherit that bound."""
    y = np.r_[np.ones(240), np.zeros(116)].astype(int)
    p = np.r_[np.full(240, 0.9), np.full(106, 0.1), np.full(10, 0.9)]
    groups = np.r_[np.repeat(["A1", "A2", "A3", "A4"], 60), np.repeat(["H1", "H2"], 58)]
    m = compute_metrics(y, p, groups=groups, n_boot=300)
    four_of_four = exact_interval(4, 4, 0.95)
    assert m["recall"] == 1.0
    assert (m["recall_ci_low"], m["recall_ci_high"]) == pytest.approx(four_of_four)
    assert m["balanced_accuracy_ci_low"] <= (four_of_four[0] + m["specificity"]) / 2 + 1e-12
    # unclustered cells keep the exact interval over cells
    cells = compute_metrics(y, p, n_boot=300)
    assert cells["recall_ci_low"] == pytest.approx(exact_interval(240, 240, 0.95)[0])


def test_a_single_class_test_set_is_not_called_collapsed():
    """Calling every cell ALL is no collapse when every test cell is ALL."""
    m = compute_metrics([1] * 20, [0.9] * 20, n_boot=20)
    assert m["predicted_all_share"] == 1.0 and not m["collapsed"]


def test_the_collapse_share_itself_is_not_a_collapse():
    y = np.array([1] * 10 + [0] * 10)
    p = np.array([0.9] + [0.1] * 19)  # 1 of 20 called ALL: exactly 5%
    assert not compute_metrics(y, p, n_boot=20, collapse_share=0.05)["collapsed"]
    assert compute_metrics(y, p, n_boot=20, collapse_share=0.06)["collapsed"]


def test_an_unvarying_bootstrap_falls_back_on_the_smaller_classs_groups():
    # a perfect ranking: every resample's ROC-AUC is 1; 2 healthy subjects, 5 ALL subjects
    groups = np.array(["h1"] * 4 + ["h2"] * 4 + [f"a{i}" for i in range(5) for _ in range(2)])
    y = np.array([0] * 8 + [1] * 10)
    m = compute_metrics(y, np.where(y == 1, 0.9, 0.1), groups=groups, n_boot=50)
    assert m["roc_auc"] == 1.0
    assert m["roc_auc_ci_low"] == pytest.approx(exact_interval(2, 2, 0.95)[0])
