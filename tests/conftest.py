"""Shared fixtures: the real config composed into tmp dirs, MLflow pointed at tmp, real data."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _isolated_mlflow(tmp_path_factory, monkeypatch):
    """No test ever writes to the repo's mlflow.db."""
    store = tmp_path_factory.mktemp("mlflow")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store}/mlflow.db")
    monkeypatch.setenv("YOLO_OFFLINE", "1")


@pytest.fixture
def cfg():
    """The composed default config (what params.yaml holds), as a validated DictConfig."""
    from pipeline.config import compose

    return compose()


@pytest.fixture(scope="session")
def demo_workspace(tmp_path_factory) -> Path:
    """The whole pipeline (every model) run once per session on a tiny demo; read-only for tests.

    Tests that modify outputs copy it first (shutil.copytree).
    """
    from tests.workspace import make_workspace, run_pipeline

    root = make_workspace(tmp_path_factory.mktemp("demo_workspace"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root}/mlflow.db")
        patch.setenv("ALL_DETECT_JOBS", "1")
        run_pipeline(root)
    return root


@functools.cache
def _paper_defaults():
    from pipeline.config import compose

    return compose(["~experiment"])  # conf/'s groups alone: the paper's documented defaults


def section(name: str, **overrides):
    """A config section as conf/ defines it (no experiment file), with `overrides`: where tests
    get defaults, since conf/ is their only definition."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.create(OmegaConf.to_container(_paper_defaults()[name], resolve=True))
    for key, value in overrides.items():
        OmegaConf.update(cfg, key, value, merge=False)
    return cfg


@functools.cache
def _default_train() -> dict:
    from omegaconf import OmegaConf

    from pipeline.config import compose

    return OmegaConf.to_container(compose().train, resolve=True)


def train_context(data_dir, work_dir, image_size: int = 32, on_epoch=None, **train):
    """A TrainContext with conf/'s train defaults (the only place defaults live), `train`
    overrides, a `image_size` px crop."""
    from pipeline.train.context import TrainContext

    return TrainContext(
        **{**_default_train(), **train},
        data_dir=Path(data_dir),
        work_dir=Path(work_dir),
        image_size=image_size,
        on_epoch=on_epoch,
    )


def real_data(*parts: str) -> Path:
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not available at {path}")
    return path


def write_folder_manifest(data_dir: Path) -> dict[str, str]:
    """The folder's manifest as the augment stage writes it; subjects of 2, 2 and 5 cells."""
    import pandas as pd

    from pipeline import manifest

    rows = []
    for path in sorted(data_dir.glob("*/*/*.png")):
        label, split = path.parent.name, path.parent.parent.name
        group = f"{label}:{min(int(path.stem[:3]) // 2, 2)}"
        rows.append({"id": path.stem, "path": str(path), "label": label, "group": group,
                     "sha256": "", "source": "", "split": split})  # fmt: skip
    frame = pd.DataFrame(rows)
    manifest.write(frame, data_dir / "manifest.csv")
    return dict(zip(frame["id"], frame["group"], strict=True))


@pytest.fixture
def named_folder(tmp_path: Path) -> Path:
    """An image folder whose file names are unique across classes, as the augment stage's."""
    from tests.models.conftest import make_image_folder

    root = make_image_folder(tmp_path / "cells", per_class=9)
    for path in list(root.glob("*/*/*.png")):
        path.rename(path.with_name(f"{path.stem}{path.parent.name}{path.parent.parent.name}.png"))
    return root
