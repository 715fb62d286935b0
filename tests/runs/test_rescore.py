"""`rescore`: a published run's test metrics recomputed from its committed predictions, only
from predictions the run's lock proves, never over another run's figures; and the committed
published metrics are what today's metrics code gives."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from pipeline.evaluate import crossval
from pipeline.evaluate.metrics import compute_metrics
from pipeline.io import dvc_dir_md5
from pipeline.runs import rescore
from pipeline.stages import rescore as rescore_cli

REPO = Path(__file__).resolve().parents[2]
PARAMS = {
    "dataset": {"name": "ds"},
    "seed": 3,
    "evaluate": {"bootstrap_samples": 200, "confidence": 0.95, "collapse_share": 0.05},
}


def make_run(root: Path) -> Path:
    """A snapshot of one model whose test set has no false positive (a stuck specificity),
    its metrics file as an older interval rule wrote it (F1's low bound too high)."""
    labels = ["all"] * 12 + ["hem"] * 12
    p_all = np.r_[np.full(10, 0.9), [0.2, 0.3], np.full(12, 0.1)]
    predictions = root / "reports" / "plots" / "ds" / "m" / "predictions.csv"
    predictions.parent.mkdir(parents=True)
    frame = pd.DataFrame({"id": range(24), "label": labels, "group": range(24), "p_all": p_all})
    frame.to_csv(predictions, index=False)
    old = compute_metrics([1] * 12 + [0] * 12, p_all, groups=np.arange(24).astype(str), n_boot=200)
    old.update(f1_ci_low=0.95, model_digest="abc")
    snapshot = root / "reports" / "experiments" / "run"
    (snapshot / "metrics").mkdir(parents=True)
    (snapshot / "metrics" / "m.json").write_text(json.dumps(old))
    (snapshot / "metrics" / "split.json").write_text(json.dumps({"train": 1}))
    (snapshot / "params.yaml").write_text(yaml.safe_dump(PARAMS))
    md5 = hashlib.md5(predictions.read_bytes()).hexdigest()
    stage = {"outs": [{"path": "reports/plots/ds/m/predictions.csv", "md5": md5}]}
    (snapshot / "dvc.lock").write_text(yaml.safe_dump({"stages": {"evaluate@m": stage}}))
    published = root / "reports" / "metrics" / "ds" / "m.json"
    published.parent.mkdir(parents=True)
    published.write_text(json.dumps(old))
    return snapshot


def test_rescore_rewrites_the_published_file_and_keeps_the_run_as_written(tmp_path):
    snapshot = make_run(tmp_path)
    as_written = (snapshot / "metrics" / "m.json").read_text()
    assert rescore.rescore(snapshot, tmp_path) == [Path("reports/metrics/ds/m.json")]
    published = json.loads((tmp_path / "reports/metrics/ds/m.json").read_text())
    frame = pd.read_csv(tmp_path / "reports/plots/ds/m/predictions.csv")
    expected = compute_metrics(
        (frame["label"] == "all").astype(int), frame["p_all"], frame["group"].astype(str),
        n_boot=200, seed=3,
    )  # fmt: skip
    assert {k: published[k] for k in expected} == expected
    assert published["model_digest"] == "abc"  # what the run recorded besides its figures
    record = published["rescored"]
    assert record["run"] == "reports/experiments/run/dvc.lock"
    assert record["from"] == "reports/plots/ds/m/predictions.csv"
    assert record["replaced"]["f1_ci_low"] == 0.95
    assert published["f1_ci_low"] < 0.95
    assert (snapshot / "metrics" / "m.json").read_text() == as_written
    assert rescore.rescore(snapshot, tmp_path) == []  # idempotent


def test_predictions_the_lock_does_not_prove_are_refused(tmp_path):
    snapshot = make_run(tmp_path)
    predictions = tmp_path / "reports/plots/ds/m/predictions.csv"
    predictions.write_text(predictions.read_text().replace("0.9", "0.8"))
    with pytest.raises(rescore.RescoreError, match="predictions.csv: md5 .* not the"):
        rescore.rescore(snapshot, tmp_path)
    assert "rescored" not in json.loads((tmp_path / "reports/metrics/ds/m.json").read_text())


def test_another_runs_published_figures_are_kept_and_this_runs_go_to_its_snapshot(tmp_path):
    snapshot = make_run(tmp_path)
    published = tmp_path / "reports/metrics/ds/m.json"
    published.write_text(json.dumps({"accuracy": 0.5, "note": "another run"}))
    copy = Path("reports/experiments/run/rescored/ds/m.json")
    assert rescore.rescore(snapshot, tmp_path) == [copy]
    assert json.loads(published.read_text())["note"] == "another run"
    assert json.loads((tmp_path / copy).read_text())["f1_ci_low"] < 0.95
    assert rescore.rescore(snapshot, tmp_path) == []  # done once


def make_cv_run(root: Path) -> Path:
    """A CV snapshot of one model whose summary scored its validation parts otherwise than
    its own validation predictions do (resnet50_svm's CNN head)."""
    rng = np.random.default_rng(0)
    rows = []
    for fold in range(3):
        for part, n in (("val", 8), ("test", 10)):
            labels = ["all", "hem"] * (n // 2)
            for i, label in enumerate(labels):
                p = float(np.clip((0.7 if label == "all" else 0.3) + rng.normal(0, 0.3), 0, 1))
                rows.append(
                    {"id": f"{fold}{part}{i}", "label": label, "group": f"g{fold}{i % 4}",
                     "repeat": 0, "fold": fold, "part": part, "candidate": 0, "p_all": p}
                )  # fmt: skip
    folder = root / "reports/experiments/cvrun/cv/m"
    folder.mkdir(parents=True)
    frame = pd.DataFrame(rows)
    frame.to_csv(folder / "predictions.csv", index=False)
    written = crossval.summary_from_predictions(frame, 3, 1, n_boot=200, confidence=0.95, seed=3)
    written.update(val_accuracy_mean=0.99, val_accuracy_std=0.0)  # the head's, not its own
    snapshot = folder.parents[1]
    (snapshot / "metrics" / "cv").mkdir(parents=True)
    (snapshot / "metrics" / "cv" / "m.json").write_text(json.dumps(written))
    (snapshot / "params.yaml").write_text(yaml.safe_dump(PARAMS))
    stage = {"outs": [{"path": "reports/cv/ds/m", "md5": dvc_dir_md5(folder)}]}
    (snapshot / "dvc.lock").write_text(yaml.safe_dump({"stages": {"cv@m": stage}}))
    published = root / "reports/metrics/ds/cv/m.json"
    published.parent.mkdir(parents=True)
    published.write_text(json.dumps(written))
    return snapshot


def test_a_cv_summary_is_recomputed_from_its_folds_own_validation_predictions(tmp_path):
    snapshot = make_cv_run(tmp_path)
    assert rescore.rescore(snapshot, tmp_path) == [Path("reports/metrics/ds/cv/m.json")]
    published = json.loads((tmp_path / "reports/metrics/ds/cv/m.json").read_text())
    frame = pd.read_csv(snapshot / "cv" / "m" / "predictions.csv")
    own = [crossval.validation_row(fold) for _, fold in frame.groupby("fold")]
    assert published["val_accuracy_mean"] == pytest.approx(
        np.mean([row["val_accuracy"] for row in own])
    )
    assert set(published["rescored"]["replaced"]) == {"val_accuracy_mean", "val_accuracy_std"}


def test_cv_predictions_the_lock_does_not_prove_are_refused(tmp_path):
    snapshot = make_cv_run(tmp_path)
    table = snapshot / "cv" / "m" / "predictions.csv"
    table.write_text(table.read_text().replace("0.", "0.0", 1))
    with pytest.raises(rescore.RescoreError, match="not the run's CV predictions"):
        rescore.rescore(snapshot, tmp_path)


def test_a_missing_param_is_named(tmp_path):
    snapshot = make_run(tmp_path)
    params = {**PARAMS, "evaluate": {"confidence": 0.95, "collapse_share": 0.05}}
    (snapshot / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(rescore.RescoreError, match="no key evaluate.bootstrap_samples"):
        rescore.rescore(snapshot, tmp_path)


def test_what_rescore_cannot_do_is_said_with_exit_2(tmp_path, capsys, monkeypatch):
    snapshot = make_run(tmp_path / "ws")
    monkeypatch.chdir(tmp_path / "ws")
    (tmp_path / "ws" / "dvc.yaml").write_text("stages: {}\n")
    elsewhere = tmp_path / "copy"
    elsewhere.mkdir()
    (elsewhere / "run").symlink_to(snapshot)
    assert rescore_cli.main([str(elsewhere / "run")]) == 0  # a link into this workspace is fine
    capsys.readouterr()
    outside = tmp_path / "outside"
    (outside / "run").mkdir(parents=True)
    assert rescore_cli.main([str(outside / "run")]) == 2
    assert "not in this workspace" in capsys.readouterr().err
    (snapshot / "dvc.lock").write_text(yaml.safe_dump({"stages": {}}))
    assert rescore_cli.main([str(snapshot)]) == 2
    assert "no test-split, cross-dataset or CV metrics" in capsys.readouterr().err
    (snapshot / "dvc.lock").write_text("stages: [unclosed\n")
    assert rescore_cli.main([str(snapshot)]) == 2
    assert "dvc.lock: not valid YAML" in capsys.readouterr().err


def test_a_path_that_is_no_snapshot_folder_is_said_in_one_line(tmp_path, capsys, monkeypatch):
    snapshot = make_run(tmp_path)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    (tmp_path / "README.md").write_text("# a file\n")
    for path, said in [
        ("reports/experiments/nope", "nope: no such snapshot folder"),
        ("README.md", "README.md: not a snapshot folder"),
        ("reports/experiments", "experiments: not a snapshot folder"),
    ]:
        assert rescore_cli.main([path]) == 2
        err = capsys.readouterr().err
        assert said in err and len(err.splitlines()) == 1, err
    assert rescore_cli.main([str(snapshot)]) == 0


def committed_runs() -> list[Path]:
    """Snapshots whose test predictions are the workspace's (the lock proves them): the runs
    whose figures `reports/metrics/` publishes. A rerun's snapshot (its own predictions, not
    committed) is refused by `scored_files` and left out."""
    runs = []
    for params in sorted((REPO / "reports" / "experiments").glob("*/params.yaml")):
        try:
            if rescore.scored_files(params.parent, REPO):
                runs.append(params.parent)
        except rescore.RescoreError:
            continue
    return runs


def test_the_committed_test_metrics_are_todays_rule():
    """Every published single-split, cross-dataset and CV metrics file of a committed run (or
    its snapshot's `rescored/` copy, where another run is published) is what
    today's metrics code gives from the run's committed predictions: change the interval rule
    and this fails until `python -m pipeline.stages.rescore` has been run."""
    runs = committed_runs()
    assert {run.name for run in runs} >= {"all_idb2_nested", "cnmc_scratch_fraction_crop"}
    for run in runs:
        for target, content in rescore.rescored_metrics(run, REPO).items():
            assert (REPO / target).is_file(), f"{target}: run `rescore {run.name}`"
            current = json.loads((REPO / target).read_text())
            assert rescore.figures(current) == rescore.figures(content), target


def test_a_published_file_rescored_from_this_run_returns_to_its_figures_as_written(
    tmp_path, monkeypatch
):
    """Rescored once, then the metrics rule reverted: the published file must not keep the
    figures of the rule that is gone."""
    snapshot = make_run(tmp_path)
    rescore.rescore(snapshot, tmp_path)
    as_written = json.loads((snapshot / "metrics" / "m.json").read_text())
    monkeypatch.setattr(rescore, "compute_metrics", lambda *args, **kwargs: dict(as_written))
    assert rescore.rescore(snapshot, tmp_path) == [Path("reports/metrics/ds/m.json")]
    assert json.loads((tmp_path / "reports/metrics/ds/m.json").read_text()) == as_written
