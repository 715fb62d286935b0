"""The prepared GPU check refuses clearly where it cannot run, and runs end to end (on the CPU,
tiny demo) where asked: its JSON has every stage and model with timings and test metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from benchmarks import gpu_check
from pipeline import tracking
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


def test_a_run_cut_off_midway_leaves_what_it_measured(tmp_path: Path, monkeypatch) -> None:
    """A lent machine's time limit can kill the check between models: the JSON on disk must
    already hold every finished stage and model, with rc null (not finished)."""
    out = tmp_path / "gpu_check.json"
    calls: list[tuple[str, ...]] = []

    def fake_stage(workspace: Path, stage: str, *args: str) -> dict:
        calls.append((stage, *args[:1]))
        if stage == "train" and args[0] == gpu_check.MODELS[2]:
            raise KeyboardInterrupt  # the machine's limit, between two models
        return {"rc": 0, "seconds": 1.0, "peak_gpu_mib": None}

    monkeypatch.setattr(gpu_check, "_stage", fake_stage)
    with pytest.raises(KeyboardInterrupt):
        gpu_check.main(["--demo", "--device", "cpu", "--side", "32", "--out", str(out)])
    result = json.loads(out.read_text())
    assert result["rc"] is None
    assert result["device"] == tracking.cpu_model()  # the processor's name, not "x86_64"
    assert set(result["stages"]) == set(gpu_check.DEMO_PREP)
    assert set(result["models"]) == set(gpu_check.MODELS[:2])
    assert all(row["train"]["rc"] == 0 for row in result["models"].values())
