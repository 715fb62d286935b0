"""A tiny image-folder dataset whose classes differ visibly: bright vs dark blobs."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.io import write_image
from pipeline.labels import CLASSES
from pipeline.models.base import TrainContext
from tests.conftest import train_context

SIDE = 32


def make_image_folder(
    root: Path,
    per_class: int = 12,
    side: int = SIDE,
    seed: int = 0,
    counts: dict[str, int] | None = None,
) -> Path:
    """`root/{train,val}/{all,hem}/*.png`: 'all' cells are bright discs, 'hem' dark ones;
    `counts` (per class, per split) overrides `per_class` for a skewed set."""
    rng = np.random.default_rng(seed)
    for split in ("train", "val"):
        for label in CLASSES:
            folder = root / split / label
            folder.mkdir(parents=True, exist_ok=True)
            for i in range((counts or {}).get(label, per_class)):
                image = rng.integers(0, 60, (side, side, 3), dtype=np.uint8)
                centre = tuple(int(c) for c in rng.integers(side // 3, 2 * side // 3, 2))
                colour = (230, 200, 255) if label == "all" else (90, 40, 110)
                cv2.circle(image, centre, side // 4, colour, -1)
                write_image(folder / f"{i:03d}.png", image)
    return root


@pytest.fixture(scope="session")
def image_folder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("cells"))


@pytest.fixture(scope="session")
def skewed_folder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three ALL cells to one healthy cell (C-NMC fold 0 is 68% ALL), trivially separable."""
    return make_image_folder(tmp_path_factory.mktemp("skewed"), counts={"all": 30, "hem": 10})


@pytest.fixture(autouse=True)
def _single_process_features(monkeypatch: pytest.MonkeyPatch) -> None:
    """HOG extraction in-process: spawning joblib workers costs more than 48 tiny images."""
    monkeypatch.setenv("ALL_DETECT_JOBS", "1")


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any download attempt fail loudly instead of reaching the network."""

    def no_network(url: str, timeout: float = 3.0) -> bool:
        return False

    monkeypatch.setattr("pipeline.models.weights.network_available", no_network)


def recording_context(
    data_dir: Path, work_dir: Path
) -> tuple[TrainContext, list[tuple[int, dict[str, float]]]]:
    """A 32 px training context and the list its `on_epoch` callback appends to."""
    calls: list[tuple[int, dict[str, float]]] = []
    ctx = train_context(
        data_dir=data_dir,
        work_dir=work_dir,
        image_size=SIDE,
        on_epoch=lambda epoch, row: calls.append((epoch, row)),
    )
    return ctx, calls
