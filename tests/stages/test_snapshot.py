"""A snapshot freezes params, lock and the dataset's results with their provenance; without a
lock it refuses and writes nothing."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

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
