"""A miniature end-to-end run of the real pipeline in a temporary folder.

Every stage entry point runs as DVC would run it (reading `params.yaml` in the working
directory), on a tiny demo (a dozen cells per class, 32 px, one epoch), so tests of the
predict CLI, faults, resume, notebooks and tracking exercise real outputs in about a minute.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path

from pipeline.config import write_params

NETWORKS = ("resnet50", "resnet50_svm", "densenet121", "yolov8")
MODELS = ("svm_hog", *NETWORKS)
ENSEMBLE_MEMBERS = ("yolov8", "resnet50_svm", "svm_hog")  # conf/ensemble/default.yaml
PREP_STAGES = ("generate_demo", "ingest", "segment", "crop", "split", "augment")

TINY_OVERRIDES = (
    "demo.n_per_class=16",
    "demo.smear_side=64",
    "demo.cnmc_side=64",
    "demo.cnmc_subjects=4",
    "crop.size=32",
    "evaluate.bootstrap_samples=100",
    "models.svm_hog.hog.image_side=32",
    "models.svm_hog.hog.pixels_per_cell=8",
    *(f"models.{m}.epochs=1" for m in NETWORKS),
    *(f"models.{m}.batch_size=16" for m in NETWORKS),
    # 34 training cells in batches of 16 leave a last batch of 2, and DenseNet121 at 32 px
    # reaches 1x1 maps: batch norm over 2 values blew its weights up to NaN on some CPUs (fit
    # then refuses the model). Two batches of 17 keep the tests about mechanics.
    "models.densenet121.batch_size=17",
)


@contextlib.contextmanager
def chdir(path: Path) -> Iterator[Path]:
    before = Path.cwd()
    os.chdir(path)
    try:
        yield path
    finally:
        os.chdir(before)


def make_workspace(root: Path, overrides: Sequence[str] = ()) -> Path:
    """A folder with its own params.yaml: tiny defaults plus `overrides`."""
    root.mkdir(parents=True, exist_ok=True)
    write_params(root / "params.yaml", [*TINY_OVERRIDES, *overrides])
    return root


def copy_workspace(
    source: Path, target: Path, overrides: Sequence[str] = (), parts: Sequence[str] = ("artifacts",)
) -> Path:
    """A writable copy of the `parts` folders of `source`, with its own tiny params.yaml."""
    for part in parts:
        shutil.copytree(source / part, target / part, symlinks=True)
    return make_workspace(target, overrides)


def run_stage(root: Path, name: str, *args: str) -> int:
    """Run `python -m pipeline.stages.<name> <args>` in-process inside `root`."""
    import importlib

    module = importlib.import_module(f"pipeline.stages.{name}")
    with chdir(root):
        return module.main(list(args))


def cropped_workspace(root: Path, overrides: Sequence[str] = ()) -> Path:
    """A tiny workspace run from generate_demo to crop (what the CV-based stages read), one
    worker per stage (spawning a pool costs more than these few images)."""
    import pytest

    make_workspace(root, overrides)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ALL_DETECT_JOBS", "1")
        for name in PREP_STAGES[: PREP_STAGES.index("crop") + 1]:
            assert run_stage(root, name) == 0, name
    return root


def run_pipeline(
    root: Path, models: Sequence[str] = MODELS, ensemble: bool = True, report: bool = True
) -> None:
    """The stages as `dvc repro` orders them; the ensemble needs its members among `models`."""
    for name in PREP_STAGES:
        assert run_stage(root, name) == 0, f"stage {name} failed"
    for model in models:
        assert run_stage(root, "train", model) == 0, f"train {model} failed"
        assert run_stage(root, "evaluate", model) == 0, f"evaluate {model} failed"
        assert run_stage(root, "cv", model) == 0, f"cv {model} failed"
    if ensemble:
        for part in ("split", "cv"):
            for member in ENSEMBLE_MEMBERS:
                code = run_stage(root, "ensemble_member", member, part)
                assert code == 0, f"record {member} ({part}) failed"
            assert run_stage(root, "ensemble", part) == 0, f"ensemble {part} failed"
    if report:
        assert run_stage(root, "report") == 0, "report failed"
