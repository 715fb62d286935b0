"""A snapshot freezes params, lock and the dataset's results with their provenance; without a
lock it refuses and writes nothing."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import yaml

from pipeline import config, tracking
from pipeline.stages import snapshot
from tests.workspace import make_workspace


def test_snapshot_copies_params_lock_and_metrics(tmp_path: Path, capsys) -> None:
    root = make_workspace(tmp_path / "ws")
    (root / "dvc.yaml").write_text("stages: {}\n")
    with contextlib.chdir(root):
        assert snapshot.main(["first"]) == 2
        assert "dvc.lock" in capsys.readouterr().err
        assert not Path("reports/experiments/first").exists()
        Path("dvc.lock").write_text("schema: '2.0'\n")
        metrics = Path("reports/metrics/synthetic")
        metrics.mkdir(parents=True)
        (metrics / "svm_hog.json").write_text('{"accuracy": 0.7}')
        assert snapshot.main(["first"]) == 0
        out = Path("reports/experiments/first")
        assert (out / "params.yaml").read_text() == Path("params.yaml").read_text()
        assert (out / "dvc.lock").read_text() == "schema: '2.0'\n"
        assert json.loads((out / "metrics" / "svm_hog.json").read_text()) == {"accuracy": 0.7}
        provenance = json.loads((out / "provenance.json").read_text())
        assert provenance["dataset"] == "synthetic" and provenance["experiment"] == "first"


def test_a_snapshot_of_some_stages_keeps_only_their_lock_entries_and_files(
    tmp_path: Path, capsys
) -> None:
    """`--stages 'cv@*'`: metrics of an earlier single-split run in the same workspace stay out."""
    root = make_workspace(tmp_path / "ws")
    (root / "dvc.yaml").write_text("stages: {}\n")
    with contextlib.chdir(root):
        cv_metrics = Path("reports/metrics/synthetic/cv/svm_hog.json")
        cv_folder = Path("reports/cv/synthetic/svm_hog")
        cv_metrics.parent.mkdir(parents=True)
        cv_folder.mkdir(parents=True)
        cv_metrics.write_text('{"accuracy": 0.6}')
        (cv_folder / "predictions.csv").write_text("id,p_all\n")
        Path("reports/metrics/synthetic/svm_hog.json").write_text('{"accuracy": 0.9}')
        out_of = {
            "cv@svm_hog": [str(cv_folder), str(cv_metrics)],
            "evaluate@svm_hog": ["reports/metrics/synthetic/svm_hog.json"],
        }
        stages = {name: {"cmd": name, "outs": [{"path": p} for p in outs]}
                  for name, outs in out_of.items()}  # fmt: skip
        Path("dvc.lock").write_text(yaml.safe_dump({"schema": "2.0", "stages": stages}))
        assert snapshot.main(["cv", "--stages", "nothing@*"]) == 2
        assert "nothing@*" in capsys.readouterr().err
        cfg = config.load(Path("params.yaml"))
        with tracking.start_run(cfg, dataset="synthetic", model="svm_hog", stage="cv@svm_hog"):
            pass  # what cv@svm_hog logged; evaluate@svm_hog logged nothing here
        assert snapshot.main(["cv", "--stages", "cv@*", "--note", "shared machine"]) == 0
        out = Path("reports/experiments/cv")
        assert set(yaml.safe_load((out / "dvc.lock").read_text())["stages"]) == {"cv@svm_hog"}
        copied = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
        assert copied == {
            "params.yaml",
            "dvc.lock",
            "provenance.json",
            "metrics/cv/svm_hog.json",
            "cv/svm_hog/predictions.csv",
        }
        provenance = json.loads((out / "provenance.json").read_text())
        assert provenance["stages"] == ["cv@svm_hog"] and provenance["note"] == "shared machine"
        assert set(provenance["wall_minutes"]) == {"cv@svm_hog"}


def _stages(lock: Path) -> dict[str, dict]:
    return yaml.safe_load(lock.read_text())["stages"]


def test_the_committed_cnmc_rerun_reproduced_the_original_run() -> None:
    """What the README says of the fresh-clone rerun of the C-NMC single split: with the same
    params, the data stages and three of the five models came out byte-identical, every
    test-split figure agrees to 1e-3, and the gate finds no regression against the original."""
    from pipeline import gate

    experiments = Path(__file__).parents[2] / "reports" / "experiments"
    original = _stages(experiments / "cnmc_scratch" / "dvc.lock")
    rerun = _stages(experiments / "cnmc_scratch_repro" / "dvc.lock")

    def outs(stages: dict, name: str) -> dict[str, str]:
        return {out["path"]: out["md5"] for out in stages[name]["outs"]}

    identical = ["ingest", "segment", "crop", "split", "augment"]
    identical += ["train@resnet50", "train@densenet121", "train@yolov8"]
    for name in identical:
        assert rerun[name]["params"] == original[name]["params"], name
        assert outs(rerun, name) == outs(original, name), name
    for name in ("svm_hog", "resnet50", "resnet50_svm", "densenet121", "yolov8", "ensemble"):
        before, after = (
            json.loads((experiments / run / "metrics" / f"{name}.json").read_text())
            for run in ("cnmc_scratch", "cnmc_scratch_repro")
        )
        for key, value in before.items():
            if isinstance(value, float):
                assert abs(after[key] - value) <= 1e-3, (name, key)
    rules = yaml.safe_load((experiments.parents[1] / "params.yaml").read_text())["gate"]
    rows = gate.compare(  # a snapshot's metrics folder is one dataset's: no dataset prefix
        gate.read_metrics_dir(experiments / "cnmc_scratch" / "metrics"),
        gate.read_metrics_dir(experiments / "cnmc_scratch_repro" / "metrics"),
        gate.resolve_rules(rules),
        rules["flags"],
        ["cross/*"],
    )
    assert rows and not [r for r in rows if r.failed]
