"""The prepared GPU check refuses clearly where it cannot run, and runs end to end (on the CPU,
tiny demo) where asked: its JSON has every stage and model with timings and test metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from benchmarks import gpu_check
from tests.workspace import TINY_OVERRIDES


def test_refuses_without_cuda_or_data(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main(["--out", str(tmp_path / "x.json")]) == 2
    assert "CUDA is not available" in capsys.readouterr().err
    missing = ["--device", "cpu", "--root", str(tmp_path / "nowhere"), "--out", str(tmp_path)]
    assert gpu_check.main(missing) == 2
    assert "no C-NMC" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()


@pytest.mark.slow
def test_dry_run_on_the_cpu_writes_every_model(tmp_path: Path) -> None:
    out = tmp_path / "gpu_check.json"
    tiny = [o for o in TINY_OVERRIDES if not o.startswith(("crop.size", "models."))]
    args = ["--demo", "--device", "cpu", "--side", "32", "--out", str(out), *tiny]
    assert gpu_check.main(args) == 0
    result = json.loads(out.read_text())
    assert set(result["models"]) == set(gpu_check.MODELS)
    for row in result["models"].values():
        assert row["train"]["rc"] == 0 and row["train"]["seconds"] > 0
        assert 0 <= row["test"]["accuracy"] <= 1
