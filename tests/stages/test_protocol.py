"""The protocol comparison (subject-grouped vs image-level CV) on a tiny workspace."""

import json

import pandas as pd
import pytest

from pipeline.evaluate import crossval
from pipeline.stages import protocol
from tests.workspace import make_workspace, run_stage


@pytest.fixture(scope="module")
def cropped(tmp_path_factory):
    root = make_workspace(tmp_path_factory.mktemp("protocol"), ["cv.folds=3"])
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ALL_DETECT_JOBS", "1")
        for name in ("generate_demo", "ingest", "segment", "crop"):
            assert run_stage(root, name) == 0, name
    return root


def test_the_two_runs_differ_in_the_grouping_only(cfg, monkeypatch):
    seen = []

    def fake_cv(frame, run_cfg, model_name, run_name):
        seen.append(run_cfg)
        return {"accuracy_mean": 0.5, "accuracy_std": 0.1, "f1_weighted": 0.5}, None

    monkeypatch.setattr(crossval, "cross_validate", fake_cv)
    results = protocol.compare(pd.DataFrame(), cfg, "svm_hog")
    assert list(results) == ["subject", "none"]
    assert [c.split.group_by for c in seen] == ["subject", "none"]
    for key in ("cv", "augment", "train", "models", "seed", "crop"):
        assert seen[0][key] == seen[1][key], key


def test_table_reports_the_inflation_of_image_level_over_grouped():
    summary = {"folds": 5, "n": 100, "accuracy_std": 0.02, "accuracy": 0.8}
    table = protocol.protocol_table(
        {
            "m": {
                "subject": {**summary, "accuracy_mean": 0.76},
                "none": {**summary, "accuracy_mean": 0.90},
            }
        }
    )
    assert table["protocol"].tolist() == list(protocol.PROTOCOLS.values())
    assert table["inflation (Ac points)"].tolist() == ["", "+14.0"]


def test_writes_both_protocols_and_keeps_models_run_before(cropped, monkeypatch):
    monkeypatch.setenv("ALL_DETECT_JOBS", "1")
    out = cropped / "reports" / "protocol" / "synthetic"
    out.parent.mkdir(parents=True, exist_ok=True)
    earlier = {"folds": 3, "repeats": 1, "n": 1, "accuracy_mean": 0.5, "accuracy_std": None}
    out.with_suffix(".json").write_text(
        json.dumps(
            {"dataset": "synthetic", "models": {"earlier": {"subject": earlier, "none": earlier}}}
        )
    )
    assert run_stage(cropped, "protocol", "svm_hog") == 0
    record = json.loads(out.with_suffix(".json").read_text())
    assert set(record["models"]) == {"earlier", "svm_hog"}
    run = record["models"]["svm_hog"]
    assert run["settings"]["cv.folds"] == 3
    for group_by in protocol.PROTOCOLS:
        assert run[group_by]["folds"] == 3 and run[group_by]["n"] > 0
        low, high = run[group_by]["accuracy_ci_low"], run[group_by]["accuracy_ci_high"]
        assert low < high
    table = pd.read_csv(out.with_suffix(".csv"))
    assert len(table) == 4 and set(table["model"]) == {"earlier", "svm_hog"}
    assert "image-level (paper)" in out.with_suffix(".md").read_text()


@pytest.mark.parametrize(
    ("args", "named"),
    [(("svm_hog", "cv.folds=0"), "cv.folds"), (("nonsense",), "nonsense"), ((), "model")],
)
def test_bad_requests_fail_with_one_line_naming_the_key(tmp_path, capsys, args, named):
    root = make_workspace(tmp_path, ["cv.folds=3"])
    assert run_stage(root, "protocol", *args) == 1
    assert named in capsys.readouterr().err
    assert not (root / "reports" / "protocol").exists()
