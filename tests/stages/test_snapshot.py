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


def test_the_committed_cnmc_rerun_reproduced_the_data_stages_and_svm_hog_byte_for_byte() -> None:
    """What the README says of the fresh-clone rerun on another machine: every data stage and
    the svm_hog model came out byte-identical (same params); resnet50's weights did not."""
    experiments = Path(__file__).parents[2] / "reports" / "experiments"
    original = _stages(experiments / "cnmc_scratch" / "dvc.lock")
    rerun = _stages(experiments / "cnmc_scratch_repro" / "dvc.lock")

    def outs(stages: dict, name: str) -> dict[str, str]:
        return {out["path"]: out["md5"] for out in stages[name]["outs"]}

    for name in rerun:
        assert rerun[name]["params"] == original[name]["params"], name
    for name in ("ingest", "segment", "crop", "split", "augment", "train@svm_hog"):
        assert outs(rerun, name) == outs(original, name), name
    model = "models/cnmc/resnet50"
    assert outs(rerun, "train@resnet50")[model] != outs(original, "train@resnet50")[model]
