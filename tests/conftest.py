"""Shared fixtures: the real config composed into tmp dirs, MLflow pointed at tmp, real data."""

from __future__ import annotations

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


def real_data(*parts: str) -> Path:
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not available at {path}")
    return path
